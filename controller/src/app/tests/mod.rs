//! The app's scenarios, driven through `App::handle` as the server and etcd drive it, with
//! switches whose messages are captured: forwarding (learning, tunnels, moves, broadcasts) in
//! `forwarding`, roles and takeover (election, reconciliation) in `takeover`. Here: the rig.

mod forwarding;
mod takeover;

use super::flows::{COOKIE, FLOW_PRIORITY};
use super::*;
use crate::commander::Location;
use crate::conn_tx::ConnTx;
use crate::ids::{Dpid, Mac, PortNo, Vnet};
use crate::store::{LocationRecord, Snapshot};
use crate::tccs::{TunnelPair, FIRST_TUNNEL_PORT};
use cloudrack_wire::ofp::{Action, Instruction, Match, MultipartReplyBody, MultipartRequestBody, Oxm};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

const VM_A: Mac = Mac([2, 0, 0, 0, 0, 0xa]);
const VM_M: Mac = Mac([2, 0, 0, 0, 0, 0xb]);
const VM_X: Mac = Mac([2, 0, 0, 0, 0, 0xc]);
const BROADCAST: Mac = Mac([0xff; 6]);

/// The controller's first tunnel port on each host.
const T: u32 = FIRST_TUNNEL_PORT.0;
/// The network every test's VMs are in.
const NET: Vnet = Vnet(0);

struct Rig {
    app: App,
    rx: Vec<ConnTx>,
}

fn config() -> Config {
    Config {
        tunnel_idle: Duration::from_secs(60),
        flow_idle_s: 300,
        limits: Limits::default(),
    }
}

/// An app with `n` registered switches, dpids 1..=n on connections 1..=n.
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
            mac: mac.0,
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
        let mut data = dst.0.to_vec();
        data.extend_from_slice(&src.0);
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
                    Some(Action::Output { port, .. }) => Some((Mac(fm.match_.eth_dst()?), *port)),
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

/// What the app told its store.
type Recorded = Arc<Mutex<Vec<Change>>>;

/// A standby with three switches whose store holds `locations` and tunnels 1-2 and 1-3
/// (each on port T, T + 1 of its ends), elected; and each switch's questions (xids).
fn taken_over(locations: Vec<LocationRecord>) -> (Rig, Recorded, Vec<(u32, u32)>) {
    let changes = Arc::new(Mutex::new(Vec::new()));
    let tunnel = |b: u64, port: u32| TunnelPair {
        a: Dpid(1),
        port_a: PortNo(port),
        b: Dpid(b),
        port_b: PortNo(T),
        key: NET,
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
        vnet: NET,
        mac: VM_M,
        at: loc(dpid, port),
        port_gone: false,
    }
}

/// Port `port` of switch `dpid`.
fn loc(dpid: u64, port: u32) -> Location {
    Location {
        dpid: Dpid(dpid),
        port: PortNo(port),
    }
}

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
            .with(Oxm::EthDst { mac: mac.0, mask: None }),
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
                Some((Mac(fm.match_.eth_dst()?), fm.out_port))
            }
            _ => None,
        })
        .collect()
}
