//! A TCP echo server on loopback: the simplest real upstream for tunnel tests.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Open connections by id, so that stopping the server can close them.
type Open = Arc<Mutex<HashMap<u64, TcpStream>>>;

/// Echoes every byte back until the peer closes its side, then closes. One thread per
/// connection. Dropping it stops accepting and closes the connections still open (an
/// upstream going away, as tunnel tests want to see it).
///
/// ```
/// use std::io::{Read, Write};
/// let echo = sdm_testkit::EchoServer::start()?;
/// let mut conn = std::net::TcpStream::connect(echo.addr())?;
/// conn.write_all(b"ping")?;
/// let mut buf = [0u8; 4];
/// conn.read_exact(&mut buf)?;
/// assert_eq!(&buf, b"ping");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct EchoServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    open: Open,
    acceptor: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Listens on 127.0.0.1 on a port chosen by the kernel.
    pub fn start() -> io::Result<EchoServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let open: Open = Arc::default();
        let acceptor = {
            let stopping = Arc::clone(&stopping);
            let open = Arc::clone(&open);
            thread::Builder::new()
                .name("sdm-testkit-echo".into())
                .spawn(move || accept_loop(&listener, &stopping, &open))?
        };
        Ok(EchoServer {
            addr,
            stopping,
            open,
            acceptor: Some(acceptor),
        })
    }

    /// The listening address (127.0.0.1:PORT).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // accept() has no timeout; a connection of our own wakes it to see the flag.
        let woke = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).is_ok();
        if let Some(acceptor) = self.acceptor.take() {
            // Without the wake-up the join could wait forever; leave the thread instead.
            if woke {
                let _ = acceptor.join();
            }
        }
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        for stream in open.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl std::fmt::Debug for EchoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoServer")
            .field("addr", &self.addr)
            .finish()
    }
}

fn accept_loop(listener: &TcpListener, stopping: &AtomicBool, open: &Open) {
    let mut next_id = 0u64;
    for conn in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let stream = match conn {
            Ok(stream) => stream,
            Err(_) => {
                // EMFILE and friends: back off instead of spinning.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let id = next_id;
        next_id += 1;
        if let Ok(handle) = stream.try_clone() {
            open.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, handle);
        }
        let registry = Arc::clone(open);
        let spawned = thread::Builder::new()
            .name("sdm-testkit-echo-conn".into())
            .spawn(move || {
                echo(stream);
                registry
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
            });
        if spawned.is_err() {
            open.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        }
    }
}

fn echo(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(mut reader) = stream.try_clone() else {
        return;
    };
    let mut writer = stream;
    let _ = io::copy(&mut reader, &mut writer);
    let _ = writer.shutdown(Shutdown::Write);
}
