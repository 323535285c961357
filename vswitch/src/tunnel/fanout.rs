//! GRE receive spread over the workers.
//!
//! Every raw IPPROTO_GRE socket gets its own copy of each GRE packet, so several raw sockets
//! would deliver every packet several times. Instead each worker gets an AF_PACKET socket on
//! the underlay interface, and all of them join one PACKET_FANOUT group: the kernel hands each
//! packet to exactly one member, chosen by a hash of the flow inside the tunnel (a classic BPF
//! program, [`flow_hash`](super::flow_hash), that reads Ethernet-over-GRE and our offload
//! super-frames alike), so the flows between two hosts spread over the workers, each kept in
//! order on one. PACKET_FANOUT_FLAG_DEFRAG reassembles IPv4 fragments before
//! the choice, so a packet a peer let fragment (Cloud Rack no longer does; older hosts sent
//! super-frames so, and some GRE peers may) arrives whole, on one
//! socket. A classic BPF filter keeps everything but IPv4 GRE to our underlay address out.
//!
//! The sockets listen to every protocol (ETH_P_ALL), so the kernel hands them each packet
//! before its ingress hooks, where [`claim`](super::claim) then drops GRE to us before the
//! host's IP stack processes it again. PACKET_FANOUT_FLAG_IGNORE_OUTGOING keeps the packets
//! we send ourselves out of the group. A kernel without that flag gets sockets bound to IPv4
//! only, behind the ingress hooks, and no claim.
//!
//! The sockets are SOCK_RAW with PACKET_VNET_HDR: each read is a virtio-net header, the
//! Ethernet header and the IPv4 packet ([`LINK_OFFSET`] bytes before it). The virtio-net
//! header matters where the host's NIC does GRO: the kernel then joins our segments (GRE
//! over Ethernet over TCP) into one packet before we see it, with a partial inner checksum,
//! and only that header says so (and the segment size). Only Ethernet underlays (loopback
//! included) are supported; on others the switch falls back to the raw socket. The raw socket
//! stays for sending, with a filter that drops everything it would receive
//! ([`GreSocket::set_send_only`]).
//!
//! [`GreSocket::set_send_only`]: super::GreSocket::set_send_only

use super::cbpf::{insn, JEQ_K, LD_B_ABS, LD_H_ABS, LD_W_ABS, RET_K, SKF_AD_PROTOCOL};
use crate::os as sys;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ALL: u16 = 0x0003;
const ETH_HLEN: u32 = 14;
/// Bytes before the IPv4 header in what a member reads: virtio-net header and Ethernet header.
pub const LINK_OFFSET: usize = cloudrack_wire::vnet_hdr::LEN + ETH_HLEN as usize;
// From linux/if_packet.h.
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_FANOUT: libc::c_int = 18;
const PACKET_FANOUT_CBPF: u32 = 6;
const PACKET_FANOUT_DATA: libc::c_int = 22;
const PACKET_FANOUT_FLAG_UNIQUEID: u32 = 0x2000;
const PACKET_FANOUT_FLAG_IGNORE_OUTGOING: u32 = 0x4000;
const PACKET_FANOUT_FLAG_DEFRAG: u32 = 0x8000;
/// Each socket queues up to this much: reassembled super-frames are charged for every
/// fragment's buffer. Root may exceed rmem_max.
const SOCKET_BUFFER: libc::c_int = 64 << 20;

/// Accept IPv4 packets of protocol 47 (GRE) to `local`, whole; drop everything else. Offsets
/// are from the IPv4 header plus `link` (0 where reads start there, as a raw IPv4 socket's;
/// 14 for a SOCK_RAW packet socket on Ethernet, whose filter sees the Ethernet header).
pub fn gre_to(local: Ipv4Addr, link: u32) -> [libc::sock_filter; 8] {
    [
        insn(LD_H_ABS, 0, 0, SKF_AD_PROTOCOL),
        insn(JEQ_K, 0, 5, u32::from(ETH_P_IP)),
        insn(LD_B_ABS, 0, 0, link + 9),
        insn(JEQ_K, 0, 3, cloudrack_wire::gre::IPPROTO_GRE as u32),
        insn(LD_W_ABS, 0, 0, link + 16),
        insn(JEQ_K, 0, 1, u32::from(local)),
        insn(RET_K, 0, 0, u32::MAX),
        insn(RET_K, 0, 0, 0),
    ]
}

