//! Making the registry and the switches agree. At takeover, and when a switch registers with
//! the master, the switches are asked for their ports and flows (`crate::reconcile` collects
//! the answers); once all have answered, each step here corrects the registry or the switches
//! from them, in order.

use super::flows::FLOW_PRIORITY;
use super::log::{debug, info, warn};
use crate::commander::Location;
use crate::ids::{Dpid, Mac, PortNo, Vnet};
use crate::reconcile::{Finished, Occasion};
use crate::store::Change;
use crate::tccs::{FIRST_TUNNEL_PORT, LAST_TUNNEL_PORT};
use cloudrack_wire::ofp::{self, Action, Body, Instruction, Match, MultipartReplyBody, MultipartRequestBody};
use cloudrack_wire::tccs::TccsMsg;
use std::collections::HashSet;
use std::time::Instant;

/// A forwarding entry's (vnet, eth_dst, output port), from a switch's flow stats.
fn forwarding_entry(s: &ofp::FlowStats) -> Option<(Vnet, Mac, Option<PortNo>)> {
    let mac = Mac(s.match_.eth_dst()?);
    let vnet = Vnet::from_tunnel_id(s.match_.tunnel_id().unwrap_or(0))?;
    let out = s.instructions.iter().find_map(|i| match i {
        Instruction::ApplyActions(a) => a.iter().find_map(|a| match a {
            Action::Output { port, .. } => Some(PortNo(*port)),
            _ => None,
        }),
        _ => None,
    });
    Some((vnet, mac, out))
}

/// A switch's forwarding entry, as its flow stats described it.
struct FlowEntry {
    dpid: Dpid,
    vnet: Vnet,
    mac: Mac,
    out: PortNo,
}

/// What one reconciliation changed (its log line).
#[derive(Debug, Default, PartialEq, Eq)]
struct ReconcileTally {
    ports_gone: u64,
    macs_released: u64,
    macs_learned: u64,
    macs_adopted: u64,
    flows_deleted: u64,
    flows_repointed: u64,
    conflicts: u64,
    tunnels_forgotten: u64,
    unknown_tunnels_deleted: u64,
}

impl super::App {
    /// Ask switches for their ports and their flows; `reconcile` acts once all have answered.
    pub(super) fn ask_switches(&mut self, dpids: &[Dpid], why: Occasion) {
        let flows = ofp::FlowStatsRequest {
            table_id: ofp::OFPTT_ALL,
            out_port: ofp::OFPP_ANY,
            out_group: ofp::OFPG_ANY,
            cookie: 0,
            cookie_mask: 0,
            match_: Match::new(),
        };
        let mut asked = Vec::new();
        for &dpid in dpids {
            let (ports_xid, flows_xid) = (self.xid(), self.xid());
            let ports_req = Body::MultipartRequest {
                flags: 0,
                body: MultipartRequestBody::PortDesc,
            };
            let flows_req = Body::MultipartRequest {
                flags: 0,
                body: MultipartRequestBody::Flow(flows.clone()),
            };
            // The switch answers in order: its ports, then its flows.
            if self.send_xid(dpid, ports_xid, ports_req) && self.send_xid(dpid, flows_xid, flows_req) {
                asked.push((dpid, ports_xid, flows_xid));
            }
        }
        if !asked.is_empty() {
            // Only the asked switches' tunnels: a registration must not copy every tunnel.
            let ends: HashSet<Dpid> = asked.iter().map(|a| a.0).collect();
            let tunnels = self
                .tccs
                .tunnels()
                .filter(|t| ends.contains(&t.a) || ends.contains(&t.b))
                .copied()
                .collect();
            self.reconciler.start(why, asked, tunnels);
        }
    }

