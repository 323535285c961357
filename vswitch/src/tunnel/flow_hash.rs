//! Which fanout member gets a GRE packet: a hash of the flow *inside* the tunnel.
//!
//! PACKET_FANOUT_HASH uses the kernel's flow dissector, which looks into Ethernet-over-GRE
//! (0x6558) but not into our offload super-frames (0x88B5, see `cloudrack_wire::gre`): those
//! all hashed by host pair, so every flow between two hosts landed on one worker. This classic
//! BPF program (PACKET_FANOUT_CBPF; the kernel takes its result modulo the member count) finds
//! the inner Ethernet frame under either protocol and hashes its IPv4 addresses and TCP/UDP
//! ports, or its MAC addresses when it is not IPv4. Each inner flow stays on one worker, so
//! its packets stay in order. What it cannot read (other GRE flags, truncated headers) goes to
//! member 0. Offsets are from the outer IPv4 header, as the fanout sees the packet.

use super::cbpf::*;
use To::*;

/// Scratch memory cells.
const M_GRE_LEN: u32 = 0;
const M_A: u32 = 1;
const M_B: u32 = 2;
const M_PORTS: u32 = 3;

/// The program. See the module comment.
pub fn inner_flow_hash() -> Vec<libc::sock_filter> {
    use cloudrack_wire::gre;
    let mut a = Asm::default();
    // X = outer IPv4 header length; the GRE header follows. Its length: 8 with a key, 4
    // without; other flags are not ours.
    a.op(LDX_MSH, 0).op(LD_B_IND, 0);
    a.jeq((gre::FLAG_K >> 8) as u32, Next, L("unkeyed"));
    a.op(LD_IMM, gre::KEYED_LEN as u32).ja("gre_len");
    a.label("unkeyed").jeq(0, Next, L("member0"));
    a.op(LD_IMM, gre::BASE_LEN as u32);
    a.label("gre_len").op(ST, M_GRE_LEN);
    // The inner frame starts after the GRE header, and after the virtio-net header too in a
    // super-frame.
    a.op(LD_H_IND, 2);
    a.jeq(gre::PROTO_OFFLOAD as u32, Next, L("teb"));
    a.op(LD_MEM, M_GRE_LEN)
        .op(ADD_K, cloudrack_wire::vnet_hdr::LEN as u32)
        .ja("inner");
    a.label("teb").jeq(gre::PROTO_TEB as u32, Next, L("member0"));
    a.op(LD_MEM, M_GRE_LEN);
    // X = offset of the inner Ethernet header.
    a.label("inner").op(ADD_X, 0).op(TAX, 0);
    a.op(LD_H_IND, 12).jeq(0x0800, Next, L("macs"));
    // IPv4 inside: the addresses, and the ports of TCP or UDP unless this is a fragment.
    a.op(LD_W_IND, 14 + 12).op(ST, M_A);
    a.op(LD_W_IND, 14 + 16).op(ST, M_B);
    a.op(LD_IMM, 0).op(ST, M_PORTS);
    a.op(LD_H_IND, 14 + 6).jset(0x3fff, L("combine"), Next);
    a.op(LD_B_IND, 14 + 9)
        .jeq(6, L("ports"), Next)
        .jeq(17, L("ports"), L("combine"));
    a.label("ports").op(LD_B_IND, 14).op(AND_K, 0xf).op(LSH_K, 2);
    a.op(ADD_X, 0).op(ADD_K, 14).op(TAX, 0);
    a.op(LD_W_IND, 0).op(ST, M_PORTS).ja("combine");
    // Anything else: the last four bytes of each MAC address.
    a.label("macs").op(LD_W_IND, 2).op(ST, M_A);
    a.op(LD_W_IND, 8).op(ST, M_B);
    a.op(LD_IMM, 0).op(ST, M_PORTS);
    // h = a ^ b ^ ports, folded so that every bit reaches the low ones the modulo reads.
    a.label("combine").op(LDX_MEM, M_A).op(LD_MEM, M_B).op(XOR_X, 0);
    a.op(LDX_MEM, M_PORTS).op(XOR_X, 0);
    a.op(TAX, 0).op(RSH_K, 16).op(XOR_X, 0);
    a.op(TAX, 0).op(RSH_K, 8).op(XOR_X, 0);
    a.op(RET_A, 0);
    a.label("member0").op(RET_K, 0);
    a.finish()
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::tunnel::cbpf::test::run;

    /// An inner Ethernet + IPv4 frame of protocol `proto` with these addresses and ports.
    fn inner(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8 + 16];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = proto;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    /// Outer IPv4 (`ihl_words` * 4 bytes) + GRE with `flags` and `proto` (+ key when keyed) +
    /// a virtio-net header for super-frames + `frame`.
    fn outer(ihl_words: u8, flags: u16, proto: u16, frame: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; ihl_words as usize * 4];
        p[0] = 0x40 | ihl_words;
        p[9] = 47;
        p.extend_from_slice(&flags.to_be_bytes());
        p.extend_from_slice(&proto.to_be_bytes());
        if flags & cloudrack_wire::gre::FLAG_K != 0 {
            p.extend_from_slice(&7u32.to_be_bytes());
        }
        if proto == cloudrack_wire::gre::PROTO_OFFLOAD {
            p.extend_from_slice(&[0u8; cloudrack_wire::vnet_hdr::LEN]);
        }
        p.extend_from_slice(frame);
        p
    }

    fn expected(a: u32, b: u32, ports: u32) -> u32 {
        let h = a ^ b ^ ports;
        let h = h ^ (h >> 16);
        h ^ (h >> 8)
    }

    #[test]
    fn hashes_the_inner_flow_under_either_protocol() {
        use cloudrack_wire::gre::{FLAG_C, FLAG_K, PROTO_OFFLOAD, PROTO_TEB};
        let prog = inner_flow_hash();
        let (src, dst) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let f = inner(6, src, dst, 40000, 5201);
        let want = expected(u32::from_be_bytes(src), u32::from_be_bytes(dst), 40000 << 16 | 5201);
        assert_eq!(run(&prog, &outer(5, FLAG_K, PROTO_TEB, &f)), want, "keyed Ethernet");
        assert_eq!(run(&prog, &outer(5, FLAG_K, PROTO_OFFLOAD, &f)), want, "super-frame");
        assert_eq!(run(&prog, &outer(5, 0, PROTO_TEB, &f)), want, "unkeyed");
        assert_eq!(
            run(&prog, &outer(6, FLAG_K, PROTO_OFFLOAD, &f)),
            want,
            "outer IPv4 options"
        );
        let udp = inner(17, src, dst, 40000, 5201);
        assert_eq!(run(&prog, &outer(5, FLAG_K, PROTO_TEB, &udp)), want, "UDP");

        // Flows differ by source port: the members' share comes out even-ish.
        let mut per_member = [0; 2];
        for sport in 1000..1064 {
            let p = outer(5, FLAG_K, PROTO_OFFLOAD, &inner(6, src, dst, sport, 5201));
            per_member[(run(&prog, &p) % 2) as usize] += 1;
        }
        assert!(per_member.iter().all(|&n| n >= 16), "{per_member:?}");

        // Inner fragments and other protocols: addresses only.
        let mut frag = inner(17, src, dst, 1, 2);
        frag[20] = 0x20; // more fragments
        let addrs = expected(u32::from_be_bytes(src), u32::from_be_bytes(dst), 0);
        assert_eq!(run(&prog, &outer(5, FLAG_K, PROTO_TEB, &frag)), addrs);
        assert_eq!(
            run(&prog, &outer(5, FLAG_K, PROTO_TEB, &inner(1, src, dst, 9, 9))),
            addrs,
            "ICMP"
        );

        // Not IPv4 inside: the MAC addresses.
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let macs = expected(0x0000_0002, 0x0000_0001, 0);
        assert_eq!(run(&prog, &outer(5, FLAG_K, PROTO_TEB, &arp)), macs);

        // What it cannot read goes to member 0.
        assert_eq!(
            run(&prog, &outer(5, FLAG_K | FLAG_C, PROTO_TEB, &f)),
            0,
            "checksum flag"
        );
        assert_eq!(run(&prog, &outer(5, FLAG_K, 0x0800, &f)), 0, "another protocol");
        let whole = outer(5, FLAG_K, PROTO_TEB, &f);
        for cut in [0, 10, 21, 27, 40, 60] {
            assert_eq!(run(&prog, &whole[..cut]), 0, "cut at {cut}");
        }
    }
}
