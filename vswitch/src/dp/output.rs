//! Where a worker's executed programs send packets: the [`Sink`] of the datapath. Whole frames
//! to sockets are queued in the worker's [`TxQueue`] (sent by the flush that ends the receive
//! batch); frames a port cannot take as they are (offloads to finish in software) are
//! segmented or completed here. PACKET_INs leave through a per-port token bucket.

use super::fib::Fib;
use super::offload;
use super::stats::{DpCounters, WorkerCounters};
use super::txq::TxQueue;
use super::{PacketIn, Shared};
use crate::pipeline::execute::{ExecDrop, Sink, ToController};
use crate::tunnel::MAX_OFFLOAD_FRAME;
use cloudrack_wire::vnet_hdr::VnetHdr;
use std::collections::HashMap;
use std::io::IoSlice;
use std::sync::atomic::Ordering::Relaxed;

/// Most frame bytes a PACKET_IN carries: an OpenFlow message is at most 64 KB.
pub const MAX_PACKET_IN_DATA: usize = 65_000;

/// A token bucket limiting PACKET_INs from one port.
pub struct Bucket {
    tokens: f64,
    last_ms: u64,
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
}

impl Out<'_> {
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
            let gso = vnet.is_gso();
            if !gso || (tunnel.carries_offloads && len <= MAX_OFFLOAD_FRAME) {
                // Whole: a plain frame, or a super-frame with its offload header for a Cloud
                // Rack peer (the underlay fragments it).
                if !gso && vnet.needs_csum() {
                    self.flush();
                    if !finish_checksum(frame, vnet, c) {
                        return;
                    }
                }
                if self.txq.is_full() {
                    self.flush();
                }
                let (prefix, hdr) = if gso {
                    (&tunnel.offload_header[..], Some(&*vnet))
                } else {
                    (&tunnel.header[..], None)
                };
                // SAFETY: as for ports above; the GRE headers belong to `fib` too.
                unsafe {
                    self.txq.push(
                        gre.fd(),
                        Some(tunnel.remote),
                        prefix,
                        hdr,
                        frame,
                        &tunnel.counters,
                        true,
                    )
                };
                return;
            }
            self.flush();
            let mut all_ok = true;
            let r = if tunnel.carries_offloads {
                // Too big for one IPv4 packet: split in two, each with its offload header.
                offload::split(frame, vnet, MAX_OFFLOAD_FRAME, self.scratch, |p, h| {
                    let mut hb = [0u8; cloudrack_wire::vnet_hdr::LEN];
                    h.emit(&mut hb);
                    let parts = [IoSlice::new(&tunnel.offload_header), IoSlice::new(&hb), IoSlice::new(p)];
                    all_ok &= gre.send_parts(tunnel.remote, &parts).is_ok();
                })
            } else {
                // Standard Ethernet over GRE (an Open vSwitch peer): cut to the underlay MTU.
                offload::segment(frame, vnet, self.shared.tunnel_max_frame, self.scratch, |seg| {
                    all_ok &= gre.send(tunnel.remote, &tunnel.header, seg).is_ok();
                })
            };
            if r.is_err() {
                c.drop_offload.fetch_add(1, Relaxed);
                return;
            }
            if all_ok {
                tunnel.counters.tx(len, now);
            } else {
                tunnel.counters.tx_errors.fetch_add(1, Relaxed);
                c.gre_tx_errors.fetch_add(1, Relaxed);
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
        let b = self.buckets.entry(self.in_port).or_insert(Bucket {
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
