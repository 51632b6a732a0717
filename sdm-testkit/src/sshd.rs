//! A throwaway OpenSSH server: the system's `sshd` on a free loopback port, with its own
//! configuration, host key and log in a temporary directory. It lets in the OS user the tests
//! run as, by public key (the keys it is given) or by a certificate from a CA it is told to
//! trust, exactly as a production server configured for sdm would.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TestkitError;
use crate::process::{pid_t, signal, wait_within};

/// How long sshd has to answer on its port.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What the server trusts.
#[derive(Debug, Clone, Default)]
pub struct SshdConfig {
    /// Public key lines (`ssh-ed25519 AAAA…`) let in as the tests' OS user.
    pub authorized_keys: Vec<String>,
    /// CA public key lines whose user certificates are let in (`TrustedUserCAKeys`).
    pub trusted_user_ca_keys: Vec<String>,
    /// Lines added to `sshd_config` as given (e.g. `AllowTcpForwarding no`).
    pub extra: Vec<String>,
}

/// A running `sshd`; killed when dropped.
#[derive(Debug)]
pub struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    user: String,
    host_key: String,
}

/// A key pair made by `ssh-keygen`.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// The private key, OpenSSH PEM.
    pub private: String,
    /// The public key line.
    pub public: String,
}

/// Makes a key pair with the system's `ssh-keygen` (`kind`: `ed25519`, `ecdsa`, `rsa`), in a
/// temporary directory removed afterwards.
pub fn keygen(kind: &str) -> Result<KeyPair, TestkitError> {
    let dir = tempdir()?;
    let path = dir.path().join("key");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", "sdm-test", "-f"])
        .arg(&path))?;
    Ok(KeyPair {
        private: read(&path)?,
        public: read(&path.with_extension("pub"))?.trim().to_string(),
    })
}

impl Sshd {
    /// Starts `sshd` on a free port and waits until it greets.
    pub fn start(config: &SshdConfig) -> Result<Sshd, TestkitError> {
        let dir = tempdir()?;
        // sshd refuses group- or world-readable key files and directories it reads from.
        set_mode(dir.path(), 0o755)?;
        let host_key = dir.path().join("host_key");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key))?;
        let authorized = dir.path().join("authorized_keys");
        write(&authorized, &lines(&config.authorized_keys))?;
        let cas = dir.path().join("trusted_user_ca_keys");
        write(&cas, &lines(&config.trusted_user_ca_keys))?;
        if is_root() {
            // Privilege separation needs its empty directory.
            fs::create_dir_all("/run/sshd")
                .map_err(|e| TestkitError::io("creating /run/sshd", e))?;
        }
        let port = crate::free_port();
        let mut text = format!(
            "ListenAddress 127.0.0.1:{port}\nHostKey {}\nAuthorizedKeysFile {}\nTrustedUserCAKeys {}\n\
             PidFile none\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             AllowTcpForwarding yes\nAllowAgentForwarding yes\nX11Forwarding no\n\
             Subsystem sftp internal-sftp\nLogLevel VERBOSE\n",
            host_key.display(),
            authorized.display(),
            cas.display()
        );
        for line in &config.extra {
            text.push_str(line);
            text.push('\n');
        }
        let config_path = dir.path().join("sshd_config");
        write(&config_path, &text)?;
        let log = dir.path().join("sshd.log");
        let sshd = sshd_binary();
        run(Command::new(&sshd).arg("-t").arg("-f").arg(&config_path))?;
        let child = Command::new(&sshd)
            .arg("-D")
            .arg("-f")
            .arg(&config_path)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| TestkitError::io(format!("starting {}", sshd.display()), e))?;
        let mut server = Sshd {
            child,
            port,
            // The key without its comment, as servers present it.
            host_key: read(&host_key.with_extension("pub"))?
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
            dir,
            user: current_user()?,
        };
        server.await_greeting()?;
        Ok(server)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The OS user it lets in.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Its host key, as a public key line.
    pub fn host_key(&self) -> &str {
        &self.host_key
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    fn await_greeting(&mut self) -> Result<(), TestkitError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut banner = String::new();
                if BufReader::new(stream).read_line(&mut banner).is_ok()
                    && banner.starts_with("SSH-2.0-")
                {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(TestkitError::CommandFailed {
                    program: "sshd -D".into(),
                    status: status.to_string(),
                    stderr: self.log(),
                });
            }
            if Instant::now() > deadline {
                return Err(TestkitError::CommandTimeout {
                    program: "sshd -D".into(),
                    after: START_TIMEOUT,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        signal(pid_t(self.child.id()), libc::SIGTERM);
        if !wait_within(&mut self.child, Duration::from_secs(5)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn sshd_binary() -> PathBuf {
    // sshd insists on being started by its absolute path.
    ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/sshd"))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn current_user() -> Result<String, TestkitError> {
    let out = Command::new("id")
        .arg("-un")
        .output()
        .map_err(|e| TestkitError::io("running id -un", e))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn lines(items: &[String]) -> String {
    items.iter().map(|l| format!("{l}\n")).collect()
}

fn tempdir() -> Result<tempfile::TempDir, TestkitError> {
    tempfile::Builder::new()
        .prefix("sdm-sshd-")
        .tempdir()
        .map_err(|e| TestkitError::io("creating a temporary directory", e))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), TestkitError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| TestkitError::io(format!("chmod {}", path.display()), e))
}

fn read(path: &Path) -> Result<String, TestkitError> {
    let mut text = String::new();
    fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| TestkitError::io(format!("reading {}", path.display()), e))?;
    Ok(text)
}

fn write(path: &Path, text: &str) -> Result<(), TestkitError> {
    fs::write(path, text).map_err(|e| TestkitError::io(format!("writing {}", path.display()), e))
}

fn run(command: &mut Command) -> Result<(), TestkitError> {
    let program = format!("{:?}", command.get_program());
    let out = command
        .output()
        .map_err(|e| TestkitError::io(format!("running {program}"), e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(TestkitError::CommandFailed {
        program,
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
