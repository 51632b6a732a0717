//! `sdm install` and `sdm uninstall`: the agent as a systemd service that logs in at start with
//! the token of a root-only environment file, so a machine's jobs find their tunnels after a
//! reboot (the guide's Linux step, `sudo sdm install`).
//!
//! Everything is checked before anything is written: root, a running systemd, the user, the
//! token or the existing environment file. Files are written whole (a temporary file renamed).
//! `--root DIR` writes into an image or a test directory instead and runs no `systemctl`.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cli::{InstallArgs, UninstallArgs};
use crate::exit::{CliError, Exit};
use crate::render::outln;

/// The unit's name.
pub const UNIT: &str = "sdm.service";
const UNIT_DIR: &str = "etc/systemd/system";
const ENV_FILE: &str = "etc/sdm/sdm.env";

/// Where the files go: under `/`, or under `--root`.
struct Paths {
    unit: PathBuf,
    env: PathBuf,
    /// `--root` was given: no systemd to talk to.
    image: bool,
}

impl Paths {
    fn new(root: Option<&Path>) -> Paths {
        let base = root.unwrap_or(Path::new("/"));
        Paths {
            unit: base.join(UNIT_DIR).join(UNIT),
            env: base.join(ENV_FILE),
            image: root.is_some(),
        }
    }
}

pub fn install(args: &InstallArgs) -> Result<(), CliError> {
    let paths = Paths::new(args.root.as_deref());
    if !paths.image {
        must_be_root("install")?;
        systemd_must_run()?;
    }
    let user = match &args.user {
        Some(user) => user.clone(),
        // `sudo sdm install` means the user who ran sudo.
        None => std::env::var("SUDO_USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "root".into()),
    };
    if !paths.image && !user_exists(&user) {
        return Err(CliError::new(
            Exit::InvalidArgument,
            format!("there is no user {user:?} on this machine; name one with --user"),
        ));
    }
    let exe = std::env::current_exe()
        .map_err(|e| CliError::internal(format!("cannot find the sdm executable: {e}")))?;
    let env_text = match token_from_env() {
        Some((name, token)) => {
            sdm_proto::Token::parse(&token).map_err(|e| {
                CliError::new(
                    Exit::NotAuthenticated,
                    format!("{name} is not an sdm token: {e}"),
                )
            })?;
            let mut text = format!("{name}={token}\n");
            if let Ok(url) = std::env::var(sdm_core::API_URL_ENV_VAR)
                && !url.trim().is_empty()
            {
                text.push_str(&format!("{}={}\n", sdm_core::API_URL_ENV_VAR, url.trim()));
            }
            Some(text)
        }
        None => {
            check_existing_env_file(&paths.env)?;
            None
        }
    };

    if let Some(text) = &env_text {
        write_whole(&paths.env, text, 0o600)?;
    }
    write_whole(
        &paths.unit,
        &unit_text(&exe, &user, &paths_in_unit()),
        0o644,
    )?;
    if paths.image {
        outln!(
            "wrote {} and {}; enable it in the image with `systemctl enable {UNIT}`",
            paths.unit.display(),
            paths.env.display()
        );
        return Ok(());
    }
    systemctl(&["daemon-reload"])?;
    systemctl(&["enable", "--now", UNIT])?;
    outln!(
        "installed and started {UNIT} (user {user}); it logs in with the token in {} at every \
         start. `sdm status` as {user} shows its tunnels; `sudo sdm uninstall` removes it",
        paths.env.display()
    );
    Ok(())
}

pub fn uninstall(args: &UninstallArgs) -> Result<(), CliError> {
    let paths = Paths::new(args.root.as_deref());
    if !paths.image {
        must_be_root("uninstall")?;
        systemd_must_run()?;
    }
    if !paths.unit.exists() && !paths.env.exists() {
        return Err(CliError::new(
            Exit::NotFound,
            format!(
                "sdm is not installed as a service here (no {})",
                paths.unit.display()
            ),
        ));
    }
    if !paths.image {
        // Stop it before its unit goes; a unit systemd never loaded is not an error here.
        let _ = systemctl(&["disable", "--now", UNIT]);
    }
    for path in [&paths.unit, &paths.env] {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(write_error(path, &e)),
        }
    }
    if !paths.image {
        systemctl(&["daemon-reload"])?;
    }
    outln!(
        "removed {} and {} (the token)",
        paths.unit.display(),
        paths.env.display()
    );
    Ok(())
}

