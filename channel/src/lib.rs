//! The OpenFlow channel between switches and controllers: plain TCP (labs, explicit) or TLS
//! with mutual authentication (rustls), behind one [`Channel`] type that a reader thread and a
//! writer thread share, as they share a cloned `TcpStream` today.
//!
//! Identity: every host has its own certificate from the deployment's CA (scripts/pki.sh). A
//! switch's certificate names its datapath id as the DNS name `<16 hex digits>.dpid.cloudrack`
//! ([`dpid_name`]); the controller accepts a dpid only over a connection whose certificate
//! names it ([`Channel::peer_names_dpid`]). Switches check the controller's certificate for
//! [`CONTROLLER_NAME`] unless told another name.

mod tls;

pub use rustls;
pub use tls::{client_config, server_config, TlsError, TlsFiles};

use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The DNS name switches expect in the controller's certificate by default.
pub const CONTROLLER_NAME: &str = "controller.cloudrack";

/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a write may wait for a peer that reads nothing.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The name a switch certificate carries for `dpid`.
pub fn dpid_name(dpid: u64) -> String {
    format!("{dpid:016x}.dpid.cloudrack")
}

/// Whether a TLS peer's verified chain (rustls's `peer_certificates()`: end-entity first)
/// names datapath `dpid`. False without certificates.
pub fn certificates_name_dpid(chain: Option<&[CertificateDer<'_>]>, dpid: u64) -> bool {
    chain
        .and_then(|c| c.first())
        .is_some_and(|c| tls::cert_names(c, &dpid_name(dpid)))
}

/// One end of an OpenFlow connection. Clones share the connection (one reader, one writer).
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

enum Inner {
    Plain(TcpStream),
    Tls(Box<TlsShared>),
}

/// A TLS session over a non-blocking socket. The lock is held only for non-blocking steps;
/// waiting happens in poll(2) without it, so a blocked reader never stalls the writer.
struct TlsShared {
    conn: Mutex<rustls::Connection>,
    sock: TcpStream,
    /// Read timeout in ms (0: none), as `TcpStream::set_read_timeout`.
    read_timeout_ms: AtomicU64,
    peer_cert: Option<CertificateDer<'static>>,
}

impl Channel {
    pub fn plain(stream: TcpStream) -> Channel {
        let _ = stream.set_nodelay(true);
        Channel {
            inner: Arc::new(Inner::Plain(stream)),
        }
    }

    /// Accept a TLS session on `stream` (the controller's side); the client must present a
    /// certificate from the configured CA.
    pub fn tls_server(stream: TcpStream, config: Arc<rustls::ServerConfig>) -> io::Result<Channel> {
        let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
        Channel::tls(stream, conn.into())
    }

    /// Open a TLS session on `stream` (the switch's side), checking the server's certificate
    /// for `server_name`.
    pub fn tls_client(stream: TcpStream, config: Arc<rustls::ClientConfig>, server_name: &str) -> io::Result<Channel> {
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, format!("bad server name {server_name:?}: {e}")))?;
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        Channel::tls(stream, conn.into())
    }

    fn tls(mut sock: TcpStream, mut conn: rustls::Connection) -> io::Result<Channel> {
        let _ = sock.set_nodelay(true);
        sock.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        sock.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let started = Instant::now();
        while conn.is_handshaking() {
            if started.elapsed() > HANDSHAKE_TIMEOUT {
                return Err(io::Error::new(ErrorKind::TimedOut, "TLS handshake timed out"));
            }
            match conn.complete_io(&mut sock) {
                Ok(_) => {}
                Err(e) => {
                    // Tell the peer why (a bad certificate alert), then give up.
                    let _ = conn.write_tls(&mut sock);
                    return Err(io::Error::new(e.kind(), format!("TLS handshake failed: {e}")));
                }
            }
        }
        // Flush what the handshake left (e.g. the client's Finished).
        while conn.wants_write() {
            conn.write_tls(&mut sock)?;
        }
        let peer_cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned());
        sock.set_read_timeout(None)?;
        sock.set_write_timeout(None)?;
        sock.set_nonblocking(true)?;
        Ok(Channel {
            inner: Arc::new(Inner::Tls(Box::new(TlsShared {
                conn: Mutex::new(conn),
                sock,
                read_timeout_ms: AtomicU64::new(0),
                peer_cert,
            }))),
        })
    }

    pub fn is_tls(&self) -> bool {
        matches!(*self.inner, Inner::Tls(_))
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match &*self.inner {
            Inner::Plain(s) => s.peer_addr(),
            Inner::Tls(t) => t.sock.peer_addr(),
        }
    }

    /// Reads wait at most this long, then fail with `WouldBlock`/`TimedOut` (None: forever).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match &*self.inner {
            Inner::Plain(s) => s.set_read_timeout(t),
            Inner::Tls(tls) => {
                let ms = t.map_or(0, |t| (t.as_millis() as u64).max(1));
                tls.read_timeout_ms.store(ms, Relaxed);
                Ok(())
            }
        }
    }

    /// Whether the peer's (verified) certificate names datapath `dpid`. False on plain TCP.
    pub fn peer_names_dpid(&self, dpid: u64) -> bool {
        match &*self.inner {
            Inner::Plain(_) => false,
            Inner::Tls(t) => certificates_name_dpid(t.peer_cert.as_ref().map(std::slice::from_ref), dpid),
        }
    }

    pub fn shutdown(&self) {
        match &*self.inner {
            Inner::Plain(s) => {
                let _ = s.shutdown(Shutdown::Both);
            }
            Inner::Tls(t) => {
                if let Ok(mut c) = t.conn.lock() {
                    c.send_close_notify();
                    let _ = c.write_tls(&mut &t.sock);
                }
                let _ = t.sock.shutdown(Shutdown::Both);
            }
        }
    }

    fn read_shared(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &*self.inner {
            Inner::Plain(s) => (&*s).read(buf),
            Inner::Tls(t) => t.read(buf),
        }
    }

    fn write_shared(&self, data: &[u8]) -> io::Result<()> {
        match &*self.inner {
            Inner::Plain(s) => (&*s).write_all(data),
            Inner::Tls(t) => t.write_all(data),
        }
    }
}

