//! Who is in charge of the switches: one controller alone, or an elected master with standbys
//! (OpenFlow roles, election through etcd). Taking over: the store's registries loaded, every
//! switch claimed and asked what it has, traffic held until `reconciliation` is done.

use super::log::{error, info};
use crate::ids::{ConnId, Dpid};
use crate::reconcile::Occasion;
use crate::store::{Change, Snapshot};
use crate::tccs::TunnelPair;
use cloudrack_wire::ofp::{self, Body, Message};
use cloudrack_wire::tccs::TccsMsg;
use std::time::Instant;

/// Who is in charge of the switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The only controller (memory backend): in charge, never sends ROLE_REQUEST.
    Single,
    /// Elected master; the generation id of our ROLE_REQUESTs.
    Master(u64),
    /// Another controller is (or is about to be) master: we keep what switches tell everyone
    /// (hosts, ports, bindings) and change nothing.
    Standby,
}

/// At most this many messages are held while a takeover reconciles (a switch sends a table
/// miss again with the next frame).
const HELD_MAX: usize = 4096;

/// Wall-clock milliseconds, so a test can time a failover across processes from the logs.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Messages a new master holds until it has reconciled: traffic (table misses) and migration
/// notices, which it would act on with a registry it has not checked yet.
fn acts_on_traffic(body: &Body) -> bool {
    match body {
        Body::PacketIn(_) => true,
        Body::Experimenter { .. } => matches!(TccsMsg::from_body(body), Some(Ok(TccsMsg::MigrationNotify { .. }))),
        _ => false,
    }
}

impl super::App {
    pub(super) fn is_master(&self) -> bool {
        self.role != Role::Standby
    }

    /// Why this controller must stop, once it must.
    pub fn must_stop(&self) -> Option<&str> {
        self.stop.as_deref()
    }

    /// Our ROLE_REQUEST for a switch, if roles are in use.
    pub(super) fn role_request(&self) -> Option<Body> {
        let (role, generation_id) = match (self.role, &self.leader) {
            (Role::Master(g), _) => (ofp::OFPCR_ROLE_MASTER, g),
            (Role::Standby, Some((g, _))) => (ofp::OFPCR_ROLE_SLAVE, *g),
            _ => return None,
        };
        Some(Body::RoleRequest(ofp::RoleMsg { role, generation_id }))
    }

    /// The election names a master (possibly us: `take_over` follows).
    pub(super) fn leader_elected(&mut self, generation: u64, name: String) {
        info!(generation, master = %name, "master elected");
        self.leader = Some((generation, name));
        if self.role == Role::Standby {
            // Say so to every switch: it sends us nothing it would send a master.
            let dpids: Vec<Dpid> = self.by_dpid.keys().copied().collect();
            for dpid in dpids {
                if let Some(req) = self.role_request() {
                    self.send(dpid, req);
                }
            }
        }
    }

    pub(super) fn leadership_lost(&mut self, reason: String) {
        error!(%reason, "lost the right to be master; stopping");
        self.stop = Some(reason);
    }

    /// We won the election: load the registries, claim every switch, and ask each for its
    /// ports and flow table: the registry lags the switches (who holds which MAC, and which
    /// ports still exist, is theirs to say; see `reconcile`).
    pub(super) fn take_over(&mut self, generation: u64) {
        let started = Instant::now();
        self.role = Role::Master(generation);
        self.counters.takeovers += 1;
        let snap = match self.store.load() {
            Ok(s) => s,
            Err(e) => {
                self.stop = Some(format!("elected, but cannot read the registries: {e}"));
                return;
            }
        };
        let loaded = (snap.hosts.len(), snap.tunnels.len(), snap.locations.len());
        self.apply(snap);
        // Hosts that registered while nobody was master, and the leases of all: ours now.
        let hosts: Vec<crate::tccs::Host> = self.tccs.hosts.values().cloned().collect();
        for h in hosts {
            self.record(Change::Host {
                dpid: h.dpid,
                underlay_ip: h.underlay_ip,
                underlay_mac: h.underlay_mac,
            });
        }
        let dpids: Vec<Dpid> = self.by_dpid.keys().copied().collect();
        for &dpid in &dpids {
            self.record(Change::HostUp { dpid });
            if let Some(req) = self.role_request() {
                self.send(dpid, req);
            }
        }
        self.ask_switches(&dpids, Occasion::Takeover);
        self.master_since = Some(started);
        info!(
            generation,
            hosts = loaded.0,
            tunnels = loaded.1,
            locations = loaded.2,
            switches = dpids.len(),
            load_ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
            unix_ms = unix_ms(),
            "took over as master"
        );
    }

    /// Registries from the store, under what the switches already told us.
    fn apply(&mut self, snap: Snapshot) {
        for h in snap.hosts {
            if !self.tccs.hosts.contains_key(&h.dpid) {
                self.tccs.register(h.dpid, h.underlay_ip, h.underlay_mac);
            }
        }
        for t in snap.tunnels {
            self.tccs.adopt(t);
        }
        for l in snap.locations {
            if self.commander.learn_if_unknown(l.vnet, l.mac, l.at) && l.port_gone {
                self.commander.release(l.vnet, l.mac);
            }
        }
    }

    /// Our first FLOW_MOD since we took over ends the takeover's time (logged once).
    pub(super) fn flow_mod_sent(&mut self, dpid: Dpid) {
        if let Some(since) = self.master_since.take() {
            info!(
                since_elected_ms = format!("{:.1}", since.elapsed().as_secs_f64() * 1000.0),
                unix_ms = unix_ms(),
                dpid = format!("{dpid:016x}"),
                "first FLOW_MOD as master"
            );
        }
    }

    /// Record again everything about one host (its entries expired in the store).
    pub(super) fn resync(&mut self, dpid: Dpid) {
        let Some(h) = self.tccs.hosts.get(&dpid).cloned() else {
            return;
        };
        self.record(Change::Host {
            dpid,
            underlay_ip: h.underlay_ip,
            underlay_mac: h.underlay_mac,
        });
        let tunnels: Vec<TunnelPair> = self.tccs.tunnels().filter(|t| t.a == dpid).copied().collect();
        for t in tunnels {
            self.record(Change::Tunnel(t));
        }
        for (vnet, mac, at) in self.commander.located_on(dpid) {
            if self.commander.released(vnet, &mac) {
                self.record(Change::LocationReleased { vnet, mac, at });
            } else {
                self.record(Change::Location { vnet, mac, at });
            }
        }
    }

    /// Whether a message must wait for the takeover's reconciliation: a new master acts on
    /// traffic once it knows what the switches have. Before that, it would refuse a VM that
    /// moved while nobody was master, or make a tunnel that clashes with one its predecessor
    /// made and did not record.
    pub(super) fn must_wait(&self, body: &Body) -> bool {
        self.reconciler.takeover_pending() && acts_on_traffic(body)
    }

    /// Keep a message for after the takeover's reconciliation (beyond HELD_MAX, drop it).
    pub(super) fn hold(&mut self, conn: ConnId, msg: Message) {
        if self.held.len() < HELD_MAX {
            self.held.push_back((conn, msg));
        } else {
            self.counters.held_dropped += 1;
        }
    }

    /// The takeover's reconciliation is over: handle what waited, in order.
    pub(super) fn release_held(&mut self) {
        while let Some((conn, msg)) = self.held.pop_front() {
            self.message(conn, msg);
        }
    }
}
