//! How a gateway speaks SSH for one ssh resource ([`SshUpstream`]): the per-resource host key
//! it presents, the upstream host key it accepts, and the key (or, with sdm's SSH CA, the
//! per-lease key and certificate) it logs in with. Also the checks of the keys an admin gives.

use sdm_proto::gateway::{Denied, GatewayUpstream, SshUpstream};
use sdm_proto::{ErrorKind, Lease};
use ssh_key::{LineEnding, PrivateKey, PublicKey};
use uuid::Uuid;

use crate::keys::SshCa;
use crate::keys::ssh_ca::LoginCertificate;
use crate::store::ResourceRecord;

fn internal(message: String) -> Denied {
    Denied {
        kind: ErrorKind::Internal,
        message,
    }
}

/// What a gateway needs for `resource` whatever the lease: everything but a CA-mode login,
/// whose key and certificate [`sign_for_lease`] adds. `private_key` is the opened stored key
/// (`None` in CA mode).
pub(crate) fn settings(
    ssh_ca: &SshCa,
    resource: &ResourceRecord,
    private_key: Option<String>,
) -> Result<SshUpstream, Denied> {
    let host_key = ssh_ca
        .host_key(resource.id)
        .and_then(|key| {
            key.to_openssh(LineEnding::LF)
                .map(|pem| pem.to_string())
                .map_err(|source| crate::keys::ssh_ca::SshCaError::Key {
                    what: "encode a host key",
                    source,
                })
        })
        .map_err(|e| {
            tracing::error!(resource = %resource.name, error = %e, "cannot derive a gateway host key");
            internal(format!(
                "the control plane cannot make the gateway host key of resource {}; see its log",
                resource.name
            ))
        })?;
    let private_key = match (resource.ssh_certificate_authority, private_key) {
        // Filled in per lease, after any cache: see `sign_for_lease`.
        (true, _) => String::new(),
        (false, Some(key)) => key,
        (false, None) => {
            return Err(internal(format!(
                "ssh resource {} has neither a stored private key nor sdm's SSH CA to log in \
                 with; an admin must set one (`sdm admin servers update`)",
                resource.name
            )));
        }
    };
    Ok(SshUpstream {
        host_key,
        known_host_keys: resource.ssh_host_key.iter().cloned().collect(),
        private_key,
        certificate: None,
        certificate_valid_before: None,
        record_sessions: resource.ssh_record_sessions,
    })
}

/// `upstream` for `lease`: a CA-mode ssh login gets a fresh key and a certificate valid until
/// the lease expires. Called after the answer cache, so a remembered answer never carries
/// another lease's certificate.
pub(crate) fn sign_for_lease(
    ssh_ca: &SshCa,
    lease: &Lease,
    mut upstream: GatewayUpstream,
) -> Result<GatewayUpstream, Denied> {
    let Some(ssh) = upstream.ssh.as_mut() else {
        return Ok(upstream);
    };
    if !ssh.private_key.is_empty() {
        return Ok(upstream);
    }
    let username = upstream
        .credentials
        .as_ref()
        .map(|c| c.username.as_str())
        .unwrap_or_default();
    let signed = ssh_ca
        .sign_login(&LoginCertificate {
            username,
            key_id: format!(
                "sdm:account={}:resource={}:lease={}",
                upstream.account_name, upstream.resource_name, lease.id
            ),
            now: u64::try_from(sdm_proto::unix_now()).unwrap_or_default(),
            expires_at: u64::try_from(lease.expires_at).unwrap_or_default(),
        })
        .map_err(|e| {
            tracing::error!(resource = %upstream.resource_name, error = %e, "cannot sign an ssh login certificate");
            internal(format!(
                "the control plane cannot sign a login certificate for resource {}; see its log",
                upstream.resource_name
            ))
        })?;
    ssh.private_key = signed.private_key;
    ssh.certificate = Some(signed.certificate);
    ssh.certificate_valid_before = Some(lease.expires_at);
    Ok(upstream)
}

/// The public line of the host key gateways present for resource `id`, for clients to pin.
pub(crate) fn host_key_line(ssh_ca: &SshCa, id: Uuid) -> Option<String> {
    let key = ssh_ca.host_key(id).ok()?;
    let mut public = key.public_key().clone();
    public.set_comment("");
    public.to_openssh().ok()
}

