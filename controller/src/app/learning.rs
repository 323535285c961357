//! Where every (network, MAC) is: learned from PACKET_INs, declared by port bindings and
//! migration notices, released when its port goes; forwarding set up on both ends of a
//! conversation, broadcasts relayed, and moves re-pointed on every switch that holds an entry
//! (timed until each has answered a barrier).

use super::log::{debug, info, warn};
use crate::commander::{Learned, Location, Refusal};
use crate::ids::{Dpid, Mac, PortNo, Vnet};
use crate::store::Change;
use cloudrack_wire::ofp::{self, Body};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// A move being re-pointed: done when every barrier came back.
pub(super) struct PendingMove {
    pub(super) vnet: Vnet,
    pub(super) mac: Mac,
    pub(super) started: Instant,
    /// (dpid, xid) of the barriers not answered yet.
    pub(super) waiting: HashSet<(Dpid, u32)>,
    pub(super) switches: usize,
}

impl super::App {
    pub(super) fn packet_in(&mut self, dpid: Dpid, pin: &ofp::PacketIn) {
        let Some(in_port) = pin.match_.in_port().map(PortNo) else {
            return;
        };
        let Some(vnet) = Vnet::from_tunnel_id(pin.match_.tunnel_id().unwrap_or(0)) else {
            return;
        };
        if pin.data.len() < 14 {
            return;
        }
        let dst = Mac(pin.data[0..6].try_into().unwrap_or([0; 6]));
        let src = Mac(pin.data[6..12].try_into().unwrap_or([0; 6]));
        self.counters.packet_ins += 1;
        if self.tccs.is_tunnel_port(dpid, in_port) {
            // Frames from controller-made tunnels teach nothing: their senders are known.
            return;
        }
        // A frame whose sender may not be here (spoofed, or its port is full) goes no further.
        if !src.is_multicast() && !self.learn(dpid, in_port, vnet, src) {
            return;
        }
        if dst.is_multicast() {
            self.relay_flood(dpid, vnet, &pin.data);
            return;
        }
        // A MAC whose port is gone is somewhere unknown until it shows up again: find it like
        // any unknown destination (not at its old port, which would swallow the frame).
        let known = Some(dst).filter(|d| !self.commander.released(vnet, d));
        match known.and_then(|d| self.commander.locate(vnet, &d)) {
            Some(loc) => {
                if let Some(port) = self.route(dpid, vnet, loc) {
                    self.flow_add(dpid, vnet, dst, port, self.idle_for(dpid, loc));
                }
                if loc.dpid != dpid {
                    // The destination's host forwards to it, and sends replies back our way.
                    self.flow_add(loc.dpid, vnet, dst, loc.port, 0);
                    if let Some(back) = self.route(loc.dpid, vnet, Location { dpid, port: in_port }) {
                        self.flow_add(loc.dpid, vnet, src, back, self.cfg.flow_idle_s);
                    }
                }
                if !(loc.dpid == dpid && loc.port == in_port) {
                    self.packet_out(loc.dpid, vnet, loc.port, &pin.data);
                }
            }
            None => {
                // Unknown destination: flood it in its network on every host; the answer
                // teaches us where it is.
                self.counters.unknown_destinations += 1;
                self.packet_out_flood(dpid, vnet, Some(in_port), &pin.data);
                self.relay_flood(dpid, vnet, &pin.data);
            }
        }
    }

    /// Carry a broadcast to every other connected host with a port (or a static tunnel) in its
    /// network; each floods it to its local ports only.
    fn relay_flood(&mut self, origin: Dpid, vnet: Vnet, data: &[u8]) {
        let mut others: HashSet<Dpid> = self.members.hosts_in(vnet).collect();
        others.extend(
            self.tccs
                .static_ports
                .iter()
                .filter(|(_, key)| **key == vnet)
                .map(|((d, _), _)| *d),
        );
        others.remove(&origin);
        others.retain(|d| self.by_dpid.contains_key(d));
        for d in others {
            self.packet_out_flood(d, vnet, None, data);
        }
    }

