//! The switch's control-plane state: ports, tunnels and the OpenFlow pipeline (flow tables,
//! groups, meters), and the operations the OpenFlow sessions and the management socket perform
//! on them. Every change publishes a new FIB to the workers (the pipeline is persistent, so a
//! FLOW_MOD costs one path copy, not a rebuild); nothing here runs per packet.
//!
//! Thread-safety: one mutex guards the state; it is taken by control threads only (OpenFlow
//! sessions, management socket, the timer), never by a datapath worker.

use crate::dp::fib::{Fib, LocalPort, Mac, PortKind, Tunnel};
use crate::dp::stats::{now_ms, PortCounters};
use crate::dp::{Datapath, DpEvent};
use crate::ofp::translate::OfpErr;
use crate::os as sys;
use crate::pipeline::table::FlowEntry;
use crate::pipeline::{FlowFilter, Pipeline, Removed};
use crate::port::{afpacket::AfPacketPort, tap::TapPort, PortIo};
use cloudrack_wire::ofp;
use crossbeam_channel::Sender;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use thiserror::Error;
use tracing::{debug, info, warn};

/// Port numbers (local, controller-made tunnels, static tunnels): shared with the controller.
pub use cloudrack_wire::tccs::port_ranges::{FIRST_CONTROLLER_TUNNEL, FIRST_STATIC_TUNNEL, LAST_PORT, MAX_LOCAL_PORT};

#[derive(Debug, Error)]
pub enum SwitchError {
    #[error("port {0:?} already exists")]
    PortExists(String),
    #[error("no port {0:?}")]
    NoSuchPort(String),
    #[error("no port number {0}")]
    NoSuchPortNo(u32),
    #[error("cannot open {name:?}: {source}")]
    Open { name: String, source: std::io::Error },
    #[error("too many ports (limit {0})")]
    TooManyPorts(usize),
    #[error("too many tunnels (limit {0})")]
    TooManyTunnels(usize),
    #[error("tunnel port number {0} is not in the range a controller may assign")]
    BadTunnelPortNo(u32),
    #[error("a tunnel to {0} with key {1} already exists as port {2}")]
    TunnelExists(Ipv4Addr, u32, u32),
    #[error("flow table full ({0} flows)")]
    FlowTableFull(usize),
    #[error("no GRE socket: tunnels are unavailable")]
    NoGre,
    #[error("no controller is connected")]
    NoController,
    #[error("{0} is not a VM MAC address (multicast or zero)")]
    BadMac(String),
    #[error("port {0:?} already has {MAX_BOUND_MACS} bound MACs")]
    TooManyBindings(String),
}

/// MACs one port may be bound to (a VM with a few NICs' worth of addresses, not a MAC table).
pub const MAX_BOUND_MACS: usize = 64;

#[derive(Debug, Clone)]
pub struct SwitchConfig {
    pub dpid: u64,
    pub underlay_ip: Ipv4Addr,
    pub underlay_mac: Mac,
    pub max_ports: usize,
    pub max_tunnels: usize,
    pub max_flows: usize,
}

