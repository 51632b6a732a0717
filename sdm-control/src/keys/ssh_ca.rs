//! sdm's SSH certificate authority, stored as `ssh_ca.key` (OpenSSH PEM, Ed25519, 0600).
//!
//! It does two jobs for ssh resources:
//! * it signs the short-lived user certificates a gateway logs in upstream with, for resources
//!   that trust it (`TrustedUserCAKeys` in the server's `sshd_config`);
//! * each ssh resource's gateway host key — the key a gateway presents to clients for that
//!   resource — is derived from it (HKDF-SHA256, the resource id as info).
//!
//! Derived, not stored: every control plane of an installation shares `ssh_ca.key` already (it
//! is refused at start otherwise, like `lease.key`), so every control plane and gateway presents
//! the same host key for a resource, across restarts, with no new secret in the database to
//! seal, back up or migrate. A host key's private half travels to gateways with every answer;
//! HKDF is one-way, so it reveals neither the CA key nor any other resource's host key.

use std::path::Path;

use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use ssh_key::certificate::{Builder, CertType, Certificate};
use ssh_key::private::{Ed25519Keypair, KeypairData};
use ssh_key::{HashAlg, LineEnding, PrivateKey};
use uuid::Uuid;

use super::KeyError;
use super::files;

/// File name in the data directory.
pub const FILE: &str = "ssh_ca.key";

/// The comment on the CA's public key line (it names the key in `TrustedUserCAKeys` files).
const CA_COMMENT: &str = "sdm-ssh-ca";
/// HKDF salt of gateway host keys; a new derivation scheme takes a new salt.
const HOST_KEY_SALT: &[u8] = b"sdm ssh gateway host key v1";
/// How far back a certificate is valid from, for upstream servers whose clock is behind.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Extensions of login certificates: a shell, port forwarding, `~/.ssh/rc`. Agent and X11
/// forwarding are left out: they would hand the upstream server a way back into the client.
pub const EXTENSIONS: &[&str] = &["permit-port-forwarding", "permit-pty", "permit-user-rc"];

/// The installation's SSH certificate authority.
pub struct SshCa {
    key: PrivateKey,
    /// The Ed25519 seed, the input host keys are derived from.
    seed: [u8; 32],
}

impl std::fmt::Debug for SshCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshCa")
            .field("public_key", &self.public_key_line())
            .finish_non_exhaustive()
    }
}

/// What one login certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginCertificate<'a> {
    /// The upstream user name (the certificate's only principal).
    pub username: &'a str,
    /// Key id, as sshd logs it (`sdm:account=…:resource=…:lease=…`).
    pub key_id: String,
    /// Unix seconds the lease was issued; the certificate is valid from a minute before.
    pub now: u64,
    /// Unix seconds the lease expires; the certificate is valid until then.
    pub expires_at: u64,
}

/// A key and the certificate made for it.
pub struct SignedLogin {
    /// The fresh Ed25519 key, OpenSSH PEM.
    pub private_key: String,
    /// Its certificate, an OpenSSH certificate line.
    pub certificate: String,
}

impl std::fmt::Debug for SignedLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedLogin")
            .field("private_key", &"<redacted>")
            .field("certificate", &self.certificate)
            .finish()
    }
}

/// A certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshCaError {
    /// The system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// ssh-key refused a field or could not sign.
    #[error("cannot {what}")]
    Key {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: ssh_key::Error,
    },
}

fn key_error(what: &'static str) -> impl FnOnce(ssh_key::Error) -> SshCaError {
    move |source| SshCaError::Key { what, source }
}

fn random<const N: usize>() -> Result<[u8; N], SshCaError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SshCaError::Random)?;
    Ok(bytes)
}

fn ed25519_key(seed: &[u8; 32], comment: &str) -> Result<PrivateKey, ssh_key::Error> {
    PrivateKey::new(
        KeypairData::Ed25519(Ed25519Keypair::from_seed(seed)),
        comment,
    )
}

/// An HKDF output length of 32 bytes.
struct Seed;

impl hkdf::KeyType for Seed {
    fn len(&self) -> usize {
        32
    }
}

