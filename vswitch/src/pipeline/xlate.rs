//! Translation: run one packet's key through the pipeline (tables, instructions, the action
//! set, groups) and produce a flat program of [`Op`]s that any packet with the same bits under
//! the returned megaflow mask would produce too. The datapath caches the program and
//! [`execute`](super::execute)s it per packet: this runs once per new flow, not per packet.
//!
//! Reserved ports become concrete ones here: FLOOD and ALL are the local ports of the packet's
//! virtual network (its tunnel_id) other than the ingress, plus that network's static tunnels
//! when the packet came from a local port (never back into a tunnel: split horizon); IN_PORT
//! is the ingress; TABLE (PACKET_OUT only) runs the pipeline.
//!
//! NORMAL is Cloud Rack's L2 service, the behaviour the Cloud Rack controller builds on:
//! - broadcast/multicast floods as above and, from a local port or a static tunnel, also goes
//!   to the controller (which relays it to the other hosts);
//! - unicast goes where table 0 places the destination MAC (an entry matching exactly
//!   {tunnel_id, eth_dst} with one output), else to the controller from a local port or static
//!   tunnel (it knows where the MAC is), else floods to local ports (from a tunnel);
//! - while table 0's table-miss entry is NORMAL (the default), every frame from a local port
//!   or static tunnel whose source MAC table 0 does not place behind that port is also
//!   reported to the controller, whatever entry forwards it: that is how VMs, and VMs that
//!   moved, are learned.

use super::actions::{Act, ActionSet};
use super::group::select_bucket;
use super::key::{off, Key};
use super::meter::Meter;
use super::table::FlowEntry;
use super::Pipeline;
use crate::dp::stats::FlowCounters;
use cloudrack_wire::ofp;
use std::sync::Arc;

/// What a port number is, for the reserved-port rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRole {
    Local { vnet: u32 },
    Tunnel { key: u32, is_static: bool },
    Unknown,
}

/// The ports the translation needs to know about.
pub trait Ports {
    fn role(&self, port: u32) -> PortRole;
    /// Local ports in `vnet`, ascending.
    fn local_in(&self, vnet: u32) -> &[u32];
    /// Static tunnels carrying `vnet`, ascending.
    fn static_tunnels_in(&self, vnet: u32) -> &[u32];
    fn live(&self, port: u32) -> bool {
        self.role(port) != PortRole::Unknown
    }
}

/// One step of a translated program.
#[derive(Debug, Clone)]
pub enum Op {
    /// Send the packet as it is now to a port (local or tunnel).
    Output(u32),
    /// Send it to the controller as a PACKET_IN.
    Controller {
        reason: u8,
        table_id: u8,
        cookie: u64,
        max_len: u16,
        tunnel_id: u64,
        metadata: u64,
    },
    SetField {
        field: u8,
        value: super::actions::FieldValue,
    },
    PushVlan(u16),
    PopVlan,
    DecNwTtl,
    SetNwTtl(u8),
    /// Pass the packet through a meter; stop if it says drop.
    Meter(Arc<Meter>),
    /// Run these on a copy of the packet, then go on with the original (group buckets).
    Clone(Vec<Op>),
    /// Count the packet (a group or bucket it reaches: a meter before may drop it first).
    Count(Arc<FlowCounters>),
}

/// A translated packet: its program, the megaflow mask under which the program holds, the
/// counters every packet of it bumps, and the tables it looked up (and whether each matched).
#[derive(Debug, Clone, Default)]
pub struct Xlated {
    pub ops: Vec<Op>,
    pub mask: Key,
    pub counters: Vec<Arc<FlowCounters>>,
    pub tables: Vec<(u8, bool)>,
}

impl Xlated {
    /// Whether the program does nothing to the packet but send it (the zero-copy case).
    pub fn is_plain_output(&self) -> bool {
        self.ops
            .iter()
            .all(|o| matches!(o, Op::Output(_) | Op::Controller { .. }))
    }
}

