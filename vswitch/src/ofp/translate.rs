//! Between OpenFlow 1.3 messages and the switch's own terms (flows, ports, PACKET_OUT targets).
//! Pure functions; what the datapath cannot do is an OpenFlow error (type, code), as OVS answers.

use crate::dp::stats::now_ms;
use crate::dp::PacketIn as DpPacketIn;
use crate::flow_table::{Flow, FlowFilter, FlowKey};
use crate::switch::{FlowRemovedReason, PacketOutTarget, PortInfo, TunnelInfo};
use cloudrack_wire::ofp::{self, Action, Instruction, Match, Oxm};
use std::sync::atomic::Ordering::Relaxed;

/// An OpenFlow error to send back: (type, code).
pub type OfpErr = (u16, u16);

/// What a FLOW_MOD asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum FlowOp {
    Add(Flow),
    Modify {
        filter: FlowFilter,
        strict: Option<FlowKey>,
        out_port: Option<u32>,
    },
    Delete {
        filter: FlowFilter,
        strict: Option<FlowKey>,
    },
    /// A table-miss entry (empty match, output CONTROLLER): our built-in behaviour already.
    TableMiss,
}

/// The (vnet, eth_dst) a match names; other fields are refused.
fn match_fields(m: &Match) -> Result<(Option<u32>, Option<[u8; 6]>), OfpErr> {
    let (mut vnet, mut mac) = (None, None);
    for f in &m.fields {
        match f {
            Oxm::TunnelId { id, mask: None } => {
                vnet = Some(u32::try_from(*id).map_err(|_| (ofp::OFPET_BAD_MATCH, ofp::OFPBMC_BAD_VALUE))?)
            }
            Oxm::EthDst { mac: m, mask: None } => mac = Some(*m),
            Oxm::TunnelId { .. } | Oxm::EthDst { .. } => return Err((ofp::OFPET_BAD_MATCH, ofp::OFPBMC_BAD_WILDCARDS)),
            _ => return Err((ofp::OFPET_BAD_MATCH, ofp::OFPBMC_BAD_FIELD)),
        }
    }
    Ok((vnet, mac))
}

/// The single output of an instruction list: `Ok(None)` is drop.
fn output_of(instructions: &[Instruction]) -> Result<Option<u32>, OfpErr> {
    match instructions {
        [] => Ok(None),
        [Instruction::ApplyActions(actions)] | [Instruction::WriteActions(actions)] => match actions.as_slice() {
            [] => Ok(None),
            [Action::Output { port, .. }] => Ok(Some(*port)),
            [_] => Err((ofp::OFPET_BAD_ACTION, ofp::OFPBAC_BAD_TYPE)),
            _ => Err((ofp::OFPET_BAD_ACTION, ofp::OFPBAC_TOO_MANY)),
        },
        _ => Err((ofp::OFPET_BAD_INSTRUCTION, ofp::OFPBIC_UNSUP_INST)),
    }
}

