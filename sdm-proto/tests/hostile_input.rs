//! Every parser that reads bytes from the network or from a user, fed arbitrary and mutated
//! input: no panic, nothing read past a length limit, and valid input still accepted.

use proptest::prelude::*;
use sdm_proto::api::{
    CreateAccount, CreateGrant, CreateResource, LeaseGrant, LeaseRequest, LoginRequest,
    LoginResponse, ResourceList, UpdateResource,
};
use sdm_proto::error::ApiErrorBody;
use sdm_proto::gateway;
use sdm_proto::handshake::{self, MAX_LEASE_LEN, Reply};
use sdm_proto::lease::{self, Lease, LeaseSigner, LeaseVerifier};
use sdm_proto::{Token, TokenKind};
use uuid::Uuid;

fn signer() -> LeaseSigner {
    LeaseSigner::from_pkcs8(&LeaseSigner::generate_pkcs8().unwrap()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn token_parser_takes_anything(text in ".{0,600}") {
        let _ = Token::parse(&text);
    }

    #[test]
    fn tokens_with_any_prefixed_payload_are_handled(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        use base64::Engine;
        for prefix in TokenKind::ALL.map(TokenKind::prefix) {
            let text = format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&body));
            let _ = Token::parse(&text);
        }
    }

    #[test]
    fn tokens_round_trip_and_any_one_change_is_caught(
        url in "https://[a-z0-9.-]{1,60}(:[0-9]{1,5})?",
        fingerprint in any::<[u8; 32]>(),
        at in any::<prop::sample::Index>(),
        kind in 0usize..3,
    ) {
        let kind = TokenKind::ALL[kind];
        let token = Token::generate(kind, &url, fingerprint).unwrap();
        let text = token.encode();
        prop_assert_eq!(Token::parse(&text).unwrap(), token);
        // Replace one character of the payload with another base64url character.
        let mut chars: Vec<char> = text.chars().collect();
        let i = 8 + at.index(chars.len() - 8);
        chars[i] = if chars[i] == 'Q' { 'R' } else { 'Q' };
        let changed: String = chars.into_iter().collect();
        prop_assert!(Token::parse(&changed).is_err());
    }

    #[test]
    fn lease_decoder_and_verifier_take_anything(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = lease::decode_unverified(&bytes);
        let verifier = LeaseVerifier::new([signer().public_key()]);
        prop_assert!(verifier.verify(&bytes, 0, 0).is_err());
        prop_assert!(verifier.verify_signature(&bytes).is_err());
    }

    #[test]
    fn any_flipped_bit_invalidates_a_lease(bit in 0usize..(lease::LEASE_LEN * 8)) {
        let s = signer();
        let verifier = LeaseVerifier::new([s.public_key()]);
        let lease = Lease {
            id: Uuid::new_v4(),
            account_id: Uuid::new_v4(),
            resource_id: Uuid::new_v4(),
            session_id: Uuid::new_v4(),
            issued_at: 1000,
            expires_at: 2000,
        };
        let mut bytes = s.sign(&lease);
        prop_assert!(verifier.verify(&bytes, 1500, 0).is_ok());
        bytes[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(verifier.verify(&bytes, 1500, 0).is_err());
        prop_assert!(verifier.verify_signature(&bytes).is_err());
    }

    #[test]
    fn handshake_decoders_take_anything(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        if let Ok(Some((hello, n))) = handshake::decode_hello(&bytes) {
            prop_assert!(n <= bytes.len());
            prop_assert!(hello.lease.len() <= MAX_LEASE_LEN);
        }
        if let Ok(Some((reply, n))) = handshake::decode_reply(&bytes) {
            prop_assert!(n <= bytes.len());
            if let Reply::Error { message, .. } = reply {
                prop_assert!(message.len() <= 3 * handshake::MAX_MESSAGE_LEN);
            }
        }
    }

    #[test]
    fn handshake_messages_survive_any_split(lease in proptest::collection::vec(any::<u8>(), 0..=MAX_LEASE_LEN), cut in any::<prop::sample::Index>()) {
        let bytes = handshake::encode_hello(&lease, false);
        let cut = cut.index(bytes.len());
        prop_assert_eq!(handshake::decode_hello(&bytes[..cut]), Ok(None));
        let (hello, n) = handshake::decode_hello(&bytes).unwrap().unwrap();
        prop_assert_eq!(hello.lease, &lease[..]);
        prop_assert_eq!(n, bytes.len());
    }

    #[test]
    fn api_bodies_take_any_json(text in ".{0,400}", bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        for input in [text.as_bytes(), &bytes[..]] {
            let _ = serde_json::from_slice::<LoginRequest>(input);
            let _ = serde_json::from_slice::<LoginResponse>(input);
            let _ = serde_json::from_slice::<LeaseRequest>(input);
            let _ = serde_json::from_slice::<LeaseGrant>(input);
            let _ = serde_json::from_slice::<ResourceList>(input);
            let _ = serde_json::from_slice::<CreateAccount>(input);
            let _ = serde_json::from_slice::<CreateResource>(input);
            let _ = serde_json::from_slice::<UpdateResource>(input);
            let _ = serde_json::from_slice::<CreateGrant>(input);
            let _ = serde_json::from_slice::<ApiErrorBody>(input);
            let _ = serde_json::from_slice::<gateway::CreateGateway>(input);
            let _ = serde_json::from_slice::<gateway::RegisterGateway>(input);
            let _ = serde_json::from_slice::<gateway::GatewayRegistration>(input);
            let _ = serde_json::from_slice::<gateway::AuthorizeLease>(input);
            let _ = serde_json::from_slice::<gateway::Authorization>(input);
            let _ = serde_json::from_slice::<gateway::AuditUpload>(input);
        }
    }
}
