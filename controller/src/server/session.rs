//! One switch connection on an I/O thread: the TLS handshake's deadline, framing, echo replies
//! and liveness probes, HELLO negotiation, the switch's identity, and its outgoing bytes. Every
//! decoded message of an authenticated switch goes to the app thread as an [`Event`].

use super::transport::Transport;
use crate::conn_tx::{ConnTx, Outbox};
use crate::event::Event;
use crate::ids::ConnId;
use crate::io_counters::IoCounters;
use cloudrack_wire::ofp::{self, Body, Message};
use cloudrack_wire::ofp_stream::{decode_next, Incoming};
use crossbeam_channel::Sender;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Silence after which we probe a switch, and how many probes may go unanswered.
pub(super) const ECHO_INTERVAL: Duration = Duration::from_secs(2);
const MAX_MISSED_ECHOES: u32 = 3;
/// How long a switch whose connection we are closing gets to read our last words (an error).
const LINGER: Duration = Duration::from_secs(1);
/// A switch that takes none of our bytes for this long is closed (as a blocked writer's
/// timeout did); meanwhile what the app sends it is bounded by `conn_tx::MAX_QUEUED_BYTES`.
/// (Short in unit tests, which wait for it.)
pub(super) const WRITE_STALL: Duration = Duration::from_secs(if cfg!(test) { 3 } else { 30 });
/// Reads per readiness event before other connections get their turn.
const READ_BUDGET: usize = 16;
/// Idle buffers larger than this are freed, so 10,000 quiet switches cost little memory.
const KEEP_CAPACITY: usize = 16 * 1024;

/// What the I/O thread shares with all its sessions.
pub(super) struct Ctx {
    pub(super) events: Sender<Event>,
    pub(super) counters: Arc<IoCounters>,
    /// Plaintext is read into this, and only an incomplete message is kept per connection.
    pub(super) scratch: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// TLS handshake until the deadline; the app knows nothing of the connection yet.
    Handshake {
        deadline: Instant,
    },
    Open,
    /// Only writing what is queued (an error reply), then closed.
    Closing {
        deadline: Instant,
    },
}

/// What the I/O thread should do with a session after an event.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Keep,
    Close,
    /// Not finished reading: come back without waiting for readiness (edge-triggered).
    ReadAgain,
}

pub(super) struct Session {
    pub(super) id: ConnId,
    peer: SocketAddr,
    pub(super) transport: Transport,
    phase: Phase,
    out: Arc<Outbox>,
    /// An incomplete message, waiting for the rest.
    rbuf: Vec<u8>,
    /// Plaintext for the switch; `wbuf[wpos..]` is not sent yet.
    wbuf: Vec<u8>,
    wpos: usize,
    /// Over TLS nothing reaches the app before the switch's certificate proves its dpid.
    authenticated: bool,
    last_rx: Instant,
    /// When the socket last took bytes, or had none waiting.
    last_tx: Instant,
    missed: u32,
    /// The app has been told of this connection (and must be told when it ends).
    announced: bool,
    /// Whether the socket is registered for writability too.
    pub(super) writable_interest: bool,
}

impl Session {
    pub(super) fn new(id: ConnId, peer: SocketAddr, transport: Transport, out: Arc<Outbox>, now: Instant) -> Session {
        let phase = if transport.handshaking() {
            Phase::Handshake {
                deadline: now + cloudrack_channel::HANDSHAKE_TIMEOUT,
            }
        } else {
            Phase::Open
        };
        Session {
            id,
            peer,
            authenticated: !transport.is_tls(),
            transport,
            phase,
            out,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            last_rx: now,
            last_tx: now,
            missed: 0,
            announced: false,
            writable_interest: false,
        }
    }

