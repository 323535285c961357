//! Between the pipeline's terms (flow entries, groups, meters, datapath PACKET_INs, ports) and
//! OpenFlow 1.3 messages. Pure functions.

use crate::dp::stats::now_ms;
use crate::dp::PacketIn as DpPacketIn;
use crate::pipeline::field;
use crate::pipeline::group::Group;
use crate::pipeline::meter::Meter;
use crate::pipeline::table::FlowEntry;
use crate::pipeline::{FlowFilter, Removed};
use crate::switch::{PortInfo, TunnelInfo};
use cloudrack_wire::ofp::{self, Match, Oxm};
use std::sync::atomic::Ordering::Relaxed;

/// An OpenFlow error to send back: (type, code).
pub type OfpErr = (u16, u16);

/// The filter of a flow-stats or aggregate request.
pub fn stats_filter(req: &ofp::FlowStatsRequest) -> Result<FlowFilter, OfpErr> {
    if req.table_id >= crate::pipeline::actions::N_TABLES && req.table_id != ofp::OFPTT_ALL {
        return Err((ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_TABLE_ID));
    }
    Ok(FlowFilter {
        table_id: req.table_id,
        m: field::compile(&req.match_.fields)?,
        strict: None,
        out_port: req.out_port,
        out_group: req.out_group,
        cookie: req.cookie,
        cookie_mask: req.cookie_mask,
    })
}

/// (seconds, nanoseconds) since `since_ms`.
pub fn duration(since_ms: u64) -> (u32, u32) {
    let ms = now_ms().saturating_sub(since_ms);
    ((ms / 1000) as u32, ((ms % 1000) * 1_000_000) as u32)
}

fn flow_match(e: &FlowEntry) -> Match {
    Match {
        fields: e.m.oxms.clone(),
    }
}

pub fn flow_stats(e: &FlowEntry) -> ofp::FlowStats {
    let (duration_sec, duration_nsec) = duration(e.installed_ms);
    ofp::FlowStats {
        table_id: e.table_id,
        duration_sec,
        duration_nsec,
        priority: e.priority,
        idle_timeout: e.idle_timeout,
        hard_timeout: e.hard_timeout,
        flags: e.flags,
        cookie: e.cookie,
        packet_count: e.counters.packets.load(Relaxed),
        byte_count: e.counters.bytes.load(Relaxed),
        match_: flow_match(e),
        instructions: e.instructions.clone(),
    }
}

pub fn flow_removed(e: &FlowEntry, reason: Removed) -> ofp::FlowRemoved {
    let (duration_sec, duration_nsec) = duration(e.installed_ms);
    ofp::FlowRemoved {
        cookie: e.cookie,
        priority: e.priority,
        reason: match reason {
            Removed::Idle => ofp::OFPRR_IDLE_TIMEOUT,
            Removed::Hard => ofp::OFPRR_HARD_TIMEOUT,
            Removed::Delete => ofp::OFPRR_DELETE,
            Removed::GroupDelete => ofp::OFPRR_GROUP_DELETE,
        },
        table_id: e.table_id,
        duration_sec,
        duration_nsec,
        idle_timeout: e.idle_timeout,
        hard_timeout: e.hard_timeout,
        packet_count: e.counters.packets.load(Relaxed),
        byte_count: e.counters.bytes.load(Relaxed),
        match_: flow_match(e),
    }
}

pub fn group_desc(g: &Group) -> ofp::GroupDesc {
    ofp::GroupDesc {
        group_type: g.group_type,
        group_id: g.id,
        buckets: g.wire.clone(),
    }
}

/// Group statistics; `ref_count` is the number of flows that use the group.
pub fn group_stats(g: &Group, ref_count: u32) -> ofp::GroupStats {
    let (duration_sec, duration_nsec) = duration(g.installed_ms);
    ofp::GroupStats {
        group_id: g.id,
        ref_count,
        packet_count: g.counters.packets.load(Relaxed),
        byte_count: g.counters.bytes.load(Relaxed),
        duration_sec,
        duration_nsec,
        buckets: g
            .buckets
            .iter()
            .map(|b| (b.counters.packets.load(Relaxed), b.counters.bytes.load(Relaxed)))
            .collect(),
    }
}

pub fn meter_config(m: &Meter) -> ofp::MeterConfig {
    ofp::MeterConfig {
        flags: m.flags,
        meter_id: m.id,
        bands: m.bands.iter().map(|b| b.wire.clone()).collect(),
    }
}

pub fn meter_stats(m: &Meter, flow_count: u32) -> ofp::MeterStats {
    let (duration_sec, duration_nsec) = duration(m.installed_ms);
    ofp::MeterStats {
        meter_id: m.id,
        flow_count,
        packet_in_count: m.packets.load(Relaxed),
        byte_in_count: m.bytes.load(Relaxed),
        duration_sec,
        duration_nsec,
        bands: m
            .bands
            .iter()
            .map(|b| (b.counters.packets.load(Relaxed), b.counters.bytes.load(Relaxed)))
            .collect(),
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

/// The PACKET_IN message for a datapath PACKET_IN: the pipeline fields that are set go in
/// the match (in_port always; tunnel_id and metadata when not zero, and tunnel_id always for a
/// report of the L2 service, which the Cloud Rack controller reads its network from).
pub fn packet_in(pin: &DpPacketIn) -> ofp::PacketIn {
    let mut m = Match::new().with(Oxm::InPort(pin.in_port));
    if pin.tunnel_id != 0 || pin.cookie == u64::MAX {
        m = m.with(Oxm::TunnelId {
            id: pin.tunnel_id,
            mask: None,
        });
    }
    if pin.metadata != 0 {
        m = m.with(Oxm::Metadata {
            value: pin.metadata,
            mask: None,
        });
    }
    ofp::PacketIn {
        buffer_id: ofp::OFP_NO_BUFFER,
        total_len: pin.total_len.min(u16::MAX as usize) as u16,
        reason: pin.reason,
        table_id: pin.table_id,
        cookie: pin.cookie,
        match_: m,
        data: pin.data.clone(),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn packet_in_carries_the_pipeline_fields_that_are_set() {
        let pin = DpPacketIn {
            in_port: 3,
            vnet: 0,
            tunnel_id: 0,
            metadata: 9,
            reason: ofp::OFPR_ACTION,
            table_id: 2,
            cookie: 5,
            total_len: 100,
            data: vec![0; 60],
        };
        let m = packet_in(&pin);
        assert_eq!(m.match_.in_port(), Some(3));
        assert_eq!(m.match_.tunnel_id(), None);
        assert!(m.match_.fields.contains(&Oxm::Metadata { value: 9, mask: None }));
        assert_eq!(
            (m.reason, m.table_id, m.cookie, m.total_len),
            (ofp::OFPR_ACTION, 2, 5, 100)
        );
        // An L2-service report always names its network, 0 included.
        let report = DpPacketIn {
            cookie: u64::MAX,
            metadata: 0,
            ..pin
        };
        assert_eq!(packet_in(&report).match_.tunnel_id(), Some(0));
    }

    #[test]
    fn stats_filter_refuses_bad_tables_and_matches() {
        let req = ofp::FlowStatsRequest {
            table_id: 254,
            ..Default::default()
        };
        assert!(stats_filter(&req).is_err());
        let req = ofp::FlowStatsRequest {
            match_: Match::new().with(Oxm::IpProto(6)),
            ..Default::default()
        };
        assert_eq!(stats_filter(&req).unwrap_err().1, ofp::OFPBMC_BAD_PREREQ);
    }
}
