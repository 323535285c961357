//! One OpenFlow 1.3 connection, to a controller (active) or from a tool such as ovs-ofctl
//! (passive listener). The reading thread answers requests; a writer thread owns the socket's
//! sending side and also turns switch notifications into asynchronous messages, so nothing the
//! switch does ever waits on a slow peer.

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
/// Bytes of flow entries per multipart reply message (the length field is 16 bits).
const MULTIPART_CHUNK: usize = 60_000;

pub struct Session {
    switch: Arc<Switch>,
    hub: Arc<Hub>,
    peer: Peer,
    out: Sender<Message>,
    registered: bool,
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
        switch,
        hub,
        peer,
        out: out_tx,
        registered: false,
        link_id: None,
        remote,
    };
    s.send(Body::hello(&[ofp::OFP_VERSION]));
    let result = s.read_loop(stream);
    if let Some(id) = s.link_id {
        s.hub.remove(id);
    }
    s.switch.dp.shared.controller_up.store(s.hub.has_controller(), Relaxed);
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
    fn send(&self, body: Body) {
        self.reply(0, body);
    }

    fn reply(&self, xid: u32, body: Body) {
        if self.out.try_send(Message::new(xid, body)).is_err() {
            warn!("OpenFlow peer is not reading; message dropped");
        }
    }

    fn error(&self, xid: u32, raw: &[u8], (typ, code): OfpErr) {
        self.reply(xid, Body::error_reply(typ, code, raw));
    }

    fn read_loop(&mut self, stream: Channel) -> std::io::Result<()> {
        let mut reader = MsgReader::new(stream);
        let mut missed = 0;
        loop {
            match reader.next_message() {
                Ok(Incoming::Message(m)) => {
                    missed = 0;
                    let raw = m.encode();
                    self.handle(m, &raw);
                    if !reader.has_buffered_message() {
                        self.switch.publish_pending();
                    }
                }
                Ok(Incoming::Malformed { raw, error }) => {
                    missed = 0;
                    warn!(%error, "malformed OpenFlow message");
                    self.switch.dp.shared.counters.ofp_rx_malformed.fetch_add(1, Relaxed);
                    let xid = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
                    let code = if raw[0] != ofp::OFP_VERSION {
                        ofp::OFPBRC_BAD_VERSION
                    } else {
                        ofp::OFPBRC_BAD_LEN
                    };
                    self.error(xid, &raw, (ofp::OFPET_BAD_REQUEST, code));
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    missed += 1;
                    if missed > MAX_MISSED_ECHOES {
                        return Err(std::io::Error::new(
                            ErrorKind::TimedOut,
                            "peer stopped answering echo requests",
                        ));
                    }
                    self.send(Body::EchoRequest(Vec::new()));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() == ErrorKind::InvalidData {
                        self.switch.dp.shared.counters.ofp_rx_malformed.fetch_add(1, Relaxed);
                    }
                    return Err(e);
                }
            }
        }
    }

    fn handle(&mut self, m: Message, raw: &[u8]) {
        let xid = m.xid;
        match m.body {
            Body::Hello { version, elements } => {
                if ofp::negotiate_version(version, &elements, &[ofp::OFP_VERSION]).is_none() {
                    warn!(version, "peer does not speak OpenFlow 1.3");
                    self.error(xid, raw, (ofp::OFPET_HELLO_FAILED, ofp::OFPHFC_INCOMPATIBLE));
                }
            }
            Body::EchoRequest(data) => self.reply(xid, Body::EchoReply(data)),
            Body::EchoReply(_) | Body::BarrierReply => {}
            Body::Error { typ, code, data } => {
                warn!(typ, code, len = data.len(), "OpenFlow error from peer");
            }
            Body::FeaturesRequest => {
                self.reply(
                    xid,
                    Body::FeaturesReply {
                        datapath_id: self.switch.cfg.dpid,
                        n_buffers: 0,
                        n_tables: crate::pipeline::actions::N_TABLES,
                        auxiliary_id: 0,
                        capabilities: ofp::OFPC_FLOW_STATS
                            | ofp::OFPC_TABLE_STATS
                            | ofp::OFPC_PORT_STATS
                            | ofp::OFPC_GROUP_STATS,
                        reserved: 0,
                    },
                );
                if self.peer == Peer::Controller && !self.registered {
                    self.register();
                }
            }
            Body::GetConfigRequest => self.reply(
                xid,
                Body::GetConfigReply(ofp::SwitchConfig {
                    flags: 0,
                    miss_send_len: ofp::OFPCML_NO_BUFFER,
                }),
            ),
            Body::SetConfig(_) | Body::SetAsync(_) => {}
            Body::BarrierRequest => {
                // Everything before the barrier takes effect before its reply.
                self.switch.publish_pending();
                self.reply(xid, Body::BarrierReply)
            }
            Body::RoleRequest(r) => {
                // Roles are among registered controllers; anyone else (ovs-ofctl) stays EQUAL.
                let role = match self.link_id {
                    Some(id) => self.hub.request_role(id, r.role, r.generation_id),
                    None if r.role == ofp::OFPCR_ROLE_NOCHANGE => Ok(ofp::OFPCR_ROLE_EQUAL),
                    None => Ok(r.role),
                };
                match role {
                    Ok(role) => {
                        info!(role, generation_id = r.generation_id, "controller role");
                        self.reply(
                            xid,
                            Body::RoleReply(ofp::RoleMsg {
                                role,
                                generation_id: r.generation_id,
                            }),
                        );
                    }
                    Err(e) => {
                        warn!(
                            role = r.role,
                            generation_id = r.generation_id,
                            "role request refused (stale or bad)"
                        );
                        self.error(xid, raw, e);
                    }
                }
            }
            // A slave controller may look, not touch.
            Body::FlowMod(_)
            | Body::GroupMod(_)
            | Body::MeterMod(_)
            | Body::PacketOut(_)
            | Body::Experimenter { .. }
                if self.is_slave() =>
            {
                debug!(
                    msg_type = m.body.msg_type(),
                    "modification from a slave controller refused"
                );
                self.error(xid, raw, (ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_IS_SLAVE));
            }
            Body::FlowMod(fm) => {
                if let Err(e) = self.switch.flow_mod(&fm) {
                    debug!(?e, "flow mod refused");
                    self.error(xid, raw, e);
                }
            }
            Body::GroupMod(gm) => {
                if let Err(e) = self.switch.group_mod(&gm) {
                    debug!(?e, "group mod refused");
                    self.error(xid, raw, e);
                }
            }
            Body::MeterMod(mm) => {
                if let Err(e) = self.switch.meter_mod(&mm) {
                    debug!(?e, "meter mod refused");
                    self.error(xid, raw, e);
                }
            }
            Body::PacketOut(po) => self.packet_out(xid, raw, &po),
            Body::MultipartRequest { body, .. } => self.multipart(xid, raw, body),
            Body::Experimenter { .. } => self.experimenter(xid, raw, &m.body),
            other => {
                debug!(msg_type = other.msg_type(), "unsupported OpenFlow message");
                self.error(xid, raw, (ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_TYPE));
            }
        }
    }

    fn is_slave(&self) -> bool {
        self.link_id.is_some_and(|id| self.hub.is_slave(id))
    }

    /// Tell the controller who we are and what we have (TCCS), so a restarted controller
    /// rebuilds its registries from the switches.
    fn register(&mut self) {
        let sw = &self.switch;
        self.send(
            TccsMsg::Register {
                dpid: sw.cfg.dpid,
                underlay_ip: sw.cfg.underlay_ip,
                underlay_mac: sw.cfg.underlay_mac,
            }
            .to_body(),
        );
        for p in sw.ports() {
            self.send(
                TccsMsg::PortVnet {
                    port_no: p.port_no,
                    vnet: p.vnet,
                }
                .to_body(),
            );
            for b in port_bindings(&p) {
                self.send(b);
            }
        }
        for t in sw.tunnels() {
            self.send(
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
        self.registered = true;
        self.link_id = Some(self.hub.add(self.out.clone(), &self.remote));
        sw.dp.shared.controller_up.store(true, Relaxed);
        info!(dpid = format!("{:016x}", sw.cfg.dpid), "registered with controller");
    }

    fn packet_out(&self, xid: u32, raw: &[u8], po: &ofp::PacketOut) {
        // The packet meets the flows the controller sent before it.
        self.switch.publish_pending();
        if po.buffer_id != ofp::OFP_NO_BUFFER {
            return self.error(xid, raw, (ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BUFFER_UNKNOWN));
        }
        if let Err(e) = self.switch.packet_out(po) {
            self.error(xid, raw, e);
        }
    }

    fn multipart(&self, xid: u32, raw: &[u8], body: MultipartRequestBody) {
        let sw = &self.switch;
        let reply = |body| self.reply(xid, Body::MultipartReply { flags: 0, body });
        match body {
            MultipartRequestBody::Desc => reply(MultipartReplyBody::Desc(Box::new(ofp::DescStats::new(
                "Cloud Rack",
                "userspace switch",
                env!("CARGO_PKG_VERSION"),
                "None",
                &format!("cloudrack-switch dpid {:016x}", sw.cfg.dpid),
            )))),
            MultipartRequestBody::PortDesc => {
                let mut descs: Vec<ofp::PortDesc> = sw.ports().iter().map(translate::port_desc).collect();
                descs.extend(sw.tunnels().iter().map(translate::tunnel_desc));
                reply(MultipartReplyBody::PortDesc(descs));
            }
            MultipartRequestBody::PortStats { port_no } => reply(MultipartReplyBody::PortStats(translate::port_stats(
                &sw.ports(),
                &sw.tunnels(),
                port_no,
            ))),
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
                reply(MultipartReplyBody::Table(stats))
            }
            MultipartRequestBody::Flow(req) => match translate::stats_filter(&req) {
                Ok(filter) => {
                    let stats: Vec<ofp::FlowStats> =
                        sw.flows(&filter).iter().map(|e| translate::flow_stats(e)).collect();
                    self.flow_stats_reply(xid, stats);
                }
                Err(e) => self.error(xid, raw, e),
            },
            MultipartRequestBody::Aggregate(req) => match translate::stats_filter(&req) {
                Ok(filter) => {
                    let flows = sw.flows(&filter);
                    reply(MultipartReplyBody::Aggregate {
                        packet_count: flows.iter().map(|f| f.counters.packets.load(Relaxed)).sum(),
                        byte_count: flows.iter().map(|f| f.counters.bytes.load(Relaxed)).sum(),
                        flow_count: flows.len() as u32,
                    })
                }
                Err(e) => self.error(xid, raw, e),
            },
            MultipartRequestBody::Unknown { typ, data } => self.multipart_raw(xid, raw, typ, &data),
        }
    }

    /// The multipart requests whose bodies the message enum keeps raw: table features,
    /// groups, meters.
    fn multipart_raw(&self, xid: u32, raw: &[u8], typ: u16, data: &[u8]) {
        let sw = &self.switch;
        let p = sw.pipeline();
        let entries: Vec<Vec<u8>> = match typ {
            ofp::OFPMP_TABLE_FEATURES => {
                if !data.is_empty() {
                    // Setting table features would reconfigure the pipeline's layout.
                    return self.error(xid, raw, (ofp::OFPET_TABLE_FEATURES_FAILED, ofp::OFPTFFC_EPERM));
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
                    return self.error(xid, raw, (ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_LEN));
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
                return self.error(xid, raw, (ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_MULTIPART));
            }
        };
        self.raw_reply_chunks(xid, typ, entries);
    }

    /// Raw multipart entries in as many replies as needed, all but the last REPLY_MORE.
    fn raw_reply_chunks(&self, xid: u32, typ: u16, entries: Vec<Vec<u8>>) {
        let mut data = Vec::new();
        let mut iter = entries.into_iter().peekable();
        while let Some(e) = iter.next() {
            data.extend_from_slice(&e);
            if data.len() >= MULTIPART_CHUNK && iter.peek().is_some() {
                self.reply(
                    xid,
                    Body::MultipartReply {
                        flags: ofp::OFPMPF_REPLY_MORE,
                        body: MultipartReplyBody::Unknown {
                            typ,
                            data: std::mem::take(&mut data),
                        },
                    },
                );
            }
        }
        self.reply(
            xid,
            Body::MultipartReply {
                flags: 0,
                body: MultipartReplyBody::Unknown { typ, data },
            },
        );
    }

    /// Flow stats in as many replies as needed, all but the last flagged REPLY_MORE.
    fn flow_stats_reply(&self, xid: u32, stats: Vec<ofp::FlowStats>) {
        let mut chunk = Vec::new();
        let mut size = 0;
        let mut iter = stats.into_iter().peekable();
        while let Some(s) = iter.next() {
            // Entry header, match and instructions, as encoded.
            size += 56
                + s.match_.fields.iter().map(|o| o.to_bytes().len()).sum::<usize>()
                + ofp::Instruction::encode_list(&s.instructions).len();
            chunk.push(s);
            if size >= MULTIPART_CHUNK && iter.peek().is_some() {
                self.reply(
                    xid,
                    Body::MultipartReply {
                        flags: ofp::OFPMPF_REPLY_MORE,
                        body: MultipartReplyBody::Flow(std::mem::take(&mut chunk)),
                    },
                );
                size = 0;
            }
        }
        self.reply(
            xid,
            Body::MultipartReply {
                flags: 0,
                body: MultipartReplyBody::Flow(chunk),
            },
        );
    }

    fn experimenter(&self, xid: u32, raw: &[u8], body: &Body) {
        let msg = match TccsMsg::from_body(body) {
            None => return self.error(xid, raw, (ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_EXPERIMENTER)),
            Some(Err(e)) => {
                warn!(error = %e, "bad TCCS message");
                return self.error(xid, raw, (ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_EXP_TYPE));
            }
            Some(Ok(m)) => m,
        };
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
                if let Err(e) = sw.add_tunnel(spec) {
                    warn!(error = %e, "tunnel add refused");
                    self.error(xid, raw, (ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_EPERM));
                }
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
            }
            other => {
                debug!(?other, "TCCS message not meant for a switch");
                self.error(xid, raw, (ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_EXP_TYPE));
            }
        }
    }
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
