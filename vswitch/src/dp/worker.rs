//! One datapath worker: polls the ports it owns and its GRE fanout socket (or, worker 0 only,
//! the raw GRE socket when fanout could not be set up), drains each
//! up to a budget per wakeup, and forwards. Buffers are allocated once per worker; the only
//! per-packet allocation is the copy of a frame that goes to the controller (rate-limited).

use super::fib::{Fib, LocalPort, Tunnel};
use super::forward::{decide, Action, DropReason, Ingress};
use super::gro::{self, Gro};
use super::stats::{now_ms, DpCounters};
use super::tunnel_tx::{self, GreQueue};
use super::txq::TxQueue;
use super::{icmp, offload};
use super::{DpEvent, PacketIn, Shared, GRE_TOKEN, WAKER};
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

/// Most frame bytes a PACKET_IN carries: an OpenFlow message is at most 64 KB.
const MAX_PACKET_IN_DATA: usize = 65_000;

/// Frames taken from one port per wakeup before the others get a turn.
const BUDGET: usize = 64;
/// GRE packets taken per wakeup: more, as they are segments of frames being joined.
const GRE_BUDGET: usize = 4 * BATCH;
// Every frame held for joining must find a slot to wait in.
const _: () = assert!(HELD_SLOTS >= gro::MAX_FLOWS);

/// The Ethernet header a GRE fanout member reads before the IPv4 packet.
const ETH_HLEN: usize = 14;

/// "Too big" replies (ICMP) a worker sends per second, and its burst.
const TOO_BIG_REPLIES: f64 = 100.0;

