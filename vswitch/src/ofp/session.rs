//! One OpenFlow 1.3 connection, to a controller (active) or from a tool such as ovs-ofctl
//! (passive listener). The reading thread answers requests; a writer thread owns the socket's
//! sending side and also turns switch notifications into asynchronous messages, so nothing the
//! switch does ever waits on a slow peer.

use super::agent::{Agent, Answer, SwitchOps};
use super::translate::{self, OfpErr};
use super::Hub;
use crate::switch::{Notify, PortInfo, Switch, TunnelSpec};
use cloudrack_channel::Channel;
use cloudrack_wire::ofp::{self, Body, Message, MultipartReplyBody, MultipartRequestBody};
use cloudrack_wire::ofp_stream::{Incoming, MsgReader};
use cloudrack_wire::tccs::TccsMsg;
use crossbeam_channel::{bounded, select, Receiver, Sender};
use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A controller we connected to: gets PACKET_INs, notifications and TCCS.
    Controller,
    /// Someone who connected to our listener (ovs-ofctl): requests and replies only.
    Passive,
}

/// Idle time after which we probe the peer with ECHO_REQUEST, and give up after three.
const ECHO_INTERVAL: Duration = Duration::from_secs(2);
const MAX_MISSED_ECHOES: u32 = 3;

pub struct Session {
    agent: Agent,
    live: Live,
}

/// The real switch, as the protocol agent sees it from one connection.
struct Live {
    switch: Arc<Switch>,
    hub: Arc<Hub>,
    out: Sender<Message>,
    link_id: Option<u64>,
    /// tls:IP:PORT or tcp:IP:PORT of the other end, for `cloudrack-ctl controllers`.
    remote: String,
}

/// Run a session until the connection ends. Returns how it ended.
pub fn run(switch: Arc<Switch>, hub: Arc<Hub>, stream: Channel, peer: Peer) -> std::io::Result<()> {
    stream.set_read_timeout(Some(ECHO_INTERVAL))?;
    let remote = format!(
        "{}:{}",
        if stream.is_tls() { "tls" } else { "tcp" },
        stream.peer_addr().map_or_else(|_| "?".into(), |a| a.to_string())
    );
    let writer = stream.clone();
    let (out_tx, out_rx) = bounded::<Message>(4096);
    let (notify_tx, notify_rx) = bounded::<Notify>(4096);
    if peer == Peer::Controller {
        switch.subscribe(notify_tx);
    } else {
        drop(notify_tx);
    }
    let writer_thread = std::thread::Builder::new()
        .name("ofp-writer".into())
        .spawn(move || write_loop(writer, out_rx, notify_rx))?;
    let mut s = Session {
        agent: Agent::new(peer == Peer::Controller),
        live: Live {
            switch,
            hub,
            out: out_tx,
            link_id: None,
            remote,
        },
    };
    s.live.send(Message::new(0, Body::hello(&[ofp::OFP_VERSION])));
    let result = s.read_loop(stream);
    let l = &s.live;
    if let Some(id) = l.link_id {
        l.hub.remove(id);
    }
    l.switch.dp.shared.controller_up.store(l.hub.has_controller(), Relaxed);
    drop(s);
    let _ = writer_thread.join();
    result
}

fn write_loop(mut stream: Channel, out: Receiver<Message>, notify: Receiver<Notify>) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let msgs = select! {
            recv(out) -> m => match m { Ok(m) => vec![m], Err(_) => break },
            recv(notify) -> n => match n {
                Ok(n) => notification(&n),
                // The session is not a controller's; keep serving replies.
                Err(_) => match out.recv() { Ok(m) => vec![m], Err(_) => break },
            },
        };
        if msgs.is_empty() {
            continue;
        }
        buf.clear();
        for m in &msgs {
            encode_or_skip(m, &mut buf);
        }
        // Write whatever else is queued in the same syscall.
        while let Ok(m) = out.try_recv() {
            encode_or_skip(&m, &mut buf);
            if buf.len() > 256 * 1024 {
                break;
            }
        }
        if stream.write_all(&buf).is_err() {
            break;
        }
    }
    stream.shutdown();
}

