//! An image's commands run on this host, for a machine with no container engine: a root
//! directory holding the image's binaries and volumes, the image's paths and ports mapped to
//! that root and to free loopback ports, only the image's environment, and its user played by
//! [`other_os_user`](crate::other_os_user) when the tests run as root.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::dockerfile::Stage;
use crate::{OsUser, TestkitError};

/// The host side of one container: create it from the image's final stage, install binaries,
/// make volumes, map ports, then build its commands with [`Container::command`].
pub struct Container {
    root: tempfile::TempDir,
    /// Image text to host text, applied in order to every word and environment value.
    mapping: Vec<(String, String)>,
    image_env: Vec<(String, String)>,
    extra_env: Vec<(String, String)>,
    user: Option<OsUser>,
}

fn io_error(context: String) -> impl FnOnce(io::Error) -> TestkitError {
    move |source| TestkitError::Io { context, source }
}

impl Container {
    /// A new root (readable by the image's user) for `image`, with `HOME` at
    /// `/home/nonroot`, as distroless's non-root images have it.
    pub fn new(image: &Stage) -> Result<Container, TestkitError> {
        let root = tempfile::tempdir().map_err(io_error("cannot create a temp dir".into()))?;
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).map_err(
            io_error(format!("cannot open up {}", root.path().display())),
        )?;
        let mut container = Container {
            root,
            mapping: Vec::new(),
            image_env: image.env(),
            extra_env: Vec::new(),
            user: crate::other_os_user()?,
        };
        container.volume("/home/nonroot")?;
        Ok(container)
    }

    /// The user the container's commands run as here (`None`: this process's own).
    pub fn user(&self) -> Option<OsUser> {
        self.user
    }

    /// `image_path` on the host.
    pub fn host_path(&self, image_path: &str) -> PathBuf {
        self.root.path().join(image_path.trim_start_matches('/'))
    }

    /// Copies the executable `from` to `image_path` (mode 0755) and maps that path.
    pub fn install(&mut self, image_path: &str, from: &Path) -> Result<PathBuf, TestkitError> {
        let to = self.host_path(image_path);
        let context = format!("cannot install {} as {}", from.display(), to.display());
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(io_error(context.clone()))?;
        }
        std::fs::copy(from, &to).map_err(io_error(context.clone()))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))
            .map_err(io_error(context))?;
        self.map(image_path, &to.display().to_string());
        Ok(to)
    }

    /// Makes `image_path` a directory (0700) the image's user owns, as the image's build stage
    /// does, and maps it.
    pub fn volume(&mut self, image_path: &str) -> Result<PathBuf, TestkitError> {
        let dir = self.host_path(image_path);
        let context = format!("cannot make the volume {}", dir.display());
        std::fs::create_dir_all(&dir).map_err(io_error(context.clone()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_error(context.clone()))?;
        if let Some(user) = self.user {
            std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid))
                .map_err(io_error(context))?;
        }
        self.map(image_path, &dir.display().to_string());
        Ok(dir)
    }

    /// Replaces `from` by `to` wherever the image's words or environment say it (a port, a
    /// path), as `docker run -e` or `-p` would change it.
    pub fn map(&mut self, from: &str, to: &str) {
        self.mapping.push((from.to_owned(), to.to_owned()));
    }

    /// Sets a variable beside the image's own, as `docker run -e` does.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.extra_env.push((key.to_owned(), value.to_owned()));
    }

    /// `text` with the mapping applied in one pass, the longest match first at each place
    /// (so `/home/nonroot/.sdm` and `/home/nonroot` can both be mapped).
    pub fn apply(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            let longest = self
                .mapping
                .iter()
                .filter(|(from, _)| !from.is_empty() && rest.starts_with(from.as_str()))
                .max_by_key(|(from, _)| from.len());
            match longest {
                Some((from, to)) => {
                    out.push_str(to);
                    rest = &rest[from.len()..];
                }
                None => {
                    out.push(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        out
    }

    /// `words` (an exec form) as the container runs it: mapped, with only the image's
    /// environment (and what [`Container::set_env`] added), as the image's user; stdin null.
    pub fn command(&self, words: &[String]) -> Result<Command, TestkitError> {
        let words: Vec<String> = words.iter().map(|w| self.apply(w)).collect();
        let Some((program, args)) = words.split_first() else {
            return Err(TestkitError::InvalidConfig {
                detail: "an empty command line".into(),
            });
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.host_path("/home/nonroot"))
            .current_dir(self.root.path())
            .stdin(Stdio::null());
        for (key, value) in self.image_env.iter().chain(&self.extra_env) {
            command.env(key, self.apply(value));
        }
        if let Some(user) = self.user {
            // std drops root's supplementary groups when it changes the uid.
            command.uid(user.uid).gid(user.gid);
        }
        Ok(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_mapping_wins_and_replacements_are_not_mapped_again() {
        let image = crate::Dockerfile::parse("D", "FROM x\nENV A=/home/nonroot/.sdm\n").unwrap();
        let mut container = Container::new(image.image()).unwrap();
        container.map("/home/nonroot/.sdm", "/h/nonroot/.sdm-host");
        container.map("9091", "40000");
        let home = container.host_path("/home/nonroot").display().to_string();
        assert_eq!(
            container.apply("/home/nonroot/.sdm"),
            "/h/nonroot/.sdm-host"
        );
        assert_eq!(
            container.apply("/home/nonroot/x:9091"),
            format!("{home}/x:40000")
        );
    }
}