/// Interpret a FLOW_MOD. `port_ok` says whether an output port exists.
pub fn flow_mod(fm: &ofp::FlowMod, port_ok: impl Fn(u32) -> bool) -> Result<FlowOp, OfpErr> {
    let delete = matches!(fm.command, ofp::OFPFC_DELETE | ofp::OFPFC_DELETE_STRICT);
    if fm.table_id != 0 && !(delete && fm.table_id == ofp::OFPTT_ALL) {
        return Err((ofp::OFPET_FLOW_MOD_FAILED, ofp::OFPFMFC_BAD_TABLE_ID));
    }
    let (vnet, mac) = match_fields(&fm.match_)?;
    let strict_key = |vnet: Option<u32>, mac: Option<[u8; 6]>| {
        mac.map(|mac| FlowKey {
            vnet: vnet.unwrap_or(0),
            mac,
        })
    };
    let filter = FlowFilter {
        vnet,
        mac,
        out_port: (fm.out_port != ofp::OFPP_ANY).then_some(fm.out_port),
        cookie: (fm.cookie_mask != 0).then_some((fm.cookie, fm.cookie_mask)),
    };
    match fm.command {
        ofp::OFPFC_ADD | ofp::OFPFC_MODIFY | ofp::OFPFC_MODIFY_STRICT => {
            let out = output_of(&fm.instructions)?;
            if fm.command == ofp::OFPFC_ADD && fm.match_.fields.is_empty() && out == Some(ofp::OFPP_CONTROLLER) {
                return Ok(FlowOp::TableMiss);
            }
            if let Some(p) = out {
                if p > ofp::OFPP_MAX || !port_ok(p) {
                    return Err((ofp::OFPET_BAD_ACTION, ofp::OFPBAC_BAD_OUT_PORT));
                }
            }
            if fm.command == ofp::OFPFC_ADD {
                let Some(key) = strict_key(vnet, mac) else {
                    // Only (vnet, eth_dst) flows can be forwarded on.
                    return Err((ofp::OFPET_BAD_MATCH, ofp::OFPBMC_BAD_WILDCARDS));
                };
                let mut flow = Flow::new(key, out);
                flow.priority = fm.priority;
                flow.cookie = fm.cookie;
                flow.idle_timeout = fm.idle_timeout;
                flow.hard_timeout = fm.hard_timeout;
                flow.flags = fm.flags;
                Ok(FlowOp::Add(flow))
            } else {
                let strict = if fm.command == ofp::OFPFC_MODIFY_STRICT {
                    strict_key(vnet, mac)
                } else {
                    None
                };
                Ok(FlowOp::Modify {
                    filter: FlowFilter {
                        out_port: None,
                        ..filter
                    },
                    strict,
                    out_port: out,
                })
            }
        }
        ofp::OFPFC_DELETE => Ok(FlowOp::Delete { filter, strict: None }),
        ofp::OFPFC_DELETE_STRICT => Ok(FlowOp::Delete {
            filter,
            strict: strict_key(vnet, mac),
        }),
        _ => Err((ofp::OFPET_FLOW_MOD_FAILED, ofp::OFPFMFC_BAD_COMMAND)),
    }
}

/// The filter of a flow-stats or aggregate request.
pub fn stats_filter(req: &ofp::FlowStatsRequest) -> Result<FlowFilter, OfpErr> {
    let (vnet, mac) = match_fields(&req.match_)?;
    Ok(FlowFilter {
        vnet,
        mac,
        out_port: (req.out_port != ofp::OFPP_ANY).then_some(req.out_port),
        cookie: (req.cookie_mask != 0).then_some((req.cookie, req.cookie_mask)),
    })
}

pub fn flow_match(key: &FlowKey) -> Match {
    Match::new()
        .with(Oxm::TunnelId {
            id: key.vnet as u64,
            mask: None,
        })
        .with(Oxm::EthDst {
            mac: key.mac,
            mask: None,
        })
}

fn instructions(out: Option<u32>) -> Vec<Instruction> {
    match out {
        Some(p) => vec![Instruction::ApplyActions(vec![Action::output(p)])],
        None => vec![],
    }
}

fn duration(flow: &Flow) -> (u32, u32) {
    let ms = now_ms().saturating_sub(flow.installed_ms);
    ((ms / 1000) as u32, ((ms % 1000) * 1_000_000) as u32)
}

pub fn flow_stats(flow: &Flow) -> ofp::FlowStats {
    let (duration_sec, duration_nsec) = duration(flow);
    ofp::FlowStats {
        table_id: 0,
        duration_sec,
        duration_nsec,
        priority: flow.priority,
        idle_timeout: flow.idle_timeout,
        hard_timeout: flow.hard_timeout,
        flags: flow.flags,
        cookie: flow.cookie,
        packet_count: flow.counters.packets.load(Relaxed),
        byte_count: flow.counters.bytes.load(Relaxed),
        match_: flow_match(&flow.key),
        instructions: instructions(flow.out_port),
    }
}

pub fn flow_removed(flow: &Flow, reason: FlowRemovedReason) -> ofp::FlowRemoved {
    let (duration_sec, duration_nsec) = duration(flow);
    ofp::FlowRemoved {
        cookie: flow.cookie,
        priority: flow.priority,
        reason: match reason {
            FlowRemovedReason::IdleTimeout => ofp::OFPRR_IDLE_TIMEOUT,
            FlowRemovedReason::HardTimeout => ofp::OFPRR_HARD_TIMEOUT,
            FlowRemovedReason::Delete => ofp::OFPRR_DELETE,
        },
        table_id: 0,
        duration_sec,
        duration_nsec,
        idle_timeout: flow.idle_timeout,
        hard_timeout: flow.hard_timeout,
        packet_count: flow.counters.packets.load(Relaxed),
        byte_count: flow.counters.bytes.load(Relaxed),
        match_: flow_match(&flow.key),
    }
}