/// `line` as an OpenSSH public key line without its comment (`ssh-ed25519 AAAA…`), the form
/// host keys are stored and compared in; or why it is not one.
pub fn host_key(line: &str) -> Result<String, String> {
    let mut key = PublicKey::from_openssh(line.trim()).map_err(|_| {
        "not an OpenSSH public key line (like `ssh-ed25519 AAAA…`, as in a known_hosts file \
         without the host name, or /etc/ssh/ssh_host_ed25519_key.pub)"
            .to_string()
    })?;
    key.set_comment("");
    key.to_openssh()
        .map_err(|_| "this public key cannot be encoded again".to_string())
}

/// Checks an OpenSSH private key an admin gives the gateway to log in with.
pub fn private_key(pem: &str) -> Result<(), String> {
    let key = PrivateKey::from_openssh(pem.trim()).map_err(|_| {
        "not an OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`); convert other \
         formats with `ssh-keygen -p -f FILE`"
            .to_string()
    })?;
    if key.is_encrypted() {
        return Err(
            "the private key is encrypted with a passphrase; the gateway cannot type \
                    one: remove it with `ssh-keygen -p -N '' -f FILE` on a copy"
                .into(),
        );
    }
    use ssh_key::Algorithm;
    match key.algorithm() {
        Algorithm::Ed25519 | Algorithm::Ecdsa { .. } | Algorithm::Rsa { .. } => Ok(()),
        other => Err(format!(
            "{} keys are not supported; use an Ed25519, ECDSA or RSA key",
            other.as_str()
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An unencrypted Ed25519 OpenSSH private key, made fresh.
    pub(crate) fn ed25519_pem() -> String {
        SshCa::generate()
            .unwrap()
            .host_key(Uuid::new_v4())
            .unwrap()
            .to_openssh(LineEnding::LF)
            .unwrap()
            .to_string()
    }

    #[test]
    fn private_keys_are_checked() {
        private_key(&ed25519_pem()).unwrap();
        // `ssh-keygen -t ecdsa -N ''`.
        private_key(
            "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAaAAAABNlY2RzYS
1zaGEyLW5pc3RwMjU2AAAACG5pc3RwMjU2AAAAQQSiemNGHw5nhEBSud6DTTHp9M4r69iO
Wgh7GOzP3LLEjzk4QMpwFtwSUA74m1yeQjdCfVgKDYzKUyhzGwa6G6RMAAAAoL+Rx0+/kc
dPAAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBKJ6Y0YfDmeEQFK5
3oNNMen0zivr2I5aCHsY7M/cssSPOThAynAW3BJQDvibXJ5CN0J9WAoNjMpTKHMbBrobpE
wAAAAhALQfuzkY2DhCqF3RgzQIoK+G2Md68ensgbznMYr9K3GFAAAAAAECAwQFBgc=
-----END OPENSSH PRIVATE KEY-----
",
        )
        .unwrap();
        assert!(
            private_key("hunter2")
                .unwrap_err()
                .contains("not an OpenSSH private key")
        );
        // `ssh-keygen -t ed25519 -N secret`: encrypted with a passphrase.
        let encrypted = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABApjdpAwA
3/ocCZxEUb4WjNAAAAEAAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIHoGvZIpxzLq37/p
vplqmvkR9cw0ptZaBGyt4yrMzg3lAAAAkFI1UqqnV1z0qLfRcp8RYZFlnJ59Z7xORrrx/K
uxus1URqkHwKocp/mX1k+GKu465pdjDzhozMCbT8VUM20Kf8sXQARIODVTNl64t0hg2JsO
V+DEI5SQaDfqcByT/NCrSYciYKht9N4tgTavTttSKpdch33tTlqTyL5GzGvRNaoA5MvcZR
LUqqFDjRQugoINpw==
-----END OPENSSH PRIVATE KEY-----
";
        let err = private_key(encrypted).unwrap_err();
        assert!(err.contains("encrypted"), "{err}");
    }

    #[test]
    fn host_keys_lose_their_comment() {
        let line = host_key_line(&SshCa::generate().unwrap(), Uuid::new_v4()).unwrap();
        assert!(line.starts_with("ssh-ed25519 AAAA") && !line.contains("sdm-resource"));
        assert_eq!(host_key(&format!("  {line} root@web \n")).unwrap(), line);
        assert!(
            host_key("web ssh-ed25519 AAAA")
                .unwrap_err()
                .contains("public key line")
        );
    }
}
