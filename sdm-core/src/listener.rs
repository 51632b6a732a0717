//! Where a tunnel listens: a TCP port on loopback (the default) or a Unix socket in a private
//! directory; optionally refusing connections from other OS users.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::error::{Error, ErrorKind, Result};
use crate::resource::{Resource, ResourceKind};
use crate::sock_diag::SockDiag;

/// Where a tunnel listens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenAddr {
    /// A TCP address, 127.0.0.1:PORT unless the caller chose another.
    Tcp(SocketAddr),
    /// A Unix socket (mode 0600, in a directory of mode 0700).
    Unix(PathBuf),
}

impl ListenAddr {
    /// The TCP address, or `None` for a Unix socket.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            ListenAddr::Tcp(addr) => Some(*addr),
            ListenAddr::Unix(_) => None,
        }
    }

    /// The socket's path, or `None` for a TCP address.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            ListenAddr::Tcp(_) => None,
            ListenAddr::Unix(path) => Some(path),
        }
    }

    /// The IP address as text (`"127.0.0.1"`, what a driver's `host` takes); `None` for a
    /// Unix socket.
    pub fn host(&self) -> Option<String> {
        self.tcp().map(|a| a.ip().to_string())
    }

    /// The TCP port; `None` for a Unix socket.
    pub fn port(&self) -> Option<u16> {
        self.tcp().map(|a| a.port())
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

pub(crate) enum LocalListener {
    /// The socket, and where the owners of the connections it accepts are asked (opened at the
    /// first connection, kept while it answers).
    Tcp(TcpListener, Mutex<Option<SockDiag>>),
    /// The socket, its path, and whether its directory is ours to remove with it.
    Unix(UnixListener, PathBuf, bool),
}

pub(crate) enum LocalStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl LocalListener {
    pub(crate) async fn bind_tcp(addr: SocketAddr, resource: &str) -> Result<LocalListener> {
        TcpListener::bind(addr)
            .await
            .map(|l| LocalListener::Tcp(l, Mutex::new(None)))
            .map_err(|e| bind_error(&addr.to_string(), resource, e))
    }

    /// A Unix socket at `path`. Its directory is created with mode 0700 if missing; an existing
    /// directory that other users can enter or write is refused, as is an existing file at `path`
    /// that is not a stale socket of ours.
    pub(crate) fn bind_unix(path: &Path, resource: &str) -> Result<LocalListener> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .ok_or_else(|| {
                Error::invalid_argument(format!("{} has no directory", path.display()))
            })?;
        private_dir(dir)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if let Ok(existing) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            let stale = existing.file_type().is_socket()
                && existing.uid() == me
                && std::os::unix::net::UnixStream::connect(path).is_err();
            if !stale {
                return Err(Error::new(
                    ErrorKind::PortInUse,
                    format!(
                        "{} already exists and is in use; choose another path",
                        path.display()
                    ),
                ));
            }
            let _ = std::fs::remove_file(path);
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| bind_error(&path.display().to_string(), resource, e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            Error::internal(format!("cannot restrict {}: {e}", path.display())).with_source(e)
        })?;
        Ok(LocalListener::Unix(listener, path.to_owned(), false))
    }

    /// A Unix socket in a new private directory of its own (removed with the socket), under
    /// `$XDG_RUNTIME_DIR/sdm`, else under `sdm-UID` in the temporary directory (both 0700 and
    /// this user's, or refused). A postgres resource's socket is named `.s.PGSQL.5432`, so
    /// libpq reaches it with the directory as `host` and 5432 as `port`.
    pub(crate) fn bind_private_unix(resource: &Resource) -> Result<LocalListener> {
        let dir = private_socket_dir(resource)?;
        let file = match resource.kind {
            ResourceKind::Postgres => ".s.PGSQL.5432",
            _ => "socket",
        };
        match LocalListener::bind_unix(&dir.join(file), &resource.name) {
            Ok(mut listener) => {
                if let LocalListener::Unix(_, _, own_dir) = &mut listener {
                    *own_dir = true;
                }
                Ok(listener)
            }
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    pub(crate) fn addr(&self) -> Result<ListenAddr> {
        match self {
            LocalListener::Tcp(l, _) => l
                .local_addr()
                .map(ListenAddr::Tcp)
                .map_err(|e| Error::internal(format!("listener has no address: {e}"))),
            LocalListener::Unix(_, path, _) => Ok(ListenAddr::Unix(path.clone())),
        }
    }

    /// The next connection, with its peer's address (for logs) and OS user (when asked for).
    pub(crate) async fn accept(
        &self,
        want_uid: bool,
    ) -> io::Result<(LocalStream, String, Option<u32>)> {
        match self {
            LocalListener::Tcp(l, diag) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                let uid = if want_uid {
                    let local = s.local_addr()?;
                    tcp_peer_uid(diag, peer, local)
                } else {
                    None
                };
                Ok((LocalStream::Tcp(s), peer.to_string(), uid))
            }
            LocalListener::Unix(l, path, _) => {
                let (s, _) = l.accept().await?;
                let uid = s.peer_cred().ok().map(|c| c.uid());
                Ok((LocalStream::Unix(s), path.display().to_string(), uid))
            }
        }
    }
}

