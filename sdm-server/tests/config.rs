//! `--config FILE`: flags from a TOML file, with the command line and then the environment
//! winning over it; a file with an unknown table or key, a bad value or bad TOML is refused
//! before anything starts, naming what is wrong; `sdm-server config check` says the same
//! without starting anything.
//!
//! sdm-server/README.md ("Configuration file") names these tests.

mod common;
mod processes;
mod support;

use std::path::Path;

use processes::spawn;

/// `env` as `spawn` takes it.
fn pairs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_file_sets_what_the_command_line_and_environment_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let (from_file, from_flag) = (dir.path().join("file-data"), dir.path().join("flag-data"));
    let file = write(
        dir.path(),
        "sdm.toml",
        &format!(
            "log-format = \"json\"\n\
             [serve]\n\
             data-dir = \"{}\"\n\
             listen = \"127.0.0.1:0\"\n\
             gateway-listen = \"127.0.0.1:0\"\n\
             api-connections-per-source = 64\n\
             [gateway]\n\
             control-plane = [\"https://127.0.0.1:1\"]\n",
            from_file.display()
        ),
    );

    // The file alone: its data dir, its listeners, JSON logs.
    let mut server = spawn("control plane", &["--config", &file, "serve"], &[]);
    let running = server.wait_for("sdm-server is running");
    assert!(
        running.starts_with('{'),
        "the file's log-format was not used: {running}"
    );
    assert!(from_file.join("sdm.db").exists());
    server.kill();

    // A flag wins over the file, and so does an environment variable.
    let mut server = spawn(
        "control plane",
        &[
            "serve",
            "--config",
            &file,
            "--data-dir",
            from_flag.to_str().unwrap(),
        ],
        &[("SDM_LOG_FORMAT", "text")],
    );
    let running = server.wait_for("sdm-server is running");
    assert!(
        !running.starts_with('{'),
        "the file won over SDM_LOG_FORMAT: {running}"
    );
    assert!(
        from_flag.join("sdm.db").exists(),
        "the file won over --data-dir"
    );
    server.kill();

    // SDM_CONFIG names the file as --config does.
    let mut server = spawn(
        "control plane",
        &["serve"],
        &[("SDM_CONFIG", file.as_str())],
    );
    let running = server.wait_for("sdm-server is running");
    assert!(running.starts_with('{'), "{running}");

    let mut check = spawn("config check", &["config", "check", "--config", &file], &[]);
    let (code, stderr) = check.wait_exit();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        check.first_stdout_line(),
        format!("{file}: ok ([gateway], [serve])")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_flag_also_comes_from_its_sdm_environment_variable() {
    let dir = tempfile::tempdir().unwrap();
    let (from_env, from_file) = (dir.path().join("env-data"), dir.path().join("file-data"));
    let file = write(
        dir.path(),
        "sdm.toml",
        &format!(
            "[serve]\ndata-dir = \"{}\"\nlease-ttl = \"not a duration\"\n",
            from_file.display()
        ),
    );
    // No flag at all: the data dir, both listeners, the token file and a switch from the
    // environment, which also wins over the file (whose bad lease-ttl SDM_LEASE_TTL hides).
    let token_file = dir.path().join("admin.token");
    let env = |allow_remote: &'static str| {
        vec![
            ("SDM_DATA_DIR", from_env.to_str().unwrap().to_owned()),
            ("SDM_LISTEN", "127.0.0.1:0".to_owned()),
            ("SDM_GATEWAY_LISTEN", "127.0.0.1:0".to_owned()),
            ("SDM_LEASE_TTL", "90s".to_owned()),
            (
                "SDM_ADMIN_TOKEN_FILE",
                token_file.to_str().unwrap().to_owned(),
            ),
            ("SDM_DIAG_LISTEN", "0.0.0.0:0".to_owned()),
            ("SDM_DIAG_ALLOW_REMOTE", allow_remote.to_owned()),
        ]
    };
    // The switch off: the diagnostics listener off loopback is refused.
    let off = env("false");
    let (code, stderr) =
        spawn("control plane", &["serve", "--config", &file], &pairs(&off)).wait_exit();
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("--diag-allow-remote"), "{stderr}");
    let on = env("true");
    let on = pairs(&on);
    let mut server = spawn("control plane", &["serve", "--config", &file], &on);
    server.wait_for("sdm-server is running");
    // The token file is written after the server runs.
    server.wait_for("wrote the admin token");
    assert!(
        from_env.join("sdm.db").exists(),
        "SDM_DATA_DIR was not used"
    );
    assert!(!from_file.exists(), "the file won over SDM_DATA_DIR");
    assert!(
        std::fs::read_to_string(&token_file)
            .unwrap()
            .starts_with("sdm_adm_"),
        "SDM_ADMIN_TOKEN_FILE was not used"
    );
    server.kill();

    // A bad value is named with its variable, and the flag wins over the variable.
    let mut bad = spawn(
        "control plane",
        &["serve", "--data-dir", from_env.to_str().unwrap()],
        &[("SDM_LEASE_TTL", "soon")],
    );
    let (code, stderr) = bad.wait_exit();
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("soon") && stderr.contains("--lease-ttl"),
        "{stderr}"
    );
    let mut server = spawn(
        "control plane",
        &[
            "serve",
            "--data-dir",
            from_env.to_str().unwrap(),
            "--lease-ttl",
            "60",
            "--listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
        ],
        &[("SDM_LEASE_TTL", "soon")],
    );
    server.wait_for("sdm-server is running");
    server.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_file_is_refused_naming_what_is_wrong_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_line = format!("data-dir = \"{}\"\n", data.display());
    for (name, text, expected) in [
        (
            "key.toml",
            format!("[serve]\n{data_line}data-dri = \"/x\"\n"),
            "[serve] unknown key \"data-dri\"",
        ),
        (
            "table.toml",
            format!("[serv]\n{data_line}"),
            "unknown table [serv]",
        ),
        (
            "value.toml",
            format!("[serve]\n{data_line}lease-ttl = \"1\"\n"),
            "1 s is out of range",
        ),
        (
            "kind.toml",
            format!("[serve]\n{data_line}audit-fail-open = \"yes\"\n"),
            "expected true or false",
        ),
        (
            "syntax.toml",
            format!("[serve]\n{data_line}listen = [\n"),
            "is not valid TOML: line 3",
        ),
    ] {
        let file = write(dir.path(), name, &text);
        for args in [
            vec!["--config", file.as_str(), "serve"],
            vec!["config", "check", "--config", file.as_str()],
        ] {
            let (code, stderr) = spawn("sdm-server", &args, &[]).wait_exit();
            assert_eq!(code, 2, "{args:?}: {stderr}");
            assert!(stderr.contains(expected), "{args:?}: {stderr}");
            assert!(
                stderr.contains(name),
                "{args:?} does not name the file: {stderr}"
            );
            assert!(!data.exists(), "{args:?} started something");
        }
    }
    let (code, stderr) = spawn(
        "sdm-server",
        &[
            "--config",
            dir.path().join("missing.toml").to_str().unwrap(),
            "serve",
        ],
        &[],
    )
    .wait_exit();
    assert_eq!(code, 2);
    assert!(
        stderr.contains("cannot read the configuration file"),
        "{stderr}"
    );
}
