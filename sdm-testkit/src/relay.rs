//! A TCP relay on loopback that can be cut and restored: put it in front of a service to see
//! how clients behave when the service becomes unreachable and comes back.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

type Open = Arc<Mutex<HashMap<u64, TcpStream>>>;

struct Running {
    stopping: Arc<AtomicBool>,
    open: Open,
    acceptor: JoinHandle<()>,
}

/// Forwards every connection on 127.0.0.1:`port()` to `target`, one thread per direction.
/// [`cut`](Relay::cut) closes the listener and every relayed connection (the service looks
/// down); [`restore`](Relay::restore) listens again on the same port.
pub struct Relay {
    target: SocketAddr,
    addr: SocketAddr,
    running: Option<Running>,
}

impl Relay {
    /// Starts relaying to `target` from a free loopback port.
    pub fn start(target: SocketAddr) -> io::Result<Relay> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let mut relay = Relay {
            target,
            addr,
            running: None,
        };
        relay.run(listener)?;
        Ok(relay)
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Whether it is relaying (not cut).
    pub fn is_up(&self) -> bool {
        self.running.is_some()
    }

    /// Stops listening and cuts every relayed connection.
    pub fn cut(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        running.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5));
        let _ = running.acceptor.join();
        let open = running.open.lock().unwrap_or_else(PoisonError::into_inner);
        for stream in open.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same port.
    pub fn restore(&mut self) -> io::Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.addr)?;
        self.run(listener)
    }

    fn run(&mut self, listener: TcpListener) -> io::Result<()> {
        let stopping = Arc::new(AtomicBool::new(false));
        let open: Open = Arc::default();
        let acceptor = {
            let (stopping, open, target) = (stopping.clone(), open.clone(), self.target);
            thread::Builder::new()
                .name("sdm-testkit-relay".into())
                .spawn(move || accept_loop(&listener, target, &stopping, &open))?
        };
        self.running = Some(Running {
            stopping,
            open,
            acceptor,
        });
        Ok(())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, stopping: &AtomicBool, open: &Open) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    for incoming in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else { continue };
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(10)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        {
            let mut open = open.lock().unwrap_or_else(PoisonError::into_inner);
            if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                open.insert(NEXT.fetch_add(1, Ordering::Relaxed), c);
                open.insert(NEXT.fetch_add(1, Ordering::Relaxed), s);
            }
        }
        pipe(client, server);
        pipe(server2, client2);
    }
}

/// Copies `from` to `to` on its own thread until either side ends.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = thread::Builder::new()
        .name("sdm-testkit-relay-pipe".into())
        .spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::EchoServer;

    fn round_trip(addr: SocketAddr) -> io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"hello")?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf)?;
        Ok(buf.to_vec())
    }

    #[test]
    fn cut_and_restore() {
        let echo = EchoServer::start().unwrap();
        let mut relay = Relay::start(echo.addr()).unwrap();
        assert_eq!(round_trip(relay.addr()).unwrap(), b"hello");
        let mut held = TcpStream::connect(relay.addr()).unwrap();
        held.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        relay.cut();
        assert!(!relay.is_up());
        assert!(round_trip(relay.addr()).is_err());
        let mut buf = [0u8; 1];
        assert!(
            matches!(held.read(&mut buf), Ok(0) | Err(_)),
            "a relayed connection survived the cut"
        );
        relay.restore().unwrap();
        assert_eq!(round_trip(relay.addr()).unwrap(), b"hello");
    }
}
