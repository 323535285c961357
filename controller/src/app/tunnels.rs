//! TCCS tunnels as the app uses them: brought up on both ends when a flow first needs one,
//! learned from the switches' reports (after a controller restart), released on both ends when
//! a switch reports one idle, forgotten when an end is deleted.

use super::log::info;
use crate::commander::Location;
use crate::ids::{Dpid, PortNo, Vnet};
use crate::store::Change;
use crate::tccs::{Ensure, TunnelPair};
use cloudrack_wire::tccs::TccsMsg;
use std::net::Ipv4Addr;

impl super::App {
    /// The port on `from` that leads to `to` for `vnet`, bringing the tunnel up if needed.
    pub(super) fn tunnel_port(&mut self, from: Dpid, to: Dpid, vnet: Vnet) -> Option<PortNo> {
        let t = match self.tccs.ensure_tunnel(from, to, vnet)? {
            Ensure::Exists(t) => t,
            Ensure::Created(t) => {
                let idle = self.cfg.tunnel_idle.as_secs().max(1) as u32;
                for (end, port, other) in [(t.a, t.port_a, t.b), (t.b, t.port_b, t.a)] {
                    let remote_ip = self.tccs.hosts[&other].underlay_ip;
                    let msg = TccsMsg::TunnelAdd {
                        remote_dpid: other.0,
                        remote_ip,
                        key: vnet.0,
                        port_no: port.0,
                        idle_timeout_s: idle,
                    };
                    self.send(end, msg.to_body());
                }
                info!(
                    a = format!("{:016x}", t.a),
                    b = format!("{:016x}", t.b),
                    key = vnet.0,
                    "tunnel brought up"
                );
                self.record(Change::Tunnel(t));
                t
            }
        };
        t.port_on(from)
    }

    /// Where `dpid` should send frames for a MAC at `loc`.
    pub(super) fn route(&mut self, dpid: Dpid, vnet: Vnet, loc: Location) -> Option<PortNo> {
        if loc.dpid == dpid {
            Some(loc.port)
        } else {
            self.tunnel_port(dpid, loc.dpid, vnet)
        }
    }

    /// A switch reports a tunnel it has: a static one (configured by hand), or one of ours
    /// (after a controller restart), complete once both ends have reported it.
    pub(super) fn tunnel_reported(
        &mut self,
        dpid: Dpid,
        remote_dpid: Dpid,
        remote_ip: Ipv4Addr,
        key: Vnet,
        port_no: PortNo,
        is_static: bool,
    ) {
        if is_static {
            self.tccs.static_ports.insert((dpid, port_no), key);
        } else {
            let remote = if remote_dpid != Dpid(0) {
                Some(remote_dpid)
            } else {
                self.tccs.host_by_ip(remote_ip).map(|h| h.dpid)
            };
            if let Some(r) = remote {
                self.tccs.report(dpid, r, port_no, key);
                if let Some(t) = self
                    .tccs
                    .by_port(dpid, port_no)
                    .filter(|t| t.port_a != PortNo(0) && t.port_b != PortNo(0))
                {
                    self.record(Change::Tunnel(t));
                }
            }
        }
    }

    /// A switch reports a tunnel idle (for `--tunnel-idle`): released on both ends.
    pub(super) fn tunnel_idle(&mut self, dpid: Dpid, port_no: PortNo, idle_ms: u64) {
        if let Some(t) = self.tccs.by_port(dpid, port_no) {
            info!(
                a = format!("{:016x}", t.a),
                b = format!("{:016x}", t.b),
                key = t.key.0,
                idle_ms,
                "releasing idle tunnel on both ends"
            );
            self.release_tunnel(&t);
        }
    }

    /// Delete a tunnel on both ends and forget it.
    fn release_tunnel(&mut self, t: &TunnelPair) {
        for (dpid, port) in [(t.a, t.port_a), (t.b, t.port_b)] {
            let other = if dpid == t.a { t.b } else { t.a };
            let remote_ip = self
                .tccs
                .hosts
                .get(&other)
                .map(|h| h.underlay_ip)
                .unwrap_or(Ipv4Addr::UNSPECIFIED);
            self.send(
                dpid,
                TccsMsg::TunnelDel {
                    remote_ip,
                    key: t.key.0,
                    port_no: port.0,
                }
                .to_body(),
            );
        }
        self.tccs.remove(t);
        self.record(Change::TunnelGone(*t));
    }

    /// A tunnel's end is gone from a switch (deleted by hand, or released by the master while
    /// we stood by): forget the tunnel, so a takeover does not send flows into it, and delete
    /// its other end. (A tunnel we released ourselves is forgotten already.)
    pub(super) fn tunnel_port_deleted(&mut self, dpid: Dpid, port: PortNo) {
        let Some(t) = self.tccs.by_port(dpid, port) else { return };
        self.tccs.remove(&t);
        self.record(Change::TunnelGone(t));
        let (other, other_port) = if t.a == dpid { (t.b, t.port_b) } else { (t.a, t.port_a) };
        let remote_ip = self.tccs.hosts.get(&dpid).map(|h| h.underlay_ip);
        if let (true, Some(remote_ip), true) = (self.is_master(), remote_ip, other_port != PortNo(0)) {
            let del = TccsMsg::TunnelDel {
                remote_ip,
                key: t.key.0,
                port_no: other_port.0,
            };
            self.send(other, del.to_body());
        }
    }
}
