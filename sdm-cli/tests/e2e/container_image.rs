//! The client's sidecar image (packaging/docker/sdm.Dockerfile), on a machine with no
//! container engine: its command line (`sdm listen`), environment and health check run here
//! as in the container (its binary in a root of its own, its home a volume, a user other than
//! root when the tests run as root), with only the service token added, as `docker run -e
//! SDM_SERVICE_TOKEN=…` adds it. The job beside it reaches PostgreSQL through the tunnel that
//! auto-connect opened (docs/OPERATIONS.md, "Containers").

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use sdm_testkit::{Container, Dockerfile};

use crate::support::{Fixture, eventually, free_port, pg_resource, psql_as, psql_as_os_user};

/// Bound on the sidecar's start and on the states it reaches on its own.
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn the_sidecar_logs_in_from_its_environment_serves_its_user_and_reports_its_health() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dockerfile = Dockerfile::read(&repo.join("packaging/docker/sdm.Dockerfile"))
        .unwrap_or_else(|e| panic!("{e}"));
    let image = dockerfile.image();
    let user = image.user().expect("the image names no USER");
    assert_ne!(user.split(':').next(), Some("0"), "the image runs as root");
    let build = dockerfile.stage("build").expect("no build stage");
    assert!(
        build
            .all("RUN")
            .any(|run| run.contains("cargo build --release --locked -p sdm-cli --bin sdm")),
        "the build stage does not build the sdm binary"
    );
    assert_eq!(image.command_line(), ["/usr/local/bin/sdm", "listen"]);
    let check = image.healthcheck().expect("no HEALTHCHECK in exec form");
    assert_eq!(check.command[..2], ["/usr/local/bin/sdm", "probe"]);

    // An installation with auto-connect on and a database on a fixed port.
    let fx = Fixture::start();
    let port = free_port();
    pg_resource(&fx, "pg-app", Some(port));
    let token = fx.account_with("etl-sidecar", &["pg-app"]);
    fx.block_on(fx.admin.set_auto_connect(true)).unwrap();

    let mut container = Container::new(image).unwrap();
    container
        .install("/usr/local/bin/sdm", Path::new(env!("CARGO_BIN_EXE_sdm")))
        .unwrap();
    let home = container.volume("/home/nonroot/.sdm").unwrap();
    container.map("127.0.0.1:9091", &format!("127.0.0.1:{}", free_port()));
    container.set_env("SDM_SERVICE_TOKEN", &token);
    let health = || -> Output { container.command(&check.command).unwrap().output().unwrap() };
    let log_path = fx.dir.path().join("sidecar.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut sidecar = container
        .command(&image.command_line())
        .unwrap()
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Healthy once logged in: the check's answer is the listener's.
    let mut last = None;
    let healthy = eventually(LIMIT, || {
        let out = health();
        let ok = out.status.success();
        last = Some(out);
        // A sidecar that exited will not become healthy: stop waiting.
        ok || matches!(sidecar.try_wait(), Ok(Some(_)))
    });
    assert!(
        sidecar.try_wait().unwrap().is_none(),
        "the sidecar exited:\n{}",
        read_log()
    );
    assert!(healthy, "never healthy: {last:?}\n{}", read_log());
    assert_eq!(String::from_utf8_lossy(&last.unwrap().stdout).trim(), "ok");
    if let Some(user) = container.user() {
        let owner = std::fs::metadata(home.join("agent.sock")).map(|m| m.uid());
        assert_eq!(
            owner.ok(),
            Some(user.uid),
            "the agent does not run as the image's user"
        );
    }

    // The job, run as the sidecar's user, reaches the database on the fixed port with no
    // password; another user of the host is refused by the tunnel.
    let sql = "SELECT 'through the sidecar'";
    let (code, out, err) = match container.user() {
        Some(user) => psql_as_os_user(&user, port, "app", sql),
        None => psql_as(port, "app", None, sql),
    };
    assert_eq!(code, 0, "{err}\n{}", read_log());
    assert_eq!(out, "through the sidecar");
    if container.user().is_some() {
        let (code, _, err) = psql_as(port, "app", None, sql);
        assert_ne!(code, 0, "another OS user got through the sidecar's tunnel");
        assert!(!err.is_empty());
    }

    // Suspending the account turns the health check red, naming the login.
    fx.block_on(fx.admin.suspend_account("etl-sidecar"))
        .unwrap();
    let mut last = None;
    let unhealthy = eventually(LIMIT, || {
        let out = health();
        let refused = out.status.code() == Some(16)
            && String::from_utf8_lossy(&out.stderr).contains("login:");
        last = Some(out);
        refused
    });
    assert!(unhealthy, "still healthy while suspended: {last:?}");

    // `docker stop`: SIGTERM and a clean exit; the log is JSON lines without the token.
    let pid = i32::try_from(sidecar.id()).unwrap();
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut status = None;
    assert!(
        eventually(LIMIT, || {
            status = sidecar.try_wait().unwrap();
            status.is_some()
        }),
        "the sidecar did not stop at SIGTERM"
    );
    let status = status.unwrap();
    let log = read_log();
    assert!(status.success(), "{status}:\n{log}");
    assert!(!log.contains(&token), "the token is in the log");
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }
}
