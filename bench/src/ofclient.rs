//! A minimal OpenFlow 1.3 client for the benchmarks: connects to a switch (TCP, or Open
//! vSwitch's Unix management socket), sends pre-encoded messages as fast as the socket takes
//! them, and waits for a barrier reply. A reader thread drains everything the switch sends
//! (so a burst of errors cannot stall the writer), counts the errors and answers echo
//! requests (a switch closes a connection that stops answering them).

use cloudrack_wire::ofp::{self, Body, Message};
use cloudrack_wire::ofp_stream::{Incoming, MsgReader};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Writer = Arc<Mutex<Box<dyn Write + Send>>>;

pub struct OfClient {
    out: Writer,
    barriers: Receiver<u32>,
    pub errors: Arc<AtomicU64>,
    xid: u32,
}

/// Where a switch listens.
pub enum Target {
    Tcp(String),
    Unix(std::path::PathBuf),
}

impl OfClient {
    pub fn connect(target: &Target) -> Result<OfClient, String> {
        let (rd, wr): (Box<dyn Read + Send>, Box<dyn Write + Send>) = match target {
            Target::Tcp(addr) => {
                let s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
                s.set_nodelay(true).ok();
                (Box::new(s.try_clone().map_err(|e| e.to_string())?), Box::new(s))
            }
            Target::Unix(path) => {
                let s = UnixStream::connect(path).map_err(|e| format!("connect {}: {e}", path.display()))?;
                (Box::new(s.try_clone().map_err(|e| e.to_string())?), Box::new(s))
            }
        };
        let (tx, barriers) = channel();
        let errors = Arc::new(AtomicU64::new(0));
        let errs = errors.clone();
        let out: Writer = Arc::new(Mutex::new(wr));
        let echo = out.clone();
        std::thread::spawn(move || {
            let mut r = MsgReader::new(rd);
            while let Ok(m) = r.next_message() {
                if let Incoming::Message(m) = m {
                    match m.body {
                        Body::BarrierReply if tx.send(m.xid).is_err() => return,
                        Body::BarrierReply => {}
                        Body::Error { .. } => {
                            errs.fetch_add(1, Relaxed);
                        }
                        Body::EchoRequest(data) => {
                            let reply = Message::new(m.xid, Body::EchoReply(data)).encode();
                            let mut w = echo.lock().unwrap_or_else(|e| e.into_inner());
                            if w.write_all(&reply).is_err() {
                                return;
                            }
                        }
                        _ => {}
                    }
                }
            }
        });
        let mut c = OfClient {
            out,
            barriers,
            errors,
            xid: 1,
        };
        c.send_all(&[Message::new(0, Body::hello(&[ofp::OFP_VERSION])).encode()])?;
        Ok(c)
    }

    /// Write pre-encoded messages, back to back.
    pub fn send_all(&mut self, encoded: &[Vec<u8>]) -> Result<(), String> {
        let mut buf = Vec::with_capacity(1 << 20);
        let flush = |buf: &mut Vec<u8>| {
            let mut w = self.out.lock().unwrap_or_else(|e| e.into_inner());
            let r = w.write_all(buf).map_err(|e| format!("send: {e}"));
            buf.clear();
            r
        };
        for m in encoded {
            buf.extend_from_slice(m);
            if buf.len() >= 1 << 20 {
                flush(&mut buf)?;
            }
        }
        flush(&mut buf)
    }

    /// Send a barrier and wait for its reply: everything sent before it has been processed.
    pub fn barrier(&mut self, timeout: Duration) -> Result<(), String> {
        self.xid += 1;
        let xid = self.xid;
        self.send_all(&[Message::new(xid, Body::BarrierRequest).encode()])?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.barriers.recv_timeout(left) {
                Ok(x) if x == xid => return Ok(()),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => return Err(format!("no barrier reply in {timeout:?}")),
                Err(RecvTimeoutError::Disconnected) => return Err("the switch closed the connection".into()),
            }
        }
    }

    /// Send `msgs` and time them to the barrier reply.
    pub fn timed(&mut self, msgs: &[Vec<u8>], timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        self.send_all(msgs)?;
        self.barrier(timeout)?;
        Ok(start.elapsed())
    }
}
