//! Sending a frame into a GRE tunnel so that every packet on the underlay is a whole IPv4
//! packet of its own, DF set, within the path MTU to the remote (`tunnel::pmtu`): losing one
//! costs one segment, not a 64 KB super-frame, and networks that drop fragments carry it.
//!
//! - A TCP super-frame (TSO/GSO from a VM) is cut into segments of at most the path's frame
//!   size (software TSO: every segment's IP length, id and checksum, TCP sequence number,
//!   flags and checksum written afresh; `offload::segment_parts`). Only the headers are
//!   built; the payload is sent from the receive slot, no copy.
//! - A UDP super-frame (GSO_UDP_L4) becomes its datagrams, each its own packet.
//! - A plain frame goes whole if it fits. If it does not, an IPv4 packet that may be
//!   fragmented (DF clear) is cut into IPv4 fragments (`ipfrag`), each its own GRE packet;
//!   one that may not (DF set, or IPv6) is the caller's to answer with "too big" (`icmp`);
//!   anything else is dropped and counted (`tunnel_too_big`), with a rate-limited log line.
//!
//! Everything is plain Ethernet over GRE (0x6558), which any GRE peer reads.

use super::fib::Tunnel;
use super::ipfrag::{self, FragError};
use super::offload::{self, OffloadError};
use super::stats::{DpCounters, WorkerCounters};
use super::txq::TxQueue;
use cloudrack_wire::vnet_hdr::VnetHdr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What became of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Queued as this many GRE packets.
    Queued(usize),
    /// Too big for the path and not to be fragmented: the sender should hear that `mtu` bytes
    /// of IP packet fit (and the frame is dropped).
    TooBig { mtu: u32 },
    /// Dropped and counted.
    Dropped,
}

/// The raw GRE socket's side of a worker's send queue.
pub struct GreQueue<'a> {
    pub txq: &'a mut TxQueue,
    pub fd: RawFd,
    pub now: u64,
    pub wc: &'a WorkerCounters,
    pub gre_tx_errors: &'a AtomicU64,
}

impl GreQueue<'_> {
    /// Queue one GRE packet to `tunnel`: its header, then `headers` (copied), then `payload`.
    ///
    /// # Safety
    /// `payload` and `tunnel` must stay valid and unmodified until the queue's next flush.
    unsafe fn push(&mut self, tunnel: &Tunnel, headers: &[u8], payload: &[u8]) {
        if self.txq.is_full() {
            self.txq.flush(self.now, self.wc, self.gre_tx_errors);
        }
        // SAFETY: the GRE header, counters and path MTU belong to `tunnel`, the payload to
        // the caller, who keeps both until the flush.
        unsafe {
            self.txq.push_parts(
                self.fd,
                Some(tunnel.remote),
                &tunnel.header,
                headers,
                payload,
                &tunnel.counters,
                true,
                Some(&tunnel.path_mtu),
            )
        };
    }
}

/// Send `frame` (with its offload metadata `vnet`; a plain frame's checksum must already be
/// complete) into `tunnel`.
///
/// # Safety
/// `frame` and `tunnel` must stay valid and unmodified until `q`'s next flush.
pub unsafe fn send(q: &mut GreQueue<'_>, tunnel: &Tunnel, frame: &[u8], vnet: &VnetHdr, c: &DpCounters) -> Outcome {
    let max = tunnel.path_mtu.max_frame();
    if vnet.is_gso() {
        // SAFETY: the payloads are slices of `frame` (the caller's promise).
        let r = offload::segment_parts(frame, vnet, max, |h, p| unsafe { q.push(tunnel, h, p) });
        return match r {
            Ok(n) => Outcome::Queued(n),
            Err(OffloadError::DatagramTooBig(size, max)) => {
                too_big_dropped(c, tunnel, size, max, "a UDP GSO datagram");
                Outcome::Dropped
            }
            Err(e) => {
                c.drop_offload.fetch_add(1, Relaxed);
                tracing::debug!(error = %e, "dropped an offloaded frame the tunnel cannot segment");
                Outcome::Dropped
            }
        };
    }
    if frame.len() <= max {
        // SAFETY: as above.
        unsafe { q.push(tunnel, &[], frame) };
        return Outcome::Queued(1);
    }
    // SAFETY: as above.
    match ipfrag::fragment_parts(frame, max, |h, p| unsafe { q.push(tunnel, h, p) }) {
        Ok(n) => {
            c.tunnel_fragmented.fetch_add(1, Relaxed);
            Outcome::Queued(n)
        }
        // The IP MTU of the path: the frame limit less the inner Ethernet header.
        Err(FragError::DontFragment | FragError::Ipv6) => Outcome::TooBig {
            mtu: max.saturating_sub(ipfrag::FRAGMENT_HEADERS - 20) as u32,
        },
        Err(e) => {
            too_big_dropped(
                c,
                tunnel,
                frame.len(),
                max,
                match e {
                    FragError::NotIp(_) => "a frame that is not IP",
                    FragError::Options => "an IPv4 packet with options",
                    _ => "a malformed IPv4 packet",
                },
            );
            Outcome::Dropped
        }
    }
}

