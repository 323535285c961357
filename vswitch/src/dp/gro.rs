//! Receive coalescing, GRO-like: the TCP segments a tunnel delivers, each a whole packet, are
//! joined back into super-frames before they reach a VM, so its stack handles one large frame
//! (with a virtio-net GSO header and a partial checksum) instead of dozens, as a kernel tunnel
//! behind a NIC with GRO would hand it.
//!
//! Within one receive batch, per flow (tunnel, Ethernet header, IP addresses, TCP ports), a
//! segment joins the frame held for its flow when Linux's `tcp_gro_receive` would merge it:
//! - it follows in sequence, with the same ACK number, window, header length and options;
//! - its flags are ACK, optionally PSH (a PSH ends the frame; FIN, SYN, RST, URG, ECE, CWR
//!   segments are never merged, nor are segments without payload);
//! - its IP header is plain (IPv4 without options, not a fragment; IPv6 with TCP right after
//!   the fixed header) and agrees on TOS/traffic class (so ECN marks), TTL/hop limit, DF and
//!   flow label; with DF clear, its IPv4 id is the next one;
//! - it carries no more payload than the frame's first segment (a shorter one ends the frame),
//!   and the joined IP packet stays within 64 KB;
//! - its IPv4 header checksum and its TCP checksum verify. The joined frame leaves with a
//!   partial checksum, which the receiver trusts: a corrupted segment must not be laundered
//!   into it. It is passed on alone instead, for the receiver to discard.
//!
//! A segment of a held flow that does not join ends that frame first (it is forwarded before
//! the segment), so a flow's packets keep their order. Payloads are appended in place, after
//! the held frame in its receive slot (a slot holds a 64 KB frame); nothing is allocated.
//!
//! A frame may stay held across receive calls: [`Gro::park`] moves it out of the receive
//! slots (a swap of buffers), and a worker that finds its socket empty while a frame is still
//! growing naps a few microseconds for the rest of the burst ([`NAP`], [`NAPS`]) instead of
//! handing the VM a fraction of it, as NIC interrupt moderation does for a kernel's GRO.

use cloudrack_wire::gre::{fold, sum_words};
use cloudrack_wire::vnet_hdr::{self, VnetHdr};

/// Flows held at once; a new flow beyond them ends the oldest frame.
pub const MAX_FLOWS: usize = 8;
/// How long a worker naps for more segments when its socket is empty and a frame is growing.
pub const NAP: std::time::Duration = std::time::Duration::from_micros(20);
/// Naps in a row without a packet before the held frames leave anyway.
pub const NAPS: u32 = 3;

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const PROTO_TCP: u8 = 6;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
/// The largest IPv4 total length, and IPv6 payload length.
const MAX_IP_LEN: usize = 65_535;

/// The tunnel a frame came in by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub port_no: u32,
    pub key: u32,
    pub is_static: bool,
}

/// A frame to forward: `bufs[slot][off..off + len]`, with `vnet` as its offload metadata.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    pub source: Source,
    pub slot: usize,
    pub off: usize,
    pub len: usize,
    pub vnet: VnetHdr,
    /// Segments joined in it (1: passed on as it came).
    pub segments: u32,
}

/// What became of an offered frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Held as the start of a frame for its flow.
    Held,
    /// Appended to its flow's frame.
    Merged,
    /// Not for joining: forward it as it is (after `flushed`).
    Pass,
    /// A TCP segment whose checksum does not verify: forward it as it is, never joined.
    PassCorrupt,
}

#[derive(Debug, Clone, Copy)]
pub struct Offer {
    /// A held frame of the same flow, or the oldest one, finished: forward it first.
    pub flushed: Option<Ready>,
    pub step: Step,
}

/// Where a TCP packet's headers are (offsets from the frame's start).
#[derive(Debug, Clone, Copy)]
struct Tcp {
    ipv4: bool,
    l4: usize,
    /// Start of the TCP payload.
    payload: usize,
    /// End of the IP packet (the frame may carry Ethernet padding after it).
    end: usize,
    seq: u32,
    flags: u8,
    /// Plain enough to join (see the module comment), checksums not yet verified.
    joinable: bool,
}

