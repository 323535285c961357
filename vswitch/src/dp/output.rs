//! Where a worker's executed programs send packets: the [`Sink`] of the datapath. Whole frames
//! to sockets are queued in the worker's [`TxQueue`] (sent by the flush that ends the receive
//! batch); frames a port cannot take as they are (offloads to finish in software) are
//! segmented or completed here. PACKET_INs leave through a per-port token bucket.

use super::fib::{Fib, Tunnel};
use super::stats::{DpCounters, WorkerCounters};
use super::tunnel_tx::{self, GreQueue};
use super::txq::TxQueue;
use super::{icmp, offload};
use super::{PacketIn, Shared};
use crate::pipeline::execute::{ExecDrop, Sink, ToController};
use cloudrack_wire::vnet_hdr::VnetHdr;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use tracing::debug;

/// Most frame bytes a PACKET_IN carries: an OpenFlow message is at most 64 KB.
pub const MAX_PACKET_IN_DATA: usize = 65_000;

/// A token bucket (PACKET_INs from one port, "too big" replies).
pub struct Bucket {
    tokens: f64,
    last_ms: u64,
}

impl Bucket {
    pub fn full(tokens: f64, now: u64) -> Bucket {
        Bucket { tokens, last_ms: now }
    }

    /// Take a token if there is one, `rate` per second refilling up to `burst`.
    pub fn take(&mut self, rate: f64, burst: f64, now: u64) -> bool {
        self.tokens = (self.tokens + now.saturating_sub(self.last_ms) as f64 * rate / 1000.0).min(burst);
        self.last_ms = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// "Too big" replies (ICMP) per second a worker sends, and its burst.
pub const TOO_BIG_REPLIES: f64 = 100.0;

/// An ICMP "too big" reply to forward as if it came back through the tunnel `port_no`.
pub struct TooBig {
    pub port_no: u32,
    pub key: u32,
    pub frame: Vec<u8>,
}

/// One packet's way out, for the length of one program run.
pub struct Out<'a> {
    pub shared: &'a Shared,
    pub fib: &'a Fib,
    pub txq: &'a mut TxQueue,
    /// Where offloaded frames are segmented.
    pub scratch: &'a mut Vec<u8>,
    pub buckets: &'a mut HashMap<u32, Bucket>,
    pub wc: &'a WorkerCounters,
    pub in_port: u32,
    pub now: u64,
    /// "Too big" replies for the worker to forward after the program.
    pub too_big: &'a mut Vec<TooBig>,
    pub too_big_replies: &'a mut Bucket,
}

impl Out<'_> {
    /// `frame` was too big for `tunnel`'s path and may not be fragmented: it is dropped and,
    /// within the rate limit, its sender is told what fits (an ICMP reply, forwarded by the
    /// worker after the program as if it came back through the tunnel).
    fn too_big(&mut self, tunnel: &Tunnel, frame: &[u8], mtu: u32) {
        let c = &self.shared.counters;
        c.tunnel_too_big.fetch_add(1, Relaxed);
        if !self.too_big_replies.take(TOO_BIG_REPLIES, TOO_BIG_REPLIES, self.now) {
            return;
        }
        let mut reply = vec![0u8; icmp::MAX_REPLY];
        let Some(n) = icmp::too_big_reply(frame, mtu, &mut reply) else {
            return;
        };
        reply.truncate(n);
        c.icmp_too_big_sent.fetch_add(1, Relaxed);
        debug!(remote = %tunnel.remote, mtu, "frame too big for the tunnel's path: told its sender");
        self.too_big.push(TooBig {
            port_no: tunnel.port_no,
            key: tunnel.key,
            frame: reply,
        });
    }

    fn flush(&mut self) {
        if !self.txq.is_empty() {
            self.txq.flush(self.now, self.wc, &self.shared.counters.gre_tx_errors);
        }
    }
}

