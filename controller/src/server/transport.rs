//! Plaintext bytes in and out of one non-blocking socket, directly or through a rustls
//! `ServerConnection` driven by readiness (read_tls, process_new_packets, reader, writer,
//! write_tls). Nothing here waits: every call does what the socket allows now.

use cloudrack_channel::rustls::ServerConnection;
use mio::net::TcpStream;
use std::io::{self, ErrorKind, Read, Write};

pub(super) struct Transport {
    pub(super) sock: TcpStream,
    tls: Option<Box<ServerConnection>>,
}

impl Transport {
    pub(super) fn new(sock: TcpStream, tls: Option<ServerConnection>) -> Transport {
        Transport {
            sock,
            tls: tls.map(Box::new),
        }
    }

    pub(super) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether the TLS handshake is still going on (never, for plain TCP).
    pub(super) fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    pub(super) fn tls(&self) -> Option<&ServerConnection> {
        self.tls.as_deref()
    }

    /// Plaintext into `buf`, like a non-blocking `Read`: `Ok(0)` at the end of the stream,
    /// `WouldBlock` when nothing more is there now, `InvalidData` for a TLS protocol error
    /// (whose alert is queued: [`Transport::send`] it before closing).
    pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return self.sock.read(buf);
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                // The peer closed TCP without close_notify: an end all the same.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if tls.read_tls(&mut self.sock)? == 0 {
                return Ok(0);
            }
            if let Err(e) = tls.process_new_packets() {
                return Err(io::Error::new(ErrorKind::InvalidData, format!("TLS: {e}")));
            }
        }
    }

    /// Sends as much of `data` as the socket takes now and returns how much that was; with
    /// TLS, also the records rustls holds (handshake messages, alerts). Errors mean the
    /// connection is broken.
    pub(super) fn send(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        match &mut self.tls {
            None => {
                while !data.is_empty() {
                    match self.sock.write(data) {
                        Ok(0) => return Err(ErrorKind::WriteZero.into()),
                        Ok(n) => data = &data[n..],
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Some(tls) => loop {
                if !flush_tls(tls, &mut self.sock)? || data.is_empty() {
                    break;
                }
                // rustls takes at most its buffer limit (64 KiB) at a time.
                match tls.writer().write(data)? {
                    0 => break,
                    n => data = &data[n..],
                }
            },
        }
        Ok(total - data.len())
    }

    /// Whether TLS records are waiting for the socket.
    pub(super) fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Best effort on the way out: a TLS close_notify, then both directions shut.
    pub(super) fn shutdown(&mut self) {
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            let _ = flush_tls(tls, &mut self.sock);
        }
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

/// Write queued TLS records until none is left (true) or the socket would block (false).
fn flush_tls(tls: &mut ServerConnection, sock: &mut TcpStream) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
