//! What a simulated switch puts on the wire: the VM frames inside PACKET_INs (unicast, gratuitous
//! ARP, QEMU's RARP self-announce) and the handshake/TCCS messages, built with cloudrack-wire
//! exactly as `vswitch/src/ofp/session.rs` and `translate.rs` build them.

use cloudrack_wire::ofp::{self, Body, Match, Message, Oxm};
use cloudrack_wire::tccs::{self, TccsMsg};
use std::net::Ipv4Addr;

pub type Mac = [u8; 6];

/// Broadcast destination.
pub const BROADCAST: Mac = [0xff; 6];

/// The MAC of simulated VM `vm`: locally administered unicast 02:5c:xx:xx:xx:xx.
pub fn vm_mac(vm: u32) -> Mac {
    let b = vm.to_be_bytes();
    [0x02, 0x5c, b[0], b[1], b[2], b[3]]
}

/// The VM index of a MAC made by [`vm_mac`].
pub fn vm_of_mac(mac: &Mac) -> Option<u32> {
    (mac[0] == 0x02 && mac[1] == 0x5c).then(|| u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]))
}

/// Underlay MAC of host `h` (02:cc:00:xx:xx:xx); the dpid is this MAC in its low 48 bits, the
/// OpenFlow convention the real switch follows.
pub fn host_mac(h: u32) -> Mac {
    let b = (h + 1).to_be_bytes();
    [0x02, 0xcc, 0x00, b[1], b[2], b[3]]
}

pub fn dpid_of_mac(m: &Mac) -> u64 {
    m.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// Host index from a dpid made by [`host_mac`].
pub fn host_of_dpid(dpid: u64) -> Option<u32> {
    ((dpid >> 24) == 0x02cc00).then(|| (dpid & 0xff_ffff) as u32 - 1)
}

/// Underlay IPv4 of host `h` in 198.18.0.0/15, the benchmark range (DESIGN.md). Nothing is ever
/// sent there: it is only the value the host registers.
pub fn host_ip(h: u32) -> Ipv4Addr {
    let n = 0xc612_0000u32 + h + 1;
    Ipv4Addr::from(n)
}

/// Key of a forwarding entry: (vnet, MAC) in one u64.
pub fn flow_key(vnet: u32, mac: &Mac) -> u64 {
    (u64::from(vnet) << 48) | dpid_of_mac(mac)
}

pub fn key_mac(key: u64) -> Mac {
    let b = key.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// A 60-byte IPv4 frame from `src` to `dst` (the controller reads only the two MACs).
pub fn unicast_frame(dst: &Mac, src: &Mac) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(dst);
    f.extend_from_slice(src);
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0x00, 0x00, 0x2e]);
    f.resize(60, 0);
    f
}

fn arp_like(ethertype: u16, op: u16, mac: &Mac, ip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(mac);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(mac);
    f.extend_from_slice(&ip);
    f.extend_from_slice(mac);
    f.extend_from_slice(&ip);
    f.resize(60, 0);
    f
}

/// A gratuitous ARP request (sender IP = target IP) from `mac`, broadcast.
pub fn garp_frame(mac: &Mac, ip: [u8; 4]) -> Vec<u8> {
    arp_like(0x0806, 1, mac, ip)
}

/// QEMU's self-announce after a live migration: RARP "request reverse" (op 3), broadcast.
pub fn rarp_frame(mac: &Mac) -> Vec<u8> {
    arp_like(0x8035, 3, mac, [0; 4])
}

/// A table-miss PACKET_IN as the real switch sends it (translate::packet_in).
pub fn packet_in(in_port: u32, vnet: u32, data: Vec<u8>) -> Message {
    Message::new(
        0,
        Body::PacketIn(ofp::PacketIn {
            buffer_id: ofp::OFP_NO_BUFFER,
            total_len: data.len() as u16,
            reason: ofp::OFPR_NO_MATCH,
            table_id: 0,
            cookie: u64::MAX,
            match_: Match::new().with(Oxm::InPort(in_port)).with(Oxm::TunnelId {
                id: u64::from(vnet),
                mask: None,
            }),
            data,
        }),
    )
}

