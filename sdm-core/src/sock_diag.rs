//! The OS user owning one TCP socket on this host, asked of the kernel by its four-tuple
//! (`NETLINK_SOCK_DIAG`, as `ss` does). Reading `/proc/net/tcp` instead costs a walk of every
//! socket of the host, `TIME_WAIT` ones included: tens of milliseconds once short connections
//! have filled it (docs/BENCHMARKS.md, "Close to the floor").

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_HEADER: usize = 16;
/// `inet_diag_req_v2`: family, protocol, ext, pad, states, then the 48-byte socket id.
const REQUEST_BODY: usize = 8 + 48;
/// In the answer (`inet_diag_msg` after the header): family, state, timer, retrans, the socket
/// id, then expires, rqueue, wqueue and uid.
const ANSWER_ID: usize = NLMSG_HEADER + 4;
const ANSWER_UID: usize = ANSWER_ID + 48 + 12;

/// A netlink socket for asking the kernel who owns TCP sockets, kept by a listener so that a
/// connection costs a question and its answer (two system calls) instead of a socket of its own
/// (five). Each question carries its own sequence number and only the answer that repeats it is
/// believed: the answer to a question that timed out, arriving late, is read and skipped.
#[derive(Debug)]
pub(crate) struct SockDiag {
    fd: OwnedFd,
    seq: u32,
}

/// Answers read for one question before giving up: late answers to earlier questions that
/// timed out come first, one per question.
const MAX_ANSWERS_READ: usize = 16;

impl SockDiag {
    /// A socket to ask on: an error when there is none (no netlink in a sandbox, say).
    pub(crate) fn open() -> io::Result<SockDiag> {
        // SAFETY: plain socket(2); the descriptor is owned (and closed) by `fd` at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor this function just opened and nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // The kernel answers at once; the bound only keeps a broken answer from hanging an accept.
        let timeout = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: setsockopt(2) with a pointer to a live timeval and its size.
        let set = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        // Unbounded, a lost answer would hold the accept forever: read the table instead.
        if set != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SockDiag { fd, seq: 0 })
    }

    /// The owner of the TCP socket whose local address is `source` and whose peer is
    /// `destination`: `Ok(None)` when the kernel knows no such socket, an error when it could
    /// not be asked or did not answer (the caller then opens another socket or reads the table).
    pub(crate) fn owner(
        &mut self,
        source: SocketAddr,
        destination: SocketAddr,
    ) -> io::Result<Option<u32>> {
        let seq = self.ask(source, destination)?;
        let mut answer = [0u8; 512];
        for _ in 0..MAX_ANSWERS_READ {
            // SAFETY: recv(2) into a live buffer of the given length.
            let got = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    answer.as_mut_ptr().cast(),
                    answer.len(),
                    0,
                )
            };
            if got < 0 {
                return Err(io::Error::last_os_error());
            }
            let answer = &answer[..got as usize];
            if sequence_of(answer) == Some(seq) {
                return Ok(owner_in(answer, source, destination));
            }
        }
        Err(io::Error::other(
            "no answer from the kernel to this question",
        ))
    }

    /// Sends the question about one socket; its sequence number.
    fn ask(&mut self, source: SocketAddr, destination: SocketAddr) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let request = request(source, destination, self.seq).ok_or(io::ErrorKind::InvalidInput)?;
        // SAFETY: send(2) of a live buffer with its length.
        let sent = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                request.as_ptr().cast(),
                request.len(),
                0,
            )
        };
        if sent != request.len() as isize {
            return Err(io::Error::last_os_error());
        }
        Ok(self.seq)
    }
}

/// The owner of one TCP socket, asked on a socket opened for the question alone.
#[cfg(test)]
pub(crate) fn tcp_socket_owner(
    source: SocketAddr,
    destination: SocketAddr,
) -> io::Result<Option<u32>> {
    SockDiag::open()?.owner(source, destination)
}

