//! A worker's receive slots: `BATCH` buffers, each big enough for a 64 KB super-frame, filled
//! by one `recvmmsg` call (or, for ports that cannot do that, one `recv` per slot). Allocated
//! once per worker; nothing is allocated per frame.

use super::{RxFrame, RX_BUF_LEN};
use std::io;
use std::os::fd::RawFd;

/// Frames taken per receive call.
pub const BATCH: usize = 32;
/// The index of one more slot that receives never fill: room for a frame the switch makes
/// itself while the batch is in hand (an ICMP reply).
pub const SPARE: usize = BATCH;
/// More slots receives never fill, from this index on: where frames being coalesced wait
/// between receive calls (swapped in from the receive slots, not copied).
pub const FIRST_HELD: usize = SPARE + 1;
pub const HELD_SLOTS: usize = 8;

pub struct RxBatch {
    /// The slots: `BATCH` for receiving, the [`SPARE`] one and the held ones. A frame lands at
    /// a fixed offset of its slot (see the receivers).
    pub bufs: Vec<Box<[u8]>>,
    /// Each received message's full length; more than its room when it was cut short.
    pub lens: [usize; BATCH],
    /// What a port receiver found in each slot: `None` for a malformed frame.
    pub frames: [Option<RxFrame>; BATCH],
    /// The VLAN tag (TPID, TCI) the kernel took off each message, for sockets with
    /// PACKET_AUXDATA (see [`recv_mmsg_aux`](Self::recv_mmsg_aux)).
    pub vlans: [Option<(u16, u16)>; BATCH],
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// Control buffers for PACKET_AUXDATA, one per slot.
    ctrl: Vec<[u64; 8]>,
    /// The slot offset `iovs` point at; `usize::MAX` before the first call.
    offset: usize,
}

impl Default for RxBatch {
    fn default() -> Self {
        RxBatch::new()
    }
}

impl RxBatch {
    pub fn new() -> RxBatch {
        RxBatch {
            bufs: (0..FIRST_HELD + HELD_SLOTS)
                .map(|_| vec![0u8; RX_BUF_LEN].into_boxed_slice())
                .collect(),
            lens: [0; BATCH],
            frames: [None; BATCH],
            vlans: [None; BATCH],
            // SAFETY: iovec and mmsghdr are plain data; all-zero (null pointers) is valid, and
            // they are filled in before every use.
            iovs: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
            msgs: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
            ctrl: vec![[0u64; 8]; BATCH],
            offset: usize::MAX,
        }
    }

    /// Like [`recv_mmsg`](Self::recv_mmsg) on an AF_PACKET socket with PACKET_AUXDATA: also
    /// reads the VLAN tag the kernel took off each frame into `vlans` (the kernel strips the
    /// outer tag before packet sockets see a frame, and hands it over only as metadata).
    pub fn recv_mmsg_aux(&mut self, fd: RawFd, offset: usize) -> io::Result<usize> {
        for i in 0..BATCH {
            let h = &mut self.msgs[i].msg_hdr;
            h.msg_control = self.ctrl[i].as_mut_ptr() as *mut libc::c_void;
            h.msg_controllen = std::mem::size_of::<[u64; 8]>() as _;
        }
        let r = self.recv_mmsg(fd, offset);
        let n = *r.as_ref().unwrap_or(&0);
        for i in 0..BATCH {
            self.vlans[i] = if i < n { aux_vlan(&self.msgs[i].msg_hdr) } else { None };
            let h = &mut self.msgs[i].msg_hdr;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
        }
        r
    }

    /// The receive slots' buffers were swapped with others (`bufs.swap`): point the next
    /// receive at the buffers now in place.
    pub fn slots_moved(&mut self) {
        self.offset = usize::MAX;
    }

    /// Receive up to `BATCH` messages from `fd` with one `recvmmsg`, each written at `offset`
    /// of its slot; their lengths go to `lens`. `WouldBlock` when nothing is queued.
    pub fn recv_mmsg(&mut self, fd: RawFd, offset: usize) -> io::Result<usize> {
        if offset != self.offset {
            // The slots never move (boxed), so the pointers stay valid until the offset changes.
            for i in 0..BATCH {
                let room = &mut self.bufs[i][offset..];
                self.iovs[i] = libc::iovec {
                    iov_base: room.as_mut_ptr() as *mut libc::c_void,
                    iov_len: room.len(),
                };
                let h = &mut self.msgs[i].msg_hdr;
                h.msg_iov = &mut self.iovs[i];
                h.msg_iovlen = 1;
            }
            self.offset = offset;
        }
        // SAFETY: every mmsghdr points at one iovec covering a live, writable slot; no name
        // or control buffers. MSG_TRUNC makes msg_len the message's full length.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (len, m) in self.lens.iter_mut().zip(&self.msgs).take(n) {
            *len = m.msg_len as usize;
        }
        Ok(n)
    }
}

const PACKET_AUXDATA: libc::c_int = 8;
const TP_STATUS_VLAN_VALID: u32 = 0x10;
const TP_STATUS_VLAN_TPID_VALID: u32 = 0x40;

/// struct tpacket_auxdata (linux/if_packet.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

/// The VLAN tag in a received message's PACKET_AUXDATA, if the kernel took one off.
fn aux_vlan(h: &libc::msghdr) -> Option<(u16, u16)> {
    if h.msg_control.is_null() || h.msg_controllen < std::mem::size_of::<libc::cmsghdr>() {
        return None;
    }
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of cmsgs; the CMSG
    // macros walk within them, and the auxdata is read unaligned from inside one.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_PACKET
                && (*c).cmsg_type == PACKET_AUXDATA
                && (*c).cmsg_len as usize >= libc::CMSG_LEN(std::mem::size_of::<TpacketAuxdata>() as u32) as usize
            {
                let a = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const TpacketAuxdata);
                if a.tp_status & TP_STATUS_VLAN_VALID == 0 {
                    return None;
                }
                let tpid = if a.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                    a.tp_vlan_tpid
                } else {
                    0x8100
                };
                return Some((tpid, a.tp_vlan_tci));
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

#[cfg(test)]
mod test {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn receives_a_burst_in_one_call_and_reports_cut_lengths() {
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut batch = RxBatch::new();
        assert_eq!(
            batch.recv_mmsg(b.as_raw_fd(), 16).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        for i in 0..40u8 {
            a.send(&[i; 100]).unwrap();
        }
        let n = batch.recv_mmsg(b.as_raw_fd(), 16).unwrap();
        assert_eq!(n, BATCH);
        for i in 0..n {
            assert_eq!(batch.lens[i], 100);
            assert_eq!(batch.bufs[i][16..116], [i as u8; 100]);
        }
        assert_eq!(batch.recv_mmsg(b.as_raw_fd(), 6).unwrap(), 40 - BATCH);
        assert_eq!(batch.bufs[0][6..106], [BATCH as u8; 100]);
        // Longer than the room from the offset: cut, with the full length reported.
        a.send(&vec![7u8; RX_BUF_LEN]).unwrap();
        assert_eq!(batch.recv_mmsg(b.as_raw_fd(), 16).unwrap(), 1);
        assert_eq!(batch.lens[0], RX_BUF_LEN);
    }
}
