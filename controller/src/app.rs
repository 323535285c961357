//! The controller's application logic: one thread owns all state and handles every event in
//! order (switch connected, message, disconnected, timer), so there are no locks and no races
//! between a learning and a move. Sessions only frame bytes and forward messages here.

use crate::commander::{Commander, Learned, Limits, Location, Mac, Refusal};
use crate::conn_tx::{ConnTx, SendError};
use crate::event::Event;
use crate::ids::ConnId;
use crate::members::Members;
use crate::reconcile::{Finished, Occasion, Reconciler};
use crate::store::{Change, MemoryStore, Snapshot, Store};
use crate::tccs::{Ensure, Tccs, TunnelPair, FIRST_TUNNEL_PORT, LAST_TUNNEL_PORT};
use cloudrack_wire::ofp::{
    self, Action, Body, Instruction, Match, Message, MultipartReplyBody, MultipartRequestBody, Oxm,
};
use cloudrack_wire::tccs::TccsMsg;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

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

#[derive(Debug, Clone)]
pub struct Config {
    /// Tunnels idle this long are released on both ends.
    pub tunnel_idle: Duration,
    /// Idle timeout of forwarding entries towards remote hosts (0: none).
    pub flow_idle_s: u16,
    /// Bounds of the location registry.
    pub limits: Limits,
}

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

struct Conn {
    tx: ConnTx,
    dpid: Option<u64>,
    peer: std::net::SocketAddr,
}

/// A move being re-pointed: done when every barrier came back.
struct PendingMove {
    vnet: u32,
    mac: Mac,
    started: Instant,
    waiting: HashSet<(u64, u32)>,
    switches: usize,
}

pub struct App {
    cfg: Config,
    conns: HashMap<ConnId, Conn>,
    by_dpid: HashMap<u64, ConnId>,
    pub tccs: Tccs,
    pub commander: Commander,
    /// Each switch's local ports and their virtual networks, so a broadcast is relayed only
    /// to hosts that have a port in its network.
    members: Members,
    moves: Vec<PendingMove>,
    next_xid: u32,
    /// Times of completed moves (ms), for the log and tests.
    pub move_times_ms: Vec<f64>,
    pub counters: AppCounters,
    /// When a refusal was last logged (a spoofing VM must not flood the log).
    last_refusal_log: Option<Instant>,
    store: Box<dyn Store>,
    role: Role,
    /// The current master's generation id and name, as the election reports it.
    leader: Option<(u64, String)>,
    /// Since when we are master, until our first FLOW_MOD (the takeover time is logged).
    master_since: Option<Instant>,
    /// Set when this controller must stop (see `Event::LeadershipLost`).
    stop: Option<String>,
    /// Questions to switches about their ports and flows, until all are answered.
    reconciler: Reconciler,
    /// Traffic that arrived while a takeover's reconciliation ran, handled after it.
    held: VecDeque<(ConnId, Message)>,
}

/// At most this many messages are held while a takeover reconciles (a switch sends a table
/// miss again with the next frame).
const HELD_MAX: usize = 4096;

/// Up to this many hosts the periodic state report lists each one.
const STATUS_HOST_LIST: usize = 32;

/// Priority of the forwarding entries we install.
const FLOW_PRIORITY: u16 = 100;
/// Cookie marking our flows (so a controller restart recognises them).
const COOKIE: u64 = 0xc10d_0000_0000_0000;

use cloudrack_wire::mac::fmt as fmt_mac;

/// Wall-clock milliseconds, so a test can time a failover across processes from the logs.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn is_multicast(m: &Mac) -> bool {
    m[0] & 1 != 0
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

/// A forwarding entry's (vnet, eth_dst, output port), from a switch's flow stats.
fn forwarding_entry(s: &ofp::FlowStats) -> Option<(u32, Mac, Option<u32>)> {
    let mac = s.match_.eth_dst()?;
    // Networks are 32-bit GRE keys; a wider tunnel id is not one of ours.
    let vnet = u32::try_from(s.match_.tunnel_id().unwrap_or(0)).ok()?;
    let out = s.instructions.iter().find_map(|i| match i {
        Instruction::ApplyActions(a) => a.iter().find_map(|a| match a {
            Action::Output { port, .. } => Some(*port),
            _ => None,
        }),
        _ => None,
    });
    Some((vnet, mac, out))
}

/// A switch's forwarding entry, as its flow stats described it.
struct FlowEntry {
    dpid: u64,
    vnet: u32,
    mac: Mac,
    out: u32,
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

impl App {
    /// A single controller with its state in memory.
    pub fn new(cfg: Config) -> App {
        App::with_store(cfg, Box::new(MemoryStore), Role::Single)
    }

    /// A controller whose registries are also kept in `store`; with `Role::Standby` it waits
    /// for `Event::Elected` before changing anything.
    pub fn with_store(cfg: Config, store: Box<dyn Store>, role: Role) -> App {
        App {
            conns: HashMap::new(),
            by_dpid: HashMap::new(),
            tccs: Tccs::default(),
            commander: Commander::with_limits(cfg.limits),
            members: Members::default(),
            moves: Vec::new(),
            next_xid: 1,
            move_times_ms: Vec::new(),
            counters: AppCounters::default(),
            last_refusal_log: None,
            store,
            role,
            leader: None,
            master_since: None,
            stop: None,
            reconciler: Reconciler::default(),
            held: VecDeque::new(),
            cfg,
        }
    }

    fn is_master(&self) -> bool {
        self.role != Role::Standby
    }

    /// Why this controller must stop, once it must.
    pub fn must_stop(&self) -> Option<&str> {
        self.stop.as_deref()
    }

    /// Tell the store, if we are the one writing.
    fn record(&mut self, change: Change) {
        if self.is_master() {
            self.store.record(change);
        }
    }

    /// Our ROLE_REQUEST for a switch, if roles are in use.
    fn role_request(&self) -> Option<Body> {
        let (role, generation_id) = match (self.role, &self.leader) {
            (Role::Master(g), _) => (ofp::OFPCR_ROLE_MASTER, g),
            (Role::Standby, Some((g, _))) => (ofp::OFPCR_ROLE_SLAVE, *g),
            _ => return None,
        };
        Some(Body::RoleRequest(ofp::RoleMsg { role, generation_id }))
    }

