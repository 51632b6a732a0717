//! The gateway's login upstream with the stored password: `mysql_native_password`,
//! `caching_sha2_password` (the fast path; full authentication sends the password in clear over
//! TLS, else encrypted with the server's RSA key) and MariaDB's `client_ed25519`, switching
//! plugin when the server asks.

use ring::digest::{self, Context, SHA1_FOR_LEGACY_USE_ONLY, SHA256, SHA512};
use tokio::io::{AsyncRead, AsyncWrite};

use super::packet::{self, AUTH_MORE_DATA, AUTH_SWITCH, ERR, OK};

/// Bound on the rounds of one login (switches and extra data).
const MAX_ROUNDS: usize = 8;

/// How a login failed.
#[derive(Debug)]
pub(crate) enum AuthError {
    /// The server refused it: its ERR message.
    Rejected(String),
    /// It could not be carried out.
    Failed(String),
}

/// What the login needs besides the connection.
pub(crate) struct Login<'a> {
    pub(crate) password: &'a str,
    /// The connection to the server is encrypted (the password may be sent in clear).
    pub(crate) tls: bool,
}

/// After the `HandshakeResponse41` with the first proof was sent: answers the server (each
/// answer numbered after the packet it answers) until it says OK (returned: its payload) or ERR.
pub(crate) async fn finish<S>(
    server: &mut S,
    mut plugin: String,
    mut scramble: Vec<u8>,
    login: &Login<'_>,
) -> Result<Vec<u8>, AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let failed = |e: String| AuthError::Failed(e);
    for _ in 0..MAX_ROUNDS {
        let (n, payload) = packet::read(server).await.map_err(failed)?;
        let seq = n.wrapping_add(1);
        let answer = match payload.first() {
            Some(&OK) => return Ok(payload),
            Some(&ERR) => return Err(AuthError::Rejected(packet::error_text(&payload))),
            Some(&AUTH_SWITCH) => {
                let mut f = packet::Fields::new(&payload[1..]);
                plugin = String::from_utf8_lossy(f.nul_terminated()).into_owned();
                let data = f.rest();
                scramble = data.strip_suffix(&[0]).unwrap_or(data).to_vec();
                proof(&plugin, login.password, &scramble).map_err(failed)?
            }
            Some(&AUTH_MORE_DATA) => {
                match more_data(&plugin, &payload[1..], login, &scramble).map_err(failed)? {
                    Some(answer) => answer,
                    None => continue, // fast authentication succeeded: OK follows
                }
            }
            _ => return Err(failed("the server sent an unexpected login packet".into())),
        };
        packet::write(server, seq, &answer)
            .await
            .map_err(|e| failed(format!("the connection failed: {e}")))?;
    }
    Err(failed(format!(
        "the login did not finish within {MAX_ROUNDS} exchanges"
    )))
}

/// The first answer of `plugin` to `scramble`.
pub(crate) fn proof(plugin: &str, password: &str, scramble: &[u8]) -> Result<Vec<u8>, String> {
    match plugin {
        "mysql_native_password" | "" => Ok(native(password, scramble)),
        "caching_sha2_password" => Ok(sha2_fast(password, scramble)),
        "client_ed25519" => ed25519(password, scramble),
        "mysql_clear_password" => {
            // A server that asks for the password in clear is not given it, TLS or not.
            Err("the server asked for the password in clear (mysql_clear_password), which the gateway never sends".into())
        }
        other => Err(format!(
            "the server asked for authentication plugin {other:?}, which the gateway does not speak"
        )),
    }
}

/// `caching_sha2_password`'s extra data: `3` fast authentication succeeded, `4` the server
/// wants the password (in clear over TLS, else encrypted with its RSA key, asked for with `2`),
/// or the key itself.
fn more_data(
    plugin: &str,
    data: &[u8],
    login: &Login<'_>,
    scramble: &[u8],
) -> Result<Option<Vec<u8>>, String> {
    if plugin != "caching_sha2_password" {
        return Err(format!("unexpected extra data from the {plugin} plugin"));
    }
    match data {
        [3] => Ok(None),
        [4] if login.tls => {
            let mut clear = login.password.as_bytes().to_vec();
            clear.push(0);
            Ok(Some(clear))
        }
        [4] => Ok(Some(vec![2])),
        pem if pem.starts_with(b"-----BEGIN") => {
            super::rsa_key::encrypt_password(pem, login.password, scramble).map(Some)
        }
        _ => Err("caching_sha2_password sent extra data the gateway does not understand".into()),
    }
}