/// Where a translation starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A packet received on a port.
    Port,
    /// A PACKET_OUT from a controller: it teaches the L2 service nothing.
    Controller,
}

/// The flow entry whose actions are being translated.
#[derive(Debug, Clone, Copy)]
struct At {
    table: u8,
    cookie: u64,
    miss: bool,
}

struct Ctx<'a> {
    p: &'a Pipeline,
    ports: &'a dyn Ports,
    origin: Origin,
    in_port: u32,
    out: Xlated,
    /// Whether a PACKET_IN for the L2 service is already in the program.
    reported: bool,
}

fn is_multicast(mac: &[u8]) -> bool {
    mac[0] & 1 != 0
}

/// The fields a select group hashes on.
fn hash_mask() -> Key {
    let mut m = Key::default();
    for r in [
        off::ETH_DST,
        off::ETH_SRC,
        off::ETH_TYPE,
        off::IP_PROTO,
        off::NW_SRC,
        off::NW_DST,
        off::TP_SRC,
        off::TP_DST,
        off::IPV6_SRC,
        off::IPV6_DST,
    ] {
        m.0[r].fill(0xff);
    }
    m
}

fn flow_hash(k: &Key) -> u64 {
    // FNV-1a over the hashed fields: stable across runs and workers.
    let masked = k.and(&hash_mask());
    masked.0.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Where table 0 places `mac` in `vnet`: the single output of the entry a frame to that MAC
/// would hit, if that entry is a plain forwarding entry.
pub fn l2_location(p: &Pipeline, vnet: u64, mac: [u8; 6]) -> Option<u32> {
    let mut k = Key::default();
    k.set(off::TUNNEL_ID, &vnet.to_be_bytes());
    k.set(off::ETH_DST, &mac);
    p.table(0)
        .flows
        .lookup(&k, &mut Key::default())
        .and_then(|e| e.insts.single_output())
}

/// Translate a packet with key `key` (received on its in_port, or sent by the controller).
pub fn translate(p: &Pipeline, ports: &dyn Ports, key: &Key, origin: Origin) -> Xlated {
    let mut cx = Ctx {
        p,
        ports,
        origin,
        in_port: key.in_port(),
        out: Xlated::default(),
        reported: false,
    };
    // The ingress metadata always counts: the reserved ports depend on it.
    cx.out.mask.0[off::IN_PORT].fill(0xff);
    cx.out.mask.0[off::TUNNEL_ID].fill(0xff);
    let mut k = *key;
    if origin == Origin::Port && p.l2_service() {
        cx.learn(&k);
    }
    let mut ops = Vec::new();
    cx.run_tables(&mut k, 0, &mut ops);
    cx.out.ops.extend(ops);
    cx.out
}

/// Translate a PACKET_OUT's action list for a packet with key `key`.
pub fn translate_packet_out(p: &Pipeline, ports: &dyn Ports, key: &Key, actions: &[Act]) -> Xlated {
    let mut cx = Ctx {
        p,
        ports,
        origin: Origin::Controller,
        in_port: key.in_port(),
        out: Xlated::default(),
        reported: true,
    };
    let mut k = *key;
    let mut ops = Vec::new();
    let at = At {
        table: 0,
        cookie: u64::MAX,
        miss: false,
    };
    cx.apply(&mut k, actions, at, &mut ops, 0);
    cx.out.ops = ops;
    cx.out
}

impl Ctx<'_> {
    /// The L2 service's source learning (see the module docs).
    fn learn(&mut self, k: &Key) {
        self.out.mask.0[off::ETH_SRC].fill(0xff);
        let src = k.eth_src();
        let learns = match self.ports.role(self.in_port) {
            PortRole::Local { .. } => true,
            PortRole::Tunnel { is_static, .. } => is_static,
            PortRole::Unknown => false,
        };
        if learns && !is_multicast(&src) && l2_location(self.p, k.tunnel_id(), src) != Some(self.in_port) {
            self.out.ops.push(self.report(k));
            self.reported = true;
        }
    }

    fn report(&self, k: &Key) -> Op {
        Op::Controller {
            reason: ofp::OFPR_NO_MATCH,
            table_id: 0,
            cookie: u64::MAX,
            max_len: ofp::OFPCML_NO_BUFFER,
            tunnel_id: k.tunnel_id(),
            metadata: k.metadata(),
        }
    }

    /// Tables from `table` on, then the action set.
    fn run_tables(&mut self, k: &mut Key, table: u8, ops: &mut Vec<Op>) {
        let mut set = ActionSet::default();
        let mut t = table;
        loop {
            let mut probed = Key::default();
            let hit: Option<Arc<FlowEntry>> = self.p.table(t).flows.lookup(k, &mut probed).cloned();
            self.out.mask = self.out.mask.or(&probed);
            self.out.tables.push((t, hit.is_some()));
            let Some(e) = hit else {
                // No entry, not even a table-miss one: the pipeline ends here. The action set
                // written so far still runs, as in Open vSwitch (the spec says drop; OVS is
                // what operators' controllers are tested against, and it is the reference
                // the differential tests hold us to).
                let at = At {
                    table: t,
                    cookie: 0,
                    miss: true,
                };
                self.run_set(k, &set, at, ops);
                return;
            };
            self.out.counters.push(e.counters.clone());
            let i = &e.insts;
            if let Some(id) = i.meter {
                if let Some(m) = self.p.meters.get(&id) {
                    ops.push(Op::Meter(m.clone()));
                }
            }
            let at = At {
                table: t,
                cookie: e.cookie,
                miss: e.is_table_miss(),
            };
            if self.apply(k, &i.apply, at, ops, 0) {
                // The rest of this entry's instructions are skipped; what the action set holds
                // from earlier tables still runs.
                self.run_set(k, &set, at, ops);
                return;
            }
            if i.clear {
                set.clear();
            }
            set.write(&i.write);
            if let Some((value, mask)) = i.metadata {
                let md = (k.metadata() & !mask) | (value & mask);
                k.set(off::METADATA, &md.to_be_bytes());
            }
            match i.goto {
                Some(next) => t = next,
                None => {
                    self.run_set(k, &set, at, ops);
                    return;
                }
            }
        }
    }

    /// Append the ops for `acts` applied to a packet whose key is `k` (updated as fields are
    /// set), for the entry `at`. True when the list stopped short: a dec_nw_ttl found the TTL
    /// expired, which ends this action list (and the entry's instructions after it) as in
    /// Open vSwitch.
    fn apply(&mut self, k: &mut Key, acts: &[Act], at: At, ops: &mut Vec<Op>, depth: usize) -> bool {
        for a in acts {
            match *a {
                Act::Output { port, max_len } => self.output(k, port, max_len, at, ops, depth),
                Act::Group(id) => self.group(k, id, at, ops, depth),
                Act::SetField { field, value } => {
                    if let Some(def) = super::field::def(field) {
                        // Later tables see the new value; a tunnel_id set here is the
                        // virtual network outputs flood in.
                        k.set(def.range.clone(), value.as_slice());
                    }
                    ops.push(Op::SetField { field, value });
                }
                Act::PushVlan(tpid) => {
                    self.out.mask.0[off::VLAN_VID].fill(0xff);
                    self.out.mask.0[off::VLAN_PCP].fill(0xff);
                    k.set_u16(off::VLAN_VID, 0x1000);
                    k.0[off::VLAN_PCP.start] = 0;
                    ops.push(Op::PushVlan(tpid));
                }
                Act::PopVlan => {
                    self.out.mask.0[off::VLAN_VID].fill(0xff);
                    k.set_u16(off::VLAN_VID, 0);
                    k.0[off::VLAN_PCP.start] = 0;
                    ops.push(Op::PopVlan);
                }
                Act::DecNwTtl => {
                    self.out.mask.0[off::ETH_TYPE].fill(0xff);
                    let ip = matches!(k.eth_type(), super::key::ETH_TYPE_IPV4 | super::key::ETH_TYPE_IPV6);
                    if ip {
                        self.out.mask.0[off::NW_TTL].fill(0xff);
                        let ttl = k.u8(off::NW_TTL);
                        if ttl <= 1 {
                            return true;
                        }
                        k.0[off::NW_TTL.start] = ttl - 1;
                        ops.push(Op::DecNwTtl);
                    }
                }
                Act::SetNwTtl(t) => {
                    k.0[off::NW_TTL.start] = t;
                    ops.push(Op::SetNwTtl(t));
                }
                Act::SetQueue(_) | Act::CopyTtl => {}
            }
        }
        false
    }

    /// The end of the pipeline: the action set, in the spec's order.
    fn run_set(&mut self, k: &mut Key, set: &ActionSet, at: At, ops: &mut Vec<Op>) {
        let acts = set.in_order();
        if !acts.is_empty() {
            self.apply(k, &acts, at, ops, 0);
        }
    }

    fn output(&mut self, k: &mut Key, port: u32, max_len: u16, at: At, ops: &mut Vec<Op>, depth: usize) {
        let vnet = k.tunnel_id() as u32;
        match port {
            ofp::OFPP_IN_PORT => {
                if self.ports.live(self.in_port) {
                    ops.push(Op::Output(self.in_port));
                }
            }
            ofp::OFPP_FLOOD | ofp::OFPP_ALL => self.flood(vnet, true, ops),
            ofp::OFPP_CONTROLLER => {
                ops.push(Op::Controller {
                    // A table-miss entry's packets are reported as misses (spec 6.1.2).
                    reason: if at.miss { ofp::OFPR_NO_MATCH } else { ofp::OFPR_ACTION },
                    table_id: at.table,
                    cookie: at.cookie,
                    max_len,
                    tunnel_id: k.tunnel_id(),
                    metadata: k.metadata(),
                });
            }
            ofp::OFPP_NORMAL => self.normal(k, ops),
            ofp::OFPP_TABLE => {
                if depth == 0 && self.origin == Origin::Controller {
                    let mut kk = *k;
                    self.run_tables(&mut kk, 0, ops);
                }
            }
            // No local (bridge) port on this switch.
            ofp::OFPP_LOCAL => {}
            p if p == self.in_port => {
                // Output to the ingress needs IN_PORT (spec 7.2.5); Open vSwitch drops it too.
            }
            p => {
                if self.ports.live(p) {
                    ops.push(Op::Output(p));
                }
            }
        }
    }

    /// Flood in `vnet`: local ports but the ingress, and static tunnels if `tunnels` and the
    /// packet came from a local port.
    fn flood(&mut self, vnet: u32, tunnels: bool, ops: &mut Vec<Op>) {
        for &p in self.ports.local_in(vnet) {
            if p != self.in_port {
                ops.push(Op::Output(p));
            }
        }
        let from_local = matches!(self.ports.role(self.in_port), PortRole::Local { .. });
        if tunnels && from_local {
            for &p in self.ports.static_tunnels_in(vnet) {
                ops.push(Op::Output(p));
            }
        }
    }

    /// Cloud Rack's L2 service (see the module docs).
    fn normal(&mut self, k: &Key, ops: &mut Vec<Op>) {
        self.out.mask.0[off::ETH_DST].fill(0xff);
        self.out.mask.0[off::ETH_SRC].fill(0xff);
        let (dst, src) = (k.eth_dst(), k.eth_src());
        if is_multicast(&src) {
            return;
        }
        let vnet = k.tunnel_id();
        let learns = match self.ports.role(self.in_port) {
            PortRole::Local { .. } => true,
            PortRole::Tunnel { is_static, .. } => is_static,
            PortRole::Unknown => false,
        } && self.origin == Origin::Port;
        if is_multicast(&dst) {
            self.flood(vnet as u32, true, ops);
            if learns && !self.reported {
                ops.push(self.report(k));
                self.reported = true;
            }
            return;
        }
        match l2_location(self.p, vnet, dst) {
            Some(p) if p == self.in_port => {}
            Some(p) => {
                if self.ports.live(p) {
                    ops.push(Op::Output(p));
                }
            }
            None if learns => {
                if !self.reported {
                    ops.push(self.report(k));
                    self.reported = true;
                }
            }
            None => self.flood(vnet as u32, false, ops),
        }
    }

    fn group(&mut self, k: &mut Key, id: u32, at: At, ops: &mut Vec<Op>, depth: usize) {
        let Some(g) = self.p.groups.get(&id).cloned() else {
            return;
        };
        if depth > 32 {
            return;
        }
        ops.push(Op::Count(g.counters.clone()));
        let chosen: Vec<usize> = match g.group_type {
            ofp::OFPGT_ALL => (0..g.buckets.len()).collect(),
            ofp::OFPGT_SELECT => {
                self.out.mask = self.out.mask.or(&hash_mask());
                select_bucket(&g, flow_hash(k)).into_iter().collect()
            }
            ofp::OFPGT_INDIRECT => (0..g.buckets.len().min(1)).collect(),
            _ => g
                .buckets
                .iter()
                .position(|b| self.bucket_live(b.watch_port, b.watch_group, 0))
                .into_iter()
                .collect(),
        };
        for i in chosen {
            let b = &g.buckets[i];
            let mut kk = *k;
            let mut sub = vec![Op::Count(b.counters.clone())];
            self.apply(&mut kk, &b.actions, at, &mut sub, depth + 1);
            ops.push(Op::Clone(sub));
        }
    }

    /// Fast failover liveness: the watched port exists, or the watched group has a live bucket.
    fn bucket_live(&self, port: u32, group: u32, depth: usize) -> bool {
        if port != ofp::OFPP_ANY && !self.ports.live(port) {
            return false;
        }
        if group != ofp::OFPG_ANY {
            if depth > 8 {
                return false;
            }
            return self.p.groups.get(&group).is_some_and(|g| {
                g.buckets
                    .iter()
                    .any(|b| self.bucket_live(b.watch_port, b.watch_group, depth + 1))
            });
        }
        true
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::pipeline::key::extract;
    use cloudrack_wire::ofp::{Action, Bucket, FlowMod, GroupMod, Instruction, Match, Oxm};

    /// Ports 1-3 local in vnet 0, port 4 local in vnet 5, 100 a dynamic tunnel, 200 a static
    /// tunnel of vnet 0.
    struct P;
    impl Ports for P {
        fn role(&self, port: u32) -> PortRole {
            match port {
                1..=3 => PortRole::Local { vnet: 0 },
                4 => PortRole::Local { vnet: 5 },
                100 => PortRole::Tunnel {
                    key: 0,
                    is_static: false,
                },
                200 => PortRole::Tunnel {
                    key: 0,
                    is_static: true,
                },
                _ => PortRole::Unknown,
            }
        }
        fn local_in(&self, vnet: u32) -> &[u32] {
            match vnet {
                0 => &[1, 2, 3],
                5 => &[4],
                _ => &[],
            }
        }
        fn static_tunnels_in(&self, vnet: u32) -> &[u32] {
            if vnet == 0 {
                &[200]
            } else {
                &[]
            }
        }
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2, 0, 8, 0, 0]);
        f
    }

    fn outputs(x: &Xlated) -> Vec<String> {
        x.ops
            .iter()
            .filter(|o| !matches!(o, Op::Count(_)))
            .map(|o| match o {
                Op::Output(p) => format!("out{p}"),
                Op::Controller { reason, .. } => format!("ctl{reason}"),
                Op::Clone(ops) => format!("clone{}", ops.iter().filter(|o| !matches!(o, Op::Count(_))).count()),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn run(p: &Pipeline, in_port: u32, vnet: u64, f: &[u8]) -> Vec<String> {
        outputs(&translate(p, &P, &extract(f, in_port, vnet).0, Origin::Port))
    }

    fn l2_flow(vnet: u64, mac: [u8; 6], port: u32) -> FlowMod {
        FlowMod {
            priority: 100,
            match_: Match::new()
                .with(Oxm::TunnelId { id: vnet, mask: None })
                .with(Oxm::EthDst { mac, mask: None }),
            instructions: vec![Instruction::ApplyActions(vec![Action::output(port)])],
            ..FlowMod::default()
        }
    }

    fn cloudrack() -> Pipeline {
        let mut p = Pipeline::new(1000);
        p.insert(crate::pipeline::normal_table_miss());
        p
    }

    #[test]
    fn l2_service_matches_the_old_forwarding_rules() {
        let mut p = cloudrack();
        p.flow_mod(&l2_flow(0, A, 1)).unwrap();
        p.flow_mod(&l2_flow(0, B, 2)).unwrap();
        // Known both ways: forwarded, nothing reported.
        assert_eq!(run(&p, 1, 0, &frame(B, A)), ["out2"]);
        // A is not where table 0 says (it moved to port 3): reported, still forwarded.
        assert_eq!(run(&p, 3, 0, &frame(B, A)), ["ctl0", "out2"]);
        // Broadcast from a local port: reported once, flooded locally and to static tunnels.
        assert_eq!(run(&p, 1, 0, &frame([0xff; 6], A)), ["out2", "out3", "out200", "ctl0"]);
        // From a dynamic tunnel: flood to local ports only, no report.
        assert_eq!(run(&p, 100, 0, &frame([0xff; 6], A)), ["out1", "out2", "out3"]);
        // Unknown unicast: to the controller from a local port, flooded from a tunnel.
        let c: [u8; 6] = [2, 0, 0, 0, 0, 0xc];
        assert_eq!(run(&p, 1, 0, &frame(c, A)), ["ctl0"]);
        assert_eq!(run(&p, 100, 0, &frame(c, A)), ["out1", "out2", "out3"]);
        // Hairpin is dropped (a multicast source never gets here: the datapath drops it).
        assert!(run(&p, 2, 0, &frame(B, B)).is_empty());
        // Networks are apart: vnet 5 floods to its own port only.
        assert_eq!(run(&p, 9, 5, &frame([0xff; 6], A)), ["out4"]);
    }

    #[test]
    fn a_controller_table_miss_turns_the_l2_service_off() {
        let mut p = cloudrack();
        p.flow_mod(&FlowMod {
            priority: 0,
            instructions: vec![Instruction::ApplyActions(vec![Action::output(ofp::OFPP_CONTROLLER)])],
            ..FlowMod::default()
        })
        .unwrap();
        p.flow_mod(&FlowMod {
            priority: 1,
            match_: Match::new()
                .with(Oxm::InPort(1))
                .with(Oxm::EthDst { mac: B, mask: None }),
            instructions: vec![Instruction::ApplyActions(vec![Action::output(2)])],
            ..FlowMod::default()
        })
        .unwrap();
        assert_eq!(run(&p, 1, 0, &frame(B, A)), ["out2"]);
        assert_eq!(run(&p, 3, 0, &frame(B, A)), [format!("ctl{}", ofp::OFPR_NO_MATCH)]);
    }

    #[test]
    fn goto_metadata_action_set_and_megaflow_mask() {
        let mut p = Pipeline::new(100);
        // Table 0: TCP goes to table 1 with metadata 7 and a written output; table 1 matches
        // the metadata and clears nothing, so the action set's output runs at the end.
        p.flow_mod(&FlowMod {
            priority: 10,
            match_: Match::new().with(Oxm::EthType(0x0800)),
            instructions: vec![
                Instruction::WriteActions(vec![Action::output(3)]),
                Instruction::WriteMetadata {
                    metadata: 7,
                    mask: 0xff,
                },
                Instruction::GotoTable(1),
            ],
            ..FlowMod::default()
        })
        .unwrap();
        p.flow_mod(&FlowMod {
            table_id: 1,
            priority: 10,
            match_: Match::new().with(Oxm::Metadata { value: 7, mask: None }),
            instructions: vec![Instruction::ApplyActions(vec![Action::output(2)])],
            ..FlowMod::default()
        })
        .unwrap();
        let (k, _) = extract(&frame(B, A), 1, 0);
        let x = translate(&p, &P, &k, Origin::Port);
        assert_eq!(outputs(&x), ["out2", "out3"]);
        assert_eq!(x.tables, [(0, true), (1, true)]);
        assert_eq!(x.counters.len(), 2);
        // The mask covers eth_type (probed in table 0) and the ingress, not the MACs.
        assert_eq!(x.mask.get(off::ETH_TYPE), &[0xff, 0xff]);
        assert_eq!(x.mask.get(off::IN_PORT), &[0xff; 4]);
        assert_eq!(x.mask.get(off::ETH_DST), &[0; 6]);
        // A miss in table 1 ends the pipeline; the action set written so far still runs (as
        // in Open vSwitch).
        let mut q = p.clone();
        q.flow_mod(&FlowMod {
            command: ofp::OFPFC_DELETE,
            table_id: 1,
            ..FlowMod::default()
        })
        .unwrap();
        assert_eq!(outputs(&translate(&q, &P, &k, Origin::Port)), ["out3"]);
        // With nothing written, a miss drops.
        let mut r = Pipeline::new(10);
        r.flow_mod(&FlowMod {
            priority: 1,
            instructions: vec![Instruction::GotoTable(1)],
            ..FlowMod::default()
        })
        .unwrap();
        assert!(outputs(&translate(&r, &P, &k, Origin::Port)).is_empty());
    }

    #[test]
    fn groups_clone_per_bucket() {
        let mut p = Pipeline::new(100);
        let bucket = |port: u32| Bucket {
            weight: 0,
            watch_port: port,
            watch_group: ofp::OFPG_ANY,
            actions: vec![
                Action::SetField(Oxm::VlanVid {
                    vid: 0x1005,
                    mask: None,
                }),
                Action::output(port),
            ],
        };
        p.group_mod(&GroupMod {
            command: ofp::OFPGC_ADD,
            group_type: ofp::OFPGT_ALL,
            group_id: 1,
            buckets: vec![bucket(2), bucket(3)],
        })
        .unwrap();
        p.group_mod(&GroupMod {
            command: ofp::OFPGC_ADD,
            group_type: ofp::OFPGT_FF,
            group_id: 2,
            buckets: vec![bucket(9), bucket(3)],
        })
        .unwrap();
        for g in [1, 2] {
            p.flow_mod(&FlowMod {
                priority: 10 + g as u16,
                match_: Match::new().with(Oxm::InPort(g)),
                instructions: vec![Instruction::ApplyActions(vec![Action::Group(g)])],
                ..FlowMod::default()
            })
            .unwrap();
        }
        assert_eq!(run(&p, 1, 0, &frame(B, A)), ["clone2", "clone2"]);
        // Fast failover skips the dead port 9.
        let x = translate(&p, &P, &extract(&frame(B, A), 2, 0).0, Origin::Port);
        match &x.ops[..] {
            [Op::Count(_), Op::Clone(ops)] => assert!(matches!(ops[2], Op::Output(3))),
            other => panic!("{other:?}"),
        }
    }
}
