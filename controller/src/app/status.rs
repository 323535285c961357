//! The app's counters and its part of the periodic state report (`controller state` in the
//! log, once a tick when it changed).

use super::Role;

/// What the app refused or dropped, by reason (in the status log and `status()`).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct AppCounters {
    pub packet_ins: u64,
    /// Frames whose source MAC belongs to another port (spoofing, or a move to an unbound port).
    pub moves_refused: u64,
    /// New MACs refused because their port or network is full.
    pub macs_refused_full: u64,
    pub bindings_declared: u64,
    /// PACKET_INs for a destination nobody knew (flooded to find it).
    pub unknown_destinations: u64,
    /// Times this controller took over as master.
    pub takeovers: u64,
    /// Rounds of reconciliation with the switches (at takeover, and a switch registering).
    pub reconciliations: u64,
    /// Ports a switch no longer had at a reconciliation although the registry knew them
    /// (deleted while nobody was master, or their PORT_STATUS lost).
    pub ports_gone_at_reconcile: u64,
    /// MACs released because their port was deleted.
    pub macs_released: u64,
    /// Flows deleted at a reconciliation: they led to a port that is gone, or towards a MAC
    /// whose port is gone.
    pub stale_flows_deleted: u64,
    /// Flows re-pointed at a reconciliation: they led to another host than the MAC's.
    pub flows_repointed: u64,
    /// MACs placed where a switch's flows said they are, their registered port being gone.
    pub macs_adopted: u64,
    /// A switch forwarding a MAC to a local port while the registry places it elsewhere, live.
    pub reconcile_conflicts: u64,
    /// Switches that did not answer a reconciliation in time.
    pub reconcile_unanswered: u64,
    /// Tunnels the registry knew and a switch no longer had: forgotten.
    pub tunnels_forgotten: u64,
    /// Tunnels a switch had that the registry did not know (made by a master that died before
    /// recording them): deleted, so no new tunnel is mistaken for them.
    pub unknown_tunnels_deleted: u64,
    /// Frames held back while a new master reconciled, beyond what it holds: dropped.
    pub held_dropped: u64,
}

/// Up to this many hosts the periodic state report lists each one.
const STATUS_HOST_LIST: usize = 32;

impl super::App {
    /// A summary for the periodic status log.
    /// Counts always; the host list only for small deployments (at 10,000 hosts building and
    /// logging it every tick was a fifth of the app thread).
    pub fn status(&self) -> serde_json::Value {
        let mut status = serde_json::json!({
            "hosts_registered": self.tccs.hosts.len(),
            "hosts_connected": self.by_dpid.len(),
            "tunnels": self.tccs.tunnels().count(),
            "locations": self.commander.len(),
            "bound_macs": self.commander.bindings_len(),
            "counters": self.counters,
            "moves_completed": self.move_times_ms.len(),
            "role": match self.role {
                Role::Single => "single",
                Role::Master(_) => "master",
                Role::Standby => "standby",
            },
            "master": self.leader.as_ref().map(|(g, n)| serde_json::json!({"generation": g, "name": n})),
            "store": self.store.status(),
        });
        if self.tccs.hosts.len() <= STATUS_HOST_LIST {
            status["hosts"] = self.host_list();
        }
        status
    }

    /// Every host, sorted by dpid, and whether it is connected to us.
    fn host_list(&self) -> serde_json::Value {
        let mut hosts: Vec<serde_json::Value> = self
            .tccs
            .hosts
            .values()
            .map(|h| {
                serde_json::json!({
                    "dpid": format!("{:016x}", h.dpid),
                    "underlay_ip": h.underlay_ip,
                    "underlay_mac": h.underlay_mac.to_string(),
                    "connected": self.by_dpid.contains_key(&h.dpid),
                })
            })
            .collect();
        hosts.sort_by(|a, b| a["dpid"].as_str().cmp(&b["dpid"].as_str()));
        serde_json::Value::Array(hosts)
    }
}