    /// A (part of a) PORT_DESC or flow stats reply: an answer to our questions, or nothing.
    pub(super) fn multipart_reply(&mut self, dpid: Option<Dpid>, xid: u32, flags: u16, body: MultipartReplyBody) {
        let more = flags & ofp::OFPMPF_REPLY_MORE != 0;
        let ours = match (dpid, body) {
            (Some(d), MultipartReplyBody::PortDesc(descs)) => self.reconciler.ports(d, xid, &descs, more),
            (Some(d), MultipartReplyBody::Flow(stats)) => self.reconciler.flows(d, xid, stats, more),
            _ => false,
        };
        if !ours {
            debug!(dpid = ?dpid.map(|d| format!("{d:016x}")), xid, "multipart reply we did not wait for; ignored");
        }
    }

    /// Act on every round whose switches have answered (or whose time is up).
    pub(super) fn finish_reconciliations(&mut self) {
        for round in self.reconciler.finished(Instant::now()) {
            self.reconcile(round);
        }
        if !self.reconciler.takeover_pending() {
            self.release_held();
        }
    }

    /// Make the registry and the switches agree, from what they answered (their ports and
    /// flows). Each step sees what the ones before changed.
    pub(super) fn reconcile(&mut self, round: Finished) {
        let mut n = ReconcileTally::default();
        self.reconcile_tunnels(&round, &mut n);
        let entries = self.read_flows(&round, &mut n);
        let released = self.release_gone_ports(&round, &mut n);
        self.place_from_local_flows(&entries, &mut n);
        let mut lost: HashSet<(Vnet, Mac)> = released.into_iter().collect();
        if round.why == Occasion::Takeover {
            lost.extend(entries.iter().map(|e| (e.vnet, e.mac)));
        }
        self.unhook_lost_macs(lost, &mut n);
        self.drop_dead_ends(&round, &entries, &mut n);
        self.repoint_stale_flows(&entries, &mut n);

        let c = &mut self.counters;
        c.reconciliations += 1;
        c.ports_gone_at_reconcile += n.ports_gone;
        c.stale_flows_deleted += n.flows_deleted;
        c.flows_repointed += n.flows_repointed;
        c.macs_adopted += n.macs_adopted;
        c.reconcile_conflicts += n.conflicts;
        c.reconcile_unanswered += round.unanswered.len() as u64;
        c.tunnels_forgotten += n.tunnels_forgotten;
        c.unknown_tunnels_deleted += n.unknown_tunnels_deleted;
        if !round.unanswered.is_empty() {
            let silent: Vec<String> = round.unanswered.iter().map(|d| format!("{d:016x}")).collect();
            warn!(why = ?round.why, switches = ?silent, "switches did not tell their ports and flows; reconciled without them");
        }
        let ms = format!("{:.1}", round.started.elapsed().as_secs_f64() * 1000.0);
        let switches = round.answers.len();
        // A takeover, or anything found, is worth a line; a quiet registration is not.
        if n != ReconcileTally::default() || round.why == Occasion::Takeover {
            info!(why = ?round.why, switches, tally = ?n, ms, "reconciled the registry with the switches");
        } else {
            debug!(why = ?round.why, switches, ms, "reconciled the registry with the switches");
        }
    }

    /// Tunnels as the switches have them. One the registry knew (when it asked) that a switch
    /// no longer has is forgotten, and its other end deleted: the registry would otherwise keep
    /// sending flows into it. One a switch has in the controller's range that the registry
    /// does not know was made by a master that died before recording it: deleted (with the
    /// flows through it), or a new tunnel given its port number would be refused by the
    /// switch and the controller's flows for it would lead to the old tunnel's host.
    fn reconcile_tunnels(&mut self, round: &Finished, n: &mut ReconcileTally) {
        for (dpid, answer) in &round.answers {
            let Some(ports) = &answer.ports else { continue };
            for t in &round.tunnels {
                // Port 0: that end has not reported it yet.
                let Some(port) = t.port_on(*dpid).filter(|p| *p != PortNo(0)) else {
                    continue;
                };
                if ports.contains(&port) || self.tccs.between(t.a, t.b, t.key) != Some(*t) {
                    continue;
                }
                self.tunnel_port_deleted(*dpid, port);
                n.tunnels_forgotten += 1;
            }
            let controllers = FIRST_TUNNEL_PORT..=LAST_TUNNEL_PORT;
            let unknown: Vec<PortNo> = ports
                .iter()
                .copied()
                .filter(|p| controllers.contains(p) && !self.tccs.is_tunnel_port(*dpid, *p))
                .collect();
            for port_no in unknown {
                warn!(
                    dpid = format!("{dpid:016x}"),
                    port = port_no.0,
                    "a tunnel the registry does not know (its master died before recording it); deleted"
                );
                let del = TccsMsg::TunnelDel {
                    remote_ip: std::net::Ipv4Addr::UNSPECIFIED,
                    key: 0,
                    port_no: port_no.0,
                };
                self.send(*dpid, del.to_body());
                n.unknown_tunnels_deleted += 1;
            }
        }
    }