    /// Tell the app about an open connection (plain TCP at once, TLS after the handshake).
    pub(super) fn start(&mut self, ctx: &Ctx, now: Instant) -> Verdict {
        if self.phase != Phase::Open || self.announced {
            return Verdict::Keep;
        }
        info!(conn = self.id, peer = %self.peer, tls = self.transport.is_tls(), "switch connection");
        self.announced = true;
        self.last_rx = now;
        let tx = ConnTx::new(self.out.clone());
        let connected = Event::Connected {
            conn: self.id,
            tx,
            peer: self.peer,
        };
        if ctx.events.send(connected).is_err() {
            return Verdict::Close;
        }
        Verdict::Keep
    }

    /// The socket is readable: take what is there (up to a budget), answer what the I/O
    /// thread answers itself, pass the rest on. `hup`: the peer may have closed its side.
    pub(super) fn on_readable(&mut self, ctx: &mut Ctx, now: Instant, hup: bool) -> Verdict {
        for _ in 0..READ_BUDGET {
            if matches!(self.phase, Phase::Closing { .. }) {
                return Verdict::Keep;
            }
            let mut scratch = std::mem::take(&mut ctx.scratch);
            let read = self.transport.read(&mut scratch);
            let got = read.as_ref().ok().copied();
            let verdict = match read {
                Ok(0) => {
                    debug!(conn = self.id, "connection closed by the switch");
                    self.fail_handshake(&ctx.counters, "connection closed during the TLS handshake");
                    Verdict::Close
                }
                Ok(n) => self.on_bytes(&scratch[..n], ctx, now),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // A TLS handshake step may have just finished.
                    ctx.scratch = scratch;
                    if self.phase_after_handshake(now) {
                        return self.start(ctx, now);
                    }
                    return Verdict::Keep;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => Verdict::Keep,
                Err(e) => {
                    if !self.fail_handshake(&ctx.counters, &e.to_string()) {
                        if e.kind() == ErrorKind::InvalidData {
                            ctx.counters.malformed.fetch_add(1, Relaxed);
                            warn!(conn = self.id, error = %e, "garbage on an OpenFlow connection; closing it");
                        } else {
                            debug!(conn = self.id, error = %e, "connection ended");
                        }
                    }
                    // A TLS alert may be queued: let it go out.
                    let _ = self.transport.send(&[]);
                    Verdict::Close
                }
            };
            // A short read on plain TCP emptied the socket; more data (or the end) will be a
            // new edge, unless the end already came with this one. Saves a read per message.
            let drained = got.is_some_and(|n| n < scratch.len()) && !self.transport.is_tls() && !hup;
            ctx.scratch = scratch;
            if verdict == Verdict::Close || (verdict == Verdict::Keep && drained) {
                return verdict;
            }
        }
        Verdict::ReadAgain
    }

    /// Count and log a failed TLS handshake; false if the handshake was not going on.
    fn fail_handshake(&self, counters: &IoCounters, why: &str) -> bool {
        if !matches!(self.phase, Phase::Handshake { .. }) {
            return false;
        }
        counters.tls_refused.fetch_add(1, Relaxed);
        warn!(conn = self.id, peer = %self.peer, error = why, "switch refused: no valid certificate");
        true
    }

    /// Handshake done: Open. True if it just happened.
    fn phase_after_handshake(&mut self, now: Instant) -> bool {
        if matches!(self.phase, Phase::Handshake { .. }) && !self.transport.handshaking() {
            self.phase = Phase::Open;
            self.last_rx = now;
            return true;
        }
        false
    }