/// A frame being built for one flow.
#[derive(Debug, Clone, Copy)]
struct Flow {
    source: Source,
    slot: usize,
    off: usize,
    len: usize,
    tcp: Tcp,
    /// Payload bytes of the first segment: the super-frame's segment size.
    mss: usize,
    next_seq: u32,
    next_id: u16,
    segments: u32,
    psh: bool,
    /// Nothing more may join (it ended with PSH or a short segment).
    closed: bool,
    /// Arrival order, to end the oldest first.
    age: u64,
}

/// One worker's coalescing state for the batch in hand.
pub struct Gro {
    flows: [Option<Flow>; MAX_FLOWS],
    clock: u64,
}

impl Default for Gro {
    fn default() -> Self {
        Gro::new()
    }
}

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// The headers of an untagged Ethernet frame holding TCP over IPv4 or IPv6; `None` for
/// anything else (no flow to keep in order).
fn parse(f: &[u8]) -> Option<Tcp> {
    if f.len() < ETH_HLEN + 40 {
        return None;
    }
    let l3 = ETH_HLEN;
    let (ipv4, l4, end, plain_ip) = match be16(f, 12) {
        ETHERTYPE_IPV4 => {
            let ihl = (f[l3] & 0x0f) as usize * 4;
            let total = be16(f, l3 + 2) as usize;
            let frag = be16(f, l3 + 6);
            // A later fragment has no TCP header.
            if f[l3] >> 4 != 4 || ihl < 20 || f[l3 + 9] != PROTO_TCP || frag & 0x1fff != 0 {
                return None;
            }
            let plain = ihl == 20 && frag & 0x2000 == 0;
            (true, l3 + ihl, l3 + total, plain)
        }
        ETHERTYPE_IPV6 => {
            if f[l3] >> 4 != 6 || f[l3 + 6] != PROTO_TCP {
                return None;
            }
            (false, l3 + 40, l3 + 40 + be16(f, l3 + 4) as usize, true)
        }
        _ => return None,
    };
    if l4 + 20 > end || end > f.len() {
        return None;
    }
    let payload = l4 + (f[l4 + 12] >> 4) as usize * 4;
    if payload < l4 + 20 || payload > end {
        return None;
    }
    let flags = f[l4 + 13];
    Some(Tcp {
        ipv4,
        l4,
        payload,
        end,
        seq: be32(f, l4 + 4),
        flags,
        // No Ethernet padding either: the frame must be exactly the packet.
        joinable: plain_ip && end == f.len() && payload < end && flags & !TCP_PSH == TCP_ACK,
    })
}

/// Sum of the TCP pseudo-header for a segment of `l4_len` bytes.
fn pseudo_sum(f: &[u8], t: &Tcp, l4_len: usize) -> u64 {
    let addrs = if t.ipv4 {
        &f[ETH_HLEN + 12..ETH_HLEN + 20]
    } else {
        &f[ETH_HLEN + 8..ETH_HLEN + 40]
    };
    sum_words(addrs, 0) + u64::from(PROTO_TCP) + l4_len as u64
}

/// Whether the IPv4 header checksum (if IPv4) and the TCP checksum verify.
fn checksums_ok(f: &[u8], t: &Tcp) -> bool {
    if t.ipv4 && fold(sum_words(&f[ETH_HLEN..t.l4], 0)) != 0xffff {
        return false;
    }
    fold(sum_words(&f[t.l4..t.end], pseudo_sum(f, t, t.end - t.l4))) == 0xffff
}

/// Same flow: Ethernet header, IP addresses, ports.
fn same_flow(a: &[u8], ta: &Tcp, b: &[u8], tb: &Tcp) -> bool {
    if ta.ipv4 != tb.ipv4 || a[..ETH_HLEN] != b[..ETH_HLEN] || a[ta.l4..ta.l4 + 4] != b[tb.l4..tb.l4 + 4] {
        return false;
    }
    let addrs = if ta.ipv4 { 12..20 } else { 8..40 };
    a[ETH_HLEN + addrs.start..ETH_HLEN + addrs.end] == b[ETH_HLEN + addrs.start..ETH_HLEN + addrs.end]
}

impl Gro {
    pub fn new() -> Gro {
        Gro {
            flows: [None; MAX_FLOWS],
            clock: 0,
        }
    }

