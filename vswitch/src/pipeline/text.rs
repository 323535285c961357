//! Flow entries as text for `cloudrack-ctl flows`, close to what `ovs-ofctl dump-flows`
//! prints: `tunnel_id=0x3,eth_dst=02:00:00:00:00:01` and `output:1,set_field:...`.

use super::field::{self, FlowMatch};
use cloudrack_wire::mac::fmt as fmt_mac;
use cloudrack_wire::ofp::{self, Action, Instruction, Oxm};
use std::net::{Ipv4Addr, Ipv6Addr};

fn value_text(name: &str, v: &[u8]) -> String {
    match v.len() {
        6 => fmt_mac(&<[u8; 6]>::try_from(v).unwrap_or([0; 6])),
        4 if name.contains("ipv4") || name.contains("arp_spa") || name.contains("arp_tpa") => {
            Ipv4Addr::from(<[u8; 4]>::try_from(v).unwrap_or([0; 4])).to_string()
        }
        16 => Ipv6Addr::from(<[u8; 16]>::try_from(v).unwrap_or([0; 16])).to_string(),
        _ => {
            let n = v.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64);
            if name == "tunnel_id" || name == "metadata" || name == "vlan_vid" || name == "eth_type" {
                format!("{n:#x}")
            } else {
                n.to_string()
            }
        }
    }
}

pub fn oxm_text(o: &Oxm) -> String {
    let Some((f, v, m)) = o.basic_parts() else {
        return format!("{o:?}");
    };
    let name = field::def(f).map_or("?", |d| d.name);
    match m {
        Some(m) => format!("{name}={}/{}", value_text(name, &v), value_text(name, &m)),
        None => format!("{name}={}", value_text(name, &v)),
    }
}

pub fn match_text(m: &FlowMatch) -> String {
    if m.oxms.is_empty() {
        return "any".into();
    }
    m.oxms.iter().map(oxm_text).collect::<Vec<_>>().join(",")
}

fn port_text(p: u32) -> String {
    match p {
        ofp::OFPP_IN_PORT => "IN_PORT".into(),
        ofp::OFPP_TABLE => "TABLE".into(),
        ofp::OFPP_NORMAL => "NORMAL".into(),
        ofp::OFPP_FLOOD => "FLOOD".into(),
        ofp::OFPP_ALL => "ALL".into(),
        ofp::OFPP_CONTROLLER => "CONTROLLER".into(),
        ofp::OFPP_LOCAL => "LOCAL".into(),
        p => p.to_string(),
    }
}

pub fn action_text(a: &Action) -> String {
    match a {
        Action::Output { port, max_len } if *port == ofp::OFPP_CONTROLLER => {
            format!("CONTROLLER:{max_len}")
        }
        Action::Output { port, .. } => format!("output:{}", port_text(*port)),
        Action::Group(g) => format!("group:{g}"),
        Action::SetField(o) => format!("set_field:{}", oxm_text(o)),
        Action::PushVlan(t) => format!("push_vlan:{t:#06x}"),
        Action::PopVlan => "pop_vlan".into(),
        Action::DecNwTtl => "dec_ttl".into(),
        Action::SetNwTtl(t) => format!("set_nw_ttl:{t}"),
        Action::SetQueue(q) => format!("set_queue:{q}"),
        other => format!("{other:?}"),
    }
}

fn list(actions: &[Action]) -> String {
    if actions.is_empty() {
        return "drop".into();
    }
    actions.iter().map(action_text).collect::<Vec<_>>().join(",")
}

/// Instructions as ovs-ofctl writes them: apply-actions bare, the others named.
pub fn instructions_text(insts: &[Instruction]) -> String {
    if insts.is_empty() {
        return "drop".into();
    }
    insts
        .iter()
        .map(|i| match i {
            Instruction::ApplyActions(a) => list(a),
            Instruction::WriteActions(a) => format!("write_actions({})", list(a)),
            Instruction::ClearActions => "clear_actions".into(),
            Instruction::WriteMetadata { metadata, mask } => format!("write_metadata:{metadata:#x}/{mask:#x}"),
            Instruction::GotoTable(t) => format!("goto_table:{t}"),
            Instruction::Meter(m) => format!("meter:{m}"),
            other => format!("{other:?}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn reads_like_ovs_ofctl() {
        let m = field::compile(&[
            Oxm::TunnelId { id: 3, mask: None },
            Oxm::EthDst {
                mac: [2, 0, 0, 0, 0, 1],
                mask: None,
            },
            Oxm::EthType(0x0800),
            Oxm::Ipv4Dst {
                addr: Ipv4Addr::new(10, 0, 0, 0),
                mask: Some(Ipv4Addr::new(255, 0, 0, 0)),
            },
        ])
        .unwrap();
        assert_eq!(
            match_text(&m),
            "eth_dst=02:00:00:00:00:01,eth_type=0x800,ipv4_dst=10.0.0.0/255.0.0.0,tunnel_id=0x3"
        );
        let i = [
            Instruction::ApplyActions(vec![Action::output(1), Action::output(ofp::OFPP_CONTROLLER)]),
            Instruction::GotoTable(2),
        ];
        assert_eq!(instructions_text(&i), "output:1,CONTROLLER:65535,goto_table:2");
        assert_eq!(instructions_text(&[]), "drop");
    }
}