/// A port as OpenFlow and the CLI describe it.
#[derive(Debug, Clone, Serialize)]
pub struct PortInfo {
    pub port_no: u32,
    pub name: String,
    pub kind: &'static str,
    pub vnet: u32,
    pub hw_addr: String,
    #[serde(skip)]
    pub mac: Mac,
    pub ifindex: u32,
    /// MACs of the VM bound to the port (port security, MAC-move authorization).
    pub bound_macs: Vec<String>,
    #[serde(skip)]
    pub bound: Vec<Mac>,
    pub counters: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TunnelInfo {
    pub port_no: u32,
    pub name: String,
    pub remote_ip: Ipv4Addr,
    pub key: u32,
    pub remote_dpid: String,
    #[serde(skip)]
    pub remote_dpid_raw: u64,
    pub is_static: bool,
    pub idle_timeout_s: u32,
    pub idle_ms: u64,
    /// The path MTU to the remote that GRE packets are cut to.
    pub path_mtu: u32,
    pub counters: BTreeMap<&'static str, u64>,
}

/// What a tunnel should be.
#[derive(Debug, Clone)]
pub struct TunnelSpec {
    /// Given by the controller; `None` for static tunnels (the switch numbers them).
    pub port_no: Option<u32>,
    pub remote: Ipv4Addr,
    pub key: u32,
    pub remote_dpid: u64,
    pub is_static: bool,
    pub idle_timeout_s: u32,
}

/// Events for connected controllers.
#[derive(Debug, Clone)]
pub enum Notify {
    PortAdded(PortInfo),
    PortDeleted(PortInfo),
    TunnelAdded(TunnelInfo),
    TunnelDeleted(TunnelInfo),
    FlowRemoved {
        flow: Arc<FlowEntry>,
        reason: Removed,
    },
    TunnelIdle {
        port_no: u32,
        remote: Ipv4Addr,
        key: u32,
        idle_ms: u64,
    },
    /// A VM is arriving behind a local port (live migration): the controller should point
    /// every switch at it now instead of waiting for the VM's first frame.
    MigrateIn {
        dpid: u64,
        vnet: u32,
        mac: Mac,
        port_no: u32,
    },
    /// A VM MAC was bound to a local port (or released).
    PortBinding {
        port_no: u32,
        vnet: u32,
        mac: Mac,
        bound: bool,
    },
}

struct State {
    ports: BTreeMap<u32, LocalPort>,
    tunnels: BTreeMap<u32, Arc<Tunnel>>,
    pipeline: Pipeline,
    next_port: u32,
    next_static: u32,
    next_worker: usize,
    /// Tunnels already reported idle (until they carry traffic again).
    idle_reported: HashSet<u32>,
    /// The pipeline changed since the last publish (see [`Switch::publish_pending`]).
    dirty: bool,
}

pub struct Switch {
    pub cfg: SwitchConfig,
    pub dp: Datapath,
    state: Mutex<State>,
    subscribers: Mutex<Vec<Sender<Notify>>>,
}

pub const DEFAULT_FLOW_FLAGS: u16 = 0;

fn tunnel_name(t: &Tunnel) -> String {
    let mut n = format!("gre-{}", t.remote);
    if t.key != 0 {
        n = format!("gre{}-{}", t.key, t.remote);
    }
    n.truncate(15);
    n
}

impl Switch {
    pub fn new(cfg: SwitchConfig, dp: Datapath) -> Switch {
        let mut pipeline = Pipeline::new(cfg.max_flows);
        // Like a new Open vSwitch bridge: table 0 hands everything to NORMAL (the L2 service)
        // until a controller says otherwise.
        pipeline.insert(crate::pipeline::normal_table_miss());
        Switch {
            cfg,
            dp,
            state: Mutex::new(State {
                ports: BTreeMap::new(),
                tunnels: BTreeMap::new(),
                pipeline,
                next_port: 1,
                next_static: FIRST_STATIC_TUNNEL,
                next_worker: 0,
                idle_reported: HashSet::new(),
                dirty: false,
            }),
            subscribers: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug; keep serving with the state as it is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Receive controller notifications on `tx` until it is dropped.
    pub fn subscribe(&self, tx: Sender<Notify>) {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
    }

    fn notify(&self, n: Notify) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|tx| match tx.try_send(n.clone()) {
            Ok(()) => true,
            Err(crossbeam_channel::TrySendError::Full(_)) => {
                warn!("a controller session is not keeping up; notification dropped");
                true
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => false,
        });
    }

    /// Publish what FLOW_MOD, GROUP_MOD and METER_MOD changed. An OpenFlow session calls it
    /// when it has no further message buffered, and before a barrier reply or a PACKET_OUT:
    /// a burst of FLOW_MODs then costs one publication, not one each, and nothing a
    /// controller can observe comes before its changes take effect.
    pub fn publish_pending(&self) {
        let mut st = self.lock();
        if st.dirty {
            self.publish(&mut st);
        }
    }

    fn publish(&self, st: &mut State) {
        st.dirty = false;
        let mut fib = Fib {
            local: st.ports.clone().into_iter().collect(),
            tunnels: st.tunnels.clone().into_iter().collect(),
            pipeline: st.pipeline.clone(),
            ..Fib::default()
        };
        fib.tunnel_by_remote = st.tunnels.values().map(|t| ((t.remote, t.key), t.port_no)).collect();
        fib.rebuild_flood();
        self.dp.publish(fib);
    }

    fn port_info(p: &LocalPort) -> PortInfo {
        let mac = sys::mac(&p.name).unwrap_or([0; 6]);
        PortInfo {
            port_no: p.port_no,
            name: p.name.clone(),
            kind: match p.kind {
                PortKind::System => "system",
                PortKind::Tap => "tap",
            },
            vnet: p.vnet,
            hw_addr: sys::fmt_mac(&mac),
            mac,
            ifindex: p.io.ifindex(),
            bound_macs: p.bound_macs.iter().map(sys::fmt_mac).collect(),
            bound: p.bound_macs.clone(),
            counters: p.counters.snapshot(),
        }
    }

    fn tunnel_info(t: &Tunnel) -> TunnelInfo {
        let last = t.counters.last_used_ms.load(Relaxed);
        TunnelInfo {
            port_no: t.port_no,
            name: tunnel_name(t),
            remote_ip: t.remote,
            key: t.key,
            remote_dpid: format!("{:016x}", t.remote_dpid),
            remote_dpid_raw: t.remote_dpid,
            is_static: t.is_static,
            idle_timeout_s: t.idle_timeout_s,
            idle_ms: now_ms().saturating_sub(last),
            path_mtu: t.path_mtu.get(),
            counters: t.counters.snapshot(),
        }
    }

    /// Attach a port: `system` opens AF_PACKET on an existing interface, `tap` creates a tap.
    /// `bound`: the MACs of the VM behind it (empty: any source MAC, first come first served).
    pub fn add_port(&self, name: &str, kind: PortKind, vnet: u32, bound: &[Mac]) -> Result<PortInfo, SwitchError> {
        if let Some(m) = bound.iter().find(|m| m[0] & 1 != 0 || **m == [0; 6]) {
            return Err(SwitchError::BadMac(sys::fmt_mac(m)));
        }
        if bound.len() > MAX_BOUND_MACS {
            return Err(SwitchError::TooManyBindings(name.into()));
        }
        let mut st = self.lock();
        if st.ports.values().any(|p| p.name == name) {
            return Err(SwitchError::PortExists(name.into()));
        }
        if st.ports.len() >= self.cfg.max_ports {
            return Err(SwitchError::TooManyPorts(self.cfg.max_ports));
        }
        let io: Arc<dyn PortIo> = match kind {
            PortKind::System => Arc::new(AfPacketPort::open(name).map_err(|source| SwitchError::Open {
                name: name.into(),
                source,
            })?),
            PortKind::Tap => Arc::new(TapPort::create(name).map_err(|source| SwitchError::Open {
                name: name.into(),
                source,
            })?),
        };
        let port_no = (st.next_port..=MAX_LOCAL_PORT)
            .find(|n| !st.ports.contains_key(n))
            .ok_or(SwitchError::TooManyPorts(self.cfg.max_ports))?;
        st.next_port = port_no + 1;
        let worker = st.next_worker % self.dp.workers();
        st.next_worker += 1;
        let port = LocalPort {
            port_no,
            name: name.into(),
            kind,
            vnet,
            io,
            counters: Arc::new(PortCounters::default()),
            worker,
            bound_macs: bound.to_vec(),
        };
        let info = Self::port_info(&port);
        st.ports.insert(port_no, port);
        self.publish(&mut st);
        drop(st);
        info!(port = name, port_no, ?kind, vnet, bound = ?info.bound_macs, "port added");
        self.notify(Notify::PortAdded(info.clone()));
        Ok(info)
    }

    /// Detach a port by name (or by number, given as digits).
    pub fn del_port(&self, name: &str) -> Result<(), SwitchError> {
        let mut st = self.lock();
        let port_no = st
            .ports
            .values()
            .find(|p| p.name == name || p.port_no.to_string() == name)
            .map(|p| p.port_no)
            .ok_or_else(|| SwitchError::NoSuchPort(name.into()))?;
        self.remove_port_locked(&mut st, port_no, "deleted");
        Ok(())
    }

    fn remove_port_locked(&self, st: &mut MutexGuard<'_, State>, port_no: u32, why: &str) {
        let Some(port) = st.ports.remove(&port_no) else { return };
        // Flows that lead to a port that is gone would only drop; remove them and tell the
        // controller, so it re-points instead of waiting for a timeout.
        let removed = st.pipeline.remove_port_flows(port_no);
        self.publish(st);
        info!(port = %port.name, port_no, why, flows_removed = removed.len(), "port removed");
        let info = Self::port_info(&port);
        self.notify(Notify::PortDeleted(info));
        for flow in removed {
            self.notify(Notify::FlowRemoved {
                flow,
                reason: Removed::Delete,
            });
        }
    }

    pub fn add_tunnel(&self, spec: TunnelSpec) -> Result<TunnelInfo, SwitchError> {
        if self.dp.shared.gre.is_none() {
            return Err(SwitchError::NoGre);
        }
        let mut st = self.lock();
        if let Some(t) = st
            .tunnels
            .values()
            .find(|t| t.remote == spec.remote && t.key == spec.key)
        {
            // The same tunnel asked for again (a controller that restarted): keep it.
            if spec.port_no.is_none_or(|p| p == t.port_no) {
                return Ok(Self::tunnel_info(t));
            }
            return Err(SwitchError::TunnelExists(spec.remote, spec.key, t.port_no));
        }
        if st.tunnels.len() >= self.cfg.max_tunnels {
            return Err(SwitchError::TooManyTunnels(self.cfg.max_tunnels));
        }
        let port_no = match spec.port_no {
            Some(p) if (FIRST_CONTROLLER_TUNNEL..FIRST_STATIC_TUNNEL).contains(&p) => p,
            Some(p) => return Err(SwitchError::BadTunnelPortNo(p)),
            None => {
                let p = (st.next_static..=LAST_PORT)
                    .find(|n| !st.tunnels.contains_key(n))
                    .ok_or(SwitchError::TooManyTunnels(self.cfg.max_tunnels))?;
                st.next_static = p + 1;
                p
            }
        };
        if let Some(old) = st.tunnels.get(&port_no) {
            return Err(SwitchError::TunnelExists(old.remote, old.key, port_no));
        }
        let t = Arc::new(Tunnel::new(
            port_no,
            spec.remote,
            spec.key,
            spec.remote_dpid,
            spec.is_static,
            spec.idle_timeout_s,
            self.dp.path_mtu(spec.remote),
        ));
        // A new tunnel counts as used now, so it is not reported idle at once.
        t.counters.last_used_ms.store(now_ms(), Relaxed);
        let info = Self::tunnel_info(&t);
        st.tunnels.insert(port_no, t);
        self.publish(&mut st);
        drop(st);
        info!(port_no, remote = %spec.remote, key = spec.key, is_static = spec.is_static, "tunnel added");
        self.notify(Notify::TunnelAdded(info.clone()));
        Ok(info)
    }

    /// Remove a tunnel and every flow that outputs to it.
    pub fn del_tunnel(&self, port_no: u32) -> Result<(), SwitchError> {
        let mut st = self.lock();
        let t = st.tunnels.remove(&port_no).ok_or(SwitchError::NoSuchPortNo(port_no))?;
        st.idle_reported.remove(&port_no);
        let removed = st.pipeline.remove_port_flows(port_no);
        self.publish(&mut st);
        drop(st);
        info!(port_no, remote = %t.remote, key = t.key, flows_removed = removed.len(), "tunnel removed");
        self.notify(Notify::TunnelDeleted(Self::tunnel_info(&t)));
        for flow in removed {
            self.notify(Notify::FlowRemoved {
                flow,
                reason: Removed::Delete,
            });
        }
        Ok(())
    }

    /// Find a tunnel's port number by remote address and key.
    pub fn tunnel_port(&self, remote: Ipv4Addr, key: u32) -> Option<u32> {
        self.lock()
            .tunnels
            .values()
            .find(|t| t.remote == remote && t.key == key)
            .map(|t| t.port_no)
    }

    pub fn port_exists(&self, port_no: u32) -> bool {
        let st = self.lock();
        st.ports.contains_key(&port_no) || st.tunnels.contains_key(&port_no)
    }

    /// Tell controllers about flows that left the tables.
    fn notify_removed(&self, removed: Vec<Arc<FlowEntry>>, reason: Removed) {
        for flow in removed {
            self.notify(Notify::FlowRemoved { flow, reason });
        }
    }

    /// Carry out a FLOW_MOD.
    pub fn flow_mod(&self, fm: &ofp::FlowMod) -> Result<(), OfpErr> {
        let mut st = self.lock();
        let out = st.pipeline.flow_mod(fm)?;
        st.dirty |= out.changed > 0;
        drop(st);
        self.notify_removed(out.removed, Removed::Delete);
        Ok(())
    }

    /// Carry out a GROUP_MOD (flows that used a deleted group go too).
    pub fn group_mod(&self, gm: &ofp::GroupMod) -> Result<(), OfpErr> {
        let mut st = self.lock();
        let removed = st.pipeline.group_mod(gm)?;
        st.dirty = true;
        drop(st);
        self.notify_removed(removed, Removed::GroupDelete);
        Ok(())
    }

    /// Carry out a METER_MOD (flows that used a deleted meter go too).
    pub fn meter_mod(&self, mm: &ofp::MeterMod) -> Result<(), OfpErr> {
        let mut st = self.lock();
        let removed = st.pipeline.meter_mod(mm)?;
        st.dirty = true;
        drop(st);
        self.notify_removed(removed, Removed::Delete);
        Ok(())
    }

    /// The flows a filter takes.
    pub fn flows(&self, filter: &FlowFilter) -> Vec<Arc<FlowEntry>> {
        self.lock().pipeline.flows(filter)
    }

    /// A snapshot of the pipeline (tables, groups, meters), for statistics.
    pub fn pipeline(&self) -> Pipeline {
        self.lock().pipeline.clone()
    }

    pub fn ports(&self) -> Vec<PortInfo> {
        self.lock().ports.values().map(Self::port_info).collect()
    }

    pub fn tunnels(&self) -> Vec<TunnelInfo> {
        self.lock().tunnels.values().map(|t| Self::tunnel_info(t)).collect()
    }

    /// Send a frame from the controller (PACKET_OUT): its actions run through the same
    /// translation and executor as the datapath's, on this (control) thread.
    pub fn packet_out(&self, po: &ofp::PacketOut) -> Result<(), OfpErr> {
        use crate::pipeline::actions::{compile_actions, Context};
        use crate::pipeline::execute::{execute, Scratch};
        use crate::pipeline::key::extract;
        use crate::pipeline::xlate::translate_packet_out;
        let fib = self.dp.shared.fib.load_full();
        let acts = compile_actions(&po.actions, Context::PacketOut, &fib.pipeline)?;
        // The ingress's network is the packet's until an action sets another.
        let vnet = fib.local.get(&po.in_port).map(|p| p.vnet).unwrap_or(0) as u64;
        let (key, _) = extract(&po.data, po.in_port, vnet);
        let x = translate_packet_out(&fib.pipeline, &*fib, &key, &acts);
        let mut frame = po.data.clone();
        let mut sink = crate::ofp::packet_out::DirectSink::new(self, &fib, po.in_port);
        execute(
            &x.ops,
            &mut frame,
            &Default::default(),
            &mut Scratch::default(),
            &mut sink,
        );
        Ok(())
    }

    /// Periodic work: expire flows, report idle tunnels, drop ports whose interface vanished.
    pub fn tick(&self) {
        let now = now_ms();
        let mut st = self.lock();
        let expired = st.pipeline.expire(now);
        let mut idle = Vec::new();
        let mut busy = Vec::new();
        for t in st.tunnels.values() {
            if t.idle_timeout_s == 0 {
                continue;
            }
            let idle_ms = now.saturating_sub(t.counters.last_used_ms.load(Relaxed));
            if idle_ms >= t.idle_timeout_s as u64 * 1000 {
                idle.push((t.port_no, t.remote, t.key, idle_ms));
            } else {
                busy.push(t.port_no);
            }
        }
        for p in busy {
            st.idle_reported.remove(&p);
        }
        idle.retain(|(p, ..)| st.idle_reported.insert(*p));
        for p in st.ports.values() {
            let dropped = p.io.take_kernel_drops();
            if dropped > 0 {
                p.counters.rx_kernel_dropped.fetch_add(dropped, Relaxed);
                debug!(port = %p.name, dropped, "kernel dropped frames before the switch read them");
            }
        }
        let vanished: Vec<u32> = st
            .ports
            .values()
            // A switch-owned tap may be moved into another namespace (a VM's) and vanish from
            // ours by name while alive; its own fd reports when it is really gone.
            .filter(|p| p.kind == PortKind::System && sys::ifindex(&p.name).map_or(true, |i| i != p.io.ifindex()))
            .map(|p| p.port_no)
            .collect();
        for port_no in vanished {
            warn!(port_no, "interface vanished");
            self.remove_port_locked(&mut st, port_no, "interface vanished");
        }
        // Changes a session has not published yet (it always does before blocking; this is a
        // safety net) go out with the expiries.
        if !expired.is_empty() || st.dirty {
            self.publish(&mut st);
        }
        drop(st);
        for (flow, reason) in expired {
            self.notify(Notify::FlowRemoved { flow, reason });
        }
        for (port_no, remote, key, idle_ms) in idle {
            info!(port_no, %remote, key, idle_ms, "tunnel idle");
            self.notify(Notify::TunnelIdle {
                port_no,
                remote,
                key,
                idle_ms,
            });
        }
    }

    pub fn handle_event(&self, ev: DpEvent) {
        match ev {
            DpEvent::PortFailed { port_no, error } => {
                let mut st = self.lock();
                let still_there = st
                    .ports
                    .get(&port_no)
                    .is_some_and(|p| sys::ifindex(&p.name).is_ok_and(|i| i == p.io.ifindex()));
                if still_there {
                    warn!(port_no, %error, "port receive failed but its interface exists; removing it anyway");
                }
                self.remove_port_locked(&mut st, port_no, "receive failed");
            }
        }
    }

    /// Bind (or release) a VM MAC to a local port (name or number). Returns (port_no, vnet).
    pub fn bind_port(&self, port: &str, mac: Mac, bound: bool) -> Result<(u32, u32), SwitchError> {
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return Err(SwitchError::BadMac(sys::fmt_mac(&mac)));
        }
        let mut st = self.lock();
        let p = st
            .ports
            .values_mut()
            .find(|p| p.name == port || p.port_no.to_string() == port)
            .ok_or_else(|| SwitchError::NoSuchPort(port.into()))?;
        let (port_no, vnet) = (p.port_no, p.vnet);
        let had = p.bound_macs.contains(&mac);
        if bound && !had {
            if p.bound_macs.len() >= MAX_BOUND_MACS {
                return Err(SwitchError::TooManyBindings(p.name.clone()));
            }
            p.bound_macs.push(mac);
        } else if !bound && had {
            p.bound_macs.retain(|m| *m != mac);
        } else {
            return Ok((port_no, vnet));
        }
        self.publish(&mut st);
        drop(st);
        info!(port, port_no, vnet, mac = %sys::fmt_mac(&mac), bound, "port binding changed");
        self.notify(Notify::PortBinding {
            port_no,
            vnet,
            mac,
            bound,
        });
        Ok((port_no, vnet))
    }

