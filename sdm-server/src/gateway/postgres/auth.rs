//! Logging in to PostgreSQL with stored credentials: SCRAM-SHA-256, MD5, cleartext password and
//! trust. The client on the other side of the tunnel never sees the password.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest, Md5};
use ring::{hmac, pbkdf2};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::message::{self, BackendMessage, MAX_AUTH_MESSAGE};
use crate::gateway::UpstreamCredentials;

/// Why the upstream login failed.
#[derive(Debug)]
pub(crate) enum AuthError {
    /// The server said no (an `ErrorResponse`): its fields.
    Rejected(Vec<(u8, String)>),
    /// Something else: a method we do not speak, a protocol error, a dropped connection.
    Failed(String),
}

/// The result of a successful login: `AuthenticationOk` and whatever followed it in the same
/// reads, to be passed to the client as they are.
pub(crate) struct LoggedIn {
    pub(crate) forward: Vec<u8>,
}

const AUTH_OK: u32 = 0;
const AUTH_CLEARTEXT: u32 = 3;
const AUTH_MD5: u32 = 5;
const AUTH_SASL: u32 = 10;
const AUTH_SASL_CONTINUE: u32 = 11;
const AUTH_SASL_FINAL: u32 = 12;
const SCRAM: &str = "SCRAM-SHA-256";

/// Runs the authentication exchange after the startup message was sent.
pub(crate) async fn log_in<S>(
    upstream: &mut S,
    creds: &UpstreamCredentials,
) -> Result<LoggedIn, AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(1024);
    let mut scram: Option<ScramClient> = None;
    loop {
        let msg = read_message(upstream, &mut buf).await?;
        match msg.tag {
            b'R' => {
                let code = int_at(&msg.body, 0)?;
                let data = &msg.body[4..];
                match code {
                    AUTH_OK => {
                        if scram.is_some_and(|s| !s.verified) {
                            return Err(AuthError::Failed(
                                "the server accepted the login without proving it knows the password".into(),
                            ));
                        }
                        let mut forward = msg.raw;
                        forward.extend_from_slice(&buf);
                        return Ok(LoggedIn { forward });
                    }
                    AUTH_CLEARTEXT => {
                        let mut body = creds.password.as_bytes().to_vec();
                        body.push(0);
                        send(upstream, &message::message(b'p', &body)).await?;
                    }
                    AUTH_MD5 => {
                        let salt = data.get(..4).ok_or_else(|| failed("short MD5 salt"))?;
                        let mut body =
                            md5_password(&creds.username, &creds.password, salt).into_bytes();
                        body.push(0);
                        send(upstream, &message::message(b'p', &body)).await?;
                    }
                    AUTH_SASL => {
                        let offered = mechanisms(data);
                        if !offered.iter().any(|m| m == SCRAM) {
                            return Err(failed(&format!(
                                "the server offers SASL mechanisms {offered:?}; the gateway speaks {SCRAM}"
                            )));
                        }
                        let client = ScramClient::new(&creds.password)?;
                        let first = client.first_message();
                        let mut body = SCRAM.as_bytes().to_vec();
                        body.push(0);
                        body.extend_from_slice(&(first.len() as u32).to_be_bytes());
                        body.extend_from_slice(first.as_bytes());
                        send(upstream, &message::message(b'p', &body)).await?;
                        scram = Some(client);
                    }
                    AUTH_SASL_CONTINUE => {
                        let client = scram
                            .as_mut()
                            .ok_or_else(|| failed("SASL continue without SASL"))?;
                        let reply = client.final_message(data)?;
                        send(upstream, &message::message(b'p', reply.as_bytes())).await?;
                    }
                    AUTH_SASL_FINAL => {
                        let client = scram
                            .as_mut()
                            .ok_or_else(|| failed("SASL final without SASL"))?;
                        client.verify_server(data)?;
                    }
                    other => {
                        return Err(failed(&format!(
                            "the server asks for authentication method {other}, which the gateway does not speak \
                             (it speaks scram-sha-256, md5, password and trust)"
                        )));
                    }
                }
            }
            b'E' => return Err(AuthError::Rejected(message::error_fields(&msg.body))),
            b'N' | b'v' => {} // notices and protocol negotiation: nothing to do before AuthenticationOk
            other => {
                return Err(failed(&format!(
                    "unexpected message {:?} during login",
                    char::from(other)
                )));
            }
        }
    }
}