/// The TCCS bindings of a port's VM MACs.
fn port_bindings(p: &PortInfo) -> impl Iterator<Item = Body> + '_ {
    p.bound.iter().map(|mac| {
        TccsMsg::PortBinding {
            port_no: p.port_no,
            vnet: p.vnet,
            mac: *mac,
            bound: true,
        }
        .to_body()
    })
}

/// The asynchronous messages for a switch event (none if the controller does not want one).
fn notification(n: &Notify) -> Vec<Message> {
    let body = match n {
        Notify::PortAdded(p) => {
            // Which network the port is in, so broadcasts are relayed only where they matter.
            let vnet = TccsMsg::PortVnet {
                port_no: p.port_no,
                vnet: p.vnet,
            }
            .to_body();
            let status = Body::PortStatus {
                reason: ofp::OFPPR_ADD,
                desc: translate::port_desc(p),
            };
            let mut msgs = vec![Message::new(0, status), Message::new(0, vnet)];
            msgs.extend(port_bindings(p).map(|b| Message::new(0, b)));
            return msgs;
        }
        Notify::PortBinding {
            port_no,
            vnet,
            mac,
            bound,
        } => TccsMsg::PortBinding {
            port_no: *port_no,
            vnet: *vnet,
            mac: *mac,
            bound: *bound,
        }
        .to_body(),
        Notify::PortDeleted(p) => Body::PortStatus {
            reason: ofp::OFPPR_DELETE,
            desc: translate::port_desc(p),
        },
        Notify::TunnelAdded(t) => Body::PortStatus {
            reason: ofp::OFPPR_ADD,
            desc: translate::tunnel_desc(t),
        },
        Notify::TunnelDeleted(t) => Body::PortStatus {
            reason: ofp::OFPPR_DELETE,
            desc: translate::tunnel_desc(t),
        },
        Notify::FlowRemoved { flow, reason } => {
            if flow.flags & ofp::OFPFF_SEND_FLOW_REM == 0 {
                return Vec::new();
            }
            Body::FlowRemoved(translate::flow_removed(flow, *reason))
        }
        Notify::MigrateIn {
            dpid,
            vnet,
            mac,
            port_no,
        } => TccsMsg::MigrationNotify {
            vnet: *vnet,
            mac: *mac,
            dst_dpid: *dpid,
            phase: cloudrack_wire::tccs::MIGRATION_STOPPED,
            dst_port: *port_no,
        }
        .to_body(),
        Notify::TunnelIdle {
            port_no,
            remote,
            key,
            idle_ms,
        } => TccsMsg::TunnelIdle {
            remote_ip: *remote,
            key: *key,
            port_no: *port_no,
            idle_ms: *idle_ms,
        }
        .to_body(),
    };
    vec![Message::new(0, body)]
}

impl Session {
    fn read_loop(&mut self, stream: Channel) -> std::io::Result<()> {
        let mut reader = MsgReader::new(stream);
        let mut missed = 0;
        loop {
            match reader.next_message() {
                Ok(Incoming::Message(m)) => {
                    missed = 0;
                    let raw = m.encode();
                    for reply in self.agent.on_message(m, &raw, &mut self.live) {
                        self.live.send(reply);
                    }
                    if self.agent.take_just_registered() {
                        self.live.link_up();
                    }
                    if !reader.has_buffered_message() {
                        self.live.switch.publish_pending();
                    }
                }
                Ok(Incoming::Malformed { raw, error }) => {
                    missed = 0;
                    warn!(%error, "malformed OpenFlow message");
                    self.live
                        .switch
                        .dp
                        .shared
                        .counters
                        .ofp_rx_malformed
                        .fetch_add(1, Relaxed);
                    let xid = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
                    let code = if raw[0] != ofp::OFP_VERSION {
                        ofp::OFPBRC_BAD_VERSION
                    } else {
                        ofp::OFPBRC_BAD_LEN
                    };
                    self.live
                        .send(Message::new(xid, Body::error_reply(ofp::OFPET_BAD_REQUEST, code, &raw)));
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    missed += 1;
                    if missed > MAX_MISSED_ECHOES {
                        return Err(std::io::Error::new(
                            ErrorKind::TimedOut,
                            "peer stopped answering echo requests",
                        ));
                    }
                    self.live.send(Message::new(0, Body::EchoRequest(Vec::new())));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() == ErrorKind::InvalidData {
                        self.live
                            .switch
                            .dp
                            .shared
                            .counters
                            .ofp_rx_malformed
                            .fetch_add(1, Relaxed);
                    }
                    return Err(e);
                }
            }
        }
    }
}