    /// Announce that the VM with `mac` is (about to be) running behind local port `port` (name
    /// or number): run at the migration source's STOP event, so traffic goes to the destination
    /// from then on, where the tap holds it until the VM resumes. Binds the MAC to the port
    /// first (only a bound port may take a MAC over).
    pub fn migrate_in(&self, port: &str, mac: Mac) -> Result<u32, SwitchError> {
        if !self.dp.shared.controller_up.load(Relaxed) {
            return Err(SwitchError::NoController);
        }
        let (port_no, vnet) = self.bind_port(port, mac, true)?;
        info!(port, port_no, vnet, mac = %sys::fmt_mac(&mac), "migration: VM arriving");
        self.notify(Notify::MigrateIn {
            dpid: self.cfg.dpid,
            vnet,
            mac,
            port_no,
        });
        Ok(port_no)
    }

    pub fn stats(&self) -> serde_json::Value {
        let st = self.lock();
        serde_json::json!({
            "dpid": format!("{:016x}", self.cfg.dpid),
            "workers": self.dp.workers(),
            "ports": st.ports.len(),
            "tunnels": st.tunnels.len(),
            "flows": st.pipeline.n_flows(),
            "controller_connected": self.dp.shared.controller_up.load(Relaxed),
            "datapath": self.dp.shared.counters.snapshot(),
            "gre_receive": if self.dp.shared.gre_rx_raw { "raw socket" } else { "fanout" },
            "gre_claimed_from_host_stack": self.dp.gre_claimed(),
            "per_worker": self.dp.shared.workers.iter().map(|w| w.snapshot()).collect::<Vec<_>>(),
        })
    }
}
