//! The server's container image (packaging/docker/sdm-server.Dockerfile), on a machine with no
//! container engine: the image's own command line, environment and health check run here as
//! they would in the container (its binary copied to a root of its own, its volume a temp dir,
//! its ports free loopback ports, as a user other than root when the tests run as root), and
//! the rest of the file is checked for what the image promises (docs/OPERATIONS.md,
//! "Containers").

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sdm_testkit::{Container, Dockerfile, free_port};

/// Bound on the server's start, as the image's --start-period bounds it.
const START: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
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

    // The image's root: its binary, its volume (0700, its user's, as the build stage makes it),
    // loopback ports for its listeners, as `docker run -e SDM_LISTEN=…` would give.
    let mut container = Container::new(image).unwrap();
    container
        .install(&entrypoint[0], Path::new(env!("CARGO_BIN_EXE_sdm-server")))
        .unwrap();
    let volume = container.volume("/var/lib/sdm").unwrap();
    container.map("0.0.0.0:8443", &format!("127.0.0.1:{}", free_port()));
    container.map("0.0.0.0:8444", &format!("127.0.0.1:{}", free_port()));
    container.map("127.0.0.1:9090", &format!("127.0.0.1:{}", free_port()));
    let runs_as = container.user();
    let health = || container.command(&check.command).unwrap().output().unwrap();

    let mut server = container
        .command(&image.command_line())
        .unwrap()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Healthy once ready, within the start period; the check's own answer says so.
    let deadline = Instant::now() + START;
    let healthy = loop {
        let out = health();
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

    // The first admin token is on the volume (0600, the image user's). It is written just
    // after the server is ready, so it may take a moment more.
    let token_file = volume.join("first-admin-token");
    let deadline = Instant::now() + START;
    while !std::fs::read_to_string(&token_file).is_ok_and(|t| t.ends_with('\n')) {
        assert!(Instant::now() < deadline, "no token file on the volume");
        std::thread::sleep(Duration::from_millis(50));
    }
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
    let out = health();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot probe"),
        "{out:?}"
    );
}
