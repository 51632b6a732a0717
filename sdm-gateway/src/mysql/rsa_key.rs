//! `caching_sha2_password`'s full authentication without TLS: the password (with its NUL),
//! XORed with the scramble, encrypted with the server's RSA public key (OAEP with SHA-1, as the
//! server decrypts it).

use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Oaep, PublicKey};

/// Encrypts `password` for the server whose key is `pem` (SubjectPublicKeyInfo or PKCS#1).
pub(crate) fn encrypt_password(
    pem: &[u8],
    password: &str,
    scramble: &[u8],
) -> Result<Vec<u8>, String> {
    let pem = std::str::from_utf8(pem)
        .map_err(|_| "the server's RSA key is not text".to_owned())?
        .trim_end_matches('\0')
        .trim();
    let key = PublicKey::from_public_key_pem(pem)
        .or_else(|_| PublicKey::from_pkcs1_pem(pem))
        .map_err(|e| format!("the server's RSA key cannot be read: {e}"))?;
    if scramble.is_empty() {
        return Err("the server sent no scramble".into());
    }
    let mut clear = password.as_bytes().to_vec();
    clear.push(0);
    for (i, b) in clear.iter_mut().enumerate() {
        *b ^= scramble[i % scramble.len()];
    }
    key.encrypt(&mut getrandom::SysRng, Oaep::<sha1::Sha1>::new(), &clear)
        .map_err(|e| format!("encrypting the password with the server's RSA key failed: {e}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use rsa::PrivateKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};

    use super::*;

    /// A server key pair, as MySQL keeps in `public_key.pem` / `private_key.pem`.
    pub(crate) struct TestKey {
        private: PrivateKey,
        pub(crate) public_pem: String,
    }

    impl TestKey {
        pub(crate) fn decrypt(&self, ciphertext: &[u8]) -> Vec<u8> {
            self.private
                .decrypt(Oaep::<sha1::Sha1>::new(), ciphertext)
                .unwrap()
        }
    }

    pub(crate) fn test_key() -> TestKey {
        let private = PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap();
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        TestKey {
            private,
            public_pem,
        }
    }

    #[test]
    fn the_password_is_encrypted_for_the_server_only() {
        let key = test_key();
        let scramble = b"abcdefghijklmnopqrst";
        let sealed = encrypt_password(
            key.public_pem.as_bytes(),
            "a-long-password-of-25chars",
            scramble,
        )
        .unwrap();
        let clear = key.decrypt(&sealed);
        let unmasked: Vec<u8> = clear
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ scramble[i % scramble.len()])
            .collect();
        assert_eq!(unmasked, b"a-long-password-of-25chars\0");
        assert!(encrypt_password(b"-----BEGIN PUBLIC KEY-----\nAAAA\n", "x", scramble).is_err());
    }
}