    /// We won the election: load the registries, claim every switch, and ask each for its
    /// ports and flow table: the registry lags the switches (who holds which MAC, and which
    /// ports still exist, is theirs to say; see `reconcile`).
    fn take_over(&mut self, generation: u64) {
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
        let dpids: Vec<u64> = self.by_dpid.keys().copied().collect();
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

    /// Record again everything about one host (its entries expired in the store).
    fn resync(&mut self, dpid: u64) {
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

    /// Ask switches for their ports and their flows; `reconcile` acts once all have answered.
    fn ask_switches(&mut self, dpids: &[u64], why: Occasion) {
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
            let ends: HashSet<u64> = asked.iter().map(|a| a.0).collect();
            let tunnels = self
                .tccs
                .tunnels()
                .filter(|t| ends.contains(&t.a) || ends.contains(&t.b))
                .copied()
                .collect();
            self.reconciler.start(why, asked, tunnels);
        }
    }

    fn xid(&mut self) -> u32 {
        self.next_xid = self.next_xid.wrapping_add(1).max(1);
        self.next_xid
    }

    /// Send to a switch by dpid; false if it is not connected.
    fn send(&mut self, dpid: u64, body: Body) -> bool {
        let xid = self.xid();
        self.send_xid(dpid, xid, body)
    }

    fn send_xid(&self, dpid: u64, xid: u32, body: Body) -> bool {
        let Some(conn) = self.by_dpid.get(&dpid).and_then(|c| self.conns.get(c)) else {
            return false;
        };
        match conn.tx.send(&Message::new(xid, body)) {
            Ok(()) => true,
            // A PACKET_OUT carries the frame of a PACKET_IN plus actions: from a switch that sent
            // a frame near 64 KB it would not fit OpenFlow's length field (found by fuzzing).
            Err(SendError::Encode(e)) => {
                debug!(dpid = format!("{dpid:016x}"), error = %e, "message too large to send; dropped");
                false
            }
            Err(SendError::Full(_)) => {
                warn!(dpid = format!("{dpid:016x}"), "switch is not reading; message dropped");
                false
            }
            Err(SendError::Closed) => false,
        }
    }

    pub fn handle(&mut self, ev: Event) {
        match ev {
            Event::Connected { conn, tx, peer } => {
                debug!(conn, %peer, "switch connected");
                let _ = tx.send(&Message::new(0, Body::hello(&[ofp::OFP_VERSION])));
                let _ = tx.send(&Message::new(1, Body::FeaturesRequest));
                self.conns.insert(conn, Conn { tx, dpid: None, peer });
            }
            Event::Disconnected { conn } => {
                if let Some(c) = self.conns.remove(&conn) {
                    if let Some(dpid) = c.dpid {
                        if self.by_dpid.get(&dpid) == Some(&conn) {
                            self.by_dpid.remove(&dpid);
                            self.record(Change::HostDown { dpid });
                            self.reconciler.disconnected(dpid);
                        }
                        warn!(dpid = format!("{dpid:016x}"), peer = %c.peer, "switch disconnected; its installed flows keep forwarding");
                    }
                }
            }
            Event::Message { conn, msg } => self.message(conn, msg),
            Event::Elected { generation } => self.take_over(generation),
            Event::Leader { generation, name } => {
                info!(generation, master = %name, "master elected");
                self.leader = Some((generation, name));
                if self.role == Role::Standby {
                    // Say so to every switch: it sends us nothing it would send a master.
                    let dpids: Vec<u64> = self.by_dpid.keys().copied().collect();
                    for dpid in dpids {
                        if let Some(req) = self.role_request() {
                            self.send(dpid, req);
                        }
                    }
                }
            }
            Event::LeadershipLost { reason } => {
                error!(%reason, "lost the right to be master; stopping");
                self.stop = Some(reason);
            }
            Event::Resync { dpid } => self.resync(dpid),
        }
        if self.reconciler.pending() > 0 {
            self.finish_reconciliations();
        }
    }

    fn message(&mut self, conn: ConnId, msg: Message) {
        // A new master acts on traffic once it knows what the switches have: before that, it
        // would refuse a VM that moved while nobody was master, or make a tunnel that clashes
        // with one its predecessor made and did not record.
        if self.reconciler.takeover_pending() && acts_on_traffic(&msg.body) {
            if self.held.len() < HELD_MAX {
                self.held.push_back((conn, msg));
            } else {
                self.counters.held_dropped += 1;
            }
            return;
        }
        let dpid = self.conns.get(&conn).and_then(|c| c.dpid);
        match msg.body {
            Body::FeaturesReply { datapath_id, .. } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.dpid = Some(datapath_id);
                }
                if let Some(old) = self.by_dpid.insert(datapath_id, conn) {
                    if old != conn {
                        warn!(
                            dpid = format!("{datapath_id:016x}"),
                            "switch reconnected; replacing its old connection"
                        );
                    }
                }
                let config = ofp::SwitchConfig {
                    flags: 0,
                    miss_send_len: ofp::OFPCML_NO_BUFFER,
                };
                self.send(datapath_id, Body::SetConfig(config));
                if let Some(req) = self.role_request() {
                    self.send(datapath_id, req);
                }
                self.record(Change::HostUp { dpid: datapath_id });
            }
            Body::Experimenter { .. } => match TccsMsg::from_body(&msg.body) {
                Some(Ok(m)) => self.tccs_message(dpid, m),
                Some(Err(e)) => warn!(error = %e, "bad TCCS message"),
                None => debug!("unknown experimenter message"),
            },
            // Only the master acts on traffic; a standby's view is rebuilt when it takes over.
            Body::PacketIn(_) | Body::FlowRemoved(_) if !self.is_master() => {}
            Body::PacketIn(pin) => {
                if let Some(dpid) = dpid {
                    self.packet_in(dpid, &pin);
                }
            }
            Body::FlowRemoved(fr) => {
                let vnet = u32::try_from(fr.match_.tunnel_id().unwrap_or(0));
                if let (Some(dpid), Some(mac), Ok(vnet)) = (dpid, fr.match_.eth_dst(), vnet) {
                    self.commander.removed_from(vnet, mac, dpid);
                }
            }
            // A port going away keeps its MACs' last locations: when the VM shows up on another
            // host (a migration's source tap often vanishes first), that is a move and every
            // holder gets re-pointed; forgetting it would leave them stale.
            Body::PortStatus {
                reason: ofp::OFPPR_DELETE,
                desc,
            } => {
                if let Some(dpid) = dpid {
                    self.port_deleted(dpid, desc.port_no);
                    self.tunnel_port_deleted(dpid, desc.port_no);
                }
                debug!(dpid = ?dpid.map(|d| format!("{d:016x}")), port = desc.port_no, "port deleted");
            }
            Body::MultipartReply { flags, body } => {
                let more = flags & ofp::OFPMPF_REPLY_MORE != 0;
                let ours = match (dpid, body) {
                    (Some(d), MultipartReplyBody::PortDesc(descs)) => self.reconciler.ports(d, msg.xid, &descs, more),
                    (Some(d), MultipartReplyBody::Flow(stats)) => self.reconciler.flows(d, msg.xid, stats, more),
                    _ => false,
                };
                if !ours {
                    debug!(dpid = ?dpid.map(|d| format!("{d:016x}")), xid = msg.xid, "multipart reply we did not wait for; ignored");
                }
            }
            Body::BarrierReply => {
                if let Some(dpid) = dpid {
                    self.barrier_reply(dpid, msg.xid);
                }
            }
            Body::EchoRequest(data) => {
                if let Some(dpid) = dpid {
                    self.send_xid(dpid, msg.xid, Body::EchoReply(data));
                }
            }
            Body::Error { typ, code, .. } => {
                if dpid.is_some_and(|d| self.reconciler.refused(d, msg.xid)) {
                    debug!(dpid = ?dpid.map(|d| format!("{d:016x}")), typ, code, "switch cannot describe its ports or flows; reconciling without them");
                } else {
                    warn!(dpid = ?dpid.map(|d| format!("{d:016x}")), typ, code, xid = msg.xid, "switch reported an OpenFlow error")
                }
            }
            _ => {}
        }
    }