fn desc(port_no: u32, mac: [u8; 6], name: &str) -> ofp::PortDesc {
    ofp::PortDesc::live(port_no, mac, name)
}

pub fn port_desc(p: &PortInfo) -> ofp::PortDesc {
    desc(p.port_no, p.mac, &p.name)
}

pub fn tunnel_desc(t: &TunnelInfo) -> ofp::PortDesc {
    desc(t.port_no, [0; 6], &t.name)
}

fn port_stats_of(port_no: u32, c: &std::collections::BTreeMap<&'static str, u64>) -> ofp::PortStats {
    ofp::PortStats {
        port_no,
        rx_packets: c["rx_packets"],
        tx_packets: c["tx_packets"],
        rx_bytes: c["rx_bytes"],
        tx_bytes: c["tx_bytes"],
        rx_dropped: c["rx_dropped"] + c["rx_kernel_dropped"],
        tx_dropped: 0,
        rx_errors: 0,
        tx_errors: c["tx_errors"],
        rx_frame_err: 0,
        rx_over_err: 0,
        rx_crc_err: 0,
        collisions: 0,
        duration_sec: 0,
        duration_nsec: 0,
    }
}

pub fn port_stats(ports: &[PortInfo], tunnels: &[TunnelInfo], port_no: u32) -> Vec<ofp::PortStats> {
    ports
        .iter()
        .map(|p| (p.port_no, &p.counters))
        .chain(tunnels.iter().map(|t| (t.port_no, &t.counters)))
        .filter(|(n, _)| port_no == ofp::OFPP_ANY || *n == port_no)
        .map(|(n, c)| port_stats_of(n, c))
        .collect()
}

/// Where a PACKET_OUT goes. The virtual network comes from a set-field tunnel_id action
/// (as our controller sends) or, failing that, is 0.
pub fn packet_out_targets(po: &ofp::PacketOut) -> Result<Vec<PacketOutTarget>, OfpErr> {
    let mut vnet = 0u32;
    let in_port = (po.in_port <= ofp::OFPP_MAX).then_some(po.in_port);
    let mut out = Vec::new();
    for a in &po.actions {
        match a {
            // Virtual networks are 32-bit GRE keys; a wider id names no network of ours.
            Action::SetField(Oxm::TunnelId { id, mask: None }) => {
                vnet = u32::try_from(*id).map_err(|_| (ofp::OFPET_BAD_ACTION, ofp::OFPBAC_BAD_SET_ARGUMENT))?
            }
            Action::Output { port, .. } => out.push(match *port {
                ofp::OFPP_FLOOD | ofp::OFPP_ALL => PacketOutTarget::Flood { vnet, in_port },
                ofp::OFPP_TABLE => PacketOutTarget::Table {
                    vnet,
                    in_port: in_port.unwrap_or(0),
                },
                ofp::OFPP_IN_PORT => {
                    PacketOutTarget::Port(in_port.ok_or((ofp::OFPET_BAD_ACTION, ofp::OFPBAC_BAD_OUT_PORT))?)
                }
                p if p <= ofp::OFPP_MAX => PacketOutTarget::Port(p),
                _ => return Err((ofp::OFPET_BAD_ACTION, ofp::OFPBAC_BAD_OUT_PORT)),
            }),
            _ => return Err((ofp::OFPET_BAD_ACTION, ofp::OFPBAC_BAD_TYPE)),
        }
    }
    Ok(out)
}