    /// Learn where `mac` is; false if the registry refused it there.
    pub(super) fn learn(&mut self, dpid: Dpid, port: PortNo, vnet: Vnet, mac: Mac) -> bool {
        let at = Location { dpid, port };
        let learned = self.commander.learn(vnet, mac, at);
        if matches!(
            learned,
            Learned::New | Learned::PortChanged { .. } | Learned::Moved { .. }
        ) {
            self.record(Change::Location { vnet, mac, at });
        }
        match learned {
            Learned::Refused(why) => {
                match why {
                    Refusal::NotBound { .. } => self.counters.moves_refused += 1,
                    Refusal::PortFull | Refusal::VnetFull => self.counters.macs_refused_full += 1,
                }
                let quiet = self
                    .last_refusal_log
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(1));
                if !quiet {
                    self.last_refusal_log = Some(Instant::now());
                    let owner = match why {
                        Refusal::NotBound { owner: Some(o) } => format!("{:016x}/{}", o.dpid, o.port),
                        _ => "-".into(),
                    };
                    warn!(
                        dpid = format!("{dpid:016x}"),
                        port = port.0,
                        vnet = vnet.0,
                        mac = mac.to_string(),
                        reason = ?why,
                        owner,
                        moves_refused = self.counters.moves_refused,
                        macs_refused_full = self.counters.macs_refused_full,
                        "refused a MAC at this port (not bound to it, or table full); its frames are dropped"
                    );
                }
                return false;
            }
            Learned::Same => {
                // The switch asked again: its entry is missing (expired, or lost). Re-install.
                self.flow_add(dpid, vnet, mac, port, 0);
            }
            Learned::New | Learned::PortChanged { .. } => {
                debug!(
                    dpid = format!("{dpid:016x}"),
                    port = port.0,
                    vnet = vnet.0,
                    mac = mac.to_string(),
                    "learned"
                );
                self.flow_add(dpid, vnet, mac, port, 0);
            }
            Learned::Moved { from } => {
                let started = Instant::now();
                info!(
                    vnet = vnet.0,
                    mac = mac.to_string(),
                    from = format!("{:016x}", from.dpid),
                    to = format!("{dpid:016x}"),
                    "MAC moved; re-pointing"
                );
                self.flow_add(dpid, vnet, mac, port, 0);
                // Every switch that forwards to it, the old host included (packets in flight
                // there follow the VM).
                let mut holders = self.commander.holders(vnet, &mac);
                if !holders.contains(&from.dpid) {
                    holders.push(from.dpid);
                }
                let mut waiting = HashSet::new();
                for h in holders.into_iter().filter(|h| *h != dpid) {
                    if let Some(p) = self.tunnel_port(h, dpid, vnet) {
                        self.flow_add(h, vnet, mac, p, self.cfg.flow_idle_s);
                        let xid = self.xid();
                        if self.send_xid(h, xid, Body::BarrierRequest) {
                            waiting.insert((h, xid));
                        }
                    }
                }
                let xid = self.xid();
                if self.send_xid(dpid, xid, Body::BarrierRequest) {
                    waiting.insert((dpid, xid));
                }
                let switches = waiting.len();
                self.moves.push(PendingMove {
                    vnet,
                    mac,
                    started,
                    waiting,
                    switches,
                });
            }
        }
        true
    }

    /// A barrier came back: a move whose switches have all answered is complete.
    pub(super) fn barrier_reply(&mut self, dpid: Dpid, xid: u32) {
        let mut done = Vec::new();
        for (i, m) in self.moves.iter_mut().enumerate() {
            if m.waiting.remove(&(dpid, xid)) && m.waiting.is_empty() {
                done.push(i);
            }
        }
        for i in done.into_iter().rev() {
            let m = self.moves.remove(i);
            let ms = m.started.elapsed().as_secs_f64() * 1000.0;
            self.move_times_ms.push(ms);
            info!(
                vnet = m.vnet.0,
                mac = m.mac.to_string(),
                switches = m.switches,
                move_repointed_ms = format!("{ms:.3}"),
                "MAC move re-pointed on every switch"
            );
        }
    }

    /// Forget moves whose switches never answered.
    pub(super) fn expire_moves(&mut self) {
        self.moves.retain(|m| {
            let stale = m.started.elapsed() > Duration::from_secs(10);
            if stale {
                warn!(
                    mac = m.mac.to_string(),
                    "move not confirmed by every switch within 10 s"
                );
            }
            !stale
        });
    }

    /// A switch's entry for a MAC is gone (expired, or deleted): it no longer holds one.
    pub(super) fn flow_removed(&mut self, dpid: Dpid, fr: &ofp::FlowRemoved) {
        let vnet = Vnet::from_tunnel_id(fr.match_.tunnel_id().unwrap_or(0));
        if let (Some(mac), Some(vnet)) = (fr.match_.eth_dst().map(Mac), vnet) {
            self.commander.removed_from(vnet, mac, dpid);
        }
    }

    /// A port is gone from a switch: it leaves its network, its bindings go, and the MACs
    /// located at it are released (recorded, so a master taking over knows). Returns them.
    pub(super) fn port_deleted(&mut self, dpid: Dpid, port: PortNo) -> Vec<(Vnet, Mac)> {
        self.members.remove_port(dpid, port);
        let at = Location { dpid, port };
        let released = self.commander.port_gone(at);
        for &(vnet, mac) in &released {
            self.counters.macs_released += 1;
            self.record(Change::LocationReleased { vnet, mac, at });
        }
        released
    }

    /// TCCS PortBinding: a port is bound to a VM's MAC (it may take the MAC over), or no more.
    pub(super) fn port_binding(&mut self, dpid: Dpid, port_no: PortNo, vnet: Vnet, mac: Mac, bound: bool) {
        let at = Location { dpid, port: port_no };
        if bound {
            if self.commander.bind(vnet, mac, at) {
                self.counters.bindings_declared += 1;
                debug!(
                    dpid = format!("{dpid:016x}"),
                    port = port_no.0,
                    vnet = vnet.0,
                    mac = mac.to_string(),
                    "port bound to VM"
                );
            }
        } else {
            self.commander.unbind(vnet, mac, at);
            info!(
                dpid = format!("{dpid:016x}"),
                port = port_no.0,
                vnet = vnet.0,
                mac = mac.to_string(),
                "port binding released"
            );
        }
    }

    /// TCCS MigrationNotify from a migration's destination (the switch `dpid` is connected
    /// as): the VM is at `dst_port` of `dst_dpid` now.
    pub(super) fn migration_notice(
        &mut self,
        dpid: Option<Dpid>,
        vnet: Vnet,
        mac: Mac,
        dst_dpid: Dpid,
        phase: u8,
        dst_port: PortNo,
    ) {
        if dpid.is_some_and(|d| d != dst_dpid) {
            warn!(from = ?dpid, dst_dpid = dst_dpid.0, "migration notice about another switch's port; ignored");
            return;
        }
        if dst_port == PortNo(0) || !self.tccs.hosts.contains_key(&dst_dpid) {
            warn!(
                dst_dpid = dst_dpid.0,
                dst_port = dst_port.0,
                "migration notice without a known destination port; ignored"
            );
            return;
        }
        info!(
            vnet = vnet.0,
            mac = mac.to_string(),
            dst = format!("{dst_dpid:016x}"),
            dst_port = dst_port.0,
            phase,
            "migration notice: pointing every switch at the destination"
        );
        self.learn(dst_dpid, dst_port, vnet, mac);
    }
}