    fn tccs_message(&mut self, dpid: Option<u64>, m: TccsMsg) {
        match m {
            TccsMsg::Register {
                dpid: reg,
                underlay_ip,
                underlay_mac,
            } => {
                if dpid.is_some_and(|d| d != reg) {
                    warn!(features = ?dpid, register = reg, "register names another dpid than the features reply; ignored");
                    return;
                }
                self.tccs.register(reg, underlay_ip, underlay_mac);
                self.record(Change::Host {
                    dpid: reg,
                    underlay_ip,
                    underlay_mac,
                });
                // Its ports follow (PortVnet, PortBinding), all of them.
                self.members.remove_switch(reg);
                self.commander.unbind_switch(reg);
                info!(dpid = format!("{reg:016x}"), %underlay_ip, "host registered");
                // Reconcile with what this switch has (a restarted controller rebuilds from
                // it; ports may have gone while it was away from us); a standby asks when it
                // takes over.
                if self.is_master() {
                    self.ask_switches(&[reg], Occasion::Registration);
                }
            }
            TccsMsg::TunnelReport {
                remote_dpid,
                remote_ip,
                key,
                port_no,
                is_static,
                ..
            } => {
                let Some(dpid) = dpid else { return };
                if is_static {
                    self.tccs.static_ports.insert((dpid, port_no), key);
                } else {
                    let remote = if remote_dpid != 0 {
                        Some(remote_dpid)
                    } else {
                        self.tccs.host_by_ip(remote_ip).map(|h| h.dpid)
                    };
                    if let Some(r) = remote {
                        self.tccs.report(dpid, r, port_no, key);
                        if let Some(t) = self
                            .tccs
                            .by_port(dpid, port_no)
                            .filter(|t| t.port_a != 0 && t.port_b != 0)
                        {
                            self.record(Change::Tunnel(t));
                        }
                    }
                }
            }
            TccsMsg::TunnelIdle { .. } | TccsMsg::MigrationNotify { .. } if !self.is_master() => {}
            TccsMsg::TunnelIdle { port_no, idle_ms, .. } => {
                let Some(dpid) = dpid else { return };
                if let Some(t) = self.tccs.by_port(dpid, port_no) {
                    info!(
                        a = format!("{:016x}", t.a),
                        b = format!("{:016x}", t.b),
                        key = t.key,
                        idle_ms,
                        "releasing idle tunnel on both ends"
                    );
                    self.release_tunnel(&t);
                }
            }
            TccsMsg::PortVnet { port_no, vnet } => {
                if let Some(dpid) = dpid {
                    self.members.set(dpid, port_no, vnet);
                }
            }
            TccsMsg::PortBinding {
                port_no,
                vnet,
                mac,
                bound,
            } => {
                let Some(dpid) = dpid else { return };
                let at = Location { dpid, port: port_no };
                if bound {
                    if self.commander.bind(vnet, mac, at) {
                        self.counters.bindings_declared += 1;
                        debug!(
                            dpid = format!("{dpid:016x}"),
                            port = port_no,
                            vnet,
                            mac = fmt_mac(&mac),
                            "port bound to VM"
                        );
                    }
                } else {
                    self.commander.unbind(vnet, mac, at);
                    info!(
                        dpid = format!("{dpid:016x}"),
                        port = port_no,
                        vnet,
                        mac = fmt_mac(&mac),
                        "port binding released"
                    );
                }
            }
            TccsMsg::MigrationNotify {
                vnet,
                mac,
                dst_dpid,
                phase,
                dst_port,
            } => {
                if dpid.is_some_and(|d| d != dst_dpid) {
                    warn!(from = ?dpid, dst_dpid, "migration notice about another switch's port; ignored");
                    return;
                }
                if dst_port == 0 || !self.tccs.hosts.contains_key(&dst_dpid) {
                    warn!(
                        dst_dpid,
                        dst_port, "migration notice without a known destination port; ignored"
                    );
                    return;
                }
                info!(
                    vnet,
                    mac = fmt_mac(&mac),
                    dst = format!("{dst_dpid:016x}"),
                    dst_port,
                    phase,
                    "migration notice: pointing every switch at the destination"
                );
                self.learn(dst_dpid, dst_port, vnet, mac);
            }
            other => debug!(?other, "TCCS message not handled"),
        }
    }

    fn release_tunnel(&mut self, t: &TunnelPair) {
        for (dpid, port) in [(t.a, t.port_a), (t.b, t.port_b)] {
            let other = if dpid == t.a { t.b } else { t.a };
            let remote_ip = self
                .tccs
                .hosts
                .get(&other)
                .map(|h| h.underlay_ip)
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
            self.send(
                dpid,
                TccsMsg::TunnelDel {
                    remote_ip,
                    key: t.key,
                    port_no: port,
                }
                .to_body(),
            );
        }
        self.tccs.remove(t);
        self.record(Change::TunnelGone(*t));
    }

    /// A port is gone from a switch: it leaves its network, its bindings go, and the MACs
    /// located at it are released (recorded, so a master taking over knows). Returns them.
    fn port_deleted(&mut self, dpid: u64, port: u32) -> Vec<(u32, Mac)> {
        self.members.remove_port(dpid, port);
        let at = Location { dpid, port };
        let released = self.commander.port_gone(at);
        for &(vnet, mac) in &released {
            self.counters.macs_released += 1;
            self.record(Change::LocationReleased { vnet, mac, at });
        }
        released
    }

    /// A tunnel's end is gone from a switch (deleted by hand, or released by the master while
    /// we stood by): forget the tunnel, so a takeover does not send flows into it, and delete
    /// its other end. (A tunnel we released ourselves is forgotten already.)
    fn tunnel_port_deleted(&mut self, dpid: u64, port: u32) {
        let Some(t) = self.tccs.by_port(dpid, port) else { return };
        self.tccs.remove(&t);
        self.record(Change::TunnelGone(t));
        let (other, other_port) = if t.a == dpid { (t.b, t.port_b) } else { (t.a, t.port_a) };
        let remote_ip = self.tccs.hosts.get(&dpid).map(|h| h.underlay_ip);
        if let (true, Some(remote_ip), true) = (self.is_master(), remote_ip, other_port != 0) {
            let del = TccsMsg::TunnelDel {
                remote_ip,
                key: t.key,
                port_no: other_port,
            };
            self.send(other, del.to_body());
        }
    }

    fn finish_reconciliations(&mut self) {
        for round in self.reconciler.finished(Instant::now()) {
            self.reconcile(round);
        }
        if !self.reconciler.takeover_pending() {
            while let Some((conn, msg)) = self.held.pop_front() {
                self.message(conn, msg);
            }
        }
    }