pub fn packet_in(pin: &DpPacketIn) -> ofp::PacketIn {
    ofp::PacketIn {
        buffer_id: ofp::OFP_NO_BUFFER,
        total_len: pin.total_len.min(u16::MAX as usize) as u16,
        reason: ofp::OFPR_NO_MATCH,
        table_id: 0,
        cookie: u64::MAX,
        match_: Match::new().with(Oxm::InPort(pin.in_port)).with(Oxm::TunnelId {
            id: pin.vnet as u64,
            mask: None,
        }),
        data: pin.data.clone(),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn fm(command: u8, m: Match, instructions: Vec<Instruction>) -> ofp::FlowMod {
        ofp::FlowMod {
            cookie: 7,
            cookie_mask: 0,
            table_id: 0,
            command,
            idle_timeout: 30,
            hard_timeout: 0,
            priority: 100,
            buffer_id: ofp::OFP_NO_BUFFER,
            out_port: ofp::OFPP_ANY,
            out_group: ofp::OFPG_ANY,
            flags: ofp::OFPFF_SEND_FLOW_REM,
            match_: m,
            instructions,
        }
    }

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn m() -> Match {
        flow_match(&FlowKey { vnet: 5, mac: MAC })
    }

    #[test]
    fn add_becomes_a_flow() {
        let out = vec![Instruction::ApplyActions(vec![Action::output(3)])];
        let FlowOp::Add(f) = flow_mod(&fm(ofp::OFPFC_ADD, m(), out), |_| true).unwrap() else {
            panic!()
        };
        assert_eq!(f.key, FlowKey { vnet: 5, mac: MAC });
        assert_eq!(
            (f.out_port, f.priority, f.cookie, f.idle_timeout),
            (Some(3), 100, 7, 30)
        );
        // And back: flow stats carry the same match and action.
        let s = flow_stats(&f);
        assert_eq!(s.match_, m());
        assert_eq!(s.instructions, vec![Instruction::ApplyActions(vec![Action::output(3)])]);
    }

    #[test]
    fn unsupported_requests_are_openflow_errors() {
        let out = vec![Instruction::ApplyActions(vec![Action::output(3)])];
        assert_eq!(
            flow_mod(&fm(ofp::OFPFC_ADD, m(), out.clone()), |_| false),
            Err((ofp::OFPET_BAD_ACTION, ofp::OFPBAC_BAD_OUT_PORT))
        );
        let ip = Match::new().with(Oxm::EthType(0x0800));
        assert_eq!(
            flow_mod(&fm(ofp::OFPFC_ADD, ip, out.clone()), |_| true),
            Err((ofp::OFPET_BAD_MATCH, ofp::OFPBMC_BAD_FIELD))
        );
        let two = vec![Instruction::ApplyActions(vec![Action::output(3), Action::output(4)])];
        assert_eq!(
            flow_mod(&fm(ofp::OFPFC_ADD, m(), two), |_| true),
            Err((ofp::OFPET_BAD_ACTION, ofp::OFPBAC_TOO_MANY))
        );
        let mut bad_table = fm(ofp::OFPFC_ADD, m(), out);
        bad_table.table_id = 3;
        assert_eq!(
            flow_mod(&bad_table, |_| true),
            Err((ofp::OFPET_FLOW_MOD_FAILED, ofp::OFPFMFC_BAD_TABLE_ID))
        );
    }

    #[test]
    fn table_miss_and_delete() {
        let miss = vec![Instruction::ApplyActions(vec![Action::output(ofp::OFPP_CONTROLLER)])];
        assert_eq!(
            flow_mod(&fm(ofp::OFPFC_ADD, Match::new(), miss), |_| true),
            Ok(FlowOp::TableMiss)
        );
        let mut del = fm(ofp::OFPFC_DELETE, Match::new(), vec![]);
        del.table_id = ofp::OFPTT_ALL;
        del.out_port = 9;
        assert_eq!(
            flow_mod(&del, |_| true),
            Ok(FlowOp::Delete {
                filter: FlowFilter {
                    out_port: Some(9),
                    ..Default::default()
                },
                strict: None
            })
        );
    }

    #[test]
    fn packet_out_flood_in_a_network() {
        let po = ofp::PacketOut {
            buffer_id: ofp::OFP_NO_BUFFER,
            in_port: ofp::OFPP_CONTROLLER,
            actions: vec![
                Action::SetField(Oxm::TunnelId { id: 4, mask: None }),
                Action::output(ofp::OFPP_FLOOD),
            ],
            data: vec![0; 60],
        };
        assert_eq!(
            packet_out_targets(&po),
            Ok(vec![PacketOutTarget::Flood { vnet: 4, in_port: None }])
        );
        // A tunnel id wider than a GRE key names no network: refused, not cut to network 4.
        let mut wide = po.clone();
        wide.actions[0] = Action::SetField(Oxm::TunnelId {
            id: 0x1_0000_0004,
            mask: None,
        });
        assert_eq!(
            packet_out_targets(&wide),
            Err((ofp::OFPET_BAD_ACTION, ofp::OFPBAC_BAD_SET_ARGUMENT))
        );
    }
}