    /// Who holds which MAC is the switches' flows; a flow to a port its switch no longer has
    /// is deleted. Returns the other forwarding entries.
    fn read_flows(&mut self, round: &Finished, n: &mut ReconcileTally) -> Vec<FlowEntry> {
        let mut entries = Vec::new();
        for (dpid, answer) in &round.answers {
            for s in &answer.flows {
                let Some((vnet, mac, out)) = forwarding_entry(s) else {
                    continue;
                };
                match (out, &answer.ports) {
                    (Some(out), Some(ports)) if !ports.contains(&out) => {
                        self.flow_delete(*dpid, vnet, mac, out, s.priority);
                        n.flows_deleted += 1;
                    }
                    (Some(out), _) => {
                        self.commander.installed_on(vnet, mac, *dpid);
                        entries.push(FlowEntry {
                            dpid: *dpid,
                            vnet,
                            mac,
                            out,
                        });
                    }
                    (None, _) => self.commander.installed_on(vnet, mac, *dpid),
                }
            }
        }
        entries
    }

    /// Ports the registry knows and a switch no longer has were deleted while nobody was
    /// master (their PORT_STATUS went to a standby, or nowhere): handled as if it had come.
    /// Returns the MACs this released.
    fn release_gone_ports(&mut self, round: &Finished, n: &mut ReconcileTally) -> Vec<(Vnet, Mac)> {
        let mut released = Vec::new();
        for (dpid, answer) in &round.answers {
            let Some(ports) = &answer.ports else { continue };
            let mut known: HashSet<PortNo> = self.commander.ports_with_live_macs(*dpid).into_iter().collect();
            known.extend(self.commander.bound_ports_of(*dpid));
            known.extend(self.members.ports_of(*dpid));
            for port in known.into_iter().filter(|p| !ports.contains(p)) {
                n.ports_gone += 1;
                let gone = self.port_deleted(*dpid, port);
                n.macs_released += gone.len() as u64;
                released.extend(gone);
            }
        }
        released
    }

    /// A switch delivering a MAC to one of its own ports says where the MAC is: learned if
    /// unknown (a restarted controller without a store), taken as a move if its registered
    /// port is gone (a dead master saw the move, the store did not).
    fn place_from_local_flows(&mut self, entries: &[FlowEntry], n: &mut ReconcileTally) {
        for e in entries {
            if e.out >= FIRST_TUNNEL_PORT || self.tccs.is_tunnel_port(e.dpid, e.out) {
                continue;
            }
            let at = Location {
                dpid: e.dpid,
                port: e.out,
            };
            match self.commander.locate(e.vnet, &e.mac) {
                None => {
                    if self.commander.learn_if_unknown(e.vnet, e.mac, at) {
                        self.record(Change::Location {
                            vnet: e.vnet,
                            mac: e.mac,
                            at,
                        });
                        n.macs_learned += 1;
                    }
                }
                Some(l) if l == at => {}
                Some(_) if self.commander.released(e.vnet, &e.mac) => {
                    if self.learn(e.dpid, e.out, e.vnet, e.mac) {
                        n.macs_adopted += 1;
                    }
                }
                Some(l) => {
                    n.conflicts += 1;
                    warn!(
                        dpid = format!("{:016x}", e.dpid),
                        port = e.out.0,
                        vnet = e.vnet.0,
                        mac = e.mac.to_string(),
                        registered = format!("{:016x}/{}", l.dpid, l.port),
                        "a switch delivers a MAC locally that the registry places at another live port; left as it is"
                    );
                }
            }
        }
    }