    /// Make the registry and the switches agree, from what they answered (their ports and
    /// flows). Each step sees what the ones before changed.
    fn reconcile(&mut self, round: Finished) {
        let mut n = ReconcileTally::default();
        self.reconcile_tunnels(&round, &mut n);
        let entries = self.read_flows(&round, &mut n);
        let released = self.release_gone_ports(&round, &mut n);
        self.place_from_local_flows(&entries, &mut n);
        let mut lost: HashSet<(u32, Mac)> = released.into_iter().collect();
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
                let Some(port) = t.port_on(*dpid).filter(|p| *p != 0) else {
                    continue;
                };
                if ports.contains(&port) || self.tccs.between(t.a, t.b, t.key) != Some(*t) {
                    continue;
                }
                self.tunnel_port_deleted(*dpid, port);
                n.tunnels_forgotten += 1;
            }
            let controllers = FIRST_TUNNEL_PORT..=LAST_TUNNEL_PORT;
            let unknown: Vec<u32> = ports
                .iter()
                .copied()
                .filter(|p| controllers.contains(p) && !self.tccs.is_tunnel_port(*dpid, *p))
                .collect();
            for port_no in unknown {
                warn!(
                    dpid = format!("{dpid:016x}"),
                    port = port_no,
                    "a tunnel the registry does not know (its master died before recording it); deleted"
                );
                let del = TccsMsg::TunnelDel {
                    remote_ip: std::net::Ipv4Addr::UNSPECIFIED,
                    key: 0,
                    port_no,
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
    fn release_gone_ports(&mut self, round: &Finished, n: &mut ReconcileTally) -> Vec<(u32, Mac)> {
        let mut released = Vec::new();
        for (dpid, answer) in &round.answers {
            let Some(ports) = &answer.ports else { continue };
            let mut known: HashSet<u32> = self.commander.ports_with_live_macs(*dpid).into_iter().collect();
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
                        port = e.out,
                        vnet = e.vnet,
                        mac = fmt_mac(&e.mac),
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
    fn unhook_lost_macs(&mut self, lost: HashSet<(u32, Mac)>, n: &mut ReconcileTally) {
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
        let answered: HashSet<u64> = round.answers.iter().map(|(d, _)| *d).collect();
        let is_local = |e: &FlowEntry| e.out < FIRST_TUNNEL_PORT && !self.tccs.is_tunnel_port(e.dpid, e.out);
        let delivered: HashSet<(u64, u32, Mac)> = entries
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

    /// Delete the flow for (vnet, mac) on `dpid` if it still leads to `out` (it may have been
    /// re-pointed since the switch described it).
    fn flow_delete(&mut self, dpid: u64, vnet: u32, mac: Mac, out: u32, priority: u16) {
        let fm = ofp::FlowMod {
            cookie: 0,
            cookie_mask: 0,
            table_id: 0,
            command: ofp::OFPFC_DELETE_STRICT,
            idle_timeout: 0,
            hard_timeout: 0,
            priority,
            buffer_id: ofp::OFP_NO_BUFFER,
            out_port: out,
            out_group: ofp::OFPG_ANY,
            flags: 0,
            match_: Match::new()
                .with(Oxm::TunnelId {
                    id: vnet as u64,
                    mask: None,
                })
                .with(Oxm::EthDst { mac, mask: None }),
            instructions: Vec::new(),
        };
        self.send(dpid, Body::FlowMod(fm));
    }

    fn flow_add(&mut self, dpid: u64, vnet: u32, mac: Mac, out_port: u32, idle: u16) {
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
                    id: vnet as u64,
                    mask: None,
                })
                .with(Oxm::EthDst { mac, mask: None }),
            instructions: vec![Instruction::ApplyActions(vec![Action::output(out_port)])],
        };
        if self.send(dpid, Body::FlowMod(fm)) {
            self.commander.installed_on(vnet, mac, dpid);
            if let Some(since) = self.master_since.take() {
                info!(
                    since_elected_ms = format!("{:.1}", since.elapsed().as_secs_f64() * 1000.0),
                    unix_ms = unix_ms(),
                    dpid = format!("{dpid:016x}"),
                    "first FLOW_MOD as master"
                );
            }
        }
    }

    fn packet_out(&mut self, dpid: u64, vnet: u32, out: u32, data: &[u8]) {
        let po = ofp::PacketOut {
            buffer_id: ofp::OFP_NO_BUFFER,
            in_port: ofp::OFPP_CONTROLLER,
            actions: vec![
                Action::SetField(Oxm::TunnelId {
                    id: vnet as u64,
                    mask: None,
                }),
                Action::output(out),
            ],
            data: data.to_vec(),
        };
        self.send(dpid, Body::PacketOut(po));
    }

    /// The port on `from` that leads to `to` for `vnet`, bringing the tunnel up if needed.
    fn tunnel_port(&mut self, from: u64, to: u64, vnet: u32) -> Option<u32> {
        let t = match self.tccs.ensure_tunnel(from, to, vnet)? {
            Ensure::Exists(t) => t,
            Ensure::Created(t) => {
                let idle = self.cfg.tunnel_idle.as_secs().max(1) as u32;
                for (end, port, other) in [(t.a, t.port_a, t.b), (t.b, t.port_b, t.a)] {
                    let remote_ip = self.tccs.hosts[&other].underlay_ip;
                    let msg = TccsMsg::TunnelAdd {
                        remote_dpid: other,
                        remote_ip,
                        key: vnet,
                        port_no: port,
                        idle_timeout_s: idle,
                    };
                    self.send(end, msg.to_body());
                }
                info!(
                    a = format!("{:016x}", t.a),
                    b = format!("{:016x}", t.b),
                    key = vnet,
                    "tunnel brought up"
                );
                self.record(Change::Tunnel(t));
                t
            }
        };
        t.port_on(from)
    }

    /// Where `dpid` should send frames for a MAC at `loc`.
    fn route(&mut self, dpid: u64, vnet: u32, loc: Location) -> Option<u32> {
        if loc.dpid == dpid {
            Some(loc.port)
        } else {
            self.tunnel_port(dpid, loc.dpid, vnet)
        }
    }

    fn packet_in(&mut self, dpid: u64, pin: &ofp::PacketIn) {
        let Some(in_port) = pin.match_.in_port() else { return };
        // Networks are 32-bit GRE keys; a wider tunnel id is not one of ours.
        let Ok(vnet) = u32::try_from(pin.match_.tunnel_id().unwrap_or(0)) else {
            return;
        };
        if pin.data.len() < 14 {
            return;
        }
        let dst: Mac = pin.data[0..6].try_into().unwrap_or([0; 6]);
        let src: Mac = pin.data[6..12].try_into().unwrap_or([0; 6]);
        self.counters.packet_ins += 1;
        if self.tccs.is_tunnel_port(dpid, in_port) {
            // Frames from controller-made tunnels teach nothing: their senders are known.
            return;
        }
        // A frame whose sender may not be here (spoofed, or its port is full) goes no further.
        if !is_multicast(&src) && !self.learn(dpid, in_port, vnet, src) {
            return;
        }
        if is_multicast(&dst) {
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

    fn idle_for(&self, dpid: u64, loc: Location) -> u16 {
        if loc.dpid == dpid {
            0
        } else {
            self.cfg.flow_idle_s
        }
    }

    fn packet_out_flood(&mut self, dpid: u64, vnet: u32, in_port: Option<u32>, data: &[u8]) {
        let po = ofp::PacketOut {
            buffer_id: ofp::OFP_NO_BUFFER,
            in_port: in_port.unwrap_or(ofp::OFPP_CONTROLLER),
            actions: vec![
                Action::SetField(Oxm::TunnelId {
                    id: vnet as u64,
                    mask: None,
                }),
                Action::output(ofp::OFPP_FLOOD),
            ],
            data: data.to_vec(),
        };
        self.send(dpid, Body::PacketOut(po));
    }

    /// Carry a broadcast to every other connected host with a port (or a static tunnel) in its
    /// network; each floods it to its local ports only.
    fn relay_flood(&mut self, origin: u64, vnet: u32, data: &[u8]) {
        let mut others: HashSet<u64> = self.members.hosts_in(vnet).collect();
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
    fn learn(&mut self, dpid: u64, port: u32, vnet: u32, mac: Mac) -> bool {
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
                        port,
                        vnet,
                        mac = fmt_mac(&mac),
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
                    port,
                    vnet,
                    mac = fmt_mac(&mac),
                    "learned"
                );
                self.flow_add(dpid, vnet, mac, port, 0);
            }
            Learned::Moved { from } => {
                let started = Instant::now();
                info!(
                    vnet,
                    mac = fmt_mac(&mac),
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

    fn barrier_reply(&mut self, dpid: u64, xid: u32) {
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
                vnet = m.vnet,
                mac = fmt_mac(&m.mac),
                switches = m.switches,
                move_repointed_ms = format!("{ms:.3}"),
                "MAC move re-pointed on every switch"
            );
        }
    }

    /// Periodic work: forget moves whose switches never answered; reconcile without switches
    /// that did not answer in time.
    pub fn tick(&mut self) {
        self.moves.retain(|m| {
            let stale = m.started.elapsed() > Duration::from_secs(10);
            if stale {
                warn!(mac = fmt_mac(&m.mac), "move not confirmed by every switch within 10 s");
            }
            !stale
        });
        if self.reconciler.pending() > 0 {
            self.finish_reconciliations();
        }
    }

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

    fn host_list(&self) -> serde_json::Value {
        let mut hosts: Vec<serde_json::Value> = self
            .tccs
            .hosts
            .values()
            .map(|h| {
                serde_json::json!({
                    "dpid": format!("{:016x}", h.dpid),
                    "underlay_ip": h.underlay_ip,
                    "underlay_mac": fmt_mac(&h.underlay_mac),
                    "connected": self.by_dpid.contains_key(&h.dpid),
                })
            })
            .collect();
        hosts.sort_by(|a, b| a["dpid"].as_str().cmp(&b["dpid"].as_str()));
        serde_json::Value::Array(hosts)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::store::LocationRecord;
    use std::net::Ipv4Addr;

    const VM_A: Mac = [2, 0, 0, 0, 0, 0xa];
    const VM_M: Mac = [2, 0, 0, 0, 0, 0xb];

    struct Rig {
        app: App,
        rx: Vec<ConnTx>,
    }

    /// An app with `n` registered switches, dpids 1..=n on connections 1..=n.
    fn config() -> Config {
        Config {
            tunnel_idle: Duration::from_secs(60),
            flow_idle_s: 300,
            limits: Limits::default(),
        }
    }

    fn rig(n: u64) -> Rig {
        rig_with(App::new(config()), n)
    }

    /// `n` registered switches on `app`.
    fn rig_with(mut app: App, n: u64) -> Rig {
        let mut rx = Vec::new();
        for d in 1..=n {
            let tx = ConnTx::capture(d);
            let r = tx.clone();
            let peer = std::net::SocketAddr::from(([198, 18, 0, d as u8], 1000));
            app.handle(Event::Connected { conn: d, tx, peer });
            let features = Body::FeaturesReply {
                datapath_id: d,
                n_buffers: 0,
                n_tables: 1,
                auxiliary_id: 0,
                capabilities: 0,
                reserved: 0,
            };
            app.handle(Event::Message {
                conn: d,
                msg: Message::new(1, features),
            });
            let reg = TccsMsg::Register {
                dpid: d,
                underlay_ip: Ipv4Addr::new(198, 18, 0, d as u8),
                underlay_mac: [2, 0, 0, 0, 1, d as u8],
            };
            app.handle(Event::Message {
                conn: d,
                msg: Message::new(2, reg.to_body()),
            });
            rx.push(r);
        }
        let mut r = Rig { app, rx };
        r.drain_all();
        r
    }

    impl Rig {
        fn bind(&mut self, dpid: u64, port_no: u32, mac: Mac) {
            let b = TccsMsg::PortBinding {
                port_no,
                vnet: 0,
                mac,
                bound: true,
            };
            self.app.handle(Event::Message {
                conn: dpid,
                msg: Message::new(6, b.to_body()),
            });
        }
        fn drain(&self, dpid: u64) -> Vec<Body> {
            self.rx[dpid as usize - 1]
                .take_messages()
                .into_iter()
                .map(|m| m.body)
                .collect()
        }
        fn drain_all(&mut self) {
            for d in 1..=self.rx.len() as u64 {
                self.drain(d);
            }
        }
        fn packet_in(&mut self, dpid: u64, in_port: u32, dst: Mac, src: Mac) {
            let mut data = dst.to_vec();
            data.extend_from_slice(&src);
            data.extend_from_slice(&[0x08, 0x00]);
            data.resize(60, 0);
            let pin = ofp::PacketIn {
                buffer_id: ofp::OFP_NO_BUFFER,
                total_len: 60,
                reason: ofp::OFPR_NO_MATCH,
                table_id: 0,
                cookie: 0,
                match_: Match::new()
                    .with(Oxm::InPort(in_port))
                    .with(Oxm::TunnelId { id: 0, mask: None }),
                data,
            };
            self.app.handle(Event::Message {
                conn: dpid,
                msg: Message::new(3, Body::PacketIn(pin)),
            });
        }
    }

    /// (eth_dst, output port) of every FLOW_MOD ADD in `bodies`.
    fn flows(bodies: &[Body]) -> Vec<(Mac, u32)> {
        bodies
            .iter()
            .filter_map(|b| match b {
                Body::FlowMod(fm) => match fm.instructions.first() {
                    Some(Instruction::ApplyActions(a)) => match a.first() {
                        Some(Action::Output { port, .. }) => Some((fm.match_.eth_dst()?, *port)),
                        _ => None,
                    },
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    fn tunnel_adds(bodies: &[Body]) -> Vec<(Ipv4Addr, u32)> {
        bodies
            .iter()
            .filter_map(|b| match TccsMsg::from_body(b) {
                Some(Ok(TccsMsg::TunnelAdd { remote_ip, port_no, .. })) => Some((remote_ip, port_no)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn first_packet_brings_up_a_tunnel_and_flows_on_both_ends() {
        let mut r = rig(2);
        r.packet_in(2, 5, [0xff; 6], VM_M); // M announces itself on host 2, port 5
        r.drain_all();
        r.packet_in(1, 1, VM_M, VM_A); // A (host 1, port 1) sends to M
        let h1 = r.drain(1);
        let h2 = r.drain(2);
        let t1 = tunnel_adds(&h1);
        let t2 = tunnel_adds(&h2);
        assert_eq!(t1.len(), 1, "{h1:?}");
        assert_eq!(t2.len(), 1, "{h2:?}");
        assert_eq!(t1[0].0, Ipv4Addr::new(198, 18, 0, 2));
        assert!(
            flows(&h1).contains(&(VM_M, t1[0].1)),
            "host 1 forwards to M through its tunnel"
        );
        assert!(
            flows(&h2).contains(&(VM_A, t2[0].1)),
            "host 2 forwards replies to A through its tunnel"
        );
        assert!(flows(&h2).contains(&(VM_M, 5)), "host 2 delivers to M locally");
        // The first frame itself is delivered by PACKET_OUT at M's host.
        assert!(h2
            .iter()
            .any(|b| matches!(b, Body::PacketOut(po) if po.actions.contains(&Action::output(5)))));
    }

    #[test]
    fn a_migration_notice_repoints_every_holder_and_the_old_host() {
        let mut r = rig(3);
        r.packet_in(2, 5, [0xff; 6], VM_M);
        r.packet_in(1, 1, VM_M, VM_A);
        r.drain_all();
        // The destination (host 3, port 9) declared the VM, and announces it at the source's STOP.
        r.bind(3, 9, VM_M);
        let notice = TccsMsg::MigrationNotify {
            vnet: 0,
            mac: VM_M,
            dst_dpid: 3,
            phase: cloudrack_wire::tccs::MIGRATION_STOPPED,
            dst_port: 9,
        };
        r.app.handle(Event::Message {
            conn: 3,
            msg: Message::new(4, notice.to_body()),
        });
        let (h1, h2, h3) = (r.drain(1), r.drain(2), r.drain(3));
        assert!(flows(&h3).contains(&(VM_M, 9)), "destination delivers locally: {h3:?}");
        let to3 = |bodies: &[Body]| {
            tunnel_adds(bodies)
                .iter()
                .find(|(ip, _)| *ip == Ipv4Addr::new(198, 18, 0, 3))
                .map(|t| t.1)
        };
        let p1 = to3(&h1).expect("host 1 gets a tunnel to host 3");
        let p2 = to3(&h2).expect("the old host gets a tunnel to host 3");
        assert!(flows(&h1).contains(&(VM_M, p1)), "{h1:?}");
        assert!(flows(&h2).contains(&(VM_M, p2)), "{h2:?}");
        assert_eq!(r.app.commander.locate(0, &VM_M), Some(Location { dpid: 3, port: 9 }));
        // Every switch answers the barrier: the move is complete and timed.
        for (d, bodies) in [(1u64, &h1), (2, &h2), (3, &h3)] {
            assert!(
                bodies.iter().any(|b| matches!(b, Body::BarrierRequest)),
                "no barrier to {d}"
            );
        }
        assert!(r.app.move_times_ms.is_empty());
        let xids: Vec<(u64, u32)> = r.app.moves[0].waiting.iter().copied().collect();
        for (d, xid) in xids {
            r.app.handle(Event::Message {
                conn: d,
                msg: Message::new(xid, Body::BarrierReply),
            });
        }
        assert_eq!(r.app.move_times_ms.len(), 1);
        // The VM's own announce afterwards changes nothing.
        r.packet_in(3, 9, [0xff; 6], VM_M);
        assert!(flows(&r.drain(1)).is_empty());
    }

    #[test]
    fn a_spoofed_mac_steals_nothing_and_goes_nowhere() {
        let mut r = rig(3);
        r.packet_in(2, 5, [0xff; 6], VM_M);
        r.packet_in(1, 1, VM_M, VM_A);
        r.drain_all();
        // Host 3's port 7 is not bound to M: its gratuitous ARP, and a unicast, with M's MAC.
        r.packet_in(3, 7, [0xff; 6], VM_M);
        r.packet_in(3, 7, VM_A, VM_M);
        let (h1, h2, h3) = (r.drain(1), r.drain(2), r.drain(3));
        assert_eq!(r.app.commander.locate(0, &VM_M), Some(Location { dpid: 2, port: 5 }));
        for (d, bodies) in [(1, &h1), (2, &h2), (3, &h3)] {
            assert!(bodies.is_empty(), "host {d} was told something: {bodies:?}");
        }
        assert_eq!(r.app.counters.moves_refused, 2);
        // Bound, the same port takes it over (a migration's destination).
        r.bind(3, 7, VM_M);
        r.packet_in(3, 7, [0xff; 6], VM_M);
        assert_eq!(r.app.commander.locate(0, &VM_M), Some(Location { dpid: 3, port: 7 }));
        assert!(!flows(&r.drain(1)).is_empty(), "the holder was re-pointed");
    }

    #[test]
    fn a_port_inventing_macs_is_capped() {
        let mut r = rig(2);
        r.app.commander.limits.macs_per_port = 10;
        for i in 0..1000u32 {
            let b = i.to_be_bytes();
            r.packet_in(1, 1, [0xff; 6], [2, 0xee, b[0], b[1], b[2], b[3]]);
        }
        assert_eq!(r.app.commander.len(), 10);
        assert_eq!(r.app.counters.macs_refused_full, 990);
        // Other ports still learn.
        r.packet_in(2, 5, [0xff; 6], VM_M);
        assert_eq!(r.app.commander.locate(0, &VM_M), Some(Location { dpid: 2, port: 5 }));
    }

    #[test]
    fn broadcasts_are_relayed_only_to_hosts_in_the_network() {
        let mut r = rig(3);
        for (d, vnet) in [(2u64, 0u32), (3, 7)] {
            let pv = TccsMsg::PortVnet { port_no: 1, vnet };
            r.app.handle(Event::Message {
                conn: d,
                msg: Message::new(5, pv.to_body()),
            });
        }
        r.packet_in(1, 1, [0xff; 6], VM_A);
        let relayed = |bodies: Vec<Body>| bodies.iter().any(|b| matches!(b, Body::PacketOut(_)));
        assert!(relayed(r.drain(2)), "host 2 has a port in network 0");
        assert!(!relayed(r.drain(3)), "host 3 has none");
    }

    #[test]
    fn a_notice_from_another_switch_is_ignored() {
        let mut r = rig(3);
        r.packet_in(2, 5, [0xff; 6], VM_M);
        let notice = TccsMsg::MigrationNotify {
            vnet: 0,
            mac: VM_M,
            dst_dpid: 3,
            phase: 2,
            dst_port: 9,
        };
        r.app.handle(Event::Message {
            conn: 1,
            msg: Message::new(4, notice.to_body()),
        });
        assert_eq!(r.app.commander.locate(0, &VM_M), Some(Location { dpid: 2, port: 5 }));
    }

    /// A store that hands out a fixed snapshot and keeps what it was told.
    struct FixedStore {
        snapshot: Snapshot,
        changes: std::sync::Arc<std::sync::Mutex<Vec<Change>>>,
    }

    impl Store for FixedStore {
        fn record(&mut self, change: Change) {
            self.changes.lock().unwrap().push(change);
        }
        fn load(&mut self) -> Result<Snapshot, crate::store::StoreError> {
            Ok(self.snapshot.clone())
        }
        fn status(&self) -> serde_json::Value {
            serde_json::json!({ "backend": "fixed" })
        }
    }

    /// Whether `bodies` hold a ROLE_REQUEST for `role` with `generation`.
    fn asks_role(bodies: &[Body], role: u32, generation: u64) -> bool {
        bodies
            .iter()
            .any(|b| matches!(b, Body::RoleRequest(rr) if rr.role == role && rr.generation_id == generation))
    }

    #[test]
    fn a_standby_changes_nothing_until_elected_then_takes_over_from_the_store() {
        let changes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let m_at = Location { dpid: 2, port: 5 };
        let store = FixedStore {
            snapshot: Snapshot {
                locations: vec![LocationRecord {
                    vnet: 0,
                    mac: VM_M,
                    at: m_at,
                    port_gone: false,
                }],
                ..Default::default()
            },
            changes: changes.clone(),
        };
        let mut r = rig_with(App::with_store(config(), Box::new(store), Role::Standby), 2);
        r.app.handle(Event::Leader {
            generation: 41,
            name: "other".into(),
        });
        // Told who is master, a standby declares itself SLAVE with that generation.
        for d in 1..=2 {
            let bodies = r.drain(d);
            assert!(asks_role(&bodies, ofp::OFPCR_ROLE_SLAVE, 41), "{bodies:?}");
        }
        // Traffic reaches a standby only by mistake: it acts on none of it and writes nothing.
        r.packet_in(1, 1, VM_M, VM_A);
        assert!(r.drain(1).is_empty() && r.drain(2).is_empty());
        assert!(changes.lock().unwrap().is_empty(), "a standby wrote to the store");
        assert_eq!(r.app.commander.locate(0, &VM_A), None);

        r.app.handle(Event::Elected { generation: 42 });
        let mut asked = Vec::new();
        for d in 1..=2 {
            let msgs = r.rx[d - 1].take_messages();
            let bodies: Vec<Body> = msgs.iter().map(|m| m.body.clone()).collect();
            assert!(
                asks_role(&bodies, ofp::OFPCR_ROLE_MASTER, 42),
                "no MASTER request to {d}: {bodies:?}"
            );
            asked.push(questions(&msgs));
        }
        assert_eq!(
            r.app.commander.locate(0, &VM_M),
            Some(m_at),
            "location loaded from the store"
        );
        // The first frame to the VM the store knew goes straight there once the switches
        // have said what they have: no flood.
        r.packet_in(1, 1, VM_M, VM_A);
        assert!(r.drain(2).is_empty(), "acted on traffic before reconciling");
        r.answer(1, asked[0], &[1], &[]);
        r.answer(2, asked[1], &[5], &[]);
        assert_eq!(r.app.counters.unknown_destinations, 0);
        assert!(flows(&r.drain(2)).contains(&(VM_M, 5)));
        let changes = changes.lock().unwrap();
        assert!(changes.iter().any(|c| matches!(c, Change::Host { dpid: 1, .. })));
        assert!(changes.iter().any(|c| matches!(c, Change::HostUp { dpid: 2 })));
        assert!(changes
            .iter()
            .any(|c| matches!(c, Change::Location { mac, at, .. } if *mac == VM_A && at.dpid == 1)));
        assert!(changes.iter().any(|c| matches!(c, Change::Tunnel(_))));
    }

    #[test]
    fn losing_the_election_lease_stops_the_controller() {
        let mut r = rig_with(App::with_store(config(), Box::new(MemoryStore), Role::Standby), 1);
        assert!(r.app.must_stop().is_none());
        r.app.handle(Event::Elected { generation: 1 });
        r.app.handle(Event::LeadershipLost {
            reason: "lease expired".into(),
        });
        assert_eq!(r.app.must_stop(), Some("lease expired"));
    }

    const VM_X: Mac = [2, 0, 0, 0, 0, 0xc];
    /// The controller's first tunnel port on each host.
    const T: u32 = FIRST_TUNNEL_PORT;

    /// A standby with three switches whose store holds `locations` and tunnels 1-2 and 1-3
    /// (each on port T, T + 1 of its ends), elected; and each switch's questions (xids).
    fn taken_over(locations: Vec<LocationRecord>) -> (Rig, Recorded, Vec<(u32, u32)>) {
        let changes = Arc::new(Mutex::new(Vec::new()));
        let tunnel = |b: u64, port: u32| TunnelPair {
            a: 1,
            port_a: port,
            b,
            port_b: T,
            key: 0,
        };
        let store = FixedStore {
            snapshot: Snapshot {
                tunnels: vec![tunnel(2, T), tunnel(3, T + 1)],
                locations,
                ..Default::default()
            },
            changes: changes.clone(),
        };
        let mut r = rig_with(App::with_store(config(), Box::new(store), Role::Standby), 3);
        r.app.handle(Event::Elected { generation: 7 });
        let asked = (1..=3)
            .map(|d| questions(&r.rx[d as usize - 1].take_messages()))
            .collect();
        changes.lock().unwrap().clear();
        (r, changes, asked)
    }

    fn at(dpid: u64, port: u32) -> LocationRecord {
        LocationRecord {
            vnet: 0,
            mac: VM_M,
            at: Location { dpid, port },
            port_gone: false,
        }
    }

    use std::sync::{Arc, Mutex};

    /// What the app told its store.
    type Recorded = Arc<Mutex<Vec<Change>>>;

    /// The xids of the PORT_DESC and flow stats requests among `msgs`.
    fn questions(msgs: &[Message]) -> (u32, u32) {
        let xid = |want_ports: bool| {
            msgs.iter()
                .find_map(|m| match &m.body {
                    Body::MultipartRequest {
                        body: MultipartRequestBody::PortDesc,
                        ..
                    } if want_ports => Some(m.xid),
                    Body::MultipartRequest {
                        body: MultipartRequestBody::Flow(_),
                        ..
                    } if !want_ports => Some(m.xid),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("no {} request in {msgs:?}", if want_ports { "port" } else { "flow" }))
        };
        (xid(true), xid(false))
    }

    fn flow_stats(mac: Mac, out: u32) -> ofp::FlowStats {
        ofp::FlowStats {
            table_id: 0,
            duration_sec: 1,
            duration_nsec: 0,
            priority: FLOW_PRIORITY,
            idle_timeout: 0,
            hard_timeout: 0,
            flags: 0,
            cookie: COOKIE,
            packet_count: 0,
            byte_count: 0,
            match_: Match::new()
                .with(Oxm::TunnelId { id: 0, mask: None })
                .with(Oxm::EthDst { mac, mask: None }),
            instructions: vec![Instruction::ApplyActions(vec![Action::output(out)])],
        }
    }

    impl Rig {
        /// Switch `dpid` answers its questions: these ports, these (eth_dst, output) flows.
        fn answer(&mut self, dpid: u64, (ports_xid, flows_xid): (u32, u32), ports: &[u32], flows: &[(Mac, u32)]) {
            let descs = ports.iter().map(|p| ofp::PortDesc::live(*p, [2; 6], "p")).collect();
            let replies = [
                (ports_xid, MultipartReplyBody::PortDesc(descs)),
                (
                    flows_xid,
                    MultipartReplyBody::Flow(flows.iter().map(|(m, o)| flow_stats(*m, *o)).collect()),
                ),
            ];
            for (xid, body) in replies {
                self.app.handle(Event::Message {
                    conn: dpid,
                    msg: Message::new(xid, Body::MultipartReply { flags: 0, body }),
                });
            }
        }
    }

    /// (eth_dst, out_port) of every FLOW_MOD DELETE_STRICT in `bodies`.
    fn deletes(bodies: &[Body]) -> Vec<(Mac, u32)> {
        bodies
            .iter()
            .filter_map(|b| match b {
                Body::FlowMod(fm) if fm.command == ofp::OFPFC_DELETE_STRICT => {
                    Some((fm.match_.eth_dst()?, fm.out_port))
                }
                _ => None,
            })
            .collect()
    }

    /// The scenario of issue 14: M's port on host 2 was deleted while nobody was master, M
    /// moved to host 3 and its announcement was lost. The new master loads M at host 2.
    #[test]
    fn a_takeover_releases_macs_whose_port_is_gone_and_finds_the_vm_again() {
        let (mut r, changes, asked) = taken_over(vec![at(2, 5)]);
        // Nothing is concluded until every switch has answered.
        r.answer(1, asked[0], &[1, T, T + 1], &[(VM_M, T), (VM_A, 1)]);
        r.answer(2, asked[1], &[T], &[(VM_A, T)]);
        assert!(!r.app.commander.released(0, &VM_M));
        r.answer(3, asked[2], &[9, T], &[]);
        assert!(r.app.commander.released(0, &VM_M), "port 5 of host 2 is gone");
        assert!(changes.lock().unwrap().contains(&Change::LocationReleased {
            vnet: 0,
            mac: VM_M,
            at: Location { dpid: 2, port: 5 },
        }));
        assert_eq!(r.app.counters.macs_released, 1);
        assert_eq!(r.app.commander.locate(0, &VM_A), Some(Location { dpid: 1, port: 1 }));
        // Host 1's flow to M leads into host 2's void: deleted, so its traffic comes to us.
        assert_eq!(deletes(&r.drain(1)), vec![(VM_M, T)]);
        r.packet_in(1, 1, VM_M, VM_A);
        assert_eq!(r.app.counters.unknown_destinations, 1, "flooded to find M");
        let floods = |bodies: Vec<Body>| {
            bodies
                .iter()
                .any(|b| matches!(b, Body::PacketOut(po) if po.actions.contains(&Action::output(ofp::OFPP_FLOOD))))
        };
        r.app.handle(Event::Message {
            conn: 3,
            msg: Message::new(5, TccsMsg::PortVnet { port_no: 9, vnet: 0 }.to_body()),
        });
        r.packet_in(1, 1, VM_M, VM_A);
        assert!(floods(r.drain(3)), "host 3 floods it to its ports");
        // M answers from its new port, unbound: taken as the move it is, not refused.
        r.packet_in(3, 9, VM_A, VM_M);
        assert_eq!(r.app.counters.moves_refused, 0);
        assert_eq!(r.app.commander.locate(0, &VM_M), Some(Location { dpid: 3, port: 9 }));
        assert!(!r.app.commander.released(0, &VM_M));
        assert!(flows(&r.drain(3)).contains(&(VM_M, 9)));
    }

    /// The dead master saw M move to host 3 and re-pointed the switches; the store still says
    /// host 2, whose port is gone. The switches are right.
    #[test]
    fn a_takeover_takes_a_move_the_store_missed_from_the_switches() {
        let (mut r, changes, asked) = taken_over(vec![at(2, 5)]);
        r.answer(1, asked[0], &[1, T, T + 1], &[(VM_M, T + 1)]);
        r.answer(2, asked[1], &[T], &[]);
        r.answer(3, asked[2], &[9, T], &[(VM_M, 9)]);
        assert_eq!(r.app.commander.locate(0, &VM_M), Some(Location { dpid: 3, port: 9 }));
        assert!(!r.app.commander.released(0, &VM_M));
        assert!(changes.lock().unwrap().contains(&Change::Location {
            vnet: 0,
            mac: VM_M,
            at: Location { dpid: 3, port: 9 },
        }));
        assert!(deletes(&r.drain(1)).is_empty(), "host 1 already leads to host 3");
        assert_eq!(r.app.counters.macs_adopted, 1);
    }

    /// A flow to a port its switch no longer has goes; a flow through the tunnel to a host the
    /// MAC is not on is re-pointed; a location loaded as released stays released.
    #[test]
    fn a_takeover_deletes_flows_to_missing_ports_and_repoints_stale_ones() {
        let gone = LocationRecord {
            mac: VM_X,
            port_gone: true,
            ..at(2, 6)
        };
        let (mut r, _changes, asked) = taken_over(vec![at(3, 9), gone]);
        assert!(r.app.commander.released(0, &VM_X), "loaded as released");
        r.answer(1, asked[0], &[1, T, T + 1], &[(VM_M, T), (VM_X, T)]);
        r.answer(2, asked[1], &[T], &[(VM_A, 77)]);
        r.answer(3, asked[2], &[9, T], &[(VM_M, 9)]);
        let h1 = r.drain(1);
        assert!(flows(&h1).contains(&(VM_M, T + 1)), "re-pointed to host 3: {h1:?}");
        assert_eq!(deletes(&h1), vec![(VM_X, T)], "X's old host is a void");
        assert_eq!(deletes(&r.drain(2)), vec![(VM_A, 77)]);
        assert_eq!(r.app.counters.stale_flows_deleted, 2);
        assert_eq!(r.app.counters.flows_repointed, 1);
    }

    /// A switch registering with a master: what it no longer has is released there too, and a
    /// switch that cannot describe its ports releases nothing. Without a store, its flows
    /// teach where its VMs are (a restarted controller).
    #[test]
    fn a_registering_switch_is_reconciled() {
        let mut r = rig(2);
        r.packet_in(2, 5, [0xff; 6], VM_M);
        r.drain_all();
        // Switch 2 comes back without port 5, with a VM on port 6 the controller never saw.
        let reg = TccsMsg::Register {
            dpid: 2,
            underlay_ip: Ipv4Addr::new(198, 18, 0, 2),
            underlay_mac: [2, 0, 0, 0, 1, 2],
        };
        r.app.handle(Event::Message {
            conn: 2,
            msg: Message::new(2, reg.to_body()),
        });
        let asked = questions(&r.rx[1].take_messages());
        r.answer(2, asked, &[6], &[(VM_X, 6)]);
        assert!(r.app.commander.released(0, &VM_M));
        assert_eq!(r.app.commander.locate(0, &VM_X), Some(Location { dpid: 2, port: 6 }));

        // Switch 1 refuses the PORT_DESC request: its VM stays where it is.
        r.packet_in(1, 1, [0xff; 6], VM_A);
        let reg = TccsMsg::Register {
            dpid: 1,
            underlay_ip: Ipv4Addr::new(198, 18, 0, 1),
            underlay_mac: [2, 0, 0, 0, 1, 1],
        };
        r.app.handle(Event::Message {
            conn: 1,
            msg: Message::new(2, reg.to_body()),
        });
        let (ports_xid, flows_xid) = questions(&r.rx[0].take_messages());
        let refusal = Body::error_reply(ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_MULTIPART, &[]);
        r.app.handle(Event::Message {
            conn: 1,
            msg: Message::new(ports_xid, refusal),
        });
        r.app.handle(Event::Message {
            conn: 1,
            msg: Message::new(
                flows_xid,
                Body::MultipartReply {
                    flags: 0,
                    body: MultipartReplyBody::Flow(vec![]),
                },
            ),
        });
        assert_eq!(r.app.counters.reconciliations, 2);
        assert!(!r.app.commander.released(0, &VM_A));
    }

    /// A switch that never answers does not hold the others' round back for ever.
    #[test]
    fn a_silent_switch_is_left_out_after_the_timeout() {
        let (mut r, _changes, asked) = taken_over(vec![at(2, 5)]);
        r.answer(1, asked[0], &[1], &[]);
        r.answer(2, asked[1], &[T], &[]);
        r.app.tick();
        assert!(!r.app.commander.released(0, &VM_M));
        for round in r.app.reconciler.finished(Instant::now() + crate::reconcile::TIMEOUT) {
            r.app.reconcile(round);
        }
        assert!(r.app.commander.released(0, &VM_M));
        assert_eq!(r.app.counters.reconcile_unanswered, 1);
    }

    /// Tunnels as the switches have them: one the registry knew that a switch lost is
    /// forgotten (its other end deleted); one a switch has that the registry never knew is
    /// deleted; the next flow gets a tunnel that exists.
    #[test]
    fn a_takeover_forgets_lost_tunnels_and_deletes_unknown_ones() {
        let (mut r, changes, asked) = taken_over(vec![at(3, 9)]);
        // Host 2 lost its end of the 1-2 tunnel; host 3 has one the registry does not know.
        r.answer(1, asked[0], &[1, T, T + 1], &[]);
        r.answer(2, asked[1], &[], &[]);
        r.answer(3, asked[2], &[9, T, T + 7], &[]);
        let tunnel_dels = |bodies: Vec<Body>| -> Vec<u32> {
            bodies
                .iter()
                .filter_map(|b| match TccsMsg::from_body(b) {
                    Some(Ok(TccsMsg::TunnelDel { port_no, .. })) => Some(port_no),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(tunnel_dels(r.drain(1)), vec![T], "host 1's end of the lost tunnel");
        assert_eq!(tunnel_dels(r.drain(3)), vec![T + 7]);
        assert!(r.app.tccs.between(1, 2, 0).is_none());
        assert!(changes
            .lock()
            .unwrap()
            .iter()
            .any(|c| matches!(c, Change::TunnelGone(t) if t.b == 2)));
        assert_eq!(r.app.counters.tunnels_forgotten, 1);
        assert_eq!(r.app.counters.unknown_tunnels_deleted, 1);
        // A frame between hosts 1 and 2 brings a new tunnel up (not a port that is gone).
        r.packet_in(2, 4, [0xff; 6], VM_X);
        r.drain_all();
        r.packet_in(1, 1, VM_X, VM_A);
        assert_eq!(tunnel_adds(&r.drain(1)).len(), 1);
    }

    /// Frames that arrive while a new master reconciles are handled after it, in order.
    #[test]
    fn traffic_waits_for_the_takeover_to_reconcile() {
        let (mut r, _changes, asked) = taken_over(vec![at(2, 5)]);
        r.packet_in(3, 9, [0xff; 6], VM_M); // M announces itself where it moved to
        assert_eq!(r.app.held.len(), 1);
        r.answer(1, asked[0], &[1, T, T + 1], &[]);
        r.answer(2, asked[1], &[T], &[]);
        r.answer(3, asked[2], &[9, T], &[]);
        assert!(r.app.held.is_empty());
        assert_eq!(r.app.counters.moves_refused, 0, "M's old port was gone first");
        assert_eq!(r.app.commander.locate(0, &VM_M), Some(Location { dpid: 3, port: 9 }));
    }

    /// The registry lost a MAC (its etcd records expired, say): a flow towards a host that
    /// does not deliver it goes, and one towards the host that does stays.
    #[test]
    fn a_takeover_drops_flows_to_hosts_that_do_not_deliver_an_unknown_mac() {
        let (mut r, _changes, asked) = taken_over(vec![]);
        r.answer(1, asked[0], &[1, T, T + 1], &[(VM_M, T), (VM_X, T + 1)]);
        r.answer(2, asked[1], &[T], &[]);
        r.answer(3, asked[2], &[9, T], &[(VM_X, 9)]);
        assert_eq!(deletes(&r.drain(1)), vec![(VM_M, T)]);
        assert_eq!(r.app.commander.locate(0, &VM_M), None);
        assert_eq!(r.app.commander.locate(0, &VM_X), Some(Location { dpid: 3, port: 9 }));
    }

    /// A tunnel end deleted on a switch: the tunnel is forgotten (a standby too, so it will not
    /// send flows into it after a takeover) and the master deletes the other end.
    #[test]
    fn a_deleted_tunnel_end_is_forgotten() {
        let mut r = rig(2);
        r.packet_in(2, 5, [0xff; 6], VM_M);
        r.packet_in(1, 1, VM_M, VM_A);
        let t = r.app.tccs.between(1, 2, 0).expect("a tunnel between 1 and 2");
        r.drain_all();
        let gone = Body::PortStatus {
            reason: ofp::OFPPR_DELETE,
            desc: ofp::PortDesc::live(t.port_a, [0; 6], "gre-198.18.0.2"),
        };
        r.app.handle(Event::Message {
            conn: 1,
            msg: Message::new(0, gone),
        });
        assert!(r.app.tccs.between(1, 2, 0).is_none());
        let dels: Vec<u32> = r
            .drain(2)
            .iter()
            .filter_map(|b| match TccsMsg::from_body(b) {
                Some(Ok(TccsMsg::TunnelDel { port_no, .. })) => Some(port_no),
                _ => None,
            })
            .collect();
        assert_eq!(dels, vec![t.port_b]);
    }
}
