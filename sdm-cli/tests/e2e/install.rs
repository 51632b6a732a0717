//! `sdm install` and `sdm uninstall`: without a running systemd they say so and change nothing;
//! into an image (`--root`) they write a unit that `systemd-analyze verify` accepts and a
//! root-only token file, and the unit's own command line, given that file's environment, runs
//! an agent that logs in by itself; a token file others can read or another user owns, or a
//! malformed token, is refused before anything is written.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use sdm_core::ResourceKind;

use crate::support::{Fixture, eventually};

const UNIT: &str = "etc/systemd/system/sdm.service";
const ENV: &str = "etc/sdm/sdm.env";

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn without_a_running_systemd_install_and_uninstall_say_so_and_change_nothing() {
    if Path::new("/run/systemd/system").exists() {
        eprintln!("note: systemd runs here; this test would install for real, so it is skipped");
        return;
    }
    let fx = Fixture::start();
    let token = fx.account_with("etl", &[]);
    let sdm = fx.sdm();
    let before = (
        Path::new("/").join(UNIT).exists(),
        Path::new("/").join(ENV).exists(),
    );
    let out = sdm.run_env(&["install"], &[("SDM_SERVICE_TOKEN", token.as_str())]);
    let line = out.fails(15);
    assert!(line.contains("systemd is not running"), "{line}");
    assert!(line.contains("nothing was changed"), "{line}");
    let line = sdm.run(&["uninstall"]).fails(15).to_owned();
    assert!(line.contains("systemd is not running"), "{line}");
    let after = (
        Path::new("/").join(UNIT).exists(),
        Path::new("/").join(ENV).exists(),
    );
    assert_eq!(before, after);
}

#[test]
fn an_image_gets_a_unit_whose_agent_logs_in_with_the_root_only_token() {
    let fx = Fixture::start();
    let echo = sdm_testkit::EchoServer::start().unwrap();
    fx.resource("echo", ResourceKind::Tcp, echo.port(), None);
    let token = fx.account_with("etl", &["echo"]);
    let sdm = fx.sdm();
    let image = tempfile::tempdir().unwrap();
    let root = image.path().to_str().unwrap();

    let out = sdm.run_env(
        &["install", "--root", root, "--user", "root"],
        &[("SDM_SERVICE_TOKEN", token.as_str())],
    );
    assert!(out.ok().starts_with("wrote "), "{out:#?}");
    let (unit, env) = (image.path().join(UNIT), image.path().join(ENV));
    assert_eq!(mode(&env), 0o600);
    assert_eq!(
        fs::read_to_string(&env).unwrap(),
        format!("SDM_SERVICE_TOKEN={token}\n")
    );
    assert_eq!(mode(&unit), 0o644);
    let text = fs::read_to_string(&unit).unwrap();
    assert!(text.contains("EnvironmentFile=/etc/sdm/sdm.env"), "{text}");
    assert!(text.contains("User=root"), "{text}");
    assert!(!text.contains(&token), "the token is in the unit");

    let verify = Command::new("systemd-analyze")
        .args(["verify", unit.to_str().unwrap()])
        .output()
        .expect("systemd-analyze (scripts/install-deps.sh installs systemd)");
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "{said}");
    // Only the token file is missing on this host; nothing else is wrong with the unit.
    for line in said.lines() {
        assert!(line.contains("/etc/sdm/sdm.env"), "systemd-analyze: {line}");
    }

    // What systemd would run: ExecStart with the token file's environment.
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let mut words = exec.split_whitespace();
    let program = words.next().unwrap();
    let mut agent = Command::new(program);
    agent
        .args(words)
        .env_clear()
        .env("SDM_HOME", &sdm.home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for line in fs::read_to_string(&env).unwrap().lines() {
        let (key, value) = line.split_once('=').unwrap();
        agent.env(key, value);
    }
    let mut agent = agent.spawn().unwrap();
    let ready = eventually(Duration::from_secs(60), || sdm.run(&["ready"]).code == 0);
    let status = sdm.run(&["status", "--json"]);
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(ready, "the unit's agent never logged in");
    assert!(status.ok().contains("\"echo\""), "{status:#?}");

    let out = sdm.run(&["uninstall", "--root", root]);
    assert!(out.ok().starts_with("removed "), "{out:#?}");
    assert!(!unit.exists() && !env.exists());
    assert!(
        sdm.run(&["uninstall", "--root", root])
            .fails(6)
            .contains("not installed")
    );
}

#[test]
fn a_token_file_others_can_read_or_a_malformed_token_is_refused_before_anything_is_written() {
    let fx = Fixture::start();
    let token = fx.account_with("etl", &[]);
    let sdm = fx.sdm();
    let image = tempfile::tempdir().unwrap();
    let root = image.path().to_str().unwrap();
    let (unit, env) = (image.path().join(UNIT), image.path().join(ENV));

    fs::create_dir_all(env.parent().unwrap()).unwrap();
    fs::write(&env, format!("SDM_SERVICE_TOKEN={token}\n")).unwrap();
    fs::set_permissions(&env, fs::Permissions::from_mode(0o644)).unwrap();
    let line = sdm.run(&["install", "--root", root]).fails(14).to_owned();
    assert!(
        line.contains(env.to_str().unwrap()) && line.contains("chmod 600"),
        "{line}"
    );
    assert!(!unit.exists());

    fs::set_permissions(&env, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&env, "SOMETHING_ELSE=1\n").unwrap();
    let line = sdm.run(&["install", "--root", root]).fails(14).to_owned();
    assert!(line.contains("sets neither SDM_SERVICE_TOKEN"), "{line}");
    assert!(!unit.exists());

    // A token file another local user planted (or owns): their token would run the agent.
    if let Some(other) = sdm_testkit::other_os_user().unwrap() {
        fs::write(&env, format!("SDM_SERVICE_TOKEN={token}\n")).unwrap();
        std::os::unix::fs::chown(&env, Some(other.uid), Some(other.gid)).unwrap();
        let line = sdm.run(&["install", "--root", root]).fails(14).to_owned();
        assert!(
            line.contains(&format!("belongs to uid {}", other.uid)),
            "{line}"
        );
        assert!(!unit.exists());
        std::os::unix::fs::chown(&env, Some(0), Some(0)).unwrap();
    }
    fs::write(&env, "SOMETHING_ELSE=1\n").unwrap();

    let out = sdm.run_env(
        &["install", "--root", root],
        &[("SDM_SERVICE_TOKEN", "sdm_svc_not-a-token")],
    );
    assert!(out.fails(4).contains("is not an sdm token"), "{out:#?}");
    assert!(!unit.exists());
    assert_eq!(fs::read_to_string(&env).unwrap(), "SOMETHING_ELSE=1\n");
}
