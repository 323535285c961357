//! Differential testing against Open vSwitch: random flow tables and random packets, the same
//! in both switches, and what comes out of every port compared.
//!
//! - [`Rng`]: a seeded generator (SplitMix64), so a failing case replays from its seed.
//! - [`random_case`]: groups and flows as `ovs-ofctl` text (both switches get the same
//!   messages from the same tool), drawn from a small value space so packets hit them.
//! - [`random_packet`]: a frame from that value space, tagged with an id in its payload.
//! - [`PortTap`]: the test end of a switch port: sends frames in and captures what comes out
//!   (VLAN tags that the kernel moved into metadata are put back).

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// SplitMix64.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Marks a test packet's payload: MAGIC then a 4-byte id.
pub const MAGIC: [u8; 4] = [0xc1, 0x0d, 0xd1, 0xff];

const MACS: [&str; 3] = ["02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"];
const IPS: [[u8; 4]; 4] = [[10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 1, 1], [10, 0, 1, 2]];
const IP6S: [&str; 3] = ["fd00::1", "fd00::2", "fd01::1"];
const TP: [u16; 4] = [53, 80, 443, 4097];

/// The kinds of packet the generator makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp4,
    Udp4,
    Icmp4,
    Arp,
    Tcp6,
    Udp6,
}