impl Sink for Out<'_> {
    fn output(&mut self, port_no: u32, frame: &mut [u8], vnet: &mut VnetHdr) {
        let now = self.now;
        let len = frame.len();
        let fib = self.fib;
        let c = &self.shared.counters;
        if let Some(port) = fib.local.get(&port_no) {
            let io = &port.io;
            if let (true, Some(fd)) = (io.takes_vnet_hdr(), io.tx_socket()) {
                if self.txq.is_full() {
                    self.flush();
                }
                // SAFETY: the frame stays where it is, unmodified, until the flush that ends
                // this batch (the executor copies before editing a frame it has output, and an
                // in-place edit here flushes first); the counters belong to `fib`, which the
                // worker holds until after that flush.
                unsafe { self.txq.push(fd, None, &[], Some(vnet), frame, &port.counters, false) };
                return;
            }
            self.flush();
            let ok = if io.takes_vnet_hdr() {
                io.send(vnet, frame).is_ok()
            } else if vnet.is_gso() {
                let none = VnetHdr::default();
                let mut all_ok = true;
                let r = offload::segment(frame, vnet, 0, self.scratch, |seg| {
                    all_ok &= io.send(&none, seg).is_ok();
                });
                if r.is_err() {
                    c.drop_offload.fetch_add(1, Relaxed);
                    return;
                }
                all_ok
            } else {
                if vnet.needs_csum() && !finish_checksum(frame, vnet, c) {
                    return;
                }
                io.send(vnet, frame).is_ok()
            };
            if ok {
                port.counters.tx(len, now);
            } else {
                port.counters.tx_errors.fetch_add(1, Relaxed);
            }
        } else if let Some(tunnel) = fib.tunnels.get(&port_no) {
            let Some(gre) = self.shared.gre.as_ref() else { return };
            if !vnet.is_gso() && vnet.needs_csum() {
                self.flush();
                if !finish_checksum(frame, vnet, c) {
                    return;
                }
            }
            let mut q = GreQueue {
                txq: &mut *self.txq,
                fd: gre.fd(),
                now,
                wc: self.wc,
                gre_tx_errors: &c.gre_tx_errors,
            };
            // SAFETY: as for ports above; the tunnel belongs to `fib` too.
            let sent = unsafe { tunnel_tx::send(&mut q, tunnel, frame, vnet, c) };
            match sent {
                tunnel_tx::Outcome::Queued(n) if vnet.is_gso() => {
                    self.wc.tso_frames.fetch_add(1, Relaxed);
                    self.wc.tso_segments.fetch_add(n as u64, Relaxed);
                }
                tunnel_tx::Outcome::TooBig { mtu } => self.too_big(tunnel, frame, mtu),
                _ => {}
            }
        } else {
            c.drop_no_port.fetch_add(1, Relaxed);
        }
    }

    fn controller(&mut self, frame: &[u8], how: &ToController) {
        let c = &self.shared.counters;
        if !self.shared.controller_up.load(Relaxed) {
            c.packet_in_no_controller.fetch_add(1, Relaxed);
            return;
        }
        let rate = self.shared.packet_in_rate as f64;
        let burst = self.shared.packet_in_burst as f64;
        let now = self.now;
        let b = self.buckets.entry(self.in_port).or_insert(Bucket::full(burst, now));
        if !b.take(rate, burst, now) {
            c.packet_in_rate_limited.fetch_add(1, Relaxed);
            return;
        }
        match self.shared.packet_in_tx.try_send(packet_in(self.in_port, frame, how)) {
            Ok(()) => c.packet_in_sent.fetch_add(1, Relaxed),
            Err(_) => c.packet_in_queue_full.fetch_add(1, Relaxed),
        };
    }

    fn dropped(&mut self, why: ExecDrop) {
        let c = &self.shared.counters;
        match why {
            ExecDrop::Meter => c.drop_meter.fetch_add(1, Relaxed),
            ExecDrop::TtlExpired => c.drop_ttl.fetch_add(1, Relaxed),
        };
    }
}

/// The PACKET_IN for `frame` from `in_port`: at most `max_len` bytes of it (the whole frame
/// for OFPCML_NO_BUFFER), never more than an OpenFlow message holds.
pub fn packet_in(in_port: u32, frame: &[u8], how: &ToController) -> PacketIn {
    let mut keep = frame.len().min(MAX_PACKET_IN_DATA);
    if how.max_len != cloudrack_wire::ofp::OFPCML_NO_BUFFER {
        keep = keep.min(how.max_len as usize);
    }
    PacketIn {
        in_port,
        vnet: how.tunnel_id as u32,
        tunnel_id: how.tunnel_id,
        metadata: how.metadata,
        reason: how.reason,
        table_id: how.table_id,
        cookie: how.cookie,
        total_len: frame.len(),
        data: frame[..keep].to_vec(),
    }
}

/// Complete a partial checksum in place, once: later outputs of the same frame then see a
/// finished frame and a cleared flag.
pub fn finish_checksum(frame: &mut [u8], vnet: &mut VnetHdr, c: &DpCounters) -> bool {
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
