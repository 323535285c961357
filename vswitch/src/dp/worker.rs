//! One datapath worker: polls the ports it owns and its GRE fanout socket (or, worker 0 only,
//! the raw GRE socket when fanout could not be set up), drains each up to a budget per wakeup,
//! joins TCP segments from tunnels back into super-frames (`gro.rs`), and forwards: flow key,
//! flow cache (or the pipeline on a miss), executed program (`output.rs` is where it leaves).
//! Buffers are allocated once per worker; per packet nothing is allocated but the copy of a
//! frame that goes to the controller (rate-limited) and, on a cache miss, the translation.

use super::fib::{Fib, LocalPort};
use super::gro::{self, Gro};
use super::output::{Bucket, Out, TooBig, TOO_BIG_REPLIES};
use super::stats::now_ms;
use super::txq::TxQueue;
use super::{DpEvent, Shared, GRE_TOKEN, WAKER};
use crate::pipeline::cache::FlowCache;
use crate::pipeline::execute::{execute, Scratch};
use crate::pipeline::key::extract;
use crate::pipeline::xlate::{translate, Origin};
use crate::port::batch::{RxBatch, BATCH, FIRST_HELD, HELD_SLOTS, SPARE};
use crate::port::{RX_BUF_LEN, RX_HEADROOM};
use crate::tunnel::{self, decap, GreRx};
use cloudrack_wire::vnet_hdr::{self, VnetHdr};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// Frames taken from one port per wakeup before the others get a turn.
const BUDGET: usize = 64;
/// GRE packets taken per wakeup: more, as they are segments of frames being joined.
const GRE_BUDGET: usize = 4 * BATCH;
// Every frame held for joining must find a slot to wait in.
const _: () = assert!(HELD_SLOTS >= gro::MAX_FLOWS);

/// The Ethernet header a GRE fanout member reads before the IPv4 packet.
const ETH_HLEN: usize = 14;

pub struct Worker {
    id: usize,
    shared: Arc<Shared>,
    poll: Poll,
    pin_cpu: Option<usize>,
    /// Receive slots: frames land at RX_HEADROOM of each.
    batch: RxBatch,
    /// Frames forwarded from the current batch, waiting for its end to leave together.
    txq: TxQueue,
    /// Where offloaded frames are segmented.
    scratch: Vec<u8>,
    registered: HashMap<u32, RawFd>,
    failed: HashSet<u32>,
    buckets: HashMap<u32, Bucket>,
    /// This worker's member of the GRE fanout group.
    gre_rx: Option<GreRx>,
    /// TCP segments from tunnels being joined into super-frames (per receive batch).
    gro: Gro,
    /// Limits the "too big" replies.
    too_big_replies: Bucket,
    /// "Too big" replies the last program's outputs asked for, to forward after it.
    too_big: Vec<TooBig>,
    /// Copies of frames the programs edited, alive until the flush that sends them.
    edits: Scratch,
    cache: FlowCache,
}

impl Worker {
    pub fn new(id: usize, shared: Arc<Shared>, poll: Poll, pin_cpu: Option<usize>, gre_rx: Option<GreRx>) -> Worker {
        Worker {
            id,
            shared,
            poll,
            pin_cpu,
            batch: RxBatch::new(),
            txq: TxQueue::new(),
            scratch: vec![0; RX_BUF_LEN],
            registered: HashMap::new(),
            failed: HashSet::new(),
            buckets: HashMap::new(),
            gre_rx,
            gro: Gro::new(),
            too_big_replies: Bucket::full(TOO_BIG_REPLIES, 0),
            too_big: Vec::new(),
            edits: Scratch::default(),
            cache: FlowCache::default(),
        }
    }