/// The path the unit names for the environment file: always the real one, also in an image.
fn paths_in_unit() -> PathBuf {
    Path::new("/").join(ENV_FILE)
}

fn unit_text(exe: &Path, user: &str, env: &Path) -> String {
    format!(
        "# Written by `sdm install`; `sdm uninstall` removes it.
[Unit]
Description=sdm agent: tunnels for this machine's jobs
Documentation=https://github.com/sdm-dev/sdm/blob/main/sdm-cli/README.md
Wants=network-online.target
After=network-online.target

[Service]
Type=exec
User={user}
# The token (root-only, 0600): the agent logs in with it at start.
EnvironmentFile={env}
ExecStart={exe} listen
Restart=on-failure
RestartSec=5
TimeoutStopSec=20
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=full
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
LockPersonality=yes

[Install]
WantedBy=multi-user.target
",
        env = env.display(),
        exe = exe.display(),
    )
}

fn token_from_env() -> Option<(&'static str, String)> {
    sdm_core::TOKEN_ENV_VARS.iter().find_map(|name| {
        std::env::var(name)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .map(|t| (*name, t))
    })
}

/// Without a token in the environment, install keeps the file there: it must hold one, and be
/// root's and private, since systemd hands it to the agent as it is.
fn check_existing_env_file(env: &Path) -> Result<(), CliError> {
    let shown = env.display();
    let refuse = |why: String| CliError::new(Exit::InvalidArgument, why);
    let meta = match fs::metadata(env) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::new(
                Exit::NotAuthenticated,
                format!(
                    "no token: set SDM_SERVICE_TOKEN for the install (e.g. `sudo \
                     SDM_SERVICE_TOKEN=… sdm install`), or put it in {shown} (mode 0600)"
                ),
            ));
        }
        Err(e) => return Err(refuse(format!("cannot read {shown}: {e}"))),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(refuse(format!(
            "{shown} holds a token and is readable by others (mode {mode:o}); chmod 600 {shown}"
        )));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(refuse(format!(
            "{shown} belongs to uid {}, not to the user installing (uid {me})",
            meta.uid()
        )));
    }
    let text = fs::read_to_string(env).map_err(|e| refuse(format!("cannot read {shown}: {e}")))?;
    let has_token = text.lines().any(|line| {
        sdm_core::TOKEN_ENV_VARS
            .iter()
            .any(|name| line.trim_start().starts_with(&format!("{name}=")))
    });
    if !has_token {
        return Err(refuse(format!(
            "{shown} sets neither SDM_SERVICE_TOKEN nor SDM_ADMIN_TOKEN"
        )));
    }
    Ok(())
}

/// Writes `text` to `path` whole: a new temporary file of `mode` beside it, synced, renamed.
fn write_whole(path: &Path, text: &str, mode: u32) -> Result<(), CliError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| write_error(dir, &e))?;
    }
    let mut temp = path.as_os_str().to_owned();
    temp.push(".new");
    let temp = PathBuf::from(temp);
    let _ = fs::remove_file(&temp);
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&temp, path));
    written.map_err(|e| {
        let _ = fs::remove_file(&temp);
        write_error(path, &e)
    })
}

fn write_error(path: &Path, e: &std::io::Error) -> CliError {
    CliError::new(
        Exit::InvalidArgument,
        format!("cannot write {}: {e}", path.display()),
    )
}

fn must_be_root(what: &str) -> Result<(), CliError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(CliError::new(
            Exit::Forbidden,
            format!("sdm {what} writes a system service and needs root: sudo sdm {what}"),
        ));
    }
    Ok(())
}

/// systemd's own test for "booted with systemd" (sd_booted).
fn systemd_must_run() -> Result<(), CliError> {
    if Path::new("/run/systemd/system").is_dir() {
        return Ok(());
    }
    Err(CliError::new(
        Exit::Unsupported,
        "systemd is not running on this machine (no /run/systemd/system); nothing was changed. \
         Run `sdm listen` under the supervisor you use, or prepare an image with --root DIR",
    ))
}

fn user_exists(user: &str) -> bool {
    let Ok(name) = CString::new(user) else {
        return false;
    };
    // SAFETY: a valid C string; the returned entry is only tested for null.
    !unsafe { libc::getpwnam(name.as_ptr()) }.is_null()
}

fn systemctl(args: &[&str]) -> Result<(), CliError> {
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|e| CliError::internal(format!("cannot run systemctl: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(CliError::internal(format!(
        "systemctl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}