fn sha1(parts: &[&[u8]]) -> digest::Digest {
    hash(&SHA1_FOR_LEGACY_USE_ONLY, parts)
}

fn hash(algorithm: &'static digest::Algorithm, parts: &[&[u8]]) -> digest::Digest {
    let mut ctx = Context::new(algorithm);
    for part in parts {
        ctx.update(part);
    }
    ctx.finish()
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// `SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password)))`; an empty password sends nothing.
pub(crate) fn native(password: &str, scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let scramble = &scramble[..scramble.len().min(20)];
    let stage1 = sha1(&[password.as_bytes()]);
    let stage2 = sha1(&[stage1.as_ref()]);
    xor(stage1.as_ref(), sha1(&[scramble, stage2.as_ref()]).as_ref())
}

/// `SHA256(password) XOR SHA256(SHA256(SHA256(password)) + scramble)`.
pub(crate) fn sha2_fast(password: &str, scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let scramble = &scramble[..scramble.len().min(20)];
    let stage1 = hash(&SHA256, &[password.as_bytes()]);
    let stage2 = hash(&SHA256, &[stage1.as_ref()]);
    xor(
        stage1.as_ref(),
        hash(&SHA256, &[stage2.as_ref(), scramble]).as_ref(),
    )
}

/// MariaDB's `client_ed25519`: the password's SHA-512 is an expanded Ed25519 secret (its first
/// half clamped into the scalar, its second half the nonce prefix); the scramble is signed.
pub(crate) fn ed25519(password: &str, scramble: &[u8]) -> Result<Vec<u8>, String> {
    use ed25519_dalek::VerifyingKey;
    use ed25519_dalek::hazmat::{ExpandedSecretKey, raw_sign};
    let expanded = hash(&SHA512, &[password.as_bytes()]);
    let bytes: &[u8; 64] = expanded
        .as_ref()
        .try_into()
        .map_err(|_| "SHA-512 gave an unexpected length".to_owned())?;
    let secret = ExpandedSecretKey::from_bytes(bytes);
    let public = VerifyingKey::from(&secret);
    Ok(raw_sign::<sha2::Sha512>(&secret, scramble, &public)
        .to_bytes()
        .to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compares with the digest MariaDB stores for `PASSWORD('secret')`.
    #[test]
    fn native_proof_matches_the_servers_check() {
        let scramble = b"0123456789abcdefghij";
        let proof = native("secret", scramble);
        // The server's check: SHA1(proof XOR SHA1(scramble + stored)) == stored.
        let stored = sha1(&[sha1(&[b"secret"]).as_ref()]);
        let stage1 = xor(&proof, sha1(&[scramble, stored.as_ref()]).as_ref());
        assert_eq!(sha1(&[&stage1]).as_ref(), stored.as_ref());
        assert_eq!(
            hex(stored.as_ref()).to_uppercase(),
            "14E65567ABDB5135D0CFD9A70B3032C179A49EE7",
            "PASSWORD('secret') without its *"
        );
        assert!(native("", scramble).is_empty());
    }

    #[test]
    fn caching_sha2_fast_proof_matches_the_servers_check() {
        let scramble = b"0123456789abcdefghij";
        let proof = sha2_fast("secret", scramble);
        let stored = hash(&SHA256, &[hash(&SHA256, &[b"secret"]).as_ref()]);
        let stage1 = xor(&proof, hash(&SHA256, &[stored.as_ref(), scramble]).as_ref());
        assert_eq!(hash(&SHA256, &[&stage1]).as_ref(), stored.as_ref());
    }

    #[test]
    fn ed25519_signature_verifies_with_the_key_the_server_stores() {
        use ed25519_dalek::hazmat::ExpandedSecretKey;
        use ed25519_dalek::{Signature, Verifier, VerifyingKey};
        let scramble = [7u8; 32];
        let signature = ed25519("secret", &scramble).unwrap();
        let expanded: [u8; 64] = hash(&SHA512, &[b"secret"]).as_ref().try_into().unwrap();
        let public = VerifyingKey::from(&ExpandedSecretKey::from_bytes(&expanded));
        let signature = Signature::from_slice(&signature).unwrap();
        public.verify(&scramble, &signature).unwrap();
        assert!(public.verify(&[8u8; 32], &signature).is_err());
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A scripted server on one end of a pipe: reads each packet the gateway sends, answers.
    async fn exchange(
        plugin: &str,
        scramble: &[u8],
        tls: bool,
        script: Vec<(Option<&'static [u8]>, Vec<u8>)>,
    ) -> (Result<Vec<u8>, AuthError>, Vec<Vec<u8>>) {
        let (mut gateway, mut server) = tokio::io::duplex(1 << 16);
        let login = Login {
            password: "secret",
            tls,
        };
        let plugin = plugin.to_owned();
        let scramble = scramble.to_vec();
        let served = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut seq = 2u8;
            for (expect_reply, answer) in script {
                if expect_reply.is_some() {
                    let (n, payload) = packet::read(&mut server).await.unwrap();
                    seq = n.wrapping_add(1);
                    seen.push(payload);
                }
                packet::write(&mut server, seq, &answer).await.unwrap();
                seq = seq.wrapping_add(1);
            }
            seen
        });
        let result = finish(&mut gateway, plugin, scramble, &login).await;
        (result, served.await.unwrap())
    }

    #[tokio::test]
    async fn caching_sha2_fast_path_ends_with_ok() {
        let (result, _) = exchange(
            "caching_sha2_password",
            b"0123456789abcdefghij",
            false,
            vec![
                (None, vec![AUTH_MORE_DATA, 3]),
                (None, vec![OK, 0, 0, 2, 0, 0, 0]),
            ],
        )
        .await;
        assert_eq!(result.unwrap(), [OK, 0, 0, 2, 0, 0, 0]);
    }

    #[tokio::test]
    async fn caching_sha2_full_authentication_over_tls_sends_the_password() {
        let (result, seen) = exchange(
            "caching_sha2_password",
            b"0123456789abcdefghij",
            true,
            vec![
                (None, vec![AUTH_MORE_DATA, 4]),
                (Some(b""), vec![OK, 0, 0, 2, 0, 0, 0]),
            ],
        )
        .await;
        assert!(result.is_ok());
        assert_eq!(seen, [b"secret\0".to_vec()]);
    }

    #[tokio::test]
    async fn caching_sha2_full_authentication_without_tls_uses_the_servers_key() {
        let key = super::super::rsa_key::tests::test_key();
        let scramble = b"0123456789abcdefghij";
        let pem = [&[AUTH_MORE_DATA][..], key.public_pem.as_bytes()].concat();
        let (result, seen) = exchange(
            "caching_sha2_password",
            scramble,
            false,
            vec![
                (None, vec![AUTH_MORE_DATA, 4]),
                (Some(b""), pem),
                (Some(b""), vec![OK, 0, 0, 2, 0, 0, 0]),
            ],
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(seen[0], [2], "asks for the key");
        let clear = key.decrypt(&seen[1]);
        assert_eq!(clear, xor(b"secret\0", scramble), "password XOR scramble");
    }

    #[tokio::test]
    async fn a_switch_to_ed25519_is_answered_with_a_signature_and_an_error_is_reported() {
        let mut switch = vec![AUTH_SWITCH];
        switch.extend_from_slice(b"client_ed25519\0");
        switch.extend_from_slice(&[5u8; 32]);
        let mut err = vec![ERR, 0x15, 0x04, b'#'];
        err.extend_from_slice(b"28000Access denied for user 'x'");
        let (result, seen) = exchange(
            "mysql_native_password",
            b"0123456789abcdefghij",
            false,
            vec![(None, switch), (Some(b""), err)],
        )
        .await;
        assert_eq!(seen[0], ed25519("secret", &[5u8; 32]).unwrap());
        match result {
            Err(AuthError::Rejected(why)) => {
                assert_eq!(why, "Access denied for user 'x' (error 1045)");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn clear_text_and_unknown_plugins_are_refused() {
        let mut switch = vec![AUTH_SWITCH];
        switch.extend_from_slice(b"mysql_clear_password\0");
        let (result, _) =
            exchange("mysql_native_password", b"x", false, vec![(None, switch)]).await;
        assert!(matches!(result, Err(AuthError::Failed(why)) if why.contains("never sends")));
    }
}