/// Drop every packet.
pub const DROP_ALL: [libc::sock_filter; 1] = [libc::sock_filter {
    code: RET_K,
    jt: 0,
    jf: 0,
    k: 0,
}];

/// Attach a classic BPF program to a socket.
pub fn attach_filter(fd: RawFd, prog: &[libc::sock_filter]) -> io::Result<()> {
    set_program(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, prog)
}

/// Hand a classic BPF program to the socket option `level`/`name` (a filter, or a fanout
/// group's selector).
fn set_program(fd: RawFd, level: libc::c_int, name: libc::c_int, prog: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // fprog points at `prog`, which outlives the call; the kernel copies it.
    sys::setsockopt(fd, level, name, &fprog)
}

/// One member of the GRE fanout group, owned by one worker.
pub struct GreRx {
    fd: OwnedFd,
}

/// The fanout group's sockets, and whether they see packets ahead of the ingress hooks (so
/// that a [`claim`](super::claim) cannot starve them).
pub struct GreRxGroup {
    pub members: Vec<GreRx>,
    pub ahead_of_ingress: bool,
}

impl GreRx {
    /// Open `n` sockets on `ifname` receiving GRE to `local`, joined in a new fanout group:
    /// ahead of the ingress hooks where the kernel allows it, else on IPv4 behind them.
    pub fn open_group(ifname: &str, local: Ipv4Addr, n: usize) -> io::Result<GreRxGroup> {
        let ifindex = sys::ifindex(ifname)?;
        if !matches!(sys::link_type(ifname)?, libc::ARPHRD_ETHER | libc::ARPHRD_LOOPBACK) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "GRE fanout needs an Ethernet underlay interface",
            ));
        }
        match GreRx::open_members(ifindex, local, n, true) {
            Ok(members) => Ok(GreRxGroup {
                members,
                ahead_of_ingress: true,
            }),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::info!(error = %e, "no PACKET_FANOUT_FLAG_IGNORE_OUTGOING here; GRE fanout on IPv4 only");
                Ok(GreRxGroup {
                    members: GreRx::open_members(ifindex, local, n, false)?,
                    ahead_of_ingress: false,
                })
            }
            Err(e) => Err(e),
        }
    }

    fn open_members(ifindex: u32, local: Ipv4Addr, n: usize, all_protocols: bool) -> io::Result<Vec<GreRx>> {
        let mut out = Vec::with_capacity(n);
        let mut group = None;
        for _ in 0..n.max(1) {
            let rx = GreRx::open_one(ifindex, local, all_protocols)?;
            group = Some(rx.join(group, all_protocols)?);
            out.push(rx);
        }
        Ok(out)
    }

    fn open_one(ifindex: u32, local: Ipv4Addr, all_protocols: bool) -> io::Result<GreRx> {
        // Protocol 0 at creation: nothing is queued until bind(), and by then the filter is on.
        let fd = sys::packet_socket(libc::SOCK_RAW)?;
        let raw = fd.as_raw_fd();
        attach_filter(raw, &gre_to(local, ETH_HLEN))?;
        sys::setsockopt_int(raw, libc::SOL_PACKET, PACKET_VNET_HDR, 1)?;
        sys::setsockopt_int(raw, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
        if sys::setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, SOCKET_BUFFER).is_err() {
            let _ = sys::setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, SOCKET_BUFFER);
        }
        sys::bind_packet(raw, if all_protocols { ETH_P_ALL } else { ETH_P_IP }, ifindex)?;
        Ok(GreRx { fd })
    }

    /// Join fanout group `group`, or, for the first socket, have the kernel pick an unused
    /// group id (so another program's group on this interface is never joined by accident).
    /// Returns the group id.
    fn join(&self, group: Option<u16>, ignore_outgoing: bool) -> io::Result<u16> {
        let mut mode = PACKET_FANOUT_CBPF | PACKET_FANOUT_FLAG_DEFRAG;
        if ignore_outgoing {
            mode |= PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
        }
        let arg = match group {
            Some(id) => id as u32 | (mode << 16),
            None => (mode | PACKET_FANOUT_FLAG_UNIQUEID) << 16,
        };
        let fd = self.fd.as_raw_fd();
        sys::setsockopt_int(fd, libc::SOL_PACKET, PACKET_FANOUT, arg as libc::c_int)?;
        if let Some(id) = group {
            return Ok(id);
        }
        // The group's program: which member gets a packet (until it is set, member 0 does).
        set_program(
            fd,
            libc::SOL_PACKET,
            PACKET_FANOUT_DATA,
            &super::flow_hash::inner_flow_hash(),
        )?;
        let mut val: u32 = 0;
        let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
        // SAFETY: val is writable for len bytes; the kernel writes at most len.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_PACKET,
                PACKET_FANOUT,
                &mut val as *mut u32 as *mut libc::c_void,
                &mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(val as u16)
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Receive one packet into `buf`: the IPv4 packet at [`LINK_OFFSET`], after its
    /// virtio-net and Ethernet headers; `WouldBlock` when none is queued. Returns the full
    /// length, which exceeds `buf.len()` if it was cut.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        sys::recv(self.fd.as_raw_fd(), buf, libc::MSG_TRUNC)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::tunnel::cbpf::test::{run, run_proto};

    fn ipv4(proto: u8, dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[9] = proto;
        p[12..16].copy_from_slice(&[198, 18, 0, 2]);
        p[16..20].copy_from_slice(&dst);
        p
    }

    #[test]
    fn filter_takes_only_gre_to_us() {
        // As a SOCK_RAW packet socket's filter sees it: after an Ethernet header.
        let eth = |ip: Vec<u8>| [vec![0u8; 14], ip].concat();
        let f = gre_to(Ipv4Addr::new(198, 18, 0, 1), 14);
        assert_eq!(run(&f, &eth(ipv4(47, [198, 18, 0, 1]))), u32::MAX);
        assert_eq!(run(&f, &eth(ipv4(47, [198, 18, 0, 3]))), 0, "GRE to another host");
        assert_eq!(
            run(&f, &ipv4(47, [198, 18, 0, 1])),
            0,
            "offsets without the Ethernet header"
        );
        let f = gre_to(Ipv4Addr::new(198, 18, 0, 1), 0);
        assert_eq!(run(&f, &ipv4(47, [198, 18, 0, 1])), u32::MAX);
        assert_eq!(run(&f, &ipv4(47, [198, 18, 0, 3])), 0, "GRE to another host");
        assert_eq!(run(&f, &ipv4(17, [198, 18, 0, 1])), 0, "UDP to us");
        assert_eq!(run(&f, &[0x45, 0, 0]), 0, "truncated");
        assert_eq!(run_proto(&f, 0x0806, &ipv4(47, [198, 18, 0, 1])), 0, "not IPv4 (ARP)");
        assert_eq!(run(&DROP_ALL, &ipv4(47, [198, 18, 0, 1])), 0);
    }

    /// The frame of [`gre_udp`] as an offload super-frame (GRE protocol 0x88B5, virtio-net
    /// header).
    fn gre_super(sport: u16, len: usize) -> Vec<u8> {
        let teb = gre_udp(sport, len);
        let mut g = vec![0x20, 0x00, 0x88, 0xb5, 0, 0, 0, 7];
        g.extend_from_slice(&[0u8; cloudrack_wire::vnet_hdr::LEN]);
        g.extend_from_slice(&teb[8..]);
        g
    }

    /// An Ethernet + IPv4 + UDP frame of `len` bytes from UDP port `sport`, under keyed GRE.
    fn gre_udp(sport: u16, len: usize) -> Vec<u8> {
        let mut g = vec![0x20, 0x00, 0x65, 0x58, 0, 0, 0, 7];
        let mut f = vec![0u8; len];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&9u16.to_be_bytes());
        f[38..40].copy_from_slice(&((len - 34) as u16).to_be_bytes());
        for (i, b) in f[42..].iter_mut().enumerate() {
            *b = i as u8;
        }
        g.extend_from_slice(&f);
        g
    }

    /// Packets the IP layer of the calling thread's network namespace has taken in.
    fn ip_in_receives() -> u64 {
        let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("snmp");
        let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
        let (names, values) = (ip.next().unwrap(), ip.next().unwrap());
        let at = names.split_whitespace().position(|n| n == "InReceives").unwrap();
        values.split_whitespace().nth(at).unwrap().parse().unwrap()
    }

    /// In a network namespace of its own (root only; skipped otherwise): GRE sent through the
    /// raw socket to 127.0.0.1 reaches exactly one fanout member per packet, flows spread over
    /// the members, a packet fragmented by a 1500-byte MTU arrives reassembled, and the
    /// send-only raw socket queues nothing. With the claim attached, the host's IP layer
    /// receives none of it; without, every packet and fragment a second time.
    #[test]
    fn fanout_spreads_reassembles_and_never_duplicates() {
        fanout_round(true);
        fanout_round(false);
    }

    fn fanout_round(claim: bool) {
        let t = std::thread::spawn(move || {
            // SAFETY: unshare affects only this thread, which owns nothing yet.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                println!("skipped: no CAP_SYS_ADMIN for a network namespace");
                return;
            }
            let ok = std::process::Command::new("ip")
                .args(["link", "set", "lo", "mtu", "1500", "up"])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                println!("skipped: cannot configure lo");
                return;
            }
            let lo = Ipv4Addr::LOCALHOST;
            let group = GreRx::open_group("lo", lo, 2).expect("fanout group");
            assert!(
                group.ahead_of_ingress,
                "this kernel should have PACKET_FANOUT_FLAG_IGNORE_OUTGOING"
            );
            let members = group.members;
            let _claim = claim.then(|| {
                let ifindex = sys::ifindex("lo").unwrap();
                crate::tunnel::GreClaim::attach(ifindex, lo).expect("tcx claim")
            });
            let raw = crate::tunnel::GreSocket::open(lo).expect("raw GRE socket");
            raw.set_send_only().expect("send-only filter");
            // Sending as a peer that lets its packets fragment (an older Cloud Rack sent
            // super-frames so): the fanout still hands them over reassembled.
            sys::setsockopt_int(
                raw.fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_DONT,
            )
            .expect("IP_PMTUDISC_DONT");

            let mut sent = Vec::new();
            for sport in 1000..1032u16 {
                sent.push(gre_udp(sport, 200));
            }
            sent.push(gre_udp(4242, 20_000));
            for sport in 2000..2032u16 {
                sent.push(gre_super(sport, 200));
            }
            let ip_before = ip_in_receives();
            for p in &sent {
                raw.send_parts(lo, &[std::io::IoSlice::new(p)]).expect("send");
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
            let ip_received = ip_in_receives() - ip_before;
            if claim {
                assert_eq!(ip_received, 0, "the claim let GRE through to the IP layer");
            } else {
                // 32 small packets and the big one's 14 fragments.
                assert!(
                    ip_received >= sent.len() as u64 + 13,
                    "IP layer took only {ip_received}"
                );
            }

            let mut buf = vec![0u8; 70_000];
            let mut per_member = [0usize; 2];
            let mut supers_per_member = [0usize; 2];
            let mut got: Vec<Vec<u8>> = Vec::new();
            for (m, rx) in members.iter().enumerate() {
                while let Ok(n) = rx.recv(&mut buf) {
                    per_member[m] += 1;
                    let vnet = cloudrack_wire::vnet_hdr::VnetHdr::parse(&buf).expect("virtio-net header");
                    assert!(!vnet.is_gso(), "lo does no GRO: {vnet:?}");
                    let ip = &buf[LINK_OFFSET..n];
                    if ip[22..24] == [0x88, 0xb5] {
                        supers_per_member[m] += 1;
                    }
                    let d = crate::tunnel::decap(ip).expect("decap");
                    assert_eq!((d.src, d.key), (lo, 7));
                    got.push(ip[20..].to_vec());
                }
            }
            assert_eq!(got.len(), sent.len(), "per member {per_member:?}");
            let mut a = got.clone();
            let mut b = sent.clone();
            a.sort();
            b.sort();
            assert!(a == b, "every packet exactly once, byte for byte");
            assert!(per_member.iter().all(|&n| n > 0), "flows spread: {per_member:?}");
            // Super-frames between the same two hosts spread by their inner flow too.
            assert!(
                supers_per_member.iter().all(|&n| n > 0),
                "super-frames: {supers_per_member:?}"
            );
            let big = got.iter().find(|p| p.len() > 20_000).expect("the fragmented packet");
            assert_eq!(big.len(), 8 + 20_000);
            assert!(raw.recv(&mut buf).is_err(), "the raw socket queued a packet");
        });
        t.join().unwrap();
    }
}
