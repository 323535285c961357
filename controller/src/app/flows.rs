//! What the app programs into switches: forwarding entries (FLOW_MOD add, strict delete) for
//! a (network, MAC), and frames sent out of a port or flooded in a network (PACKET_OUT).

use crate::commander::Location;
use crate::ids::{Dpid, Mac, PortNo, Vnet};
use cloudrack_wire::ofp::{self, Action, Body, Instruction, Match, Oxm};

/// Priority of the forwarding entries we install.
pub(super) const FLOW_PRIORITY: u16 = 100;
/// Cookie marking our flows (so a controller restart recognises them).
pub(super) const COOKIE: u64 = 0xc10d_0000_0000_0000;

impl super::App {
    /// Delete the flow for (vnet, mac) on `dpid` if it still leads to `out` (it may have been
    /// re-pointed since the switch described it).
    pub(super) fn flow_delete(&mut self, dpid: Dpid, vnet: Vnet, mac: Mac, out: PortNo, priority: u16) {
        let fm = ofp::FlowMod {
            cookie: 0,
            cookie_mask: 0,
            table_id: 0,
            command: ofp::OFPFC_DELETE_STRICT,
            idle_timeout: 0,
            hard_timeout: 0,
            priority,
            buffer_id: ofp::OFP_NO_BUFFER,
            out_port: out.0,
            out_group: ofp::OFPG_ANY,
            flags: 0,
            match_: Match::new()
                .with(Oxm::TunnelId {
                    id: vnet.tunnel_id(),
                    mask: None,
                })
                .with(Oxm::EthDst { mac: mac.0, mask: None }),
            instructions: Vec::new(),
        };
        self.send(dpid, Body::FlowMod(fm));
    }

    /// Install (or replace) the entry for (vnet, mac) on `dpid`: output to `out_port`.
    pub(super) fn flow_add(&mut self, dpid: Dpid, vnet: Vnet, mac: Mac, out_port: PortNo, idle: u16) {
        let fm = ofp::FlowMod {
            cookie: COOKIE,
            cookie_mask: 0,
            table_id: 0,
            command: ofp::OFPFC_ADD,
            idle_timeout: idle,
            hard_timeout: 0,
            priority: FLOW_PRIORITY,
            buffer_id: ofp::OFP_NO_BUFFER,
            out_port: ofp::OFPP_ANY,
            out_group: ofp::OFPG_ANY,
            flags: ofp::OFPFF_SEND_FLOW_REM,
            match_: Match::new()
                .with(Oxm::TunnelId {
                    id: vnet.tunnel_id(),
                    mask: None,
                })
                .with(Oxm::EthDst { mac: mac.0, mask: None }),
            instructions: vec![Instruction::ApplyActions(vec![Action::output(out_port.0)])],
        };
        if self.send(dpid, Body::FlowMod(fm)) {
            self.commander.installed_on(vnet, mac, dpid);
            self.flow_mod_sent(dpid);
        }
    }

    /// Send a frame out of `out` on `dpid`, in network `vnet`.
    pub(super) fn packet_out(&mut self, dpid: Dpid, vnet: Vnet, out: PortNo, data: &[u8]) {
        let po = ofp::PacketOut {
            buffer_id: ofp::OFP_NO_BUFFER,
            in_port: ofp::OFPP_CONTROLLER,
            actions: vec![
                Action::SetField(Oxm::TunnelId {
                    id: vnet.tunnel_id(),
                    mask: None,
                }),
                Action::output(out.0),
            ],
            data: data.to_vec(),
        };
        self.send(dpid, Body::PacketOut(po));
    }

    /// Idle timeout of an entry on `dpid` towards `loc`: none to a local port, `flow_idle_s`
    /// towards another host.
    pub(super) fn idle_for(&self, dpid: Dpid, loc: Location) -> u16 {
        if loc.dpid == dpid {
            0
        } else {
            self.cfg.flow_idle_s
        }
    }

    /// Flood a frame to the local ports of network `vnet` on `dpid` (but its ingress).
    pub(super) fn packet_out_flood(&mut self, dpid: Dpid, vnet: Vnet, in_port: Option<PortNo>, data: &[u8]) {
        let po = ofp::PacketOut {
            buffer_id: ofp::OFP_NO_BUFFER,
            in_port: in_port.map_or(ofp::OFPP_CONTROLLER, |p| p.0),
            actions: vec![
                Action::SetField(Oxm::TunnelId {
                    id: vnet.tunnel_id(),
                    mask: None,
                }),
                Action::output(ofp::OFPP_FLOOD),
            ],
            data: data.to_vec(),
        };
        self.send(dpid, Body::PacketOut(po));
    }
}