    /// Offer the frame at `bufs[slot][off..off + len]`, from `source`. `joinable` false (a
    /// frame that came with offload metadata of its own) only keeps its flow in order.
    pub fn offer(
        &mut self,
        bufs: &mut [Box<[u8]>],
        slot: usize,
        off: usize,
        len: usize,
        source: Source,
        joinable: bool,
    ) -> Offer {
        let pass = Offer {
            flushed: None,
            step: Step::Pass,
        };
        let Some(frame) = bufs[slot].get(off..off + len) else {
            return pass;
        };
        let Some(t) = parse(frame) else {
            return pass;
        };
        let held = self.flows.iter().position(|f| {
            f.is_some_and(|f| f.source == source && same_flow(&bufs[f.slot][f.off..f.off + f.len], &f.tcp, frame, &t))
        });
        if !(joinable && t.joinable) {
            return Offer {
                flushed: held.map(|i| self.finish(bufs, i)),
                step: Step::Pass,
            };
        }
        if !checksums_ok(frame, &t) {
            return Offer {
                flushed: held.map(|i| self.finish(bufs, i)),
                step: Step::PassCorrupt,
            };
        }
        let mut flushed = None;
        if let Some(i) = held {
            if self.append(bufs, i, slot, off, len, &t) {
                return Offer {
                    flushed: None,
                    step: Step::Merged,
                };
            }
            flushed = Some(self.finish(bufs, i));
        }
        if t.flags & TCP_PSH != 0 {
            // It would end its frame at once: nothing to hold it for.
            return Offer {
                flushed,
                step: Step::Pass,
            };
        }
        let free = match self.flows.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                // Full: end the oldest frame (a flush above always leaves a free entry).
                let oldest = (0..MAX_FLOWS)
                    .min_by_key(|&i| self.flows[i].map_or(u64::MAX, |f| f.age))
                    .unwrap_or(0);
                flushed = Some(self.finish(bufs, oldest));
                oldest
            }
        };
        let frame = &bufs[slot][off..off + len];
        self.clock += 1;
        self.flows[free] = Some(Flow {
            source,
            slot,
            off,
            len,
            tcp: t,
            mss: t.end - t.payload,
            next_seq: t.seq.wrapping_add((t.end - t.payload) as u32),
            next_id: be16(frame, ETH_HLEN + 4).wrapping_add(1),
            segments: 1,
            psh: false,
            closed: false,
            age: self.clock,
        });
        Offer {
            flushed,
            step: Step::Held,
        }
    }

    /// Join the segment in `slot` to flow `i` if it may (see the module comment).
    fn append(&mut self, bufs: &mut [Box<[u8]>], i: usize, slot: usize, off: usize, len: usize, t: &Tcp) -> bool {
        let Some(f) = self.flows[i].as_mut() else {
            return false;
        };
        let (head, seg) = two_slots(bufs, f.slot, slot);
        let h = &head[f.off..];
        let s = &seg[off..off + len];
        let ft = &f.tcp;
        let add = t.end - t.payload;
        let l3 = ETH_HLEN;
        let ip_ok = if ft.ipv4 {
            // TOS (ECN included), DF, TTL; with DF clear the id must follow on.
            h[l3 + 1] == s[l3 + 1]
                && h[l3 + 6] == s[l3 + 6]
                && h[l3 + 8] == s[l3 + 8]
                && (s[l3 + 6] & 0x40 != 0 || be16(s, l3 + 4) == f.next_id)
        } else {
            // Version, traffic class (ECN included), flow label; hop limit.
            h[l3..l3 + 4] == s[l3..l3 + 4] && h[l3 + 7] == s[l3 + 7]
        };
        let l4 = ft.l4;
        let tcp_ok = t.payload - t.l4 == ft.payload - l4
            && t.seq == f.next_seq
            // ACK number; data offset and reserved bits; window.
            && h[l4 + 8..l4 + 13] == s[t.l4 + 8..t.l4 + 13]
            && h[l4 + 14..l4 + 16] == s[t.l4 + 14..t.l4 + 16]
            && t.flags & !TCP_PSH == ft.flags
            // Options, timestamps included.
            && h[l4 + 20..ft.payload] == s[t.l4 + 20..t.payload];
        let new_len = f.len + add;
        let fits = add <= f.mss && new_len - l3 <= MAX_IP_LEN && f.off + new_len <= head.len();
        if f.closed || !ip_ok || !tcp_ok || !fits {
            return false;
        }
        head[f.off + f.len..f.off + new_len].copy_from_slice(&seg[off + t.payload..off + t.end]);
        f.len = new_len;
        f.next_seq = f.next_seq.wrapping_add(add as u32);
        f.next_id = f.next_id.wrapping_add(1);
        f.segments += 1;
        if t.flags & TCP_PSH != 0 || add < f.mss {
            f.psh |= t.flags & TCP_PSH != 0;
            f.closed = true;
        }
        true
    }

    /// The oldest held frame, finished and no longer held; `None` when none is. Call until
    /// `None` at the end of every batch, before the slots are reused.
    pub fn pop(&mut self, bufs: &mut [Box<[u8]>]) -> Option<Ready> {
        let i = (0..MAX_FLOWS)
            .filter(|&i| self.flows[i].is_some())
            .min_by_key(|&i| self.flows[i].map_or(u64::MAX, |f| f.age))?;
        Some(self.finish(bufs, i))
    }

    /// Whether a frame is held.
    pub fn is_empty(&self) -> bool {
        self.flows.iter().all(Option::is_none)
    }

    /// Whether a held frame has joined segments and may join more: a stream in full flow,
    /// worth waiting a moment for.
    pub fn growing(&self) -> bool {
        self.flows.iter().flatten().any(|f| f.segments > 1 && !f.closed)
    }

    /// Move every held frame that lies in a slot below `first` into a free one of the
    /// `count` slots from `first` on (swapping the buffers), so that the next receive may
    /// reuse the lower slots. Returns false if some frame found no room (then it must leave,
    /// through [`pop`](Self::pop), before those slots are received into again).
    pub fn park(&mut self, bufs: &mut [Box<[u8]>], first: usize, count: usize) -> bool {
        for i in 0..MAX_FLOWS {
            let Some(slot) = self.flows[i].map(|f| f.slot) else {
                continue;
            };
            if slot >= first {
                continue;
            }
            let Some(to) = (first..first + count).find(|s| self.flows.iter().flatten().all(|f| f.slot != *s)) else {
                return false;
            };
            bufs.swap(slot, to);
            if let Some(f) = self.flows[i].as_mut() {
                f.slot = to;
            }
        }
        true
    }

    /// Write the joined frame's lengths, IPv4 header checksum, flags and partial TCP checksum,
    /// and release flow `i`.
    fn finish(&mut self, bufs: &mut [Box<[u8]>], i: usize) -> Ready {
        let f = self.flows[i].take().expect("finish: no such flow");
        let mut ready = Ready {
            source: f.source,
            slot: f.slot,
            off: f.off,
            len: f.len,
            vnet: VnetHdr::default(),
            segments: f.segments,
        };
        if f.segments == 1 {
            return ready;
        }
        let b = &mut bufs[f.slot][f.off..f.off + f.len];
        let t = f.tcp;
        let l3 = ETH_HLEN;
        if t.ipv4 {
            b[l3 + 2..l3 + 4].copy_from_slice(&((f.len - l3) as u16).to_be_bytes());
            b[l3 + 10..l3 + 12].fill(0);
            let csum = !fold(sum_words(&b[l3..t.l4], 0));
            b[l3 + 10..l3 + 12].copy_from_slice(&csum.to_be_bytes());
        } else {
            b[l3 + 4..l3 + 6].copy_from_slice(&((f.len - l3 - 40) as u16).to_be_bytes());
        }
        if f.psh {
            b[t.l4 + 13] |= TCP_PSH;
        }
        // CHECKSUM_PARTIAL: the field holds the pseudo-header sum; the receiver (or whoever
        // segments the frame again) adds the rest.
        let partial = fold(pseudo_sum(b, &t, f.len - t.l4));
        b[t.l4 + 16..t.l4 + 18].copy_from_slice(&partial.to_be_bytes());
        ready.vnet = VnetHdr {
            flags: vnet_hdr::F_NEEDS_CSUM,
            gso_type: if t.ipv4 {
                vnet_hdr::GSO_TCPV4
            } else {
                vnet_hdr::GSO_TCPV6
            },
            hdr_len: t.payload as u16,
            gso_size: f.mss as u16,
            csum_start: t.l4 as u16,
            csum_offset: 16,
        };
        ready
    }
}

