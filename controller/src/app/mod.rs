//! The controller's application logic: one thread owns all state and handles every event in
//! order (switch connected, message, disconnected, timer), so there are no locks and no races
//! between a learning and a move. Sessions only frame bytes and forward messages here.
//!
//! [`App`] is one struct; this file holds it and dispatches events and messages, and each job
//! has a file of its own with an `impl App` block:
//!
//! - `connections`: switches connecting, identifying and registering, going away; sending.
//! - `roles`: single controller, master or standby; election, takeover, traffic held meanwhile.
//! - `reconciliation`: asking switches what they have and making the registry agree.
//! - `learning`: PACKET_INs, where each MAC is, bindings, moves and broadcasts.
//! - `flows`: the FLOW_MODs and PACKET_OUTs the app sends.
//! - `tunnels`: TCCS tunnels brought up on demand, reported, released when idle.
//! - `status`: the counters and the periodic state report.

mod connections;
mod flows;
mod learning;
mod log;
mod reconciliation;
mod roles;
mod status;
#[cfg(test)]
mod tests;
mod tunnels;

pub use roles::Role;
pub use status::AppCounters;

use crate::commander::{Commander, Limits};
use crate::event::Event;
use crate::ids::{ConnId, Dpid, Mac, PortNo, Vnet};
use crate::members::Members;
use crate::reconcile::Reconciler;
use crate::store::{Change, MemoryStore, Store};
use crate::tccs::Tccs;
use cloudrack_wire::ofp::{self, Body, Message};
use cloudrack_wire::tccs::TccsMsg;
use connections::Conn;
use learning::PendingMove;
use log::{debug, warn};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Config {
    /// Tunnels idle this long are released on both ends.
    pub tunnel_idle: Duration,
    /// Idle timeout of forwarding entries towards remote hosts (0: none).
    pub flow_idle_s: u16,
    /// Bounds of the location registry.
    pub limits: Limits,
}

pub struct App {
    cfg: Config,
    conns: HashMap<ConnId, Conn>,
    by_dpid: HashMap<Dpid, ConnId>,
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

    /// Tell the store, if we are the one writing.
    fn record(&mut self, change: Change) {
        if self.is_master() {
            self.store.record(change);
        }
    }

    pub fn handle(&mut self, ev: Event) {
        match ev {
            Event::Connected { conn, tx, peer } => self.connected(conn, tx, peer),
            Event::Disconnected { conn } => self.disconnected(conn),
            Event::Message { conn, msg } => self.message(conn, msg),
            Event::Elected { generation } => self.take_over(generation),
            Event::Leader { generation, name } => self.leader_elected(generation, name),
            Event::LeadershipLost { reason } => self.leadership_lost(reason),
            Event::Resync { dpid } => self.resync(dpid),
        }
        if self.reconciler.pending() > 0 {
            self.finish_reconciliations();
        }
    }

    /// A message from a switch connection, handed to the job it concerns. Numbers from the
    /// wire become the controller's types (`Dpid`, `PortNo`...) here.
    fn message(&mut self, conn: ConnId, msg: Message) {
        if self.must_wait(&msg.body) {
            self.hold(conn, msg);
            return;
        }
        let dpid = self.conns.get(&conn).and_then(|c| c.dpid);
        match msg.body {
            Body::FeaturesReply { datapath_id, .. } => self.features_reply(conn, Dpid(datapath_id)),
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
                if let Some(dpid) = dpid {
                    self.flow_removed(dpid, &fr);
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
                    self.port_deleted(dpid, PortNo(desc.port_no));
                    self.tunnel_port_deleted(dpid, PortNo(desc.port_no));
                }
                debug!(dpid = ?dpid.map(|d| format!("{d:016x}")), port = desc.port_no, "port deleted");
            }
            Body::MultipartReply { flags, body } => self.multipart_reply(dpid, msg.xid, flags, body),
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

    /// A TCCS message (an OpenFlow experimenter message) from the switch `dpid`, if it has
    /// said which it is.
    fn tccs_message(&mut self, dpid: Option<Dpid>, m: TccsMsg) {
        match m {
            TccsMsg::Register {
                dpid: reg,
                underlay_ip,
                underlay_mac,
            } => self.host_registered(dpid, Dpid(reg), underlay_ip, Mac(underlay_mac)),
            TccsMsg::TunnelReport {
                remote_dpid,
                remote_ip,
                key,
                port_no,
                is_static,
                ..
            } => {
                if let Some(dpid) = dpid {
                    let (remote_dpid, key, port_no) = (Dpid(remote_dpid), Vnet(key), PortNo(port_no));
                    self.tunnel_reported(dpid, remote_dpid, remote_ip, key, port_no, is_static);
                }
            }
            TccsMsg::TunnelIdle { .. } | TccsMsg::MigrationNotify { .. } if !self.is_master() => {}
            TccsMsg::TunnelIdle { port_no, idle_ms, .. } => {
                if let Some(dpid) = dpid {
                    self.tunnel_idle(dpid, PortNo(port_no), idle_ms);
                }
            }
            TccsMsg::PortVnet { port_no, vnet } => {
                if let Some(dpid) = dpid {
                    self.members.set(dpid, PortNo(port_no), Vnet(vnet));
                }
            }
            TccsMsg::PortBinding {
                port_no,
                vnet,
                mac,
                bound,
            } => {
                if let Some(dpid) = dpid {
                    self.port_binding(dpid, PortNo(port_no), Vnet(vnet), Mac(mac), bound);
                }
            }
            TccsMsg::MigrationNotify {
                vnet,
                mac,
                dst_dpid,
                phase,
                dst_port,
            } => {
                let (dst_dpid, dst_port) = (Dpid(dst_dpid), PortNo(dst_port));
                self.migration_notice(dpid, Vnet(vnet), Mac(mac), dst_dpid, phase, dst_port)
            }
            other => debug!(?other, "TCCS message not handled"),
        }
    }

    /// Periodic work: forget moves whose switches never answered; reconcile without switches
    /// that did not answer in time.
    pub fn tick(&mut self) {
        self.expire_moves();
        if self.reconciler.pending() > 0 {
            self.finish_reconciliations();
        }
    }
}