impl SshCa {
    /// Loads `path`, or creates it with a new key.
    pub fn load_or_create(path: &Path) -> Result<SshCa, KeyError> {
        let invalid = |reason: &str| KeyError::Invalid {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(pem) = files::read_secret(path)? {
            let key = PrivateKey::from_openssh(&pem).map_err(|_| {
                invalid(
                    "not an OpenSSH private key; restore it from a backup or another control \
                     plane of this installation",
                )
            })?;
            return SshCa::from_key(key).ok_or_else(|| {
                invalid("not an unencrypted Ed25519 key; restore it from a backup")
            });
        }
        let ca = SshCa::generate().map_err(|_| KeyError::Random)?;
        let pem = ca
            .key
            .to_openssh(LineEnding::LF)
            .map_err(|_| KeyError::Random)?;
        files::write_new(path, pem.as_bytes(), files::SECRET_MODE)?;
        tracing::info!(path = %path.display(), "created a new SSH certificate authority key");
        Ok(ca)
    }

    /// A CA with a new random key (tests, and the first start).
    pub fn generate() -> Result<SshCa, SshCaError> {
        let seed = random::<32>()?;
        let key = ed25519_key(&seed, CA_COMMENT).map_err(key_error("make the CA key"))?;
        Ok(SshCa { key, seed })
    }

    fn from_key(key: PrivateKey) -> Option<SshCa> {
        let seed = key.key_data().ed25519()?.private.to_bytes();
        Some(SshCa { key, seed })
    }

    /// The CA's public key line (`ssh-ed25519 AAAA… sdm-ssh-ca`), for `TrustedUserCAKeys`.
    pub fn public_key_line(&self) -> String {
        // Encoding a key we hold cannot fail; an empty line would be refused by any reader.
        self.key.public_key().to_openssh().unwrap_or_default()
    }

    /// The gateway host key of the ssh resource `resource_id`: the same for every control
    /// plane of the installation, and across restarts.
    pub fn host_key(&self, resource_id: Uuid) -> Result<PrivateKey, SshCaError> {
        let mut seed = [0u8; 32];
        hkdf::Salt::new(hkdf::HKDF_SHA256, HOST_KEY_SALT)
            .extract(&self.seed)
            .expand(&[resource_id.as_bytes()], Seed)
            .and_then(|okm| okm.fill(&mut seed))
            .map_err(|_| SshCaError::Random)?;
        ed25519_key(&seed, &format!("sdm-resource-{resource_id}"))
            .map_err(key_error("derive a host key"))
    }

    /// A fresh Ed25519 key and a user certificate for it, signed by this CA: principal
    /// `request.username`, valid from a minute before `now` until the lease expires.
    pub fn sign_login(&self, request: &LoginCertificate<'_>) -> Result<SignedLogin, SshCaError> {
        let key = ed25519_key(&random::<32>()?, "sdm").map_err(key_error("make a login key"))?;
        let mut builder = Builder::new(
            random::<32>()?.to_vec(),
            key.public_key().key_data().clone(),
            request.now.saturating_sub(CLOCK_SKEW_SECS),
            request.expires_at.max(request.now),
        )
        .map_err(key_error("set a certificate's validity"))?;
        builder
            .serial(u64::from_be_bytes(random::<8>()?))
            .and_then(|b| b.cert_type(CertType::User))
            .and_then(|b| b.key_id(request.key_id.clone()))
            .and_then(|b| b.valid_principal(request.username))
            .map_err(key_error("fill in a certificate"))?;
        for extension in EXTENSIONS {
            builder
                .extension(*extension, "")
                .map_err(key_error("fill in a certificate"))?;
        }
        let certificate = builder
            .sign(&self.key)
            .map_err(key_error("sign a certificate"))?;
        Ok(SignedLogin {
            private_key: key
                .to_openssh(LineEnding::LF)
                .map_err(key_error("encode a login key"))?
                .to_string(),
            certificate: certificate
                .to_openssh()
                .map_err(key_error("encode a certificate"))?,
        })
    }

    /// Whether `certificate` was signed by this CA and holds at `at` (tests and checks).
    pub fn validates(&self, certificate: &Certificate, at: u64) -> bool {
        let fingerprint = self.key.public_key().fingerprint(HashAlg::Sha256);
        certificate.validate_at(at, [&fingerprint]).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(key_id: &str) -> LoginCertificate<'_> {
        LoginCertificate {
            username: "deploy",
            key_id: key_id.into(),
            now: 1_800_000_000,
            expires_at: 1_800_000_600,
        }
    }

    #[test]
    fn created_once_then_loaded_with_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let a = SshCa::load_or_create(&path).unwrap();
        let b = SshCa::load_or_create(&path).unwrap();
        assert_eq!(a.public_key_line(), b.public_key_line());
        assert!(a.public_key_line().starts_with("ssh-ed25519 AAAA"));
        assert!(a.public_key_line().ends_with(" sdm-ssh-ca"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_file(&path).unwrap();
        files::write_new(&path, b"garbage", files::SECRET_MODE).unwrap();
        assert!(
            SshCa::load_or_create(&path)
                .unwrap_err()
                .to_string()
                .contains("not an OpenSSH private key")
        );
    }

    #[test]
    fn login_certificates_verify_against_the_ca_and_say_what_they_allow() {
        let ca = SshCa::generate().unwrap();
        let signed = ca
            .sign_login(&request("sdm:account=etl:resource=web:lease=1"))
            .unwrap();
        let certificate = Certificate::from_openssh(&signed.certificate).unwrap();
        let key = PrivateKey::from_openssh(&signed.private_key).unwrap();
        // The certificate is for the fresh key, and signed by the CA.
        assert_eq!(certificate.public_key(), key.public_key().key_data());
        assert!(ca.validates(&certificate, 1_800_000_000));
        assert!(ca.validates(&certificate, 1_800_000_000 - 59));
        assert!(!ca.validates(&certificate, 1_800_000_000 - 61));
        assert!(!ca.validates(&certificate, 1_800_000_601));
        assert!(
            !SshCa::generate()
                .unwrap()
                .validates(&certificate, 1_800_000_000)
        );
        assert_eq!(certificate.cert_type(), CertType::User);
        assert_eq!(certificate.valid_principals(), ["deploy".to_string()]);
        assert_eq!(certificate.key_id(), "sdm:account=etl:resource=web:lease=1");
        assert_eq!(certificate.valid_after(), 1_800_000_000 - 60);
        assert_eq!(certificate.valid_before(), 1_800_000_600);
        assert!(certificate.critical_options().is_empty());
        let extensions: Vec<&str> = certificate
            .extensions()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(extensions, EXTENSIONS);
        assert!(!extensions.contains(&"permit-agent-forwarding"));
        assert!(!extensions.contains(&"permit-X11-forwarding"));
        assert!(!format!("{signed:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn every_login_gets_its_own_key() {
        let ca = SshCa::generate().unwrap();
        let a = ca.sign_login(&request("a")).unwrap();
        let b = ca.sign_login(&request("b")).unwrap();
        assert_ne!(a.private_key, b.private_key);
        assert_ne!(a.certificate, b.certificate);
    }

    #[test]
    fn host_keys_are_derived_per_resource_and_stable_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let first = SshCa::load_or_create(&path).unwrap();
        let again = SshCa::load_or_create(&path).unwrap();
        let (web, db) = (Uuid::new_v4(), Uuid::new_v4());
        let key = first.host_key(web).unwrap();
        assert_eq!(
            key.public_key().key_data(),
            again.host_key(web).unwrap().public_key().key_data()
        );
        assert_ne!(
            key.public_key().key_data(),
            first.host_key(db).unwrap().public_key().key_data()
        );
        // Another installation (another CA) derives other keys.
        assert_ne!(
            key.public_key().key_data(),
            SshCa::generate()
                .unwrap()
                .host_key(web)
                .unwrap()
                .public_key()
                .key_data()
        );
        // Neither the CA's key nor its public half.
        assert_ne!(
            key.public_key().key_data(),
            first.key.public_key().key_data()
        );
    }
}
