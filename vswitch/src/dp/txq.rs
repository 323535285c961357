//! A worker's send queue: what one receive batch forwards to sockets (AF_PACKET ports, the raw
//! GRE socket) is queued here as pointers into the receive slots and leaves in one `sendmmsg`
//! per destination socket when the batch is done, in the order it was queued.
//!
//! The queue holds pointers, not copies: a frame queued must stay where it is, unmodified,
//! until the next [`TxQueue::flush`] — so the worker flushes before it receives into the slots
//! again, before it edits a frame in place (completing a checksum) and before it sends anything
//! directly. All arrays are allocated once; nothing is allocated per frame.
//!
//! A message is up to three pieces: a prefix borrowed from the FIB (the GRE header), a few
//! bytes copied into the entry itself (a virtio-net header, or the rewritten headers of one
//! segment of a super-frame) and the frame or payload, borrowed from a receive slot.

use super::stats::{PortCounters, WorkerCounters};
use crate::tunnel::PathMtu;
use cloudrack_wire::vnet_hdr::{self, VnetHdr};
use std::net::Ipv4Addr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Messages queued before the queue flushes by itself.
pub const TXQ: usize = 64;

/// Bytes an entry holds itself: the longest Ethernet (with VLAN tag) + IP + TCP header stack
/// (18 + 60 + 60), rounded up.
pub const INLINE: usize = 144;

#[derive(Clone, Copy)]
struct Entry {
    fd: RawFd,
    /// A raw-socket send, to the address in `names` at this entry's index.
    has_to: bool,
    /// A header sent before everything else (the GRE header), from the FIB.
    prefix: (*const u8, usize),
    /// Bytes sent after the prefix, owned by the entry.
    inline: [u8; INLINE],
    inline_len: usize,
    frame: (*const u8, usize),
    counters: *const PortCounters,
    gre: bool,
    /// The path MTU to refresh when the kernel refuses the message as too big (EMSGSIZE).
    path_mtu: *const PathMtu,
}

pub struct TxQueue {
    entries: Vec<Entry>,
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    /// Destinations of raw-socket sends, one per entry.
    names: Vec<libc::sockaddr_in>,
    /// Which entries `msgs[k]` stands for, per flush round.
    which: Vec<usize>,
    done: Vec<bool>,
    /// Every entry so far goes to one socket (the common case): then `msgs[i]` is built for
    /// entry i as it is pushed, and the flush is a single `sendmmsg`.
    one_socket: bool,
}

impl Default for TxQueue {
    fn default() -> Self {
        TxQueue::new()
    }
}

impl TxQueue {
    pub fn new() -> TxQueue {
        TxQueue {
            entries: Vec::with_capacity(TXQ),
            // SAFETY: plain data; all-zero is valid and they are filled before use.
            msgs: (0..TXQ).map(|_| unsafe { std::mem::zeroed() }).collect(),
            iovs: (0..3 * TXQ).map(|_| unsafe { std::mem::zeroed() }).collect(),
            names: (0..TXQ)
                .map(|_| {
                    // SAFETY: as above.
                    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                    sin.sin_family = libc::AF_INET as libc::sa_family_t;
                    sin
                })
                .collect(),
            which: vec![0; TXQ],
            done: vec![false; TXQ],
            one_socket: true,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.entries.len() >= TXQ
    }

    /// Messages queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Queue one message to socket `fd` (to `to`, for the raw GRE socket): `prefix`, then
    /// `vnet` as a virtio-net header if given, then `frame`. On the flush, success counts on
    /// `counters` as `tx`, failure as `tx_errors` (and as a GRE send error if `gre`).
    ///
    /// # Safety
    /// `prefix`, `frame` and `counters` must stay valid and unmodified until the next
    /// [`flush`](Self::flush). Panics if the queue is full.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn push(
        &mut self,
        fd: RawFd,
        to: Option<Ipv4Addr>,
        prefix: &[u8],
        vnet: Option<&VnetHdr>,
        frame: &[u8],
        counters: &PortCounters,
        gre: bool,
    ) {
        let mut hdr = [0u8; vnet_hdr::LEN];
        let inline: &[u8] = match vnet {
            Some(v) => {
                v.emit(&mut hdr);
                &hdr
            }
            None => &[],
        };
        // SAFETY: the caller's promise, passed on.
        unsafe { self.push_parts(fd, to, prefix, inline, frame, counters, gre, None) }
    }

