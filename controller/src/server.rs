//! The OpenFlow server: a fixed number of I/O threads (`--io-threads`), each a mio event loop
//! owning the switch connections it accepted, with per-connection byte buffers and rustls
//! driven by readiness. A thread per connection ran the process into `vm.max_map_count` at
//! about 7,200 switches; this holds 10,000 with one or two threads.
//!
//! Every decoded message of an authenticated switch goes to the app thread as an [`Event`];
//! the app answers through the connection's [`crate::conn_tx::ConnTx`], which wakes the
//! owning thread. Per connection, [`session`] does the protocol and [`transport`] the bytes.

mod session;
#[cfg(test)]
mod tests;
mod transport;

use crate::conn_tx::{self, Mailbox, Outbox};
use crate::event::Event;
use crate::ids::ConnId;
use crate::io_counters::IoCounters;
use cloudrack_channel::rustls::{ServerConfig, ServerConnection};
use crossbeam_channel::Sender;
use mio::{Events, Interest, Poll, Token, Waker};
use session::{Ctx, Session, Verdict};
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{debug, error, warn};
use transport::Transport;

/// Timers (handshake deadlines, liveness probes) are checked in slices: every TICK, one of
/// SLICES parts of the connections, so each is looked at every 250 ms.
const TICK: Duration = Duration::from_millis(25);
const SLICES: usize = 10;
/// Liveness probes per tick (8,000/s). 10,000 switches that fell silent at the same moment
/// (the end of a burst) were all probed in one sweep, a 150 ms stall of the thread; now over
/// about a second, and their answers come back as spread out.
const PROBES_PER_TICK: usize = 200;
/// After a failed accept (out of descriptors, say), wait this long instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Connection slot `n` is token `n + FIRST_SLOT`.
const FIRST_SLOT: usize = 2;

/// Start `io_threads` I/O threads (at least one) accepting switches on `listener`, over
/// mutual TLS when `tls` is set (else plain TCP). They run for the life of the process.
pub fn spawn(
    listener: TcpListener,
    events: Sender<Event>,
    counters: Arc<IoCounters>,
    tls: Option<Arc<ServerConfig>>,
    io_threads: usize,
) -> io::Result<Vec<JoinHandle<()>>> {
    listener.set_nonblocking(true)?;
    let next_id = Arc::new(AtomicU64::new(1));
    let mut handles = Vec::new();
    for i in 0..io_threads.max(1) {
        // Every thread polls its own descriptor of the one listening socket; whichever wakes
        // first accepts, which spreads the connections.
        let listener = mio::net::TcpListener::from_std(listener.try_clone()?);
        let mut io = IoThread::new(listener, events.clone(), counters.clone(), tls.clone(), next_id.clone())?;
        let h = std::thread::Builder::new()
            .name(format!("ofp-io-{i}"))
            .spawn(move || io.run())?;
        handles.push(h);
    }
    Ok(handles)
}

struct IoThread {
    poll: Poll,
    listener: mio::net::TcpListener,
    mailbox: Arc<Mailbox>,
    tls: Option<Arc<ServerConfig>>,
    next_id: Arc<AtomicU64>,
    /// Connections by slot; freed slots are reused.
    sessions: Vec<Option<Session>>,
    free: Vec<usize>,
    /// Sessions that stopped reading at their budget, to continue without a new event.
    again: Vec<usize>,
    accept_paused_until: Option<Instant>,
    /// The next slot the timer sweep looks at.
    sweep_at: usize,
    ctx: Ctx,
}

