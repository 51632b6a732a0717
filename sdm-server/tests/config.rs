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