impl Drop for LocalListener {
    fn drop(&mut self) {
        if let LocalListener::Unix(_, path, own_dir) = self {
            let _ = std::fs::remove_file(&*path);
            if *own_dir && let Some(dir) = path.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// Creates `dir` (mode 0700) if missing; refuses a directory of another user or one that other
/// users can enter or write (they could reach or replace the socket).
fn private_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                Error::invalid_argument(format!("cannot create {}: {e}", dir.display()))
                    .with_source(e)
            })?;
    }
    let meta = std::fs::metadata(dir).map_err(|e| {
        Error::invalid_argument(format!("cannot read {}: {e}", dir.display())).with_source(e)
    })?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me || meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::invalid_argument(format!(
            "{} must be a directory of this user with mode 0700 (others could reach the socket); \
             use a private directory",
            dir.display()
        )));
    }
    Ok(())
}

/// A new directory for one tunnel's socket: `BASE/NAME-RANDOM`, BASE being
/// `$XDG_RUNTIME_DIR/sdm` or `TMPDIR/sdm-UID`, each checked by [`private_dir`].
fn private_socket_dir(resource: &Resource) -> Result<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let base = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(runtime) => PathBuf::from(runtime).join("sdm"),
        None => std::env::temp_dir().join(format!("sdm-{me}")),
    };
    private_dir(&base)?;
    let name: String = resource
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    let random = uuid::Uuid::new_v4().simple().to_string();
    let dir = base.join(format!("{name}-{}", &random[..12]));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| {
            Error::invalid_argument(format!("cannot create {}: {e}", dir.display())).with_source(e)
        })?;
    Ok(dir)
}

fn bind_error(addr: &str, resource: &str, e: io::Error) -> Error {
    use std::io::ErrorKind as K;
    let (kind, message) = match e.kind() {
        K::AddrInUse => (
            ErrorKind::PortInUse,
            format!(
                "cannot open a tunnel to {resource:?} on {addr}: the port is already in use; \
                 choose another port or stop what is using it"
            ),
        ),
        K::PermissionDenied => (
            ErrorKind::InvalidArgument,
            format!(
                "cannot listen on {addr}: permission denied (ports below 1024 need privileges)"
            ),
        ),
        _ => (
            ErrorKind::InvalidArgument,
            format!("cannot listen on {addr}: {e}"),
        ),
    };
    Error::new(kind, message).with_source(e)
}

/// The OS user owning the other end of a loopback TCP connection: the client's socket is the
/// one whose local address is our peer and whose remote address is our local address. Asked of
/// the kernel for that one socket, on the listener's netlink socket `diag`; read from
/// /proc/net/tcp{,6} only where the kernel does not answer such questions. A socket that failed
/// once is closed, and the next connection opens another.
fn tcp_peer_uid(
    diag: &Mutex<Option<SockDiag>>,
    peer: SocketAddr,
    local: SocketAddr,
) -> Option<u32> {
    // A lock poisoned by a panic while asking still holds a socket that answers by sequence
    // number, or none.
    let mut diag = diag.lock().unwrap_or_else(PoisonError::into_inner);
    let asked = match diag.as_mut() {
        Some(open) => open.owner(peer, local),
        None => SockDiag::open().and_then(|opened| diag.insert(opened).owner(peer, local)),
    };
    match asked {
        Ok(owner) => owner,
        Err(_) => {
            *diag = None;
            tcp_peer_uid_from_table(peer, local)
        }
    }
}

fn tcp_peer_uid_from_table(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let (table, peer_hex, local_hex) = match (peer, local) {
        (SocketAddr::V4(p), SocketAddr::V4(l)) => ("/proc/net/tcp", v4_hex(p), v4_hex(l)),
        (SocketAddr::V6(p), SocketAddr::V6(l)) => ("/proc/net/tcp6", v6_hex(p), v6_hex(l)),
        _ => return None,
    };
    let text = std::fs::read_to_string(table).ok()?;
    text.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.len() > 7
            && cols[1].eq_ignore_ascii_case(&peer_hex)
            && cols[2].eq_ignore_ascii_case(&local_hex))
        .then(|| cols[7].parse().ok())
        .flatten()
    })
}

fn v4_hex(a: std::net::SocketAddrV4) -> String {
    format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(a.ip().octets()),
        a.port()
    )
}

fn v6_hex(a: std::net::SocketAddrV6) -> String {
    let o = a.ip().octets();
    let words: String = o
        .chunks(4)
        .map(|w| format!("{:08X}", u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
        .collect();
    format!("{words}:{:04X}", a.port())
}

impl AsyncRead for LocalStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LocalStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            LocalStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for LocalStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            LocalStream::Tcp(s) => Pin::new(s).poll_write(cx, data),
            LocalStream::Unix(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LocalStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            LocalStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LocalStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            LocalStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses_are_encoded_like_the_kernel() {
        let a: std::net::SocketAddrV4 = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(v4_hex(a), "0100007F:1F90");
        let b: std::net::SocketAddrV6 = "[::1]:5432".parse().unwrap();
        assert_eq!(v6_hex(b), "00000000000000000000000001000000:1538");
    }

    #[tokio::test]
    async fn the_peer_of_a_loopback_connection_is_this_user() {
        let l = LocalListener::bind_tcp("127.0.0.1:0".parse().unwrap(), "t")
            .await
            .unwrap();
        let ListenAddr::Tcp(addr) = l.addr().unwrap() else {
            panic!()
        };
        let _client = TcpStream::connect(addr).await.unwrap();
        let (_, _, uid) = l.accept(true).await.unwrap();
        assert_eq!(uid, Some(unsafe { libc::geteuid() }));
    }
}
