//! One datapath worker: polls the ports it owns and its GRE fanout socket (or, worker 0 only,
//! the raw GRE socket when fanout could not be set up), drains each up to a budget per wakeup,
//! and forwards: flow key, flow cache (or the pipeline on a miss), executed program. Buffers are
//! allocated once per worker; per packet nothing is allocated but the copy of a frame that goes
//! to the controller (rate-limited) and, on a cache miss, the translation.

use super::fib::{Fib, LocalPort};
use super::output::{Bucket, Out};
use super::stats::now_ms;
use super::txq::TxQueue;
use super::{DpEvent, Shared, GRE_TOKEN, WAKER};
use crate::pipeline::cache::FlowCache;
use crate::pipeline::execute::{execute, Scratch};
use crate::pipeline::key::extract;
use crate::pipeline::xlate::{translate, Origin};
use crate::port::batch::{RxBatch, BATCH};
use crate::port::{RX_BUF_LEN, RX_HEADROOM};
use crate::tunnel::{decap, GreRx};
use cloudrack_wire::vnet_hdr::VnetHdr;
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
    /// Copies of frames the programs edited, alive until the flush that sends them.
    edits: Scratch,
    cache: FlowCache,
    registered: HashMap<u32, RawFd>,
    failed: HashSet<u32>,
    buckets: HashMap<u32, Bucket>,
    /// This worker's member of the GRE fanout group.
    gre_rx: Option<GreRx>,
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
            edits: Scratch::default(),
            cache: FlowCache::default(),
            registered: HashMap::new(),
            failed: HashSet::new(),
            buckets: HashMap::new(),
            gre_rx,
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
        let fd = match (&self.gre_rx, &shared.gre) {
            (Some(rx), _) => rx.fd(),
            (None, Some(raw)) => raw.fd(),
            (None, None) => return true,
        };
        let mut taken = 0;
        while taken < BUDGET {
            let n = match self.batch.recv_mmsg(fd, RX_HEADROOM) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    c.rx_errors.fetch_add(1, Relaxed);
                    warn!(error = %e, "GRE receive failed");
                    return true;
                }
            };
            wc.rx_calls.fetch_add(1, Relaxed);
            wc.gre_rx_packets.fetch_add(n as u64, Relaxed);
            for slot in 0..n {
                self.gre_packet(fib, slot, now);
            }
            self.flush(now);
            taken += n;
            if n < BATCH {
                return true;
            }
        }
        false
    }

    /// Decapsulate the GRE packet in `slot` and forward its frame.
    fn gre_packet(&mut self, fib: &Fib, slot: usize, now: u64) {
        let c = &self.shared.counters;
        let n = self.batch.lens[slot];
        if n > RX_BUF_LEN - RX_HEADROOM {
            // Cut short: no IPv4 packet is this long, so it is not one of ours.
            c.gre_rx_malformed.fetch_add(1, Relaxed);
            return;
        }
        let d = match decap(&self.batch.bufs[slot][RX_HEADROOM..RX_HEADROOM + n]) {
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
        self.forward(
            fib,
            tunnel.port_no,
            tunnel.key,
            d.vnet.unwrap_or_default(),
            slot,
            RX_HEADROOM + d.inner.start,
            len,
            now,
        );
    }

    /// Forward the frame at `off..off+len` of receive slot `slot`, received on `in_port` in
    /// virtual network `vnet_id`: flow key, cached program (or a translation), execution.
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
        };
        execute(&x.ops, frame, &vnet, &mut self.edits, &mut out);
    }
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