pub fn register(dpid: u64, ip: Ipv4Addr, mac: Mac) -> Message {
    TccsMsg::Register {
        dpid,
        underlay_ip: ip,
        underlay_mac: mac,
    }
    .to_message(0)
}

pub fn port_vnet(port_no: u32, vnet: u32) -> Message {
    TccsMsg::PortVnet { port_no, vnet }.to_message(0)
}

/// Local port `port_no` is bound to the VM `mac`: only a bound port may take a live MAC over.
pub fn port_binding(port_no: u32, vnet: u32, mac: Mac, bound: bool) -> Message {
    TccsMsg::PortBinding {
        port_no,
        vnet,
        mac,
        bound,
    }
    .to_message(0)
}

pub fn port_status(reason: u8, port_no: u32, mac: Mac) -> Message {
    let desc = ofp::PortDesc::live(port_no, mac, &format!("vm{port_no}"));
    Message::new(0, Body::PortStatus { reason, desc })
}

pub fn migration_notify(vnet: u32, mac: Mac, dst_dpid: u64, dst_port: u32) -> Message {
    TccsMsg::MigrationNotify {
        vnet,
        mac,
        dst_dpid,
        phase: tccs::MIGRATION_STOPPED,
        dst_port,
    }
    .to_message(0)
}

/// One installed entry as a flow-stats entry (what the switch reports on (re)registration).
pub fn flow_stats(key: u64, out_port: u32) -> ofp::FlowStats {
    let vnet = (key >> 48) as u32;
    ofp::FlowStats {
        table_id: 0,
        duration_sec: 0,
        duration_nsec: 0,
        priority: 100,
        idle_timeout: 0,
        hard_timeout: 0,
        flags: ofp::OFPFF_SEND_FLOW_REM,
        cookie: 0xc10d_0000_0000_0000,
        packet_count: 0,
        byte_count: 0,
        match_: Match::new()
            .with(Oxm::TunnelId {
                id: u64::from(vnet),
                mask: None,
            })
            .with(Oxm::EthDst {
                mac: key_mac(key),
                mask: None,
            }),
        instructions: vec![ofp::Instruction::ApplyActions(vec![ofp::Action::output(out_port)])],
    }
}

/// The output port of a FLOW_MOD's first apply-actions output, if any.
pub fn output_port(fm: &ofp::FlowMod) -> Option<u32> {
    fm.instructions.iter().find_map(|i| match i {
        ofp::Instruction::ApplyActions(a) => a.iter().find_map(|a| match a {
            ofp::Action::Output { port, .. } => Some(*port),
            _ => None,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip() {
        for v in [0u32, 1, 999_999, 0x0102_0304] {
            assert_eq!(vm_of_mac(&vm_mac(v)), Some(v));
            let k = flow_key(77, &vm_mac(v));
            assert_eq!(key_mac(k), vm_mac(v));
            assert_eq!((k >> 48) as u32, 77);
        }
        for h in [0u32, 1, 9_999, 70_000] {
            assert_eq!(host_of_dpid(dpid_of_mac(&host_mac(h))), Some(h));
        }
        assert_eq!(host_ip(0), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(host_ip(9_999), Ipv4Addr::new(198, 18, 39, 16));
        assert_eq!(vm_of_mac(&BROADCAST), None);
    }

    #[test]
    fn messages_decode_as_the_controller_reads_them() {
        let m = packet_in(3, 7, rarp_frame(&vm_mac(5)));
        let d = Message::decode(&m.encode()).unwrap();
        let Body::PacketIn(p) = d.body else { panic!() };
        assert_eq!((p.match_.in_port(), p.match_.tunnel_id()), (Some(3), Some(7)));
        assert_eq!(&p.data[6..12], &vm_mac(5));
        assert_eq!(&p.data[12..14], &[0x80, 0x35]);
        let r = register(42, host_ip(1), host_mac(1));
        assert!(matches!(
            TccsMsg::from_body(&Message::decode(&r.encode()).unwrap().body),
            Some(Ok(TccsMsg::Register { dpid: 42, .. }))
        ));
        let fs = flow_stats(flow_key(3, &vm_mac(9)), 0x4001);
        assert_eq!(fs.match_.eth_dst(), Some(vm_mac(9)));
        assert_eq!(fs.match_.tunnel_id(), Some(3));
    }
}