impl IoThread {
    fn new(
        mut listener: mio::net::TcpListener,
        events: Sender<Event>,
        counters: Arc<IoCounters>,
        tls: Option<Arc<ServerConfig>>,
        next_id: Arc<AtomicU64>,
    ) -> io::Result<IoThread> {
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        Ok(IoThread {
            mailbox: Arc::new(Mailbox::new(waker, counters.clone())),
            poll,
            listener,
            tls,
            next_id,
            sessions: Vec::new(),
            free: Vec::new(),
            again: Vec::new(),
            accept_paused_until: None,
            sweep_at: 0,
            ctx: Ctx {
                events,
                counters,
                scratch: vec![0; 64 * 1024],
            },
        })
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let mut ready = Vec::new();
        let mut again = Vec::new();
        let mut next_tick = Instant::now() + TICK;
        loop {
            let now = Instant::now();
            let mut timeout = next_tick.saturating_duration_since(now);
            if let Some(t) = self.accept_paused_until {
                timeout = timeout.min(t.saturating_duration_since(now));
            }
            if !self.again.is_empty() {
                timeout = Duration::ZERO;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    error!(error = %e, "I/O thread cannot poll; it stops");
                    return;
                }
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(now),
                    WAKER => self.take_ready(&mut ready),
                    Token(t) => {
                        let hup = ev.is_read_closed() || ev.is_error();
                        self.service(t - FIRST_SLOT, ev.is_readable() || hup, hup, now);
                    }
                }
            }
            std::mem::swap(&mut again, &mut self.again);
            for slot in again.drain(..) {
                self.service(slot, true, true, now);
            }
            if self.accept_paused_until.is_some_and(|t| now >= t) {
                self.accept_paused_until = None;
                self.accept(now);
            }
            if now >= next_tick {
                self.tick(now);
                next_tick = now + TICK;
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            match self.listener.accept() {
                Ok((sock, peer)) => self.add(sock, peer, now),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::ConnectionAborted) => {}
                Err(e) => {
                    warn!(error = %e, "accept failed; retrying shortly");
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    fn add(&mut self, sock: mio::net::TcpStream, peer: SocketAddr, now: Instant) {
        let id: ConnId = self.next_id.fetch_add(1, Relaxed);
        self.ctx.counters.connections.fetch_add(1, Relaxed);
        let _ = sock.set_nodelay(true);
        let tls = match &self.tls {
            Some(cfg) => match ServerConnection::new(cfg.clone()) {
                Ok(c) => Some(c),
                Err(e) => {
                    self.ctx.counters.tls_refused.fetch_add(1, Relaxed);
                    warn!(conn = id, %peer, error = %e, "switch refused: no valid certificate");
                    return;
                }
            },
            None => None,
        };
        let slot = self.free.pop().unwrap_or_else(|| {
            self.sessions.push(None);
            self.sessions.len() - 1
        });
        let out = Outbox::new(id, slot, self.mailbox.clone());
        let mut s = Session::new(id, peer, Transport::new(sock, tls), out, now);
        let token = Token(slot + FIRST_SLOT);
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut s.transport.sock, token, Interest::READABLE)
        {
            warn!(conn = id, error = %e, "cannot watch a new connection; closing it");
            self.free.push(slot);
            return;
        }
        let verdict = s.start(&self.ctx, now);
        self.sessions[slot] = Some(s);
        self.settle(slot, verdict);
    }

    /// The app queued bytes for these connections.
    fn take_ready(&mut self, ready: &mut Vec<(usize, ConnId)>) {
        std::mem::swap(&mut *conn_tx::lock(&self.mailbox.ready), ready);
        for (slot, id) in ready.drain(..) {
            // The connection may have closed, and its slot gone to another, since.
            if let Some(Some(s)) = self.sessions.get_mut(slot) {
                if s.id == id {
                    s.take_outbox();
                    self.settle(slot, Verdict::Keep);
                }
            }
        }
    }

    /// A readiness event (or more to read) on a connection.
    fn service(&mut self, slot: usize, read: bool, hup: bool, now: Instant) {
        let Some(Some(s)) = self.sessions.get_mut(slot) else {
            return;
        };
        let verdict = if read {
            s.on_readable(&mut self.ctx, now, hup)
        } else {
            Verdict::Keep
        };
        self.settle(slot, verdict);
    }

    /// After any event: write what the socket takes, watch for writability only while bytes
    /// wait, close if it is over.
    fn settle(&mut self, slot: usize, verdict: Verdict) {
        let Some(Some(s)) = self.sessions.get_mut(slot) else {
            return;
        };
        if verdict == Verdict::Close || s.flush() == Verdict::Close {
            self.close(slot);
            return;
        }
        if verdict == Verdict::ReadAgain {
            self.again.push(slot);
        }
        let want = s.wants_write();
        if want != s.writable_interest {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let token = Token(slot + FIRST_SLOT);
            if let Err(e) = self.poll.registry().reregister(&mut s.transport.sock, token, interest) {
                debug!(conn = s.id, error = %e, "cannot change what we watch; closing");
                self.close(slot);
                return;
            }
            s.writable_interest = want;
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(mut s) = self.sessions.get_mut(slot).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut s.transport.sock);
            s.close(&self.ctx);
            self.free.push(slot);
        }
    }

    /// The next slice of the connections' timers.
    fn tick(&mut self, now: Instant) {
        let len = self.sessions.len();
        if self.sweep_at >= len {
            self.sweep_at = 0;
        }
        let end = len.min(self.sweep_at + len.div_ceil(SLICES));
        let start = std::mem::replace(&mut self.sweep_at, end);
        let mut probes = PROBES_PER_TICK;
        for slot in start..end {
            let Some(Some(s)) = self.sessions.get_mut(slot) else {
                continue;
            };
            match s.on_tick(&self.ctx, now, &mut probes) {
                Verdict::Close => self.close(slot),
                v if s.wants_write() => self.settle(slot, v),
                _ => {}
            }
        }
    }
}
