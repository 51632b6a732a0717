//! Files with secrets in them: created atomically with their final mode, refused when other
//! users can read them.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::KeyError;

/// Mode of files that hold secrets.
pub(crate) const SECRET_MODE: u32 = 0o600;
/// Mode of files anyone may read (the CA certificate).
pub(crate) const PUBLIC_MODE: u32 = 0o644;

/// Creates `dir` (and its parents) with mode 0700 if it is missing. An existing directory
/// owned by another user is refused (its owner could swap the keys in it); one other users
/// may enter or read is tightened to 0700, and that is logged.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), KeyError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            // SAFETY: geteuid has no preconditions and cannot fail.
            let me = unsafe { libc::geteuid() };
            if meta.uid() != me {
                return Err(KeyError::ForeignDir {
                    path: dir.to_owned(),
                    owner: meta.uid(),
                    me,
                });
            }
            let mode = meta.mode() & 0o7777;
            if mode & 0o077 != 0 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|source| {
                    KeyError::Io {
                        what: "restrict the mode of the data directory",
                        path: dir.to_owned(),
                        source,
                    }
                })?;
                tracing::warn!(
                    path = %dir.display(),
                    was = format_args!("{mode:04o}"),
                    "the data directory was open to other users; its mode is now 0700"
                );
            }
            Ok(())
        }
        Ok(_) => Err(KeyError::Io {
            what: "use the data directory",
            path: dir.to_owned(),
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "it exists and is not a directory",
            ),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true).mode(0o700);
            builder.create(dir).map_err(|source| KeyError::Io {
                what: "create the data directory",
                path: dir.to_owned(),
                source,
            })?;
            // `DirBuilder::mode` is filtered by the umask; set it exactly.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|source| {
                KeyError::Io {
                    what: "set the mode of the data directory",
                    path: dir.to_owned(),
                    source,
                }
            })
        }
        Err(source) => Err(KeyError::Io {
            what: "use the data directory",
            path: dir.to_owned(),
            source,
        }),
    }
}

/// Reads a secret file, or `None` when it does not exist.
///
/// A secret file that the group or other users can read is refused rather than used: the key
/// may already have leaked (a careless restore from backup, a wrong umask in a container image),
/// and silently accepting it would hide that. OpenSSH refuses private keys for the same reason.
/// The error says exactly which `chmod` fixes it.
pub(crate) fn read_secret(path: &Path) -> Result<Option<Vec<u8>>, KeyError> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(KeyError::Io {
                what: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Insecure {
            path: path.to_owned(),
            mode,
        });
    }
    fs::read(path).map(Some).map_err(|source| KeyError::Io {
        what: "read",
        path: path.to_owned(),
        source,
    })
}

/// Reads a file anyone may read, or `None` when it does not exist.
pub(crate) fn read_public(path: &Path) -> Result<Option<Vec<u8>>, KeyError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KeyError::Io {
            what: "read",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes a new file atomically with `mode` set at creation: the content goes to a temporary
/// file in the same directory, is synced, and is then linked to `path`, which must not exist
/// (two processes starting on one directory never overwrite each other's keys).
pub(crate) fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    let io_err = |what: &'static str| {
        let path = path.to_owned();
        move |source| KeyError::Io { what, path, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = temp_path(path)?;
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        // The mode passed at creation is filtered by the umask; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        Ok::<(), io::Error>(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(io_err("write")(e));
    }
    let linked = match fs::hard_link(&temp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        // A file system without hard links: fall back to rename (which would replace a file
        // created in between; checked just before).
        Err(_) if !path.exists() => fs::rename(&temp, path),
        Err(e) => Err(e),
    };
    let _ = fs::remove_file(&temp);
    linked.map_err(io_err("create"))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn temp_path(path: &Path) -> Result<PathBuf, KeyError> {
    let mut random = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
        .map_err(|_| KeyError::Random)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    Ok(path.with_file_name(format!(".{name}.tmp-{suffix}")))
}

pub(crate) use sdm_proto::server_tls::pem_encode;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_files_get_their_mode_and_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_new(&path, b"one", SECRET_MODE).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert!(write_new(&path, b"two", SECRET_MODE).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"one");
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(read_secret(&path).unwrap().unwrap(), b"one");
    }

    #[test]
    fn readable_secrets_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_new(&path, b"one", PUBLIC_MODE).unwrap();
        let err = read_secret(&path).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("chmod 600"), "{text}");
        assert!(read_secret(&dir.path().join("missing")).unwrap().is_none());
    }

    #[test]
    fn private_dir_is_created_0700() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        ensure_private_dir(&data).unwrap();
        assert_eq!(fs::metadata(&data).unwrap().mode() & 0o777, 0o700);
        ensure_private_dir(&data).unwrap();
    }

    #[test]
    fn an_open_private_dir_is_tightened_to_0700() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&data).unwrap();
        assert_eq!(fs::metadata(&data).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn pem_round_trips() {
        use rustls_pki_types::PrivatePkcs8KeyDer;
        use rustls_pki_types::pem::PemObject;
        let der: Vec<u8> = (0..200u8).collect();
        let pem = pem_encode("PRIVATE KEY", &der);
        let back = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(back.secret_pkcs8_der(), &der[..]);
    }
}