    /// Queue one message made of `prefix`, a copy of `inline` (at most [`INLINE`] bytes) and
    /// `frame`; `path_mtu` is refreshed if the kernel finds the message too big for the path.
    ///
    /// # Safety
    /// As for [`push`](Self::push); `path_mtu` too must outlive the flush. Panics if the
    /// queue is full or `inline` is too long.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn push_parts(
        &mut self,
        fd: RawFd,
        to: Option<Ipv4Addr>,
        prefix: &[u8],
        inline: &[u8],
        frame: &[u8],
        counters: &PortCounters,
        gre: bool,
        path_mtu: Option<&PathMtu>,
    ) {
        // Never grow: messages already built point into `entries`.
        assert!(!self.is_full(), "TxQueue::push on a full queue");
        if let Some(ip) = to {
            self.names[self.entries.len()].sin_addr.s_addr = u32::from(ip).to_be();
        }
        let mut copy = [0u8; INLINE];
        copy[..inline.len()].copy_from_slice(inline);
        self.entries.push(Entry {
            fd,
            has_to: to.is_some(),
            prefix: (prefix.as_ptr(), prefix.len()),
            inline: copy,
            inline_len: inline.len(),
            frame: (frame.as_ptr(), frame.len()),
            counters,
            gre,
            path_mtu: path_mtu.map_or(std::ptr::null(), |p| p as *const PathMtu),
        });
        let i = self.entries.len() - 1;
        if self.one_socket {
            if fd == self.entries[0].fd {
                self.build(i, i);
            } else {
                self.one_socket = false;
            }
        }
    }

    /// Make `msgs[m]` (and its iovecs) the message of entry `i`.
    fn build(&mut self, m: usize, i: usize) {
        self.which[m] = i;
        let e = &self.entries[i];
        let iov = &mut self.iovs[3 * m..3 * m + 3];
        let mut k = 0;
        if e.prefix.1 > 0 {
            iov[0] = libc::iovec {
                iov_base: e.prefix.0 as *mut libc::c_void,
                iov_len: e.prefix.1,
            };
            k = 1;
        }
        if e.inline_len > 0 {
            iov[k] = libc::iovec {
                iov_base: e.inline.as_ptr() as *mut libc::c_void,
                iov_len: e.inline_len,
            };
            k += 1;
        }
        iov[k] = libc::iovec {
            iov_base: e.frame.0 as *mut libc::c_void,
            iov_len: e.frame.1,
        };
        let h = &mut self.msgs[m].msg_hdr;
        h.msg_iov = iov.as_mut_ptr();
        h.msg_iovlen = (k + 1) as _;
        if e.has_to {
            h.msg_name = &self.names[i] as *const libc::sockaddr_in as *mut libc::c_void;
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        } else {
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
        }
    }

    /// Send everything queued: one `sendmmsg` per destination socket (more if the kernel
    /// takes a batch only in part), each socket's messages in queued order. A message the
    /// kernel refuses is counted as an error and skipped; the rest still go.
    pub fn flush(&mut self, now: u64, wc: &WorkerCounters, gre_tx_errors: &AtomicU64) {
        let n = self.entries.len();
        if n == 0 {
            return;
        }
        if self.one_socket {
            self.send(self.entries[0].fd, n, now, wc, gre_tx_errors);
        } else {
            self.done[..n].fill(false);
            for first in 0..n {
                if self.done[first] {
                    continue;
                }
                let fd = self.entries[first].fd;
                let mut m = 0;
                for i in first..n {
                    if !self.done[i] && self.entries[i].fd == fd {
                        self.done[i] = true;
                        self.build(m, i);
                        m += 1;
                    }
                }
                self.send(fd, m, now, wc, gre_tx_errors);
            }
        }
        self.entries.clear();
        self.one_socket = true;
    }

    /// Send `msgs[..m]` on `fd`, counting each message's fate.
    fn send(&mut self, fd: RawFd, m: usize, now: u64, wc: &WorkerCounters, gre_tx_errors: &AtomicU64) {
        let mut k = 0;
        while k < m {
            // SAFETY: msgs[k..m] point at iovecs and addresses in this queue's arrays and at
            // frames the caller keeps valid until this flush (see `push`).
            let r = unsafe { libc::sendmmsg(fd, self.msgs[k..].as_mut_ptr(), (m - k) as libc::c_uint, 0) };
            wc.tx_calls.fetch_add(1, Relaxed);
            if r > 0 {
                for j in k..k + r as usize {
                    let e = &self.entries[self.which[j]];
                    // SAFETY: the counters outlive the flush (see `push`).
                    unsafe { &*e.counters }.tx(e.frame.1 + if e.gre { e.inline_len } else { 0 }, now);
                }
                wc.tx_packets.fetch_add(r as u64, Relaxed);
                k += r as usize;
            } else {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                let e = &self.entries[self.which[k]];
                // SAFETY: as above.
                unsafe { &*e.counters }.tx_errors.fetch_add(1, Relaxed);
                if e.gre {
                    gre_tx_errors.fetch_add(1, Relaxed);
                }
                if err.raw_os_error() == Some(libc::EMSGSIZE) && !e.path_mtu.is_null() {
                    // The path shrank (an ICMP "fragmentation needed" taught the kernel):
                    // learn its new MTU so the next packets are cut to fit.
                    // SAFETY: as for the counters (see `push_parts`).
                    unsafe { &*e.path_mtu }.refresh_after_too_big();
                }
                k += 1;
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn sends_each_socket_its_frames_in_order_and_counts_them() {
        let (a_tx, a_rx) = UnixDatagram::pair().unwrap();
        let (b_tx, b_rx) = UnixDatagram::pair().unwrap();
        a_rx.set_nonblocking(true).unwrap();
        b_rx.set_nonblocking(true).unwrap();
        let ca = PortCounters::default();
        let cb = PortCounters::default();
        let frames: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 20 + i as usize]).collect();
        let hdr = VnetHdr::default();
        let mut q = TxQueue::new();
        for (i, f) in frames.iter().enumerate() {
            let (fd, c) = if i % 2 == 0 {
                (a_tx.as_raw_fd(), &ca)
            } else {
                (b_tx.as_raw_fd(), &cb)
            };
            // SAFETY: frames and counters outlive the flush below.
            unsafe { q.push(fd, None, b"GRE!", (i == 0).then_some(&hdr), f, c, false) };
        }
        let wc = WorkerCounters::default();
        let gre_errors = AtomicU64::new(0);
        q.flush(7, &wc, &gre_errors);
        assert!(q.is_empty());
        let mut buf = [0u8; 100];
        for (rx, first) in [(&a_rx, 0u8), (&b_rx, 1)] {
            for i in (first..6).step_by(2) {
                let n = rx.recv(&mut buf).unwrap();
                let extra = if i == 0 { vnet_hdr::LEN } else { 0 };
                assert_eq!(n, 4 + extra + 20 + i as usize);
                assert_eq!(&buf[..4], b"GRE!");
                assert!(buf[4 + extra..n].iter().all(|&b| b == i));
            }
            assert!(rx.recv(&mut buf).is_err(), "one message too many");
        }
        assert_eq!(ca.snapshot()["tx_packets"], 3);
        assert_eq!(cb.snapshot()["tx_packets"], 3);
        assert_eq!(wc.snapshot()["tx_calls"], 2, "one sendmmsg per socket");
        assert_eq!(wc.snapshot()["tx_packets"], 6);
    }

    #[test]
    fn a_refused_message_is_counted_and_the_rest_still_go() {
        let (tx, rx) = UnixDatagram::pair().unwrap();
        let c = PortCounters::default();
        let big = vec![0u8; 1 << 24];
        let small = [1u8; 10];
        let mut q = TxQueue::new();
        // SAFETY: the frames and counters outlive the flush.
        unsafe {
            q.push(tx.as_raw_fd(), None, &[], None, &small, &c, true);
            q.push(tx.as_raw_fd(), None, &[], None, &big, &c, true);
            q.push(tx.as_raw_fd(), None, &[], None, &small, &c, true);
        }
        let wc = WorkerCounters::default();
        let gre_errors = AtomicU64::new(0);
        q.flush(1, &wc, &gre_errors);
        assert_eq!(c.snapshot()["tx_packets"], 2);
        assert_eq!(c.snapshot()["tx_errors"], 1);
        assert_eq!(gre_errors.load(Relaxed), 1);
        let mut buf = [0u8; 20];
        assert_eq!(rx.recv(&mut buf).unwrap(), 10);
        assert_eq!(rx.recv(&mut buf).unwrap(), 10);
    }
}
