//! The server's container image (packaging/docker/sdm-server.Dockerfile), on a machine with no
//! container engine: the image's own command line, environment and health check run here as
//! they would in the container (its binary copied to a root of its own, its volume a temp dir,
//! its ports free loopback ports, as a user other than root when the tests run as root), and
//! the rest of the file is checked for what the image promises (docs/OPERATIONS.md,
//! "Containers").

mod support;

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sdm_testkit::{Dockerfile, free_port};

/// Bound on the server's start, as the image's --start-period bounds it.
const START: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The image's paths and ports, as this test maps them.
struct Mapping(Vec<(String, String)>);

impl Mapping {
    fn apply(&self, text: &str) -> String {
        self.0
            .iter()
            .fold(text.to_owned(), |text, (from, to)| text.replace(from, to))
    }

    fn all(&self, words: &[String]) -> Vec<String> {
        words.iter().map(|w| self.apply(w)).collect()
    }
}

/// A command as the container runs it: only the image's environment, as its user.
fn in_container(words: &[String], env: &[(String, String)], home: &Path) -> Command {
    let mut command = Command::new(&words[0]);
    command
        .args(&words[1..])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    if let Ok(Some(user)) = sdm_testkit::other_os_user() {
        // std drops root's supplementary groups when it changes the uid.
        command.uid(user.uid).gid(user.gid);
    }
    command
}

#[test]
fn the_image_runs_its_server_as_non_root_and_its_health_check_follows_readiness() {
    let dockerfile = Dockerfile::read(&repo().join("packaging/docker/sdm-server.Dockerfile"))
        .unwrap_or_else(|e| panic!("{e}"));
    let image = dockerfile.image();

    // What the file promises: a non-root numeric user, the one binary built in the build stage,
    // a volume for the state, a health check through the diagnostics listener.
    let user = image.user().expect("the image names no USER");
    let uid: u32 = user.split(':').next().unwrap().parse().unwrap();
    assert_ne!(uid, 0, "the image runs as root");
    let build = dockerfile.stage("build").expect("no build stage");
    assert!(
        build.all("RUN").any(
            |run| run.contains("cargo build --release --locked -p sdm-server --bin sdm-server")
        ),
        "the build stage does not build the sdm-server binary"
    );
    let entrypoint = image.exec_form("ENTRYPOINT").unwrap();
    assert_eq!(entrypoint, ["/usr/local/bin/sdm-server"]);
    assert!(
        image
            .all("COPY")
            .any(|copy| copy.starts_with("--from=build") && copy.ends_with(&entrypoint[0])),
        "the entrypoint is not copied from the build stage"
    );
    assert_eq!(image.all("VOLUME").collect::<Vec<_>>(), ["/var/lib/sdm"]);
    let check = image.healthcheck().expect("no HEALTHCHECK in exec form");
    assert_eq!(
        check.command[..2],
        [entrypoint[0].clone(), "probe".to_owned()]
    );
    let ignored = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    assert!(
        ignored.lines().any(|l| l.trim() == "target/"),
        "target/ goes into the build context"
    );

    // The image's root: its binary, its volume (0700, its user's, as the build stage makes it).
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = root.path().join("usr/local/bin/sdm-server");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_sdm-server"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let volume = root.path().join("var/lib/sdm");
    std::fs::create_dir_all(&volume).unwrap();
    std::fs::set_permissions(&volume, std::fs::Permissions::from_mode(0o700)).unwrap();
    let runs_as = sdm_testkit::other_os_user().unwrap();
    if let Some(user) = runs_as {
        std::os::unix::fs::chown(&volume, Some(user.uid), Some(user.gid)).unwrap();
    }
    let home = root.path().join("home/nonroot");
    std::fs::create_dir_all(&home).unwrap();
    let diag = free_port();
    let mapping = Mapping(vec![
        (
            "/usr/local/bin/sdm-server".into(),
            bin.display().to_string(),
        ),
        ("/var/lib/sdm".into(), volume.display().to_string()),
        // As `docker run -e SDM_LISTEN=…` would: loopback, free ports.
        ("0.0.0.0:8443".into(), format!("127.0.0.1:{}", free_port())),
        ("0.0.0.0:8444".into(), format!("127.0.0.1:{}", free_port())),
        ("127.0.0.1:9090".into(), format!("127.0.0.1:{diag}")),
    ]);
    let env: Vec<(String, String)> = image
        .env()
        .into_iter()
        .map(|(k, v)| (k, mapping.apply(&v)))
        .collect();
    let health = mapping.all(&check.command);

    let mut server = in_container(&mapping.all(&image.command_line()), &env, &home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Healthy once ready, within the start period; the check's own answer says so.
    let deadline = Instant::now() + START;
    let healthy = loop {
        let out = in_container(&health, &env, &home).output().unwrap();
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        if let Ok(Some(status)) = server.try_wait() {
            let mut stderr = String::new();
            server
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            panic!("the server exited ({status}):\n{stderr}");
        }
        assert!(Instant::now() < deadline, "never healthy: {out:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(healthy.trim(), "ok");

    // The first admin token is on the volume (0600, the image user's), and works.
    let token_file = volume.join("first-admin-token");
    let meta = std::fs::metadata(&token_file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    if let Some(user) = runs_as {
        assert_eq!(
            meta.uid(),
            user.uid,
            "the token file is not the image user's"
        );
    }
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(token.starts_with("sdm_adm_"), "{token}");

    // `docker stop`: SIGTERM, a clean exit, and the health check fails from then on.
    let pid = i32::try_from(server.id()).unwrap();
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + START;
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop at SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    server
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status}:\n{stderr}");
    // The log is JSON lines (SDM_LOG_FORMAT), and the token is in neither stream.
    assert!(stdout.is_empty(), "stdout: {stdout}");
    assert!(!stderr.contains(token.trim()), "the token is in the log");
    for line in stderr.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }
    let out = in_container(&health, &env, &home).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot probe"),
        "{out:?}"
    );
}
