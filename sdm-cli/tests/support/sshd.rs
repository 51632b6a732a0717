//! A throwaway OpenSSH server: `/usr/sbin/sshd -D -e` on a free 127.0.0.1 port with its own
//! host key and config in a temp dir, accepting only a throwaway client key for the current
//! user. Killed when dropped.

use std::fs;
use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, signal};

const SSHD: &str = "/usr/sbin/sshd";
/// Ports tried when another process takes the free port first.
const PORT_TRIES: usize = 5;
/// Bound on sshd answering with its banner.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Sshd {
    child: Child,
    port: u16,
    user: String,
    client_key: PathBuf,
    dir: tempfile::TempDir,
}

impl Sshd {
    pub fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "these tests need OpenSSH's server ({SSHD}; scripts/install-deps.sh installs it)"
        );
        let dir = tempfile::Builder::new()
            .prefix("sdm-sshd")
            .tempdir()
            .unwrap();
        let host_key = dir.path().join("host_key");
        let client_key = dir.path().join("client_key");
        keygen(&host_key);
        keygen(&client_key);
        let authorized = dir.path().join("authorized_keys");
        fs::copy(client_key.with_extension("pub"), &authorized).unwrap();
        fs::set_permissions(&authorized, fs::Permissions::from_mode(0o600)).unwrap();
        let user = current_user();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Debian's sshd refuses to start without its privilege separation directory.
            fs::create_dir_all("/run/sshd").unwrap();
        }
        let mut last_error = String::new();
        for _ in 0..PORT_TRIES {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            fs::write(&config, config_text(port, &host_key, &authorized)).unwrap();
            let log = dir.path().join("sshd.log");
            let mut child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            if wait_banner(port, &mut child) {
                return Sshd {
                    child,
                    port,
                    user,
                    client_key,
                    dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_error = fs::read_to_string(&log).unwrap_or_default();
            if !last_error.contains("Address already in use") {
                break;
            }
        }
        panic!("sshd did not start: {last_error}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ssh -p PORT … USER@127.0.0.1 COMMAND` with the throwaway key; its output.
    pub fn ssh(&self, port: u16, command: &str) -> Output {
        Command::new("ssh")
            .args(["-F", "/dev/null", "-p", &port.to_string(), "-i"])
            .arg(&self.client_key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "ConnectTimeout=20",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(format!("{}@127.0.0.1", self.user))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// sshd's log so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        signal(i32::try_from(self.child.id()).unwrap_or(0), libc::SIGTERM);
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "sdm-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen (openssh-client) is needed");
    assert!(status.success(), "ssh-keygen failed");
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn config_text(port: u16, host_key: &Path, authorized: &Path) -> String {
    format!(
        "Port {port}
ListenAddress 127.0.0.1
HostKey {}
PidFile none
AuthorizedKeysFile {}
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
PrintMotd no
LogLevel VERBOSE
",
        host_key.display(),
        authorized.display()
    )
}

/// Waits until sshd on `port` sends its `SSH-` banner; false when it exits first or is late.
fn wait_banner(port: u16, child: &mut Child) -> bool {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut pause = Duration::from_millis(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut banner = [0u8; 4];
            if s.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                return true;
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
    false
}
