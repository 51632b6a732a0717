//! Finding the PostgreSQL server binaries on this machine.

use std::env;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory holding initdb and postgres: `PG_BINDIR`, then `initdb` on `PATH` (symlinks
/// resolved), then the highest `/usr/lib/postgresql/*/bin` (Debian), then `pg_config --bindir`.
pub(crate) fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = env::var_os("PG_BINDIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let on_path = find_in_path("initdb")
        .and_then(|initdb| fs::canonicalize(initdb).ok())
        .and_then(|real| real.parent().map(Path::to_path_buf))
        // A wrapper script (Debian's pg_wrapper) resolves elsewhere: not a server directory.
        .filter(|dir| is_server_dir(dir));
    on_path.or_else(debian_dir).or_else(pg_config_dir)
}

/// True when `dir` holds the two programs the testkit runs: initdb and postgres.
pub(crate) fn is_server_dir(dir: &Path) -> bool {
    is_executable(&dir.join("initdb")) && is_executable(&dir.join("postgres"))
}

/// `name` in `dir` if present, else on `PATH` (Debian's psql and pgbench live in /usr/bin as
/// wrappers), else `dir/name` so that the spawn error names the expected place.
pub(crate) fn program(dir: &Path, name: &str) -> PathBuf {
    let candidate = dir.join(name);
    if is_executable(&candidate) {
        return candidate;
    }
    find_in_path(name).unwrap_or(candidate)
}

pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn debian_dir() -> Option<PathBuf> {
    let entries = fs::read_dir("/usr/lib/postgresql").ok()?;
    entries
        .flatten()
        .filter_map(|entry| {
            let version = version_key(entry.file_name().to_str()?)?;
            let bin = entry.path().join("bin");
            is_server_dir(&bin).then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
}

/// "15" → (15, 0), "9.6" → (9, 6); anything else is not a version directory.
fn version_key(name: &str) -> Option<(u32, u32)> {
    let (major, minor) = name.split_once('.').unwrap_or((name, "0"));
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn pg_config_dir() -> Option<PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    is_server_dir(&dir).then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically() {
        assert!(version_key("15") > version_key("9.6"));
        assert!(version_key("10") > version_key("9.6"));
        assert_eq!(version_key("main"), None);
    }

    #[test]
    fn program_falls_back_to_the_directory() {
        let missing = Path::new("/nonexistent-sdm-dir");
        assert_eq!(
            program(missing, "no-such-program-sdm"),
            missing.join("no-such-program-sdm")
        );
    }
}
