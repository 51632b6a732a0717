//! Sealing stored credentials: AES-256-GCM with a random 96-bit nonce per value, stored as
//! `nonce ‖ ciphertext ‖ tag`.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use super::KeyError;
use super::files;

/// File name in the data directory.
pub const FILE: &str = "secret.key";
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// A sealed value could not be made or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The value is damaged or was sealed with another key.
    #[error(
        "a stored secret cannot be decrypted: it was sealed with another credential-encryption \
         key (secret.key or SDM_SECRET_KEY changed) or the stored bytes are damaged"
    )]
    Open,
    /// Sealing failed (random number generator or size).
    #[error("a secret could not be encrypted")]
    Seal,
}

/// Encrypts and decrypts stored credentials. `Debug` shows nothing of the key.
pub struct SecretBox {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(AES-256-GCM, key redacted)")
    }
}

impl SecretBox {
    fn from_key(bytes: &[u8]) -> Result<SecretBox, String> {
        if bytes.len() != KEY_LEN {
            return Err(format!(
                "the key must be {KEY_LEN} bytes, found {}; generate one with `openssl rand -base64 32`",
                bytes.len()
            ));
        }
        let key =
            UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| "unusable AES key".to_owned())?;
        Ok(SecretBox {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        })
    }

    /// A box for a base64 key (the form of `SDM_SECRET_KEY` and `secret.key`).
    pub fn from_base64(text: &str) -> Result<SecretBox, String> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| "not base64; generate a key with `openssl rand -base64 32`".to_owned())?;
        SecretBox::from_key(&bytes)
    }

    /// Loads the key from `path`, or `None` when the file does not exist.
    pub fn load(path: &Path) -> Result<Option<SecretBox>, KeyError> {
        let Some(bytes) = files::read_secret(path)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        SecretBox::from_base64(&text)
            .map(Some)
            .map_err(|reason| KeyError::Invalid {
                path: path.to_owned(),
                reason,
            })
    }

    /// Creates a new random key in `path`, which must not exist.
    pub fn create(path: &Path) -> Result<SecretBox, KeyError> {
        let mut key = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| KeyError::Random)?;
        let text = format!("{}\n", STANDARD.encode(key));
        let secret_box = SecretBox::from_key(&key).map_err(|reason| KeyError::Invalid {
            path: path.to_owned(),
            reason,
        })?;
        files::write_new(path, text.as_bytes(), files::SECRET_MODE)?;
        tracing::info!(path = %path.display(), "created a new credential-encryption key");
        Ok(secret_box)
    }

    /// Encrypts `plaintext` under a fresh random nonce.
    pub fn seal(&self, plaintext: &str) -> Result<Vec<u8>, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SecretError::Seal)?;
        let mut in_out = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut in_out,
            )
            .map_err(|_| SecretError::Seal)?;
        let mut out = Vec::with_capacity(NONCE_LEN + in_out.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&in_out);
        Ok(out)
    }

    /// Decrypts a value made by [`seal`](Self::seal).
    pub fn open(&self, sealed: &[u8]) -> Result<String, SecretError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(SecretError::Open);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Open)?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut in_out)
            .map_err(|_| SecretError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SecretError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed() -> SecretBox {
        SecretBox::from_key(&[3u8; KEY_LEN]).unwrap()
    }

    #[test]
    fn seal_then_open() {
        let b = boxed();
        let sealed = b.seal("hunter2").unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + 7 + TAG_LEN);
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(b.open(&sealed).unwrap(), "hunter2");
        // A fresh nonce each time.
        assert_ne!(b.seal("hunter2").unwrap(), sealed);
    }

    #[test]
    fn tampering_and_wrong_keys_fail() {
        let b = boxed();
        let mut sealed = b.seal("hunter2").unwrap();
        let other = SecretBox::from_key(&[4u8; KEY_LEN]).unwrap();
        assert_eq!(other.open(&sealed), Err(SecretError::Open));
        sealed[NONCE_LEN] ^= 1;
        assert_eq!(b.open(&sealed), Err(SecretError::Open));
        assert_eq!(b.open(&[1, 2, 3]), Err(SecretError::Open));
    }

    #[test]
    fn keys_from_text_and_files() {
        assert!(
            SecretBox::from_base64("c2hvcnQ=")
                .unwrap_err()
                .contains("32 bytes")
        );
        assert!(SecretBox::from_base64("!!").is_err());
        let text = STANDARD.encode([9u8; 32]);
        let b = SecretBox::from_base64(&format!("{text}\n")).unwrap();
        assert!(!format!("{b:?}").contains(&text));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        assert!(SecretBox::load(&path).unwrap().is_none());
        let first = SecretBox::create(&path).unwrap();
        assert!(SecretBox::create(&path).is_err(), "never overwritten");
        let second = SecretBox::load(&path).unwrap().unwrap();
        assert_eq!(second.open(&first.seal("x").unwrap()).unwrap(), "x");
    }
}
