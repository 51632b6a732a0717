//! The systemd units in packaging/systemd: `systemd-analyze verify` accepts them, `systemd-analyze
//! security` rates them OK (exposure at most 2.0 of 10), and the command line each one runs
//! starts a working server: the control plane writes its first admin token to the file the unit
//! names (0600) and keeps its data 0700; the gateway reads its token from the credential file
//! and registers. `%S` (/var/lib) and `%d` (the credentials directory) point into a temporary
//! directory, and the binary is this build's.
//!
//! docs/OPERATIONS.md ("Running as a service") names these tests.

mod common;
mod processes;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALLED_BINARY: &str = "/usr/local/bin/sdm-server";

fn unit_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/systemd")
        .join(name)
}

/// The unit with this build's binary in place of the installed one, written into `dir`.
fn unit_for_this_build(name: &str, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(unit_path(name)).unwrap();
    assert!(
        text.contains(INSTALLED_BINARY),
        "{name} does not run {INSTALLED_BINARY}"
    );
    let path = dir.join(name);
    std::fs::write(
        &path,
        text.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_sdm-server")),
    )
    .unwrap();
    path
}

/// The arguments of the unit's ExecStart (continuation lines joined), after the binary.
fn exec_start_args(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(unit_path(name)).unwrap();
    let joined = text.replace("\\\n", " ");
    let line = joined
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("{name} has no ExecStart"));
    let mut words = line.split_whitespace().map(str::to_owned);
    assert_eq!(words.next().as_deref(), Some(INSTALLED_BINARY));
    words.collect()
}

fn systemd_analyze(args: &[&str]) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run systemd-analyze ({e}): install systemd (scripts/install-deps.sh does)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_units_pass_systemd_analyze_verify_and_security() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["sdm-server.service", "sdm-gateway.service"] {
        let unit = unit_for_this_build(name, dir.path());
        let unit = unit.to_str().unwrap();
        let (ok, text) = systemd_analyze(&["verify", unit]);
        assert!(ok && text.trim().is_empty(), "verify {name}:\n{text}");
        // The threshold is in tenths: 20 is an exposure of 2.0, "OK" in systemd's words.
        let (ok, text) = systemd_analyze(&["security", "--offline=true", "--threshold=20", unit]);
        assert!(ok, "security {name}:\n{text}");
        assert!(text.contains("OK"), "security {name}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_units_command_line_starts_a_control_plane_that_writes_its_token_file() {
    let state = tempfile::tempdir().unwrap();
    let args: Vec<String> = exec_start_args("sdm-server.service")
        .into_iter()
        .map(|a| a.replace("%S", state.path().to_str().unwrap()))
        // Free ports instead of 8443 and 8444, which another test or service may hold.
        .map(|a| a.replace("127.0.0.1:8443", "127.0.0.1:0"))
        .map(|a| a.replace("127.0.0.1:8444", "127.0.0.1:0"))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = processes::spawn("control plane (unit)", &args, &[]);
    let running = server.wait_for("sdm-server is running");
    let api_addr: std::net::SocketAddr = processes::field(&running, "api_addr").parse().unwrap();
    server.wait_for("token is in the file only");
    // The file is written after that notice.
    server.wait_for("wrote the admin token");

    let token_file = state.path().join("sdm-server/first-admin-token");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(mode(&state.path().join("sdm-server/data")), 0o700);
    let token = std::fs::read_to_string(&token_file).unwrap();
    let admin = sdm_core::admin::AdminClient::new(token.trim()).unwrap();
    admin.create_service_account("from-the-unit").await.unwrap();
    assert!(api_addr.ip().is_loopback());
    // Nothing reached stdout, where the journal would have kept the token.
    server.signal(libc::SIGTERM);
    let (code, stderr) = server.wait_exit();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(server.stdout_so_far(), Vec::<String>::new());
    assert!(!stderr.contains(token.trim()), "the token is in the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_units_command_line_reads_its_credential_and_registers() {
    let cp = processes::control_plane().await;
    let token = cp.gateway_token("gw-unit", &[]).await;
    let credentials = tempfile::tempdir().unwrap();
    std::fs::write(credentials.path().join("gateway-token"), &token).unwrap();
    std::fs::set_permissions(
        credentials.path().join("gateway-token"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    // What /etc/sdm/sdm-gateway.env would hold, split into words as systemd splits $VAR.
    let env_args = format!("--control-plane {} --listen 127.0.0.1:0", cp.url);
    let mut args: Vec<String> = Vec::new();
    for arg in exec_start_args("sdm-gateway.service") {
        match arg.as_str() {
            "$SDM_GATEWAY_ARGS" => args.extend(env_args.split_whitespace().map(str::to_owned)),
            _ => args.push(arg.replace("%d", credentials.path().to_str().unwrap())),
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut gateway = processes::spawn("gateway (unit)", &args, &[]);
    let registered = gateway.wait_for("gateway registered with the control plane");
    assert_eq!(processes::field(&registered, "name"), "gw-unit");
}