/// Count a frame dropped for its size, and say so at most every 10 s.
fn too_big_dropped(c: &DpCounters, tunnel: &Tunnel, size: usize, max: usize, what: &str) {
    static LAST_LOG_MS: AtomicU64 = AtomicU64::new(0);
    let n = c.tunnel_too_big.fetch_add(1, Relaxed) + 1;
    let now = super::stats::now_ms();
    let last = LAST_LOG_MS.load(Relaxed);
    if (last == 0 || now.saturating_sub(last) >= 10_000)
        && LAST_LOG_MS.compare_exchange(last, now, Relaxed, Relaxed).is_ok()
    {
        tracing::warn!(
            remote = %tunnel.remote, size, max_frame = max, dropped_so_far = n,
            "dropped {what} too big for the tunnel's path MTU; set VM MTUs to the path MTU minus 42"
        );
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::dp::gro::{self, Gro};
    use crate::tunnel::{decap, GreSocket, PmtuTable};
    use etherparse::PacketBuilder;
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    fn tcp_super_frame(data: &[u8]) -> (Vec<u8>, VnetHdr) {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 5201, 1_000_000, 65000)
            .ack(5)
            .write(&mut f, data)
            .unwrap();
        let hdr = VnetHdr {
            flags: cloudrack_wire::vnet_hdr::F_NEEDS_CSUM,
            gso_type: cloudrack_wire::vnet_hdr::GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        (f, hdr)
    }

    fn udp_frame(len: usize, df: bool) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2)
            .write(&mut f, &vec![9u8; len - 42])
            .unwrap();
        if !df {
            f[20] &= !0x40;
            f[24..26].fill(0);
            let c = !cloudrack_wire::gre::fold(cloudrack_wire::gre::sum_words(&f[14..34], 0));
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
        f
    }

    /// In a network namespace of its own (root only; skipped otherwise), through the real raw
    /// GRE socket on `lo`: a TCP super-frame leaves as whole GRE packets with DF set, none over
    /// the path MTU, which join back into the same frame; a big IPv4 packet with DF clear
    /// leaves in fragments, one with DF set is refused as too big; and when the path shrinks
    /// (lo's MTU lowered), the first send that is too big fails and the path MTU is learned.
    #[test]
    fn every_packet_is_whole_and_fits_the_path() {
        let t = std::thread::spawn(|| {
            // SAFETY: unshare affects only this thread, which owns nothing yet.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                println!("skipped: no CAP_SYS_ADMIN for a network namespace");
                return;
            }
            let ip = |args: &[&str]| {
                let ok = std::process::Command::new("ip")
                    .args(args)
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "ip {args:?}");
            };
            ip(&["link", "set", "lo", "mtu", "1500", "up"]);
            let lo = Ipv4Addr::LOCALHOST;
            let tx = GreSocket::open(lo).expect("raw GRE socket");
            // A second raw socket gets a copy of every GRE packet sent.
            let rx = GreSocket::open(lo).expect("raw GRE socket");
            let table = PmtuTable::new(lo, None, 1500);
            let tunnel = Tunnel::new(0x4001, lo, 7, 2, false, 0, table.for_remote(lo));
            assert_eq!(tunnel.path_mtu.get(), 1500);
            let c = DpCounters::default();
            let wc = WorkerCounters::default();
            let errors = AtomicU64::new(0);
            let mut txq = TxQueue::new();
            let mut send = |frame: &[u8], vnet: &VnetHdr| {
                let mut q = GreQueue {
                    txq: &mut txq,
                    fd: tx.fd(),
                    now: 1,
                    wc: &wc,
                    gre_tx_errors: &errors,
                };
                // SAFETY: frame and tunnel outlive the flush right after.
                let o = unsafe { send(&mut q, &tunnel, frame, vnet, &c) };
                q.txq.flush(1, &wc, &errors);
                o
            };
            let recv_all = || {
                let mut out = Vec::new();
                let mut buf = vec![0u8; 70_000];
                std::thread::sleep(std::time::Duration::from_millis(50));
                while let Ok(n) = rx.recv(&mut buf) {
                    out.push(buf[..n].to_vec());
                }
                out
            };

            let data: Vec<u8> = (0..30_000).map(|i| (i % 253) as u8).collect();
            let (frame, hdr) = tcp_super_frame(&data);
            // 54 bytes of headers: 1418 payload bytes fit a 1472-byte frame, fewer than the 1448
            // the VM asked for.
            let n = 30_000usize.div_ceil(1500 - 28 - 54);
            assert_eq!(send(&frame, &hdr), Outcome::Queued(n));
            let packets = recv_all();
            assert_eq!(packets.len(), n);
            let mut bufs: Vec<Box<[u8]>> = Vec::new();
            let mut gro = Gro::new();
            let source = gro::Source {
                port_no: 1,
                key: 7,
                is_static: false,
            };
            for (i, p) in packets.iter().enumerate() {
                assert!(p.len() <= 1500, "a {}-byte packet on a 1500-byte path", p.len());
                assert_eq!(p[6] & 0x40, 0x40, "DF not set");
                assert_eq!(p[6] & 0x3f | p[7], 0, "a fragment");
                let d = decap(p).expect("decap");
                assert_eq!((d.key, d.vnet), (7, None), "plain Ethernet over GRE, keyed");
                let mut b = vec![0u8; crate::port::RX_BUF_LEN].into_boxed_slice();
                b[..p.len()].copy_from_slice(p);
                bufs.push(b);
                let step = gro.offer(&mut bufs, i, d.inner.start, d.inner.len(), source, true).step;
                assert!(matches!(step, gro::Step::Held | gro::Step::Merged), "{step:?}");
            }
            let r = gro.pop(&mut bufs).expect("a joined frame");
            let mut joined = bufs[r.slot][r.off..r.off + r.len].to_vec();
            crate::dp::offload::complete_checksum(&mut joined, &r.vnet).unwrap();
            // The test's frame carries its full checksum (a VM's would carry a partial one,
            // which segmenting ignores), so the finished joined frame is the same bytes.
            assert!(joined == frame, "segments did not join into the frame sent");

            // Plain frames: whole when they fit; fragmented with DF clear; refused with DF set.
            assert_eq!(send(&udp_frame(1472, true), &VnetHdr::default()), Outcome::Queued(1));
            assert_eq!(send(&udp_frame(4000, false), &VnetHdr::default()), Outcome::Queued(3));
            assert_eq!(
                send(&udp_frame(4000, true), &VnetHdr::default()),
                Outcome::TooBig { mtu: 1500 - 28 - 14 }
            );
            let packets = recv_all();
            assert_eq!(packets.len(), 4);
            assert!(packets.iter().all(|p| p.len() <= 1500 && p[6] & 0x40 != 0));
            assert_eq!(c.tunnel_fragmented.load(Relaxed), 1);

            // The path shrinks: the first packet too big for it fails, and the MTU is learned.
            ip(&["link", "set", "lo", "mtu", "1400"]);
            std::thread::sleep(std::time::Duration::from_millis(
                2 * crate::tunnel::pmtu::REFRESH_GAP_MS,
            ));
            assert_eq!(send(&udp_frame(1472, true), &VnetHdr::default()), Outcome::Queued(1));
            assert_eq!(errors.load(Relaxed), 1, "the kernel refused the too-big packet");
            assert_eq!(tunnel.path_mtu.get(), 1400, "path MTU learned from EMSGSIZE");
            assert_eq!(
                send(&udp_frame(1472, true), &VnetHdr::default()),
                Outcome::TooBig { mtu: 1400 - 28 - 14 }
            );
            assert_eq!(
                send(&frame, &hdr),
                Outcome::Queued(30_000usize.div_ceil(1400 - 28 - 54))
            );
            assert!(recv_all().iter().all(|p| p.len() <= 1400));
            drop(Arc::clone(&tunnel.path_mtu));
        });
        t.join().unwrap();
    }
}
