//! The self-describing token that service accounts and admins log in with.
//!
//! ```text
//! sdm_svc_<base64url(payload)>        service account
//! sdm_adm_<base64url(payload)>        admin
//! sdm_gw_<base64url(payload)>         gateway (`sdm-server gateway`)
//! payload = version:u8 = 1 | token id:16 | secret:32 | CA fingerprint:32
//!         | url length:u16 | control plane URL (https) | crc32(prefix ‖ all before):u32
//! ```
//!
//! A token carries everything a client needs: where the control plane is, which CA to trust
//! (SHA-256 of its DER certificate), and a 256-bit secret. The server stores only
//! SHA-256(secret). The fixed prefix lets secret scanners recognise leaked tokens and the checksum
//! lets clients reject mistyped ones without a round trip.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

/// The longest token text accepted, so that parsing never allocates without bound.
pub const MAX_TOKEN_LEN: usize = 4096;
const MAX_URL_LEN: usize = 2048;
const VERSION: u8 = 1;
const FIXED_LEN: usize = 1 + 16 + 32 + 32 + 2;

/// Who a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A service account: a job's identity.
    Service,
    /// An administrator: manages accounts, resources and grants.
    Admin,
    /// A standalone gateway (`sdm-server gateway`): registers with the control plane and asks it
    /// where leases go. Accepted only on the `/v1/gateway/…` routes.
    Gateway,
}

impl TokenKind {
    /// The text every token of this kind starts with.
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Service => "sdm_svc_",
            TokenKind::Admin => "sdm_adm_",
            TokenKind::Gateway => "sdm_gw_",
        }
    }

    /// Every kind, for parsers that try each prefix.
    pub const ALL: [TokenKind; 3] = [TokenKind::Service, TokenKind::Admin, TokenKind::Gateway];
}

/// Why a string is not a usable token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Missing or unknown prefix.
    #[error(
        "not an sdm token: a token starts with sdm_svc_ (service account), sdm_adm_ (admin) or \
         sdm_gw_ (gateway)"
    )]
    Prefix,
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token is too long to be an sdm token ({0} characters)")]
    TooLong(usize),
    /// Not base64url, truncated, or a field out of range.
    #[error("token is malformed ({0}); copy the whole token again")]
    Malformed(&'static str),
    /// The checksum does not match: a typo or a truncated copy.
    #[error("token checksum does not match; it was probably truncated or mistyped")]
    Checksum,
    /// A token format this client does not know.
    #[error("token format version {0} is not supported by this client (it reads version 1)")]
    Version(u8),
    /// The operating system's random number generator failed.
    #[error("could not generate a random token secret")]
    Random,
}