impl Live {
    fn send(&self, m: Message) {
        if self.out.try_send(m).is_err() {
            warn!("OpenFlow peer is not reading; message dropped");
        }
    }

    /// The registration is on its way: from now on PACKET_INs and notifications may follow.
    fn link_up(&mut self) {
        let sw = &self.switch;
        self.link_id = Some(self.hub.add(self.out.clone(), &self.remote));
        sw.dp.shared.controller_up.store(true, Relaxed);
        info!(dpid = format!("{:016x}", sw.cfg.dpid), "registered with controller");
    }
}

impl SwitchOps for Live {
    fn dpid(&self) -> u64 {
        self.switch.cfg.dpid
    }

    /// Who we are and what we have (TCCS), so a restarted controller rebuilds its registries
    /// from the switches.
    fn registration(&mut self) -> Vec<Body> {
        let sw = &self.switch;
        let mut out = vec![TccsMsg::Register {
            dpid: sw.cfg.dpid,
            underlay_ip: sw.cfg.underlay_ip,
            underlay_mac: sw.cfg.underlay_mac,
        }
        .to_body()];
        for p in sw.ports() {
            out.push(
                TccsMsg::PortVnet {
                    port_no: p.port_no,
                    vnet: p.vnet,
                }
                .to_body(),
            );
            out.extend(port_bindings(&p));
        }
        for t in sw.tunnels() {
            out.push(
                TccsMsg::TunnelReport {
                    remote_dpid: t.remote_dpid_raw,
                    remote_ip: t.remote_ip,
                    key: t.key,
                    port_no: t.port_no,
                    idle_timeout_s: t.idle_timeout_s,
                    is_static: t.is_static,
                }
                .to_body(),
            );
        }
        out
    }

    fn role(&mut self, role: u32, generation_id: u64) -> Result<u32, OfpErr> {
        // Roles are among registered controllers; anyone else (ovs-ofctl) stays EQUAL.
        let r = match self.link_id {
            Some(id) => self.hub.request_role(id, role, generation_id),
            None if role == ofp::OFPCR_ROLE_NOCHANGE => Ok(ofp::OFPCR_ROLE_EQUAL),
            None => Ok(role),
        };
        if let Ok(role) = r {
            info!(role, generation_id, "controller role");
        }
        r
    }

    fn is_slave(&self) -> bool {
        self.link_id.is_some_and(|id| self.hub.is_slave(id))
    }

    fn flow_mod(&mut self, fm: &ofp::FlowMod) -> Result<(), OfpErr> {
        self.switch.flow_mod(fm)
    }

    fn group_mod(&mut self, gm: &ofp::GroupMod) -> Result<(), OfpErr> {
        self.switch.group_mod(gm)
    }

    fn meter_mod(&mut self, mm: &ofp::MeterMod) -> Result<(), OfpErr> {
        self.switch.meter_mod(mm)
    }

    fn packet_out(&mut self, po: &ofp::PacketOut) -> Result<(), OfpErr> {
        // The packet meets the flows the controller sent before it.
        self.switch.publish_pending();
        self.switch.packet_out(po)
    }

    fn barrier(&mut self) {
        self.switch.publish_pending();
    }

    fn tccs(&mut self, msg: TccsMsg) -> Result<(), OfpErr> {
        let sw = &self.switch;
        match msg {
            TccsMsg::TunnelAdd {
                remote_dpid,
                remote_ip,
                key,
                port_no,
                idle_timeout_s,
            } => {
                let spec = TunnelSpec {
                    port_no: Some(port_no),
                    remote: remote_ip,
                    key,
                    remote_dpid,
                    is_static: false,
                    idle_timeout_s,
                };
                sw.add_tunnel(spec).map(|_| ()).map_err(|e| {
                    warn!(error = %e, "tunnel add refused");
                    (ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_EPERM)
                })
            }
            TccsMsg::TunnelDel {
                remote_ip,
                key,
                port_no,
            } => {
                let port = if sw.tunnels().iter().any(|t| t.port_no == port_no) {
                    Some(port_no)
                } else {
                    sw.tunnel_port(remote_ip, key)
                };
                match port {
                    Some(p) => {
                        let _ = sw.del_tunnel(p);
                    }
                    None => debug!(%remote_ip, key, port_no, "tunnel to delete is already gone"),
                }
                Ok(())
            }
            other => {
                debug!(?other, "TCCS message not meant for a switch");
                Err((ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_EXP_TYPE))
            }
        }
    }