    pub fn run(mut self) {
        if let Some(cpu) = self.pin_cpu {
            pin_to_cpu(cpu);
        }
        let gre_fd = match (&self.gre_rx, &self.shared.gre) {
            (Some(rx), _) => Some(rx.fd()),
            (None, Some(gre)) if self.id == 0 && self.shared.gre_rx_raw => Some(gre.fd()),
            _ => None,
        };
        if let Some(fd) = gre_fd {
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut SourceFd(&fd), GRE_TOKEN, Interest::READABLE)
            {
                warn!(worker = self.id, error = %e, "cannot poll the GRE socket; tunnels will not receive here");
            }
        }
        let mut events = Events::with_capacity(256);
        let mut pending: Vec<Token> = Vec::new();
        let mut generation = u64::MAX;
        loop {
            let timeout = if pending.is_empty() {
                Duration::from_millis(500)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    warn!(worker = self.id, error = %e, "poll failed");
                }
                continue;
            }
            if self.shared.shutdown.load(Relaxed) {
                return;
            }
            for ev in events.iter() {
                if ev.token() != WAKER && !pending.contains(&ev.token()) {
                    pending.push(ev.token());
                }
            }
            let fib = self.shared.fib.load_full();
            if fib.generation != generation {
                generation = fib.generation;
                for port_no in self.sync_ports(&fib) {
                    // Frames may have queued before we registered: look at once.
                    if !pending.contains(&Token(port_no as usize)) {
                        pending.push(Token(port_no as usize));
                    }
                }
            }
            let now = now_ms();
            let mut i = 0;
            while i < pending.len() {
                let token = pending[i];
                let drained = if token == GRE_TOKEN {
                    self.drain_gre(&fib, now)
                } else {
                    self.drain_port(&fib, token.0 as u32, now)
                };
                if drained {
                    pending.swap_remove(i);
                } else {
                    i += 1;
                }
            }
        }
    }

    /// Register the ports this worker owns in the new FIB, forget the removed ones. Returns the
    /// newly registered ports.
    fn sync_ports(&mut self, fib: &Fib) -> Vec<u32> {
        let mut failed = Vec::new();
        let registry = self.poll.registry();
        self.registered.retain(|port_no, fd| {
            let keep = fib.local.get(port_no).is_some_and(|p| p.io.fd() == *fd);
            if !keep {
                // The fd may be closed already, which removed it from epoll; errors are moot.
                let _ = registry.deregister(&mut SourceFd(fd));
            }
            keep
        });
        self.failed.retain(|p| fib.local.contains_key(p));
        self.buckets
            .retain(|p, _| fib.local.contains_key(p) || fib.tunnels.contains_key(p));
        let mut added = Vec::new();
        for port in fib.local.values().filter(|p| p.worker == self.id) {
            if self.registered.contains_key(&port.port_no) || self.failed.contains(&port.port_no) {
                continue;
            }
            let fd = port.io.fd();
            match registry.register(&mut SourceFd(&fd), Token(port.port_no as usize), Interest::READABLE) {
                Ok(()) => {
                    self.registered.insert(port.port_no, fd);
                    added.push(port.port_no);
                }
                Err(e) => failed.push((port.clone(), format!("cannot poll: {e}"))),
            }
        }
        for (port, error) in failed {
            self.port_failed(&port, error);
        }
        added
    }

    fn port_failed(&mut self, port: &LocalPort, error: String) {
        warn!(port = %port.name, port_no = port.port_no, %error, "port failed; asking the control plane to remove it");
        if let Some(fd) = self.registered.remove(&port.port_no) {
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
        self.failed.insert(port.port_no);
        let _ = self.shared.events_tx.try_send(DpEvent::PortFailed {
            port_no: port.port_no,
            error,
        });
    }

    /// Send what the last receive batch queued. Must run before the slots are received into
    /// again, before a queued frame is edited and before anything is sent directly.
    fn flush(&mut self, now: u64) {
        if !self.txq.is_empty() {
            self.txq
                .flush(now, &self.shared.workers[self.id], &self.shared.counters.gre_tx_errors);
        }
        self.edits.release();
        let (wc, st) = (&self.shared.workers[self.id], self.cache.stats);
        wc.emc_hits.store(st.emc_hits, Relaxed);
        wc.megaflow_hits.store(st.megaflow_hits, Relaxed);
        wc.upcalls.store(st.misses, Relaxed);
    }

    /// Receive and forward up to BUDGET frames from a local port, a batch per call. True when
    /// it ran dry.
    fn drain_port(&mut self, fib: &Fib, port_no: u32, now: u64) -> bool {
        let Some(port) = fib.local.get(&port_no) else {
            return true;
        };
        if self.failed.contains(&port_no) {
            return true;
        }
        let shared = self.shared.clone();
        let wc = &shared.workers[self.id];
        let mut taken = 0;
        while taken < BUDGET {
            let n = match port.io.recv_batch(&mut self.batch) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // The interface went down (a VM rebooting, an admin): it may come back up. A
                // vanished interface is noticed by the control plane's periodic check.
                Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => {
                    shared.counters.rx_errors.fetch_add(1, Relaxed);
                    debug!(port = %port.name, "interface is down");
                    return true;
                }
                Err(e) => {
                    shared.counters.rx_errors.fetch_add(1, Relaxed);
                    let port = port.clone();
                    self.port_failed(&port, e.to_string());
                    return true;
                }
            };
            wc.rx_calls.fetch_add(1, Relaxed);
            wc.rx_packets.fetch_add(n as u64, Relaxed);
            for slot in 0..n {
                let Some(rx) = self.batch.frames[slot] else {
                    port.counters.rx_dropped.fetch_add(1, Relaxed);
                    debug!(port = %port.name, "dropped a malformed frame");
                    continue;
                };
                port.counters.rx(rx.len, now);
                let frame = &self.batch.bufs[slot][rx.offset..rx.offset + rx.len];
                if !super::security::source_allowed(&port.bound_macs, frame) {
                    port.counters.rx_dropped.fetch_add(1, Relaxed);
                    shared.counters.drop_spoofed.fetch_add(1, Relaxed);
                    continue;
                }
                self.forward(fib, port_no, port.vnet, rx.vnet, slot, rx.offset, rx.len, now);
            }
            self.flush(now);
            taken += n;
            // A short batch emptied the queue; anything newer raises a new event.
            if n < BATCH {
                return true;
            }
        }
        false
    }

    /// Receive and forward up to BUDGET GRE packets, a batch per call. True when the socket
    /// ran dry.
    fn drain_gre(&mut self, fib: &Fib, now: u64) -> bool {
        let shared = self.shared.clone();
        let c = &shared.counters;
        let wc = &shared.workers[self.id];
        // A fanout member reads virtio-net and Ethernet headers before the IPv4 packet; the
        // raw socket reads the packet alone. Either way the IPv4 header lands at `ip_at`.
        let (fd, recv_at, ip_at) = match (&self.gre_rx, &shared.gre) {
            (Some(rx), _) => (rx.fd(), RX_HEADROOM - vnet_hdr::LEN, RX_HEADROOM + ETH_HLEN),
            (None, Some(raw)) => (raw.fd(), RX_HEADROOM, RX_HEADROOM),
            (None, None) => return true,
        };
        let mut taken = 0;
        let mut naps = 0;
        let dry = loop {
            if taken >= GRE_BUDGET {
                break false;
            }
            let n = match self.batch.recv_mmsg(fd, recv_at) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // A TCP stream is being joined: the rest of its burst is on its way.
                    if self.gro.growing() && naps < gro::NAPS {
                        nap(gro::NAP);
                        naps += 1;
                        continue;
                    }
                    break true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    c.rx_errors.fetch_add(1, Relaxed);
                    warn!(error = %e, "GRE receive failed");
                    break true;
                }
            };
            naps = 0;
            wc.rx_calls.fetch_add(1, Relaxed);
            wc.gre_rx_packets.fetch_add(n as u64, Relaxed);
            for slot in 0..n {
                self.gre_packet(fib, slot, recv_at, ip_at, now);
            }
            // Frames still being joined move out of the receive slots, which are received into
            // next; what cannot move leaves now.
            if !self.gro.is_empty() {
                if !self.gro.park(&mut self.batch.bufs, FIRST_HELD, HELD_SLOTS) {
                    while let Some(r) = self.gro.pop(&mut self.batch.bufs) {
                        self.forward_joined(fib, r, now);
                    }
                }
                self.batch.slots_moved();
            }
            self.flush(now);
            taken += n;
            if n < BATCH && !self.gro.growing() {
                break true;
            }
        };
        while let Some(r) = self.gro.pop(&mut self.batch.bufs) {
            self.forward_joined(fib, r, now);
        }
        self.flush(now);
        dry
    }

    /// Decapsulate the GRE packet in `slot` (read at `recv_at`, its IPv4 header at `ip_at`,
    /// after the kernel's virtio-net header if `ip_at` leaves room for one) and forward its
    /// frame.
    fn gre_packet(&mut self, fib: &Fib, slot: usize, recv_at: usize, ip_at: usize, now: u64) {
        let c = &self.shared.counters;
        let n = self.batch.lens[slot];
        if n > RX_BUF_LEN - recv_at || n < ip_at - recv_at {
            // Cut short (no IPv4 packet is this long), or shorter than its link headers.
            c.gre_rx_malformed.fetch_add(1, Relaxed);
            return;
        }
        let buf = &self.batch.bufs[slot];
        let d = match decap(&buf[ip_at..recv_at + n]) {
            Ok(d) => d,
            Err(decap::DecapError::Gre(cloudrack_wire::gre::GreError::BadChecksum)) => {
                c.gre_rx_bad_checksum.fetch_add(1, Relaxed);
                return;
            }
            Err(e) => {
                c.gre_rx_malformed.fetch_add(1, Relaxed);
                debug!(error = %e, "dropped a malformed GRE packet");
                return;
            }
        };
        // Segments the host's GRO already joined come as one packet with a partial checksum,
        // which only the kernel's virtio-net header tells.
        let mut vnet = d.vnet;
        if ip_at > recv_at {
            let kernel = VnetHdr::parse(&buf[recv_at..]).unwrap_or_default();
            let link = &buf[recv_at + vnet_hdr::LEN..recv_at + n];
            match tunnel::inner_offload(&kernel, link, ip_at - recv_at - vnet_hdr::LEN + d.inner.start) {
                Ok(None) => {}
                Ok(Some(h)) if vnet.is_none() => {
                    c.gre_rx_joined_by_host.fetch_add(1, Relaxed);
                    vnet = Some(h);
                }
                Ok(Some(_)) | Err(_) => {
                    c.gre_rx_malformed.fetch_add(1, Relaxed);
                    debug!(?kernel, "dropped a GRE packet with offload metadata we cannot use");
                    return;
                }
            }
        }
        let Some(tunnel) = fib
            .tunnel_by_remote
            .get(&(d.src, d.key))
            .and_then(|p| fib.tunnels.get(p))
        else {
            c.gre_rx_unknown_tunnel.fetch_add(1, Relaxed);
            debug!(remote = %d.src, key = d.key, "GRE packet for no tunnel");
            return;
        };
        let len = d.inner.end - d.inner.start;
        tunnel.counters.rx(len, now);
        let source = gro::Source {
            port_no: tunnel.port_no,
            key: tunnel.key,
            is_static: tunnel.is_static,
        };
        let off = ip_at + d.inner.start;
        let offer = self
            .gro
            .offer(&mut self.batch.bufs, slot, off, len, source, vnet.is_none());
        if let Some(r) = offer.flushed {
            self.forward_joined(fib, r, now);
        }
        match offer.step {
            gro::Step::Held | gro::Step::Merged => {}
            gro::Step::Pass | gro::Step::PassCorrupt => {
                if offer.step == gro::Step::PassCorrupt {
                    self.shared.counters.gro_bad_checksum.fetch_add(1, Relaxed);
                    debug!(remote = %d.src, "TCP segment from a tunnel with a bad checksum: not coalesced");
                }
                let v = vnet.unwrap_or_default();
                self.forward(fib, source.port_no, source.key, v, slot, off, len, now);
            }
        }
    }

    /// Forward a frame the receive coalescing held (joined from several segments, or one).
    fn forward_joined(&mut self, fib: &Fib, r: gro::Ready, now: u64) {
        if r.segments > 1 {
            let wc = &self.shared.workers[self.id];
            wc.gro_frames.fetch_add(1, Relaxed);
            wc.gro_segments.fetch_add(u64::from(r.segments), Relaxed);
        }
        let s = r.source;
        self.forward(fib, s.port_no, s.key, r.vnet, r.slot, r.off, r.len, now);
    }

    /// Forward the frame at `off..off+len` of slot `slot`, received on `in_port` in virtual
    /// network `vnet_id`: flow key, cached program (or a translation), execution; then the
    /// "too big" replies its outputs asked for, as if they came back through their tunnels.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        fib: &Fib,
        in_port: u32,
        vnet_id: u32,
        vnet: VnetHdr,
        slot: usize,
        off: usize,
        len: usize,
        now: u64,
    ) {
        let shared = &*self.shared;
        let c = &shared.counters;
        let frame = &mut self.batch.bufs[slot][off..off + len];
        if frame.len() < 14 {
            c.drop_runt.fetch_add(1, Relaxed);
            return;
        }
        // IEEE 802: a source address is never multicast. Such a frame is no real sender's.
        if frame[6] & 1 != 0 {
            c.drop_bad_src_mac.fetch_add(1, Relaxed);
            return;
        }
        let (key, _) = extract(frame, in_port, vnet_id as u64);
        self.cache.sync(fib.generation);
        let x = match self.cache.lookup(&key) {
            Some(x) => x,
            None => {
                let x = Arc::new(translate(&fib.pipeline, fib, &key, Origin::Port));
                self.cache.insert(&key, x.clone());
                x
            }
        };
        for counter in &x.counters {
            counter.hit(len, now);
        }
        let tc = &shared.tables[self.id];
        for &(t, hit) in &x.tables {
            tc.lookups[t as usize].fetch_add(1, Relaxed);
            if hit {
                tc.matched[t as usize].fetch_add(1, Relaxed);
            }
        }
        if x.ops.is_empty() {
            c.drop_pipeline.fetch_add(1, Relaxed);
            return;
        }
        let mut out = Out {
            shared,
            fib,
            txq: &mut self.txq,
            scratch: &mut self.scratch,
            buckets: &mut self.buckets,
            wc: &shared.workers[self.id],
            in_port,
            now,
            too_big: &mut self.too_big,
            too_big_replies: &mut self.too_big_replies,
        };
        execute(&x.ops, frame, &vnet, &mut self.edits, &mut out);
        if self.too_big.is_empty() {
            return;
        }
        // A reply of ours, too big for some tunnel in turn: not answered.
        if slot == SPARE {
            self.too_big.clear();
            return;
        }
        let replies = std::mem::take(&mut self.too_big);
        for r in replies {
            // The spare slot may still be queued with an earlier reply.
            self.flush(now);
            let n = r.frame.len();
            self.batch.bufs[SPARE][RX_HEADROOM..RX_HEADROOM + n].copy_from_slice(&r.frame);
            self.forward(fib, r.port_no, r.key, VnetHdr::default(), SPARE, RX_HEADROOM, n, now);
        }
    }
}

/// Sleep for `d`, a few microseconds: the thread's timer slack (50 us by default, which would
/// stretch every nap) is set to 1 us first.
fn nap(d: Duration) {
    thread_local! {
        static SLACK_SET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    SLACK_SET.with(|set| {
        if !set.get() {
            // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only this thread.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
            set.set(true);
        }
    });
    std::thread::sleep(d);
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity(0) affects only this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            warn!(cpu, "could not pin worker to CPU");
        }
    }
}