fn pick_mac(rng: &mut Rng) -> [u8; 6] {
    let s: &&str = rng.pick(&MACS);
    crate::mac_bytes(s)
}

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// A random tagged frame with valid checksums. `ports`: the switch's port count.
pub fn random_packet(rng: &mut Rng, id: u32) -> Vec<u8> {
    let kind = *rng.pick(&[Kind::Tcp4, Kind::Udp4, Kind::Icmp4, Kind::Arp, Kind::Tcp6, Kind::Udp6]);
    let dst = if rng.chance(15) { [0xff; 6] } else { pick_mac(rng) };
    let src = pick_mac(rng);
    let mut tag = MAGIC.to_vec();
    tag.extend_from_slice(&id.to_be_bytes());
    tag.extend_from_slice(&[0x5a; 12]);
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    let tagged = rng.chance(25);
    if tagged {
        let vid = *rng.pick(&[10u16, 20]);
        let pcp = rng.below(8) as u16;
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&((pcp << 13) | vid).to_be_bytes());
    }
    let ttl = *rng.pick(&[1u8, 2, 64]);
    let (sp, dp) = (*rng.pick(&TP), *rng.pick(&TP));
    match kind {
        Kind::Arp => {
            f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, *rng.pick(&[1u8, 2])]);
            f.extend_from_slice(&src);
            f.extend_from_slice(&rng.pick(&IPS)[..]);
            f.extend_from_slice(&[0; 6]);
            f.extend_from_slice(&rng.pick(&IPS)[..]);
            f.extend_from_slice(&tag);
        }
        Kind::Tcp4 | Kind::Udp4 | Kind::Icmp4 => {
            let (proto, l4) = l4_header(kind, sp, dp, &tag);
            let (s, d) = (*rng.pick(&IPS), *rng.pick(&IPS));
            let tos = *rng.pick(&[0u8, 0x28, 0xb8]);
            let total = (20 + l4.len()) as u16;
            let mut ip = vec![0x45, tos];
            ip.extend_from_slice(&total.to_be_bytes());
            ip.extend_from_slice(&[0, 7, 0x40, 0, ttl, proto, 0, 0]);
            ip.extend_from_slice(&s);
            ip.extend_from_slice(&d);
            let c = !fold(sum16(&ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let mut l4 = l4;
            if proto != 1 {
                let pseudo = sum16(&s) + sum16(&d) + proto as u32 + l4.len() as u32;
                let at = if proto == 6 { 16 } else { 6 };
                let c = !fold(pseudo + sum16(&l4));
                l4[at..at + 2].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
            } else {
                let c = !fold(sum16(&l4));
                l4[2..4].copy_from_slice(&c.to_be_bytes());
            }
            f.extend_from_slice(&[0x08, 0x00]);
            f.extend_from_slice(&ip);
            f.extend_from_slice(&l4);
        }
        Kind::Tcp6 | Kind::Udp6 => {
            let (proto, mut l4) = l4_header(kind, sp, dp, &tag);
            let s: std::net::Ipv6Addr = rng.pick(&IP6S).parse().unwrap();
            let d: std::net::Ipv6Addr = rng.pick(&IP6S).parse().unwrap();
            let pseudo = sum16(&s.octets()) + sum16(&d.octets()) + proto as u32 + l4.len() as u32;
            let at = if proto == 6 { 16 } else { 6 };
            let c = !fold(pseudo + sum16(&l4));
            l4[at..at + 2].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            f.extend_from_slice(&[proto, ttl]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            f.extend_from_slice(&l4);
        }
    }
    f
}

/// (IP protocol, L4 header and payload with a zero checksum).
fn l4_header(kind: Kind, sp: u16, dp: u16, payload: &[u8]) -> (u8, Vec<u8>) {
    let mut l4 = Vec::new();
    match kind {
        Kind::Tcp4 | Kind::Tcp6 => {
            l4.extend_from_slice(&sp.to_be_bytes());
            l4.extend_from_slice(&dp.to_be_bytes());
            l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
            l4.extend_from_slice(payload);
            (6, l4)
        }
        Kind::Udp4 | Kind::Udp6 => {
            l4.extend_from_slice(&sp.to_be_bytes());
            l4.extend_from_slice(&dp.to_be_bytes());
            l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
            l4.extend_from_slice(payload);
            (17, l4)
        }
        _ => {
            l4.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
            l4.extend_from_slice(payload);
            (1, l4)
        }
    }
}

/// The id in a captured frame's tag, if it carries one.
pub fn tag_of(frame: &[u8]) -> Option<u32> {
    let at = frame.windows(4).rposition(|w| w == MAGIC)?;
    let id = frame.get(at + 4..at + 8)?;
    Some(u32::from_be_bytes(id.try_into().ok()?))
}

/// What a match constrains, so actions that need a header only appear where it is there.
#[derive(Default, Clone, Copy)]
struct Has {
    vlan: bool,
    untagged: bool,
    ip4: bool,
    ip6: bool,
    tcp: bool,
    udp: bool,
    arp: bool,
}

fn random_match(rng: &mut Rng, ports: u32) -> (String, Has) {
    let mut parts = Vec::new();
    let mut has = Has::default();
    if rng.chance(40) {
        parts.push(format!("in_port={}", 1 + rng.below(ports as u64)));
    }
    if rng.chance(25) {
        parts.push(format!("dl_src={}", rng.pick(&MACS)));
    }
    match rng.below(10) {
        0 => {
            parts.push(format!("dl_vlan={}", rng.pick(&[10, 20])));
            has.vlan = true;
        }
        1 => {
            parts.push("vlan_tci=0x1000/0x1000".into());
            has.vlan = true;
        }
        2 => {
            parts.push("vlan_tci=0/0x1000".into());
            has.untagged = true;
        }
        3 => {
            parts.push(format!("dl_vlan={},dl_vlan_pcp={}", rng.pick(&[10, 20]), rng.below(8)));
            has.vlan = true;
        }
        _ => {}
    }
    if rng.chance(25) {
        if rng.chance(20) {
            parts.push("dl_dst=01:00:00:00:00:00/01:00:00:00:00:00".into());
        } else {
            parts.push(format!("dl_dst={}", rng.pick(&MACS)));
        }
    }
    match rng.below(7) {
        0 | 1 => {
            has.ip4 = true;
            let proto = rng.below(4);
            parts.push(match proto {
                0 => {
                    has.tcp = true;
                    "tcp".into()
                }
                1 => {
                    has.udp = true;
                    "udp".into()
                }
                2 => "icmp".into(),
                _ => "ip".into(),
            });
            if rng.chance(50) {
                let ip = rng.pick(&IPS);
                let plen = *rng.pick(&[16u8, 24, 32]);
                parts.push(format!("nw_dst={}.{}.{}.{}/{plen}", ip[0], ip[1], ip[2], ip[3]));
            }
            if rng.chance(30) {
                let ip = rng.pick(&IPS);
                parts.push(format!("nw_src={}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]));
            }
            if rng.chance(20) {
                parts.push(format!("nw_tos={}", rng.pick(&[0u8, 0x28, 0xb8])));
            }
            if (has.tcp || has.udp) && rng.chance(50) {
                if rng.chance(30) {
                    parts.push("tp_dst=0x1000/0xf000".into());
                } else {
                    parts.push(format!("tp_dst={}", rng.pick(&TP)));
                }
            }
        }
        2 => {
            has.ip6 = true;
            if rng.chance(50) {
                has.tcp = true;
                parts.push("tcp6".into());
            } else {
                has.udp = true;
                parts.push("udp6".into());
            }
            if rng.chance(50) {
                parts.push(format!("ipv6_dst={}", rng.pick(&["fd00::/64", "fd01::1", "fd00::2"])));
            }
        }
        3 => {
            has.arp = true;
            parts.push("arp".into());
            if rng.chance(50) {
                parts.push(format!("arp_op={}", 1 + rng.below(2)));
            }
            if rng.chance(50) {
                let ip = rng.pick(&IPS);
                parts.push(format!("arp_tpa={}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]));
            }
        }
        _ => {}
    }
    (parts.join(","), has)
}

fn output(rng: &mut Rng, ports: u32) -> String {
    match rng.below(10) {
        0 => "IN_PORT".into(),
        1 => "FLOOD".into(),
        2 => "ALL".into(),
        _ => format!("output:{}", 1 + rng.below(ports as u64)),
    }
}

/// Packet-editing actions valid for a match with `has`.
fn edit(rng: &mut Rng, has: Has, pushed: &mut bool) -> String {
    let mut options: Vec<String> = vec![
        format!("set_field:{}->eth_dst", rng.pick(&MACS)),
        format!("set_field:{}->eth_src", rng.pick(&MACS)),
    ];
    // Only onto untagged frames, once: Open vSwitch keeps at most two tags and silently drops
    // a third, a limit of its own rather than OpenFlow behaviour.
    if has.untagged && !*pushed {
        options.push("push_vlan:0x8100,set_field:4106->vlan_vid".into());
    }
    if has.vlan {
        options.push("pop_vlan".into());
        options.push("set_field:4116->vlan_vid".into());
        options.push(format!("set_field:{}->vlan_pcp", rng.below(8)));
    }
    if has.ip4 {
        let ip = rng.pick(&IPS);
        options.push(format!("set_field:{}.{}.{}.{}->ip_dst", ip[0], ip[1], ip[2], ip[3]));
        options.push(format!("set_field:{}.{}.{}.{}->ip_src", ip[0], ip[1], ip[2], ip[3]));
        options.push("dec_ttl".into());
        options.push(format!("set_field:{}->ip_dscp", rng.below(64)));
    }
    if has.ip6 {
        options.push("dec_ttl".into());
        options.push("set_field:fd02::9->ipv6_dst".into());
    }
    if has.tcp && has.ip4 {
        options.push(format!("set_field:{}->tcp_dst", rng.pick(&TP)));
    }
    if has.udp {
        options.push(format!("set_field:{}->udp_src", rng.pick(&TP)));
    }
    if has.arp {
        options.push("set_field:10.9.9.9->arp_spa".into());
    }
    let e = rng.pick(&options).clone();
    *pushed |= e.starts_with("push_vlan");
    e
}

/// One random case: groups (add-group text) and flows (add-flow text, table by table).
pub struct Case {
    pub groups: Vec<String>,
    pub flows: Vec<String>,
}

/// A random pipeline of up to three tables over `ports` ports.
pub fn random_case(rng: &mut Rng, ports: u32) -> Case {
    let mut groups = Vec::new();
    let n_groups = rng.below(3);
    for g in 1..=n_groups {
        let kind = *rng.pick(&["all", "indirect", "ff"]);
        let n_buckets = if kind == "indirect" { 1 } else { 1 + rng.below(3) };
        let buckets: Vec<String> = (0..n_buckets)
            .map(|_| {
                let out = format!("output:{}", 1 + rng.below(ports as u64));
                let watch = if kind == "ff" {
                    format!("watch_port:{},", 1 + rng.below(ports as u64))
                } else {
                    String::new()
                };
                if rng.chance(30) {
                    format!("bucket={watch}actions=set_field:{}->eth_dst,{out}", rng.pick(&MACS))
                } else {
                    format!("bucket={watch}actions={out}")
                }
            })
            .collect();
        groups.push(format!("group_id={g},type={kind},{}", buckets.join(",")));
    }
    let mut flows = Vec::new();
    let n_tables = 1 + rng.below(3) as u8;
    for table in 0..n_tables {
        let n = 2 + rng.below(6);
        let mut prios: Vec<u64> = Vec::new();
        for _ in 0..n {
            let mut p = 1 + rng.below(1000);
            while prios.contains(&p) {
                p = 1 + rng.below(1000);
            }
            prios.push(p);
            let (m, has) = random_match(rng, ports);
            let mut acts: Vec<String> = Vec::new();
            let mut insts: Vec<String> = Vec::new();
            let mut pushed = false;
            for _ in 0..rng.below(4) {
                if rng.chance(35) {
                    acts.push(edit(rng, has, &mut pushed));
                } else if n_groups > 0 && rng.chance(15) {
                    acts.push(format!("group:{}", 1 + rng.below(n_groups)));
                } else {
                    acts.push(output(rng, ports));
                }
            }
            if !acts.is_empty() {
                insts.push(acts.join(","));
            }
            if table + 1 < n_tables && rng.chance(40) {
                if rng.chance(30) {
                    insts.push(format!("write_actions({})", output(rng, ports)));
                }
                if rng.chance(30) {
                    insts.push(format!("write_metadata:{:#x}/0xff", rng.below(4)));
                }
                insts.push(format!(
                    "goto_table:{}",
                    table + 1 + rng.below((n_tables - table - 1) as u64) as u8
                ));
            }
            let actions = if insts.is_empty() {
                "drop".into()
            } else {
                insts.join(",")
            };
            let mut fields = vec![format!("table={table}"), format!("priority={p}")];
            if table > 0 && rng.chance(30) {
                fields.push(format!("metadata={:#x}/0xff", rng.below(4)));
            }
            if !m.is_empty() {
                fields.push(m);
            }
            flows.push(format!("{},actions={actions}", fields.join(",")));
        }
        if rng.chance(40) {
            flows.push(format!("table={table},priority=0,actions={}", output(rng, ports)));
        }
    }
    Case { groups, flows }
}

/// The test end of one switch port.
pub struct PortTap {
    fd: OwnedFd,
    ifindex: i32,
}

const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const TP_STATUS_VLAN_VALID: u32 = 0x10;
const TP_STATUS_VLAN_TPID_VALID: u32 = 0x40;

#[repr(C)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

impl PortTap {
    /// Open interface `ifname` (in the calling thread's namespace).
    pub fn open(ifname: &str) -> PortTap {
        let c = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: plain libc calls with valid arguments; the fd is owned at once.
        unsafe {
            let ifindex = libc::if_nametoindex(c.as_ptr()) as i32;
            assert!(ifindex != 0, "no interface {ifname}");
            let raw = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                (libc::ETH_P_ALL as u16).to_be() as i32,
            );
            assert!(raw >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
            let fd = OwnedFd::from_raw_fd(raw);
            let one: libc::c_int = 1;
            for opt in [PACKET_AUXDATA, PACKET_IGNORE_OUTGOING] {
                libc::setsockopt(raw, libc::SOL_PACKET, opt, &one as *const _ as *const libc::c_void, 4);
            }
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            sll.sll_ifindex = ifindex;
            let rc = libc::bind(
                raw,
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(rc, 0, "bind {ifname}: {}", std::io::Error::last_os_error());
            PortTap { fd, ifindex }
        }
    }

    pub fn send(&self, frame: &[u8]) -> bool {
        // SAFETY: sendto with a valid buffer and address.
        unsafe {
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = self.ifindex;
            sll.sll_halen = 6;
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            ) == frame.len() as isize
        }
    }

    /// Every frame waiting, with VLAN tags the kernel took off put back.
    pub fn drain(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let mut buf = vec![0u8; 9216];
            let mut ctrl = [0u64; 16];
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            // SAFETY: msghdr points at live buffers for the duration of the call; the cmsg
            // walk stays within `ctrl` (CMSG_* macros).
            let (n, aux) = unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                msg.msg_control = ctrl.as_mut_ptr() as *mut libc::c_void;
                msg.msg_controllen = std::mem::size_of_val(&ctrl);
                let n = libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0);
                if n < 0 {
                    break;
                }
                let mut aux = None;
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == PACKET_AUXDATA {
                        aux = Some(std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const TpacketAuxdata));
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
                (n as usize, aux)
            };
            buf.truncate(n);
            if let Some(a) = aux.filter(|a| a.tp_status & TP_STATUS_VLAN_VALID != 0 && buf.len() >= 12) {
                let tpid = if a.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                    a.tp_vlan_tpid
                } else {
                    0x8100
                };
                let mut tag = tpid.to_be_bytes().to_vec();
                tag.extend_from_slice(&a.tp_vlan_tci.to_be_bytes());
                buf.splice(12..12, tag);
            }
            out.push(buf);
        }
        out
    }
}

/// Captured frames by test-packet id: (port, frame), sorted.
pub type Outputs = BTreeMap<u32, Vec<(u32, Vec<u8>)>>;

pub fn collect(taps: &[PortTap], into: &mut Outputs) {
    for (i, t) in taps.iter().enumerate() {
        for f in t.drain() {
            if let Some(id) = tag_of(&f) {
                into.entry(id).or_default().push((i as u32 + 1, f));
            }
        }
    }
    for v in into.values_mut() {
        v.sort();
    }
}

/// Whether two frames are the same, allowing a transport checksum of 0x0000 for 0xffff
/// (both are the one's-complement zero; incremental updates may land on either).
pub fn same_frame(a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return true;
    }
    if a.len() != b.len() {
        return false;
    }
    let diff: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
    match diff.as_slice() {
        [i, j] if *j == i + 1 => {
            let x = [a[*i], a[*j]];
            let y = [b[*i], b[*j]];
            (x == [0, 0] && y == [0xff, 0xff]) || (x == [0xff, 0xff] && y == [0, 0])
        }
        _ => false,
    }
}

/// Whether the outputs of one packet agree.
pub fn same_outputs(a: &[(u32, Vec<u8>)], b: &[(u32, Vec<u8>)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((pa, fa), (pb, fb))| pa == pb && same_frame(fa, fb))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn packets_carry_their_tag_and_valid_ip_checksums() {
        let mut rng = Rng::new(7);
        for id in 0..200 {
            let f = random_packet(&mut rng, id);
            assert_eq!(tag_of(&f), Some(id));
            if f[12..14] == [0x08, 0x00] {
                assert_eq!(fold(sum16(&f[14..34])), 0xffff, "IPv4 header checksum");
            }
        }
    }

    #[test]
    fn cases_are_reproducible() {
        let a = random_case(&mut Rng::new(42), 4);
        let b = random_case(&mut Rng::new(42), 4);
        assert_eq!(a.flows, b.flows);
        assert!(!a.flows.is_empty());
    }

    #[test]
    fn zero_and_ones_checksums_compare_equal() {
        assert!(same_frame(&[1, 0, 0, 2], &[1, 0xff, 0xff, 2]));
        assert!(!same_frame(&[1, 0, 1, 2], &[1, 0xff, 0xff, 2]));
    }
}