/// A parsed token. `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// Service or admin.
    pub kind: TokenKind,
    /// The token's id (not secret): the server looks the hash up by it.
    pub id: Uuid,
    /// The 256-bit secret.
    pub secret: [u8; 32],
    /// SHA-256 of the DER certificate of the CA that signs the control plane's and gateways' certificates.
    pub ca_fingerprint: [u8; 32],
    /// The control plane URL, `https://host:port`.
    pub api_url: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .field("api_url", &self.api_url)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Token {
    /// A new token with a random id and secret.
    pub fn generate(
        kind: TokenKind,
        api_url: &str,
        ca_fingerprint: [u8; 32],
    ) -> Result<Token, TokenError> {
        let rng = ring::rand::SystemRandom::new();
        let mut secret = [0u8; 32];
        let mut id = [0u8; 16];
        ring::rand::SecureRandom::fill(&rng, &mut secret).map_err(|_| TokenError::Random)?;
        ring::rand::SecureRandom::fill(&rng, &mut id).map_err(|_| TokenError::Random)?;
        if api_url.len() > MAX_URL_LEN {
            return Err(TokenError::Malformed("control plane URL too long"));
        }
        Ok(Token {
            kind,
            id: uuid::Builder::from_random_bytes(id).into_uuid(),
            secret,
            ca_fingerprint,
            api_url: api_url.to_owned(),
        })
    }

    /// Reads a token; surrounding whitespace (a pasted newline) is ignored.
    pub fn parse(text: &str) -> Result<Token, TokenError> {
        let text = text.trim();
        if text.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong(text.len()));
        }
        let (kind, body) = TokenKind::ALL
            .into_iter()
            .find_map(|kind| text.strip_prefix(kind.prefix()).map(|rest| (kind, rest)))
            .ok_or(TokenError::Prefix)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed("not base64url"))?;
        if bytes.len() < FIXED_LEN + 4 {
            return Err(TokenError::Malformed("too short"));
        }
        let (content, crc) = bytes.split_at(bytes.len() - 4);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(kind.prefix().as_bytes());
        hasher.update(content);
        if hasher.finalize().to_be_bytes() != crc {
            return Err(TokenError::Checksum);
        }
        if content[0] != VERSION {
            return Err(TokenError::Version(content[0]));
        }
        let id = Uuid::from_slice(&content[1..17]).map_err(|_| TokenError::Malformed("id"))?;
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&content[17..49]);
        let mut ca_fingerprint = [0u8; 32];
        ca_fingerprint.copy_from_slice(&content[49..81]);
        let url_len = usize::from(u16::from_be_bytes([content[81], content[82]]));
        let url = &content[FIXED_LEN..];
        if url.len() != url_len || url_len > MAX_URL_LEN {
            return Err(TokenError::Malformed("URL length"));
        }
        let api_url = std::str::from_utf8(url)
            .map_err(|_| TokenError::Malformed("URL is not UTF-8"))?
            .to_owned();
        if !api_url.starts_with("https://") {
            return Err(TokenError::Malformed("URL is not https"));
        }
        Ok(Token {
            kind,
            id,
            secret,
            ca_fingerprint,
            api_url,
        })
    }

    /// The token's text form. Treat it as a password.
    pub fn encode(&self) -> String {
        let url = self.api_url.as_bytes();
        let url_len = u16::try_from(url.len()).unwrap_or(u16::MAX);
        let mut content = Vec::with_capacity(FIXED_LEN + url.len() + 4);
        content.push(VERSION);
        content.extend_from_slice(self.id.as_bytes());
        content.extend_from_slice(&self.secret);
        content.extend_from_slice(&self.ca_fingerprint);
        content.extend_from_slice(&url_len.to_be_bytes());
        content.extend_from_slice(&url[..usize::from(url_len)]);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(self.kind.prefix().as_bytes());
        hasher.update(&content);
        content.extend_from_slice(&hasher.finalize().to_be_bytes());
        format!("{}{}", self.kind.prefix(), URL_SAFE_NO_PAD.encode(content))
    }

    /// SHA-256 of the secret: the only thing the server stores.
    pub fn secret_hash(&self) -> [u8; 32] {
        crate::sha256(&self.secret)
    }

    /// Whether `stored_hash` is the hash of this token's secret (constant time).
    pub fn matches_hash(&self, stored_hash: &[u8]) -> bool {
        let mine = self.secret_hash();
        if stored_hash.len() != mine.len() {
            return false;
        }
        mine.iter()
            .zip(stored_hash)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: TokenKind) -> Token {
        Token::generate(kind, "https://127.0.0.1:8443", [7u8; 32]).unwrap()
    }

    #[test]
    fn round_trips_both_kinds() {
        for kind in TokenKind::ALL {
            let t = sample(kind);
            let text = t.encode();
            assert!(text.starts_with(kind.prefix()));
            assert_eq!(Token::parse(&format!("  {text}\n")).unwrap(), t);
        }
    }

    #[test]
    fn rejects_damaged_tokens() {
        let text = sample(TokenKind::Service).encode();
        assert_eq!(Token::parse("hello"), Err(TokenError::Prefix));
        assert_eq!(Token::parse(""), Err(TokenError::Prefix));
        assert!(matches!(
            Token::parse(&text[..text.len() - 3]),
            Err(TokenError::Checksum | TokenError::Malformed(_))
        ));
        // Flip one character in the middle.
        let mut chars: Vec<char> = text.chars().collect();
        let i = chars.len() / 2;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let flipped: String = chars.into_iter().collect();
        assert_eq!(Token::parse(&flipped), Err(TokenError::Checksum));
        // An admin payload under a service prefix fails the checksum (the prefix is covered).
        let admin = sample(TokenKind::Admin).encode();
        let relabelled = admin.replacen("sdm_adm_", "sdm_svc_", 1);
        assert_eq!(Token::parse(&relabelled), Err(TokenError::Checksum));
        let gateway = sample(TokenKind::Gateway).encode();
        let relabelled = gateway.replacen("sdm_gw_", "sdm_svc_", 1);
        assert_eq!(Token::parse(&relabelled), Err(TokenError::Checksum));
        assert!(matches!(
            Token::parse(&"sdm_svc_".repeat(1000)),
            Err(TokenError::TooLong(_))
        ));
        assert!(matches!(
            Token::parse("sdm_svc_!!!"),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn debug_hides_the_secret() {
        let t = sample(TokenKind::Service);
        let shown = format!("{t:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(&format!("{:?}", t.secret)));
        assert!(!shown.contains(&t.encode()));
    }

    #[test]
    fn hash_matches_only_its_secret() {
        let a = sample(TokenKind::Service);
        let b = sample(TokenKind::Service);
        assert!(a.matches_hash(&a.secret_hash()));
        assert!(!a.matches_hash(&b.secret_hash()));
        assert!(!a.matches_hash(&[]));
    }
}