/// A token bucket limiting PACKET_INs from one port.
struct Bucket {
    tokens: f64,
    last_ms: u64,
}

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
            too_big_replies: Bucket {
                tokens: TOO_BIG_REPLIES,
                last_ms: 0,
            },
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
        let ingress = Ingress::Local {
            port_no,
            vnet: port.vnet,
        };
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
                if !super::forward::source_allowed(&port.bound_macs, frame) {
                    port.counters.rx_dropped.fetch_add(1, Relaxed);
                    shared.counters.drop_spoofed.fetch_add(1, Relaxed);
                    continue;
                }
                self.forward(fib, ingress, rx.vnet, slot, rx.offset, rx.len, now);
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
                let ingress = tunnel_ingress(source);
                self.forward(fib, ingress, vnet.unwrap_or_default(), slot, off, len, now);
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
        self.forward(fib, tunnel_ingress(r.source), r.vnet, r.slot, r.off, r.len, now);
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        fib: &Fib,
        ingress: Ingress,
        mut vnet: VnetHdr,
        slot: usize,
        off: usize,
        len: usize,
        now: u64,
    ) {
        let verdict = decide(fib, ingress, &self.batch.bufs[slot][off..off + len]);
        if verdict.packet_in {
            self.packet_in(ingress, slot, off, len, now);
        }
        let c = &self.shared.counters;
        match verdict.action {
            Action::Output(out) => {
                if let Some((dst, _)) = super::forward::macs(&self.batch.bufs[slot][off..off + len]) {
                    if let Some(entry) = fib.macs.get(&(ingress.vnet(), dst)) {
                        entry.counters.hit(len, now);
                    }
                }
                self.output(fib, out, &mut vnet, slot, off, len, now);
            }
            Action::Flood {
                vnet: net,
                except,
                tunnels,
            } => {
                let Some(set) = fib.flood.get(&net) else { return };
                for &p in &set.local {
                    if p != except {
                        self.output(fib, p, &mut vnet, slot, off, len, now);
                    }
                }
                if tunnels {
                    for &p in &set.static_tunnels {
                        if p != except {
                            self.output(fib, p, &mut vnet, slot, off, len, now);
                        }
                    }
                }
            }
            Action::Drop(reason) => {
                let counter = match reason {
                    DropReason::Runt => &c.drop_runt,
                    DropReason::BadSrcMac => &c.drop_bad_src_mac,
                    DropReason::Hairpin => &c.drop_hairpin,
                    DropReason::Flow | DropReason::ToController => return,
                };
                counter.fetch_add(1, Relaxed);
            }
        }
    }

    fn packet_in(&mut self, ingress: Ingress, slot: usize, off: usize, len: usize, now: u64) {
        let c = &self.shared.counters;
        if !self.shared.controller_up.load(Relaxed) {
            c.packet_in_no_controller.fetch_add(1, Relaxed);
            return;
        }
        let rate = self.shared.packet_in_rate as f64;
        let burst = self.shared.packet_in_burst as f64;
        let b = self.buckets.entry(ingress.port_no()).or_insert(Bucket {
            tokens: burst,
            last_ms: now,
        });
        b.tokens = (b.tokens + (now.saturating_sub(b.last_ms)) as f64 * rate / 1000.0).min(burst);
        b.last_ms = now;
        if b.tokens < 1.0 {
            c.packet_in_rate_limited.fetch_add(1, Relaxed);
            return;
        }
        b.tokens -= 1.0;
        // An OpenFlow message is at most 64 KB; the controller needs the headers, and a frame
        // it sends back itself is never a super-frame's first packet (that is a SYN or an ARP).
        let keep = len.min(MAX_PACKET_IN_DATA);
        let pin = PacketIn {
            in_port: ingress.port_no(),
            vnet: ingress.vnet(),
            total_len: len,
            data: self.batch.bufs[slot][off..off + keep].to_vec(),
        };
        match self.shared.packet_in_tx.try_send(pin) {
            Ok(()) => c.packet_in_sent.fetch_add(1, Relaxed),
            Err(_) => c.packet_in_queue_full.fetch_add(1, Relaxed),
        };
    }

    /// Send the frame at `off..off+len` of receive slot `slot` to `port_no`, finishing
    /// offloads in software where the port cannot take them. Whole frames to sockets are
    /// queued (sent by the flush after the batch); the rest goes out at once.
    #[allow(clippy::too_many_arguments)]
    fn output(&mut self, fib: &Fib, port_no: u32, vnet: &mut VnetHdr, slot: usize, off: usize, len: usize, now: u64) {
        if let Some(port) = fib.local.get(&port_no) {
            let io = &port.io;
            if let (true, Some(fd)) = (io.takes_vnet_hdr(), io.tx_socket()) {
                if self.txq.is_full() {
                    self.flush(now);
                }
                // SAFETY: the frame stays in its slot, unmodified, until the flush that ends
                // this batch (in-place edits flush first); the counters belong to `fib`,
                // which the caller holds until after that flush.
                unsafe {
                    self.txq.push(
                        fd,
                        None,
                        &[],
                        Some(vnet),
                        &self.batch.bufs[slot][off..off + len],
                        &port.counters,
                        false,
                    )
                };
                return;
            }
            self.flush(now);
            let c = &self.shared.counters;
            let buf = &mut self.batch.bufs[slot];
            let ok = if io.takes_vnet_hdr() {
                io.send(vnet, &buf[off..off + len]).is_ok()
            } else if vnet.is_gso() {
                let none = VnetHdr::default();
                let mut all_ok = true;
                let r = offload::segment(&buf[off..off + len], vnet, 0, &mut self.scratch, |seg| {
                    all_ok &= io.send(&none, seg).is_ok();
                });
                if r.is_err() {
                    c.drop_offload.fetch_add(1, Relaxed);
                    return;
                }
                all_ok
            } else {
                if vnet.needs_csum() && !finish_checksum(&mut buf[off..off + len], vnet, c) {
                    return;
                }
                io.send(vnet, &buf[off..off + len]).is_ok()
            };
            if ok {
                port.counters.tx(len, now);
            } else {
                port.counters.tx_errors.fetch_add(1, Relaxed);
            }
        } else if let Some(tunnel) = fib.tunnels.get(&port_no) {
            let shared = self.shared.clone();
            let c = &shared.counters;
            let Some(gre) = shared.gre.as_ref() else { return };
            if !vnet.is_gso() && vnet.needs_csum() {
                self.flush(now);
                if !finish_checksum(&mut self.batch.bufs[slot][off..off + len], vnet, c) {
                    return;
                }
            }
            let mut q = GreQueue {
                txq: &mut self.txq,
                fd: gre.fd(),
                now,
                wc: &shared.workers[self.id],
                gre_tx_errors: &c.gre_tx_errors,
            };
            // SAFETY: the frame stays in its slot, unmodified, until the flush that ends this
            // batch; the tunnel belongs to `fib`, which the caller holds until after it.
            let sent = unsafe { tunnel_tx::send(&mut q, tunnel, &self.batch.bufs[slot][off..off + len], vnet, c) };
            match sent {
                tunnel_tx::Outcome::Queued(n) if vnet.is_gso() => {
                    let wc = &shared.workers[self.id];
                    wc.tso_frames.fetch_add(1, Relaxed);
                    wc.tso_segments.fetch_add(n as u64, Relaxed);
                }
                tunnel_tx::Outcome::TooBig { mtu } => self.reply_too_big(fib, tunnel, slot, off, len, mtu, now),
                _ => {}
            }
        } else {
            self.shared.counters.drop_no_port.fetch_add(1, Relaxed);
        }
    }

    /// The frame at `off..off+len` of `slot` was too big for `tunnel`'s path and may not be
    /// fragmented: drop it and, within the rate limit, tell its sender what fits, with an ICMP
    /// reply built in the spare slot and forwarded as if it came back through the tunnel.
    #[allow(clippy::too_many_arguments)]
    fn reply_too_big(&mut self, fib: &Fib, tunnel: &Tunnel, slot: usize, off: usize, len: usize, mtu: u32, now: u64) {
        let shared = self.shared.clone();
        let c = &shared.counters;
        c.tunnel_too_big.fetch_add(1, Relaxed);
        let b = &mut self.too_big_replies;
        b.tokens = (b.tokens + now.saturating_sub(b.last_ms) as f64 * TOO_BIG_REPLIES / 1000.0).min(TOO_BIG_REPLIES);
        b.last_ms = now;
        if b.tokens < 1.0 {
            return;
        }
        b.tokens -= 1.0;
        // The spare slot may still be queued with an earlier reply.
        self.flush(now);
        // The frame is in a receive slot, or in a held one (a joined frame) above the spare.
        let (frame, spare): (&[u8], &mut [u8]) = match slot.cmp(&SPARE) {
            std::cmp::Ordering::Less => {
                let (lo, hi) = self.batch.bufs.split_at_mut(SPARE);
                (&lo[slot][off..off + len], &mut hi[0])
            }
            std::cmp::Ordering::Greater => {
                let (lo, hi) = self.batch.bufs.split_at_mut(slot);
                (&hi[0][off..off + len], &mut lo[SPARE])
            }
            // A reply of ours, too big for some tunnel: not answered.
            std::cmp::Ordering::Equal => return,
        };
        let Some(n) = icmp::too_big_reply(frame, mtu, &mut spare[RX_HEADROOM..]) else {
            return;
        };
        c.icmp_too_big_sent.fetch_add(1, Relaxed);
        debug!(remote = %tunnel.remote, mtu, "frame too big for the tunnel's path: told its sender");
        let ingress = Ingress::Tunnel {
            port_no: tunnel.port_no,
            vnet: tunnel.key,
            is_static: tunnel.is_static,
        };
        self.forward(fib, ingress, VnetHdr::default(), SPARE, RX_HEADROOM, n, now);
    }
}

/// The ingress of a frame that came in by the tunnel `s`.
fn tunnel_ingress(s: gro::Source) -> Ingress {
    Ingress::Tunnel {
        port_no: s.port_no,
        vnet: s.key,
        is_static: s.is_static,
    }
}

/// Complete a partial checksum in place, once: later outputs of the same frame then see a
/// finished frame and a cleared flag.
fn finish_checksum(frame: &mut [u8], vnet: &mut VnetHdr, c: &DpCounters) -> bool {
    match offload::complete_checksum(frame, vnet) {
        Ok(()) => {
            vnet.flags &= !cloudrack_wire::vnet_hdr::F_NEEDS_CSUM;
            true
        }
        Err(_) => {
            c.drop_offload.fetch_add(1, Relaxed);
            false
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