fn failed(why: &str) -> AuthError {
    AuthError::Failed(why.to_owned())
}

async fn send<S: AsyncWrite + Unpin>(upstream: &mut S, bytes: &[u8]) -> Result<(), AuthError> {
    upstream
        .write_all(bytes)
        .await
        .map_err(|e| AuthError::Failed(format!("the connection failed during login: {e}")))?;
    upstream
        .flush()
        .await
        .map_err(|e| AuthError::Failed(format!("the connection failed during login: {e}")))
}

async fn read_message<S: AsyncRead + Unpin>(
    upstream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<BackendMessage, AuthError> {
    loop {
        if let Some(m) = message::take_message(buf, MAX_AUTH_MESSAGE).map_err(|e| failed(&e))? {
            return Ok(m);
        }
        let mut chunk = [0u8; 4096];
        let n = upstream
            .read(&mut chunk)
            .await
            .map_err(|e| AuthError::Failed(format!("the connection failed during login: {e}")))?;
        if n == 0 {
            return Err(failed("the server closed the connection during login"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn int_at(body: &[u8], at: usize) -> Result<u32, AuthError> {
    let b = body
        .get(at..at + 4)
        .ok_or_else(|| failed("short authentication message"))?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn mechanisms(mut data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while let Some((name, rest)) = message::cstring(data) {
        if name.is_empty() {
            break;
        }
        out.push(name);
        data = rest;
    }
    out
}

/// `"md5" + hex(md5(hex(md5(password ‖ user)) ‖ salt))`
pub(crate) fn md5_password(user: &str, password: &str, salt: &[u8]) -> String {
    let inner = hex(&Md5::new()
        .chain_update(password)
        .chain_update(user)
        .finalize());
    let outer = hex(&Md5::new().chain_update(inner).chain_update(salt).finalize());
    format!("md5{outer}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The client side of SCRAM-SHA-256 (RFC 5802/7677) without channel binding, as libpq does
/// it: the user name is taken from the startup message, so `n=` is empty.
struct ScramClient {
    password: String,
    client_nonce: String,
    client_first_bare: String,
    server_signature: Option<[u8; 32]>,
    verified: bool,
}

impl ScramClient {
    fn new(password: &str) -> Result<ScramClient, AuthError> {
        let mut nonce = [0u8; 18];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| failed("no randomness for the SCRAM nonce"))?;
        let client_nonce = STANDARD.encode(nonce);
        Ok(ScramClient {
            password: password.to_owned(),
            client_first_bare: format!("n=,r={client_nonce}"),
            client_nonce,
            server_signature: None,
            verified: false,
        })
    }

    fn first_message(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Answers the server-first message with the client-final message (the proof).
    fn final_message(&mut self, server_first: &[u8]) -> Result<String, AuthError> {
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| failed("SCRAM message is not UTF-8"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in server_first.split(',') {
            match part.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v),
                Some(("s=", v)) => salt = STANDARD.decode(v).ok(),
                Some(("i=", v)) => iterations = v.parse::<u32>().ok(),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(failed("malformed SCRAM server-first message"));
        };
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(failed("the SCRAM server nonce does not extend ours"));
        }
        if !(1..=10_000_000).contains(&iterations) {
            return Err(failed("unreasonable SCRAM iteration count"));
        }
        let keys = salted_keys(&self.password, &salt, iterations);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let stored_key = ring::digest::digest(&ring::digest::SHA256, &keys.client_key);
        let signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = keys
            .client_key
            .iter()
            .zip(signature.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        let server_signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &keys.server_key),
            auth_message.as_bytes(),
        );
        let mut expected = [0u8; 32];
        expected.copy_from_slice(server_signature.as_ref());
        self.server_signature = Some(expected);
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)))
    }

    /// Checks the server's signature: the server knows the password too.
    fn verify_server(&mut self, server_final: &[u8]) -> Result<(), AuthError> {
        let text =
            std::str::from_utf8(server_final).map_err(|_| failed("SCRAM message is not UTF-8"))?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(failed(&format!("SCRAM error from the server: {error}")));
        }
        let claimed = text
            .split(',')
            .find_map(|p| p.strip_prefix("v="))
            .and_then(|v| STANDARD.decode(v).ok())
            .ok_or_else(|| failed("malformed SCRAM server-final message"))?;
        match self.server_signature {
            Some(expected) if claimed == expected => {
                self.verified = true;
                Ok(())
            }
            _ => Err(failed(
                "the server's SCRAM signature is wrong: it does not know the password",
            )),
        }
    }
}

#[derive(Clone, Copy)]
struct SaltedKeys {
    client_key: [u8; 32],
    server_key: [u8; 32],
}

/// PBKDF2 costs milliseconds by design; a role's salt and iteration count stay the same across
/// logins, so the derived keys are kept (by a hash of password, salt and count) and new
/// connections skip it.
fn salted_keys(password: &str, salt: &[u8], iterations: u32) -> SaltedKeys {
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], SaltedKeys>>> = OnceLock::new();
    const MAX_ENTRIES: usize = 1024;
    let mut id = Vec::with_capacity(password.len() + salt.len() + 4);
    id.extend_from_slice(&iterations.to_be_bytes());
    id.extend_from_slice(salt);
    id.extend_from_slice(password.as_bytes());
    let cache_key = sdm_proto::sha256(&id);
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Ok(map) = cache.lock()
        && let Some(keys) = map.get(&cache_key)
    {
        return *keys;
    }
    let mut salted = [0u8; 32];
    let rounds = std::num::NonZeroU32::new(iterations).unwrap_or(std::num::NonZeroU32::MIN);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        salt,
        password.as_bytes(),
        &mut salted,
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let mut client_key = [0u8; 32];
    client_key.copy_from_slice(hmac::sign(&key, b"Client Key").as_ref());
    let mut server_key = [0u8; 32];
    server_key.copy_from_slice(hmac::sign(&key, b"Server Key").as_ref());
    if let Ok(mut map) = cache.lock() {
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(
            cache_key,
            SaltedKeys {
                client_key,
                server_key,
            },
        );
    }
    SaltedKeys {
        client_key,
        server_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_postgres() {
        // SELECT 'md5' || md5(md5('secret' || 'alice') || 'salt') in PostgreSQL.
        let inner = hex(&Md5::digest(b"secretalice"));
        let expected = format!(
            "md5{}",
            hex(&Md5::digest(format!("{inner}salt").as_bytes()))
        );
        assert_eq!(md5_password("alice", "secret", b"salt"), expected);
        assert_eq!(md5_password("alice", "secret", b"salt").len(), 35);
    }

    #[test]
    fn scram_follows_rfc7677() {
        // The example exchange of RFC 7677 section 3 (user "user", password "pencil").
        let mut c = ScramClient::new("pencil").unwrap();
        c.client_nonce = "rOprNGfwEbeRWgbNEkqO".into();
        c.client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO".into();
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let reply = c.final_message(server_first).unwrap();
        assert_eq!(
            reply,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(c.verified);
        let mut d = ScramClient::new("pencil").unwrap();
        d.client_nonce = "rOprNGfwEbeRWgbNEkqO".into();
        d.client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO".into();
        d.final_message(server_first).unwrap();
        assert!(
            d.verify_server(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .is_err()
        );
        assert!(d.final_message(b"r=someone-else,s=AAAA,i=4096").is_err());
    }
}