    fn multipart(&mut self, body: MultipartRequestBody) -> Result<Answer, OfpErr> {
        let sw = &self.switch;
        Ok(match body {
            MultipartRequestBody::Desc => Answer::One(MultipartReplyBody::Desc(Box::new(ofp::DescStats::new(
                "Cloud Rack",
                "userspace switch",
                env!("CARGO_PKG_VERSION"),
                "None",
                &format!("cloudrack-switch dpid {:016x}", sw.cfg.dpid),
            )))),
            MultipartRequestBody::PortDesc => {
                let mut descs: Vec<ofp::PortDesc> = sw.ports().iter().map(translate::port_desc).collect();
                descs.extend(sw.tunnels().iter().map(translate::tunnel_desc));
                Answer::One(MultipartReplyBody::PortDesc(descs))
            }
            MultipartRequestBody::PortStats { port_no } => Answer::One(MultipartReplyBody::PortStats(
                translate::port_stats(&sw.ports(), &sw.tunnels(), port_no),
            )),
            MultipartRequestBody::Table => {
                let p = sw.pipeline();
                let counts = sw.dp.table_stats();
                let stats = p
                    .tables
                    .iter()
                    .zip(counts)
                    .enumerate()
                    .map(|(id, (t, (lookup_count, matched_count)))| ofp::TableStats {
                        table_id: id as u8,
                        active_count: t.flows.len() as u32,
                        lookup_count,
                        matched_count,
                    })
                    .collect();
                Answer::One(MultipartReplyBody::Table(stats))
            }
            MultipartRequestBody::Flow(req) => {
                let filter = translate::stats_filter(&req)?;
                Answer::Flows(sw.flows(&filter).iter().map(|e| translate::flow_stats(e)).collect())
            }
            MultipartRequestBody::Aggregate(req) => {
                let flows = sw.flows(&translate::stats_filter(&req)?);
                Answer::One(MultipartReplyBody::Aggregate {
                    packet_count: flows.iter().map(|f| f.counters.packets.load(Relaxed)).sum(),
                    byte_count: flows.iter().map(|f| f.counters.bytes.load(Relaxed)).sum(),
                    flow_count: flows.len() as u32,
                })
            }
            MultipartRequestBody::Unknown { typ, data } => Answer::Raw {
                typ,
                entries: raw_entries(sw, typ, &data)?,
            },
        })
    }
}