/// The request for one socket, by its exact addresses (no dump).
fn request(source: SocketAddr, destination: SocketAddr, seq: u32) -> Option<Vec<u8>> {
    let family = match (source.ip(), destination.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET,
        (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6,
        _ => return None,
    };
    let mut m = Vec::with_capacity(NLMSG_HEADER + REQUEST_BODY);
    m.extend_from_slice(&((NLMSG_HEADER + REQUEST_BODY) as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    m.extend_from_slice(&[family as u8, libc::IPPROTO_TCP as u8, 0, 0]);
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // any state
    m.extend_from_slice(&socket_id(source, destination));
    Some(m)
}

/// `inet_diag_sockid`: ports and addresses in network order, any interface, no cookie.
fn socket_id(source: SocketAddr, destination: SocketAddr) -> [u8; 48] {
    let mut id = [0u8; 48];
    id[0..2].copy_from_slice(&source.port().to_be_bytes());
    id[2..4].copy_from_slice(&destination.port().to_be_bytes());
    for (at, ip) in [(4, source.ip()), (20, destination.ip())] {
        match ip {
            IpAddr::V4(a) => id[at..at + 4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => id[at..at + 16].copy_from_slice(&a.octets()),
        }
    }
    id[40..48].copy_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
    id
}

/// The sequence number an answer repeats from its question.
fn sequence_of(answer: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(answer.get(8..12)?.try_into().ok()?))
}

/// The uid in the kernel's answer, if it is an answer about exactly the socket asked for.
fn owner_in(answer: &[u8], source: SocketAddr, destination: SocketAddr) -> Option<u32> {
    let kind = u16::from_ne_bytes(answer.get(4..6)?.try_into().ok()?);
    if kind != SOCK_DIAG_BY_FAMILY {
        return None; // NLMSG_ERROR: no such socket
    }
    // Ports and addresses; the interface and cookie are the kernel's to fill in.
    let id = answer.get(ANSWER_ID..ANSWER_ID + 36)?;
    if id != &socket_id(source, destination)[..36] {
        return None;
    }
    Some(u32::from_ne_bytes(
        answer.get(ANSWER_UID..ANSWER_UID + 4)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn the_owner_of_a_loopback_connection_is_this_process_user() {
        for host in ["127.0.0.1", "[::1]"] {
            let Ok(listener) = TcpListener::bind(format!("{host}:0")) else {
                continue; // no IPv6 loopback here
            };
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (_server, peer) = listener.accept().unwrap();
            let local = listener.local_addr().unwrap();
            assert_eq!(peer, client.local_addr().unwrap());
            // SAFETY: getuid(2) cannot fail.
            let me = unsafe { libc::getuid() };
            assert_eq!(tcp_socket_owner(peer, local).unwrap(), Some(me), "{host}");
        }
    }

    #[test]
    fn a_socket_that_does_not_exist_has_no_owner() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let nobody: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(tcp_socket_owner(nobody, local).unwrap(), None);
    }

    /// A loopback connection's two ends: (the client's address, the server's address).
    fn loopback_pair(listener: &TcpListener) -> (TcpStream, TcpStream, SocketAddr, SocketAddr) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        (client, server, peer, listener.local_addr().unwrap())
    }

    #[test]
    fn one_socket_answers_question_after_question() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: getuid(2) cannot fail.
        let me = unsafe { libc::getuid() };
        let mut diag = SockDiag::open().unwrap();
        let nobody: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for _ in 0..3 {
            let (_client, _server, peer, local) = loopback_pair(&listener);
            assert_eq!(diag.owner(peer, local).unwrap(), Some(me));
            assert_eq!(diag.owner(nobody, local).unwrap(), None);
        }
    }

    #[test]
    fn a_late_answer_to_an_earlier_question_is_skipped() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: getuid(2) cannot fail.
        let me = unsafe { libc::getuid() };
        let mut diag = SockDiag::open().unwrap();
        let (_c1, _s1, first, local) = loopback_pair(&listener);
        let (_c2, _s2, second, _) = loopback_pair(&listener);
        // Questions whose answers were never read (as when a read timed out): the next
        // question's answer comes after theirs, and only it is believed.
        let nobody: SocketAddr = "127.0.0.1:9".parse().unwrap();
        diag.ask(nobody, local).unwrap();
        diag.ask(first, local).unwrap();
        assert_eq!(diag.owner(second, local).unwrap(), Some(me));
        assert_eq!(diag.owner(nobody, local).unwrap(), None);
        assert_eq!(diag.owner(first, local).unwrap(), Some(me));
    }

    #[test]
    fn an_answer_about_another_socket_or_cut_short_is_not_believed() {
        let a: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        let mut answer = vec![0u8; ANSWER_UID + 4];
        answer[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        answer[ANSWER_ID..ANSWER_ID + 48].copy_from_slice(&socket_id(a, b));
        answer[ANSWER_UID..].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(owner_in(&answer, a, b), Some(1000));
        assert_eq!(owner_in(&answer, b, a), None);
        for cut in 0..answer.len() {
            assert_eq!(owner_in(&answer[..cut], a, b), None);
        }
    }
}