    fn on_bytes(&mut self, data: &[u8], ctx: &mut Ctx, now: Instant) -> Verdict {
        // Application data comes only after the handshake: the app hears of the connection
        // before any of its messages.
        if self.phase_after_handshake(now) && self.start(ctx, now) == Verdict::Close {
            return Verdict::Close;
        }
        if self.rbuf.is_empty() {
            let (used, verdict) = self.frames(data, ctx, now);
            if verdict == Verdict::Keep {
                self.rbuf.extend_from_slice(&data[used..]);
            }
            return verdict;
        }
        let mut buf = std::mem::take(&mut self.rbuf);
        buf.extend_from_slice(data);
        let (used, verdict) = self.frames(&buf, ctx, now);
        buf.drain(..used);
        if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
            buf = Vec::new();
        }
        self.rbuf = buf;
        verdict
    }

    /// Handle every whole message in `buf`; how many bytes they took.
    fn frames(&mut self, buf: &[u8], ctx: &mut Ctx, now: Instant) -> (usize, Verdict) {
        let mut used = 0;
        loop {
            if matches!(self.phase, Phase::Closing { .. }) {
                return (used, Verdict::Keep);
            }
            match decode_next(&buf[used..]) {
                Ok(None) => return (used, Verdict::Keep),
                Ok(Some((incoming, len))) => {
                    used += len;
                    if self.incoming(incoming, ctx, now) == Verdict::Close {
                        return (used, Verdict::Close);
                    }
                }
                Err(e) => {
                    ctx.counters.malformed.fetch_add(1, Relaxed);
                    warn!(conn = self.id, error = %e, "garbage on an OpenFlow connection; closing it");
                    return (used, Verdict::Close);
                }
            }
        }
    }

    fn incoming(&mut self, incoming: Incoming, ctx: &mut Ctx, now: Instant) -> Verdict {
        let msg = match incoming {
            Incoming::Message(msg) => msg,
            Incoming::Malformed { raw, error } => {
                ctx.counters.malformed.fetch_add(1, Relaxed);
                warn!(conn = self.id, %error, "malformed OpenFlow message from switch");
                let reply = Message::error_reply_to(&raw, ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_LEN);
                self.queue(&reply);
                return Verdict::Keep;
            }
        };
        self.last_rx = now;
        self.missed = 0;
        let to_app = match &msg.body {
            // Answered here so a busy app never makes a switch think we died.
            Body::EchoRequest(data) => {
                self.queue(&Message::new(msg.xid, Body::EchoReply(data.clone())));
                false
            }
            Body::EchoReply(_) => false,
            Body::Hello { version, elements } => {
                if ofp::negotiate_version(*version, elements, &[ofp::OFP_VERSION]).is_none() {
                    warn!(conn = self.id, version, "switch does not speak OpenFlow 1.3; closing");
                    let body = Body::error_reply(ofp::OFPET_HELLO_FAILED, ofp::OFPHFC_INCOMPATIBLE, &msg.encode());
                    self.queue(&Message::new(msg.xid, body));
                    self.linger(now);
                }
                false
            }
            Body::FeaturesReply { datapath_id, .. } if self.transport.is_tls() => {
                let chain = self.transport.tls().and_then(|t| t.peer_certificates());
                if !cloudrack_channel::certificates_name_dpid(chain, *datapath_id) {
                    ctx.counters.identity_refused.fetch_add(1, Relaxed);
                    warn!(
                        conn = self.id,
                        dpid = format!("{datapath_id:016x}"),
                        expected = cloudrack_channel::dpid_name(*datapath_id),
                        "switch refused: its certificate does not name the dpid it claims; closing"
                    );
                    return Verdict::Close;
                }
                self.authenticated = true;
                true
            }
            Body::Error { .. } | Body::FeaturesReply { .. } => true,
            _ if !self.authenticated => {
                ctx.counters.unauthenticated.fetch_add(1, Relaxed);
                debug!(conn = self.id, "message before the switch proved its dpid; dropped");
                false
            }
            _ => true,
        };
        if to_app && ctx.events.send(Event::Message { conn: self.id, msg }).is_err() {
            return Verdict::Close;
        }
        Verdict::Keep
    }

    /// Stop reading; close once what is queued went out (or after [`LINGER`]).
    fn linger(&mut self, now: Instant) {
        self.phase = Phase::Closing { deadline: now + LINGER };
        self.out.lock().closed = true;
    }

    /// Queue a message of the I/O thread's own (echo, errors) behind the app's.
    fn queue(&mut self, msg: &Message) {
        self.take_outbox();
        if let Err(e) = msg.try_encode_into(&mut self.wbuf) {
            warn!(conn = self.id, msg_type = msg.msg_type(), error = %e, "message cannot be encoded; not sent");
        }
    }

    /// Move what the app queued behind what is already waiting.
    pub(super) fn take_outbox(&mut self) {
        let mut q = self.out.lock();
        q.scheduled = false;
        if q.bytes.is_empty() {
            return;
        }
        if self.wpos == self.wbuf.len() {
            // Nothing pending: take the app's buffer whole instead of copying it.
            self.wbuf.clear();
            self.wpos = 0;
            std::mem::swap(&mut self.wbuf, &mut q.bytes);
        } else {
            self.wbuf.extend_from_slice(&q.bytes);
            q.bytes.clear();
        }
        if q.bytes.capacity() > KEEP_CAPACITY {
            q.bytes = Vec::new();
        }
    }

    /// Write what the socket takes now. Close on a broken connection, or when a closing
    /// session has said everything.
    pub(super) fn flush(&mut self) -> Verdict {
        let sent = match self.transport.send(&self.wbuf[self.wpos..]) {
            Ok(n) => n,
            Err(e) => {
                debug!(conn = self.id, error = %e, "write failed; closing");
                return Verdict::Close;
            }
        };
        self.wpos += sent;
        if sent > 0 {
            self.last_tx = Instant::now();
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
            if self.wbuf.capacity() > KEEP_CAPACITY {
                self.wbuf = Vec::new();
            }
        }
        self.out.unsent.store(self.wbuf.len() - self.wpos, Relaxed);
        if matches!(self.phase, Phase::Closing { .. }) && !self.wants_write() {
            return Verdict::Close;
        }
        Verdict::Keep
    }

    pub(super) fn wants_write(&self) -> bool {
        self.wpos < self.wbuf.len() || self.transport.wants_write()
    }

    /// Timers: the handshake's deadline, a closing session's linger, liveness probes (queued;
    /// the caller flushes). A probe takes one of `probes`; with none left it waits for the
    /// next visit.
    pub(super) fn on_tick(&mut self, ctx: &Ctx, now: Instant, probes: &mut usize) -> Verdict {
        match self.phase {
            Phase::Handshake { deadline } if now >= deadline => {
                self.fail_handshake(&ctx.counters, "TLS handshake timed out");
                Verdict::Close
            }
            Phase::Closing { deadline } if now >= deadline => Verdict::Close,
            _ if !self.wants_write() => {
                self.last_tx = now;
                self.on_liveness(now, probes)
            }
            _ if now >= self.last_tx + WRITE_STALL => {
                warn!(
                    conn = self.id,
                    secs = WRITE_STALL.as_secs(),
                    "switch has read nothing for too long; closing"
                );
                Verdict::Close
            }
            _ => self.on_liveness(now, probes),
        }
    }

    /// Probe a silent switch; close one that missed too many probes.
    fn on_liveness(&mut self, now: Instant, probes: &mut usize) -> Verdict {
        match self.phase {
            Phase::Open if now >= self.last_rx + ECHO_INTERVAL * (self.missed + 1) => {
                if self.missed == MAX_MISSED_ECHOES {
                    warn!(conn = self.id, "switch stopped answering echo requests; closing");
                    return Verdict::Close;
                }
                if *probes == 0 {
                    return Verdict::Keep;
                }
                *probes -= 1;
                self.missed += 1;
                self.queue(&Message::new(0, Body::EchoRequest(Vec::new())));
                Verdict::Keep
            }
            _ => Verdict::Keep,
        }
    }

    /// The end: no more sends from the app, which hears of it if it knew the connection.
    pub(super) fn close(mut self, ctx: &Ctx) {
        self.out.lock().closed = true;
        self.transport.shutdown();
        if self.announced {
            let _ = ctx.events.send(Event::Disconnected { conn: self.id });
        }
    }
}