/// The entries of the multipart replies whose bodies the message enum keeps raw: table
/// features, groups, meters.
fn raw_entries(sw: &Switch, typ: u16, data: &[u8]) -> Result<Vec<Vec<u8>>, OfpErr> {
    let p = sw.pipeline();
    let entries: Vec<Vec<u8>> = match typ {
        ofp::OFPMP_TABLE_FEATURES => {
            if !data.is_empty() {
                // Setting table features would reconfigure the pipeline's layout.
                return Err((ofp::OFPET_TABLE_FEATURES_FAILED, ofp::OFPTFFC_EPERM));
            }
            (0..crate::pipeline::actions::N_TABLES)
                .map(|t| super::table_features::table_features(t, sw.cfg.max_flows as u32))
                .collect()
        }
        ofp::OFPMP_GROUP_DESC => {
            let mut groups: Vec<_> = p.groups.values().cloned().collect();
            groups.sort_by_key(|g| g.id);
            groups
                .iter()
                .map(|g| ofp::GroupDesc::encode_list(&[translate::group_desc(g)]))
                .collect()
        }
        ofp::OFPMP_GROUP | ofp::OFPMP_METER | ofp::OFPMP_METER_CONFIG => {
            let Ok(id) = ofp::group_stats_request(data) else {
                return Err((ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_LEN));
            };
            let all = p.flows(&Default::default());
            if typ == ofp::OFPMP_GROUP {
                let mut groups: Vec<_> = p
                    .groups
                    .values()
                    .filter(|g| id == ofp::OFPG_ALL || g.id == id)
                    .cloned()
                    .collect();
                groups.sort_by_key(|g| g.id);
                groups
                    .iter()
                    .map(|g| {
                        let refs = all.iter().filter(|e| e.uses_group(g.id)).count() as u32;
                        ofp::GroupStats::encode_list(&[translate::group_stats(g, refs)])
                    })
                    .collect()
            } else {
                let mut meters: Vec<_> = p
                    .meters
                    .values()
                    .filter(|m| id == ofp::OFPM_ALL || m.id == id)
                    .cloned()
                    .collect();
                meters.sort_by_key(|m| m.id);
                meters
                    .iter()
                    .map(|m| {
                        if typ == ofp::OFPMP_METER {
                            let refs = all.iter().filter(|e| e.uses_meter(m.id)).count() as u32;
                            ofp::MeterStats::encode_list(&[translate::meter_stats(m, refs)])
                        } else {
                            ofp::MeterConfig::encode_list(&[translate::meter_config(m)])
                        }
                    })
                    .collect()
            }
        }
        ofp::OFPMP_GROUP_FEATURES => {
            use crate::pipeline::group::MAX_GROUPS;
            let acts = (1u32 << ofp::OFPAT_OUTPUT)
                | (1 << ofp::OFPAT_GROUP)
                | (1 << ofp::OFPAT_SET_FIELD)
                | (1 << ofp::OFPAT_PUSH_VLAN)
                | (1 << ofp::OFPAT_POP_VLAN)
                | (1 << ofp::OFPAT_DEC_NW_TTL)
                | (1 << ofp::OFPAT_SET_NW_TTL);
            vec![ofp::GroupFeatures {
                types: 0b1111,
                capabilities: ofp::OFPGFC_SELECT_WEIGHT | ofp::OFPGFC_SELECT_LIVENESS | ofp::OFPGFC_CHAINING,
                max_groups: [MAX_GROUPS as u32; 4],
                actions: [acts; 4],
            }
            .to_bytes()]
        }
        ofp::OFPMP_METER_FEATURES => vec![ofp::MeterFeatures {
            max_meter: crate::pipeline::meter::MAX_METERS as u32,
            band_types: (1 << ofp::OFPMBT_DROP) | (1 << ofp::OFPMBT_DSCP_REMARK),
            capabilities: u32::from(ofp::OFPMF_KBPS | ofp::OFPMF_PKTPS | ofp::OFPMF_BURST | ofp::OFPMF_STATS),
            max_bands: crate::pipeline::meter::MAX_BANDS as u8,
            max_color: 0,
        }
        .to_bytes()],
        _ => {
            debug!(typ, "unsupported multipart request");
            return Err((ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_MULTIPART));
        }
    };
    Ok(entries)
}

/// How long a connection attempt may take before we back off and retry.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Keep a connection to one controller: connect, run the session, back off, retry — forever.
/// While disconnected the datapath keeps forwarding on what is installed (fail-secure).
pub fn keep_connected(switch: Arc<Switch>, hub: Arc<Hub>, target: super::ControllerTarget) {
    let addr = target.addr;
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).and_then(|s| match &target.tls {
            Some((cfg, name)) => Channel::tls_client(s, cfg.clone(), name),
            None => Ok(Channel::plain(s)),
        });
        match connected {
            Ok(stream) => {
                info!(controller = ?target, "connected to controller");
                let started = Instant::now();
                let end = run(switch.clone(), hub.clone(), stream, Peer::Controller);
                warn!(%addr, reason = ?end.err(), "controller connection lost; forwarding continues on installed flows");
                if started.elapsed() > Duration::from_secs(10) {
                    backoff = Duration::from_millis(100);
                }
            }
            Err(e) if e.kind() == ErrorKind::InvalidData || e.to_string().contains("TLS") => {
                warn!(controller = ?target, error = %e, "controller connection refused at TLS")
            }
            Err(e) => debug!(%addr, error = %e, "controller not reachable"),
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Append `m`'s encoding, or log and skip a message too large for OpenFlow's length field (a
/// writer must never die of one bad message).
fn encode_or_skip(m: &Message, buf: &mut Vec<u8>) {
    if let Err(e) = m.try_encode_into(buf) {
        warn!(msg_type = m.msg_type(), xid = m.xid, error = %e, "message cannot be encoded; not sent");
    }
}
