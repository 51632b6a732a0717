//! The installation's keys, kept in the data directory:
//!
//! | file         | mode | what |
//! |--------------|------|------|
//! | `ca.pem`     | 0644 | the CA certificate clients pin (by SHA-256 of its DER) |
//! | `ca.key`     | 0600 | the CA's private key (PKCS#8 PEM, ECDSA P-256) |
//! | `lease.key`  | 0600 | the Ed25519 key that signs leases (PKCS#8 PEM) |
//! | `secret.key` | 0600 | the AES-256-GCM key that seals stored credentials (base64), unless `SDM_SECRET_KEY` is set |
//! | `ssh_ca.key` | 0600 | the Ed25519 SSH CA that signs ssh login certificates and derives gateway host keys (OpenSSH PEM) |
//!
//! The TLS leaf certificate is not stored: it is issued by the CA at every start.

use std::path::{Path, PathBuf};

pub mod ca;
pub(crate) mod files;
pub mod lease_key;
pub mod secret_box;
pub mod ssh_ca;
#[cfg(test)]
mod tls;

pub use ca::CertificateAuthority;
pub use secret_box::{SecretBox, SecretError};
pub use ssh_ca::SshCa;

/// Environment variable that supplies the credential-encryption key (base64, 32 bytes) instead
/// of `secret.key`.
pub const SECRET_KEY_ENV: &str = "SDM_SECRET_KEY";

/// A key could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A file could not be read or written.
    #[error("cannot {what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A secret file is readable by other users.
    #[error(
        "{} is readable by other users (mode {mode:04o}); the key may have leaked. \
         Run `chmod 600 {}` if you are sure it has not, then start again",
        path.display(),
        path.display()
    )]
    Insecure {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// The data directory belongs to another user, who could replace the keys in it.
    #[error(
        "the data directory {} belongs to another user (uid {owner}, this process runs as uid \
         {me}); run as its owner, `chown` it to uid {me}, or give a --data-dir of your own",
        path.display()
    )]
    ForeignDir {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        me: u32,
    },
    /// A file does not hold what it should.
    #[error("{} is not usable: {reason}", path.display())]
    Invalid {
        /// The file (or the environment variable's name).
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The data directory is half set up.
    #[error("{0}")]
    Inconsistent(String),
    /// Certificate generation failed.
    #[error("cannot {what}")]
    Certificate {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: rcgen::Error,
    },
    /// TLS configuration failed.
    #[error("cannot set up TLS")]
    Tls(#[source] rustls::Error),
    /// The system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// Everything secret the control plane holds, loaded or created at start.
pub struct Keys {
    /// Issues TLS certificates; clients pin it.
    pub ca: CertificateAuthority,
    /// Signs leases.
    pub lease_signer: sdm_proto::lease::LeaseSigner,
    /// Seals stored credentials.
    pub secret_box: SecretBox,
    /// Signs ssh login certificates; gateway host keys derive from it.
    pub ssh_ca: SshCa,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("ca", &self.ca)
            .field("lease_signer", &self.lease_signer)
            .field("secret_box", &self.secret_box)
            .field("ssh_ca", &self.ssh_ca)
            .finish()
    }
}

impl Keys {
    /// Loads the keys from `data_dir`, creating the missing ones.
    ///
    /// `existing_state` says whether the directory already holds a database: the CA and the
    /// credential-encryption key are then never created anew (every token issued so far pins the
    /// CA; stored credentials are sealed with the key). `secret_key_env` is the value of
    /// [`SECRET_KEY_ENV`], if set.
    pub fn load_or_create(
        data_dir: &Path,
        existing_state: bool,
        secret_key_env: Option<&str>,
    ) -> Result<Keys, KeyError> {
        files::ensure_private_dir(data_dir)?;
        let ca = CertificateAuthority::load_or_create(data_dir, existing_state)?;
        let lease_signer = lease_key::load_or_create(&data_dir.join(lease_key::FILE))?;
        let ssh_ca = SshCa::load_or_create(&data_dir.join(ssh_ca::FILE))?;
        let secret_box = match secret_key_env {
            Some(text) => SecretBox::from_base64(text).map_err(|reason| KeyError::Invalid {
                path: PathBuf::from(SECRET_KEY_ENV),
                reason,
            })?,
            None => {
                let path = data_dir.join(secret_box::FILE);
                match SecretBox::load(&path)? {
                    Some(secret_box) => secret_box,
                    None if existing_state => {
                        return Err(KeyError::Inconsistent(format!(
                            "{} is missing but the database holds credentials sealed with it; \
                             restore it from a backup (or copy it from another control plane \
                             of this installation), or set {SECRET_KEY_ENV} to its contents",
                            path.display()
                        )));
                    }
                    None => SecretBox::create(&path)?,
                }
            }
        };
        Ok(Keys {
            ca,
            lease_signer,
            secret_box,
            ssh_ca,
        })
    }
}