    /// A released MAC may have moved while nobody was master, its announcements lost: flows
    /// leading to its old host send into a void nobody will re-point, so they are deleted and
    /// its traffic comes here, to be flooded to find it. (A master that saw the port go keeps
    /// them: it sees the VM arrive and re-points them, with nothing flooded meanwhile.)
    fn unhook_lost_macs(&mut self, lost: HashSet<(Vnet, Mac)>, n: &mut ReconcileTally) {
        for (vnet, mac) in lost {
            let Some(old) = self.commander.locate(vnet, &mac) else {
                continue;
            };
            if !self.commander.released(vnet, &mac) {
                continue;
            }
            // Through the tunnel to the old host (whose own flow went with the port).
            for h in self.commander.holders(vnet, &mac) {
                if let Some(port) = self.tccs.between(h, old.dpid, vnet).and_then(|t| t.port_on(h)) {
                    self.flow_delete(h, vnet, mac, port, FLOW_PRIORITY);
                    self.commander.removed_from(vnet, mac, h);
                    n.flows_deleted += 1;
                }
            }
        }
    }

    /// For a MAC the registry cannot place (nothing delivers it locally; its records lost,
    /// say), a flow through a tunnel to a host that answered and has no flow delivering it to
    /// one of its own ports is a dead end, or a detour. Deleted: the MAC's traffic comes here,
    /// is flooded, and the MAC is learned where it answers. (Towards a host that did not
    /// answer it stays: a restarted controller meets its switches one by one.)
    fn drop_dead_ends(&mut self, round: &Finished, entries: &[FlowEntry], n: &mut ReconcileTally) {
        let answered: HashSet<Dpid> = round.answers.iter().map(|(d, _)| *d).collect();
        let is_local = |e: &FlowEntry| e.out < FIRST_TUNNEL_PORT && !self.tccs.is_tunnel_port(e.dpid, e.out);
        let delivered: HashSet<(Dpid, Vnet, Mac)> = entries
            .iter()
            .filter(|e| is_local(e))
            .map(|e| (e.dpid, e.vnet, e.mac))
            .collect();
        for e in entries {
            if self.commander.locate(e.vnet, &e.mac).is_some() {
                continue;
            }
            let Some(t) = self.tccs.by_port(e.dpid, e.out) else {
                continue;
            };
            let remote = if t.a == e.dpid { t.b } else { t.a };
            if answered.contains(&remote) && !delivered.contains(&(remote, e.vnet, e.mac)) {
                self.flow_delete(e.dpid, e.vnet, e.mac, e.out, FLOW_PRIORITY);
                self.commander.removed_from(e.vnet, e.mac, e.dpid);
                n.flows_deleted += 1;
            }
        }
    }

    /// A flow through a tunnel to a host the MAC is not on is re-pointed.
    fn repoint_stale_flows(&mut self, entries: &[FlowEntry], n: &mut ReconcileTally) {
        for e in entries {
            let Some(t) = self.tccs.by_port(e.dpid, e.out) else {
                continue;
            };
            let Some(loc) = self.commander.locate(e.vnet, &e.mac) else {
                continue;
            };
            let remote = if t.a == e.dpid { t.b } else { t.a };
            if loc.dpid == remote || self.commander.released(e.vnet, &e.mac) {
                continue;
            }
            if let Some(port) = self.route(e.dpid, e.vnet, loc) {
                self.flow_add(e.dpid, e.vnet, e.mac, port, self.idle_for(e.dpid, loc));
                n.flows_repointed += 1;
            }
        }
    }
}