impl Read for Channel {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_shared(buf)
    }
}

impl Write for Channel {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_shared(data).map(|()| data.len())
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_shared(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsShared {
    fn lock(&self) -> MutexGuard<'_, rustls::Connection> {
        // A panic elsewhere poisons nothing we can't keep using: the state is rustls's own.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let timeout = match self.read_timeout_ms.load(Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            {
                let mut c = self.lock();
                match c.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    // The peer closed TCP without close_notify: an end all the same.
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                match c.read_tls(&mut &self.sock) {
                    Ok(0) => return Ok(0),
                    Ok(_) => {
                        if let Err(e) = c.process_new_packets() {
                            let _ = c.write_tls(&mut &self.sock); // the alert
                            return Err(io::Error::new(ErrorKind::InvalidData, format!("TLS: {e}")));
                        }
                        flush_nonblocking(&mut c, &self.sock)?;
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            let wait = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::new(ErrorKind::WouldBlock, "read timed out"));
                    }
                    Some(left)
                }
                None => None,
            };
            wait_for(&self.sock, libc::POLLIN, wait)?;
        }
    }

    fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        let deadline = Instant::now() + WRITE_TIMEOUT;
        loop {
            let pending = {
                let mut c = self.lock();
                if !data.is_empty() {
                    let n = c.writer().write(data)?;
                    data = &data[n..];
                }
                flush_nonblocking(&mut c, &self.sock)?;
                c.wants_write()
            };
            if data.is_empty() && !pending {
                return Ok(());
            }
            if pending {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(ErrorKind::TimedOut, "peer is not reading"));
                }
                wait_for(&self.sock, libc::POLLOUT, Some(left))?;
            }
        }
    }
}

/// Write queued TLS records until the socket would block.
fn flush_nonblocking(c: &mut rustls::Connection, sock: &TcpStream) -> io::Result<()> {
    while c.wants_write() {
        match c.write_tls(&mut &*sock) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// poll(2) one socket for `events`, at most `timeout` (None: forever). Timing out is not an
/// error here: the caller re-checks its deadline.
fn wait_for(sock: &TcpStream, events: libc::c_short, timeout: Option<Duration>) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events,
        revents: 0,
    };
    let ms = timeout.map_or(-1, |t| t.as_millis().clamp(1, i32::MAX as u128) as i32);
    // SAFETY: one valid pollfd for a socket we own, for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}