/// Slot `a` to write and slot `b` to read, `a != b`.
fn two_slots(bufs: &mut [Box<[u8]>], a: usize, b: usize) -> (&mut [u8], &[u8]) {
    assert_ne!(a, b, "a segment cannot join its own frame");
    if a < b {
        let (x, y) = bufs.split_at_mut(b);
        (&mut x[a], &y[0])
    } else {
        let (x, y) = bufs.split_at_mut(a);
        (&mut y[0], &x[b])
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::dp::offload;
    use etherparse::PacketBuilder;

    /// Where segments start in their slots, as after RX_HEADROOM, outer IPv4 and GRE.
    const AT: usize = 44;
    const SRC: Source = Source {
        port_no: 0x4001,
        key: 7,
        is_static: false,
    };

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// A TCP/IPv4 super-frame with timestamps, ACK and PSH, as a VM's TSO hands it over.
    fn super4(data: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 5201, 1_000_000, 65000)
            .options(&[etherparse::TcpOptionElement::Timestamp(11, 22)])
            .unwrap()
            .psh()
            .ack(77)
            .write(&mut f, data)
            .unwrap();
        // DF, as TCP sends.
        f[20] |= 0x40;
        fix_checksums(&mut f);
        f
    }

    fn super6(data: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv6([1; 16], [2; 16], 64)
            .tcp(40000, 5201, 7, 65000)
            .ack(99)
            .write(&mut f, data)
            .unwrap();
        f
    }

    fn gso(frame: &[u8], ipv4: bool, mss: u16) -> VnetHdr {
        VnetHdr {
            flags: vnet_hdr::F_NEEDS_CSUM,
            gso_type: if ipv4 { vnet_hdr::GSO_TCPV4 } else { vnet_hdr::GSO_TCPV6 },
            gso_size: mss,
            hdr_len: parse(frame).unwrap().payload as u16,
            csum_start: parse(frame).unwrap().l4 as u16,
            csum_offset: 16,
        }
    }

    /// The segments a tunnel sends for `frame`, whole.
    fn segments(frame: &[u8], ipv4: bool, mss: u16) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        offload::segment_parts(frame, &gso(frame, ipv4, mss), 0, |h, p| out.push([h, p].concat())).unwrap();
        out
    }

    /// Rewrite the IPv4 header checksum and the TCP checksum after a test's edit.
    fn fix_checksums(f: &mut [u8]) {
        let t = parse(f).unwrap();
        if t.ipv4 {
            f[24..26].fill(0);
            let c = !fold(sum_words(&f[14..t.l4], 0));
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
        f[t.l4 + 16..t.l4 + 18].fill(0);
        let c = !fold(sum_words(&f[t.l4..t.end], pseudo_sum(f, &t, t.end - t.l4)));
        f[t.l4 + 16..t.l4 + 18].copy_from_slice(&c.to_be_bytes());
    }

    /// Receive slots holding `frames` at `AT`, as one batch.
    fn slots(frames: &[Vec<u8>]) -> Vec<Box<[u8]>> {
        frames
            .iter()
            .map(|f| {
                let mut b = vec![0u8; crate::port::RX_BUF_LEN].into_boxed_slice();
                b[AT..AT + f.len()].copy_from_slice(f);
                b
            })
            .collect()
    }

    /// A forwarded frame: its bytes, offload metadata and the segments it holds.
    type Out = (Vec<u8>, VnetHdr, u32);

    /// Offer a batch; returns every frame forwarded, in order, and each offer's step.
    fn run(frames: &[Vec<u8>], sources: &[Source]) -> (Vec<Out>, Vec<Step>) {
        let mut bufs = slots(frames);
        let mut gro = Gro::new();
        let mut out = Vec::new();
        let mut steps = Vec::new();
        let take = |bufs: &[Box<[u8]>], r: Ready| (bufs[r.slot][r.off..r.off + r.len].to_vec(), r.vnet, r.segments);
        for (i, f) in frames.iter().enumerate() {
            let o = gro.offer(&mut bufs, i, AT, f.len(), sources[i % sources.len()], true);
            if let Some(r) = o.flushed {
                out.push(take(&bufs, r));
            }
            if matches!(o.step, Step::Pass | Step::PassCorrupt) {
                out.push((f.clone(), VnetHdr::default(), 1));
            }
            steps.push(o.step);
        }
        while let Some(r) = gro.pop(&mut bufs) {
            out.push(take(&bufs, r));
        }
        assert!(gro.is_empty());
        (out, steps)
    }

    /// Finish a joined frame's partial checksum, as the receiving stack trusts it to be.
    fn completed(mut f: Vec<u8>, vnet: &VnetHdr) -> Vec<u8> {
        if vnet.needs_csum() {
            offload::complete_checksum(&mut f, vnet).unwrap();
        }
        f
    }

    #[test]
    fn segments_join_back_into_the_super_frame_byte_for_byte() {
        for ipv4 in [true, false] {
            let data = payload(30_000);
            let frame = if ipv4 { super4(&data) } else { super6(&data) };
            let segs = segments(&frame, ipv4, 1448);
            assert_eq!(segs.len(), 21);
            let (out, steps) = run(&segs, &[SRC]);
            assert_eq!(steps[0], Step::Held);
            assert!(steps[1..].iter().all(|s| *s == Step::Merged), "{steps:?}");
            assert_eq!(out.len(), 1, "one super-frame");
            let (joined, vnet, n) = out.into_iter().next().unwrap();
            assert_eq!(n, 21);
            assert_eq!(vnet.gso_size, 1448);
            assert_eq!(
                vnet.gso_kind(),
                if ipv4 { vnet_hdr::GSO_TCPV4 } else { vnet_hdr::GSO_TCPV6 }
            );
            assert_eq!(
                (vnet.csum_start, vnet.hdr_len),
                (gso(&frame, ipv4, 1448).csum_start, gso(&frame, ipv4, 1448).hdr_len)
            );
            assert!(
                completed(joined, &vnet) == frame,
                "joined frame differs from the original (ipv4 {ipv4})"
            );
        }
    }

    #[test]
    fn a_joined_frame_resegments_to_the_same_segments() {
        let frame = super4(&payload(10_000));
        let segs = segments(&frame, true, 1000);
        let (out, _) = run(&segs, &[SRC]);
        let (joined, vnet, _) = &out[0];
        assert_eq!(segments(joined, true, vnet.gso_size), segs);
    }

    #[test]
    fn a_corrupted_segment_is_passed_alone_and_never_joined() {
        let frame = super4(&payload(10_000));
        let mut segs = segments(&frame, true, 1448);
        let last = segs[3].len() - 1;
        segs[3][last] ^= 0x01;
        let (out, steps) = run(&segs, &[SRC]);
        assert_eq!(steps[3], Step::PassCorrupt);
        let counts: Vec<u32> = out.iter().map(|o| o.2).collect();
        // Segments 0-2 joined and forwarded before the bad one, which goes alone; then 4-6.
        assert_eq!(counts, vec![3, 1, 3]);
        assert_eq!(out[1].0, segs[3], "the bad segment is untouched");
        assert!(!out[1].1.needs_csum(), "not turned into a trusted partial checksum");
        // A bad IPv4 header checksum too.
        let mut segs = segments(&frame, true, 1448);
        segs[2][24] ^= 0x10;
        assert_eq!(run(&segs, &[SRC]).1[2], Step::PassCorrupt);
    }

    /// Each edit to segment 2 (checksums fixed afterwards) must keep it out of the frame of
    /// segments 0-1; segments 3.. may form one of their own.
    #[test]
    fn refuses_to_join_across_differences() {
        let frame = super4(&payload(8 * 1448));
        type Edit = (&'static str, fn(&mut Vec<u8>));
        let edits: [Edit; 13] = [
            ("ECN CE mark", |s| s[15] |= 0x03),
            ("TOS", |s| s[15] = 0x10),
            ("TTL", |s| s[22] -= 1),
            ("DF", |s| s[20] &= !0x40),
            ("ACK number", |s| s[14 + 20 + 11] ^= 1),
            ("window", |s| s[14 + 20 + 15] ^= 1),
            ("timestamp option", |s| s[14 + 20 + 20 + 4] ^= 1),
            ("FIN", |s| s[14 + 20 + 13] |= 0x01),
            ("URG", |s| s[14 + 20 + 13] |= 0x20),
            ("ECE", |s| s[14 + 20 + 13] |= 0x40),
            ("CWR", |s| s[14 + 20 + 13] |= 0x80),
            ("sequence gap", |s| s[14 + 20 + 7] ^= 0x04),
            ("other MAC", |s| s[5] ^= 1),
        ];
        for (what, edit) in edits {
            let mut segs = segments(&frame, true, 1448);
            edit(&mut segs[2]);
            fix_checksums(&mut segs[2]);
            let (out, _) = run(&segs, &[SRC]);
            assert_eq!(out[0].2, 2, "{what}: joined into the first frame");
            assert!(out.iter().all(|o| o.2 == 1 || !o.0.is_empty()), "{what}: nothing lost");
            let total: u32 = out.iter().map(|o| o.2).sum();
            assert_eq!(total, 8, "{what}: every segment forwarded once");
        }
    }

    #[test]
    fn order_within_a_flow_holds_and_flows_stay_apart() {
        let a = segments(&super4(&payload(4 * 1448)), true, 1448);
        let mut b_frame = super4(&payload(4 * 1448));
        b_frame[14 + 20 + 1] = 0x42; // another source port
        fix_checksums(&mut b_frame);
        let b = segments(&b_frame, true, 1448);
        // Interleaved: a0 b0 a1 b1 ...
        let mixed: Vec<Vec<u8>> = a.iter().zip(&b).flat_map(|(x, y)| [x.clone(), y.clone()]).collect();
        let (out, _) = run(&mixed, &[SRC]);
        assert_eq!(out.iter().map(|o| o.2).collect::<Vec<_>>(), vec![4, 4]);
        // Two tunnels, same inner flow: never joined.
        let (out, _) = run(&a, &[SRC, Source { key: 8, ..SRC }]);
        assert!(out.iter().all(|o| o.2 == 1), "joined across tunnels");
        // A pure ACK of the flow ends its frame before it is forwarded.
        let mut ack = a[2][..14 + 20 + 32].to_vec();
        ack[16..18].copy_from_slice(&((20 + 32) as u16).to_be_bytes());
        fix_checksums(&mut ack);
        let (out, steps) = run(&[a[0].clone(), a[1].clone(), ack.clone()], &[SRC]);
        assert_eq!(steps[2], Step::Pass);
        assert_eq!(out.iter().map(|o| o.2).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(out[1].0, ack);
    }

    #[test]
    fn a_short_or_pushed_segment_ends_the_frame() {
        let segs = segments(&super4(&payload(3 * 1448 + 100)), true, 1448);
        let mut more = segments(&super4(&payload(2 * 1448)), true, 1448);
        for s in more.iter_mut() {
            // The same flow, right after.
            let seq = u32::from_be_bytes(s[38..42].try_into().unwrap()) + 3 * 1448 + 100;
            s[38..42].copy_from_slice(&seq.to_be_bytes());
            fix_checksums(s);
        }
        let all: Vec<Vec<u8>> = segs.iter().chain(&more).cloned().collect();
        let (out, _) = run(&all, &[SRC]);
        // The last of `segs` is short and carries PSH: the frame ends there.
        assert_eq!(out.iter().map(|o| o.2).collect::<Vec<_>>(), vec![4, 2]);
        assert_ne!(out[0].0[14 + 20 + 13] & TCP_PSH, 0, "PSH kept on the joined frame");
    }

    #[test]
    fn more_flows_than_room_end_the_oldest_frame() {
        let flows: Vec<Vec<Vec<u8>>> = (0..MAX_FLOWS as u8 + 1)
            .map(|k| {
                let mut f = super4(&payload(2 * 1448));
                f[14 + 20 + 1] = k;
                fix_checksums(&mut f);
                segments(&f, true, 1448)
            })
            .collect();
        let mut batch: Vec<Vec<u8>> = flows.iter().map(|s| s[0].clone()).collect();
        batch.extend(flows.iter().map(|s| s[1].clone()));
        let (out, _) = run(&batch, &[SRC]);
        let total: u32 = out.iter().map(|o| o.2).sum();
        assert_eq!(total, 2 * (MAX_FLOWS as u32 + 1), "every segment forwarded once");
        // Flow 0 was ended to make room, so its second segment starts a new frame.
        assert_eq!(out[0].2, 1);
    }

    #[test]
    fn frames_with_offload_metadata_pass_and_keep_their_flow_in_order() {
        let segs = segments(&super4(&payload(3 * 1448)), true, 1448);
        let mut bufs = slots(&segs);
        let mut gro = Gro::new();
        assert_eq!(gro.offer(&mut bufs, 0, AT, segs[0].len(), SRC, true).step, Step::Held);
        let o = gro.offer(&mut bufs, 1, AT, segs[1].len(), SRC, false);
        assert_eq!(o.step, Step::Pass);
        assert_eq!(o.flushed.map(|r| r.slot), Some(0), "the held frame goes first");
        assert!(gro.is_empty());
    }

    #[test]
    fn a_parked_frame_keeps_joining_across_receive_calls() {
        let data = payload(20 * 1448);
        let frame = super4(&data);
        let segs = segments(&frame, true, 1448);
        // Four receive slots, then two to park in.
        let mut bufs = slots(&segs[..6]);
        let mut gro = Gro::new();
        let offer = |gro: &mut Gro, bufs: &mut Vec<Box<[u8]>>, i: usize, seg: &[u8]| {
            bufs[i][AT..AT + seg.len()].copy_from_slice(seg);
            gro.offer(bufs, i, AT, seg.len(), SRC, true)
        };
        for (k, chunk) in segs.chunks(4).enumerate() {
            for (i, seg) in chunk.iter().enumerate() {
                let o = offer(&mut gro, &mut bufs, i, seg);
                assert!(o.flushed.is_none(), "batch {k}: a frame left early");
            }
            // Until the last segment, with PSH, ends the frame.
            assert_eq!(gro.growing(), k < 4, "batch {k}");
            assert!(gro.park(&mut bufs, 4, 2), "no room to park");
            // The receive slots are reused: scribble over them.
            for b in bufs[..4].iter_mut() {
                b.fill(0xee);
            }
        }
        let r = gro.pop(&mut bufs).expect("the joined frame");
        assert!(r.slot >= 4, "the frame waits in a parked slot");
        assert_eq!(r.segments, 20);
        let joined = completed(bufs[r.slot][r.off..r.off + r.len].to_vec(), &r.vnet);
        assert!(joined == frame, "joined across receive calls, the frame differs");
        // Two flows, one slot to park in: the second does not fit.
        let mut other = super4(&payload(2 * 1448));
        other[14 + 20 + 1] = 0x77;
        fix_checksums(&mut other);
        let o = segments(&other, true, 1448);
        let mut bufs = slots(&[segs[0].clone(), o[0].clone(), segs[0].clone()]);
        let mut gro = Gro::new();
        gro.offer(&mut bufs, 0, AT, segs[0].len(), SRC, true);
        gro.offer(&mut bufs, 1, AT, o[0].len(), SRC, true);
        assert!(!gro.park(&mut bufs, 2, 1), "two frames parked in one slot");
    }

    #[test]
    fn garbage_and_truncation_never_panic() {
        let frame = super4(&payload(3000));
        let segs = segments(&frame, true, 1448);
        for len in 0..segs[1].len() {
            let batch = vec![segs[0].clone(), segs[1][..len].to_vec()];
            let (out, _) = run(&batch, &[SRC]);
            let total: u32 = out.iter().map(|o| o.2).sum();
            assert_eq!(total, 2, "cut to {len}");
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..2000 {
            let mut s = segs[round % 3].clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x as usize) % 80;
                s[at] = (x >> 32) as u8;
            }
            let _ = run(&[segs[0].clone(), s], &[SRC]);
        }
        // An offer past the end of the slot is passed on, not read.
        let mut bufs = slots(&segs);
        let big = bufs[0].len();
        assert_eq!(Gro::new().offer(&mut bufs, 0, AT, big, SRC, true).step, Step::Pass);
    }
}
