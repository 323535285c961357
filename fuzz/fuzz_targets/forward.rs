//! Arbitrary Ethernet frames through the datapath's per-frame work, no root and no sockets
//! needed: port security, the flow key, the flow cache, the pipeline's translation (a table 0
//! of L2 flows like the Cloud Rack controller's, over the default NORMAL table-miss entry) and
//! the executor, with in-memory ports recording what leaves; and through the software offloads
//! (`dp::offload`) with a virtio-net header taken from the input, whatever it claims.
//!
//! Input: byte 0 picks the ingress (local port, dynamic or static tunnel; port; network),
//! bytes 1-2 a frame size limit (little-endian, 0 = none), bytes 3-12 the virtio-net header,
//! the rest is the frame.
//!
//! Invariants checked beyond "never panics":
//! - Port security (`source_allowed`) lets a bound port send only from its MACs.
//! - The L2 service's rules: output goes where table 0 says and never back to the ingress
//!   port, floods stay in the ingress network and go into tunnels only from local ports, only
//!   learning ingresses report to the controller, and nothing edits the frame.
//! - A cached translation gives the same program as a fresh one.
//! - `segment` calls `emit` once per segment it counts; every segment fits the limit and has
//!   a valid IPv4 header checksum and L4 checksum.
//! - `segment_parts` (what a tunnel sends) gives the same segments without copying them.
//! - The segments of a batch, coalesced as a receiving switch does (`dp::gro`), come out as
//!   frames that each hold segments once, in order, and whose checksums verify once the
//!   partial checksum of a joined frame is finished.

#![no_main]

use cloudrack_fuzz::Control;
use cloudrack_vswitch::dp::fib::{FastMap, FloodSet, Mac};
use cloudrack_vswitch::dp::gro::{Gro, Source, Step};
use cloudrack_vswitch::dp::offload::{complete_checksum, segment, segment_parts};
use cloudrack_vswitch::dp::security::{is_multicast, macs, source_allowed};
use cloudrack_vswitch::pipeline::cache::FlowCache;
use cloudrack_vswitch::pipeline::execute::{execute, ExecDrop, Scratch, Sink, ToController};
use cloudrack_vswitch::pipeline::key::extract;
use cloudrack_vswitch::pipeline::xlate::{l2_location, translate, Origin, PortRole, Ports};
use cloudrack_vswitch::pipeline::{normal_table_miss, Pipeline};
use cloudrack_vswitch::port::batch::BATCH;
use cloudrack_vswitch::port::RX_BUF_LEN;
use cloudrack_wire::gre::{fold, sum_words};
use cloudrack_wire::ofp::{Action, FlowMod, Instruction, Match, Oxm};
use cloudrack_wire::vnet_hdr::{self, VnetHdr};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::sync::OnceLock;

const A: Mac = [2, 0, 0, 0, 0, 0xa];
const B: Mac = [2, 0, 0, 0, 0, 0xb];
const C: Mac = [2, 0, 0, 0, 0, 0xc];
const D: Mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

/// The in-memory ports: 1-3 local in network 0 (3 in network 1), 4 local in network 5, 9 a
/// dynamic tunnel, 8 a static one of network 1.
struct MemPorts {
    flood: FastMap<u32, FloodSet>,
}

impl Ports for MemPorts {
    fn role(&self, port: u32) -> PortRole {
        match port {
            1 | 2 => PortRole::Local { vnet: 0 },
            3 => PortRole::Local { vnet: 1 },
            4 => PortRole::Local { vnet: 5 },
            9 => PortRole::Tunnel {
                key: 0,
                is_static: false,
            },
            8 => PortRole::Tunnel {
                key: 1,
                is_static: true,
            },
            _ => PortRole::Unknown,
        }
    }
    fn local_in(&self, vnet: u32) -> &[u32] {
        self.flood.get(&vnet).map_or(&[], |s| &s.local)
    }
    fn static_tunnels_in(&self, vnet: u32) -> &[u32] {
        self.flood.get(&vnet).map_or(&[], |s| &s.static_tunnels)
    }
}

fn world() -> &'static (Pipeline, MemPorts) {
    static W: OnceLock<(Pipeline, MemPorts)> = OnceLock::new();
    W.get_or_init(|| {
        let mut p = Pipeline::new(100);
        p.insert(normal_table_miss());
        for (vnet, mac, out) in [
            (0, A, Some(1)),
            (0, B, Some(2)),
            (0, C, None),
            (0, D, Some(9)),
            (1, A, Some(3)),
            (1, B, Some(8)),
            (5, D, Some(4)),
        ] {
            p.flow_mod(&FlowMod {
                priority: 100,
                match_: Match::new()
                    .with(Oxm::TunnelId { id: vnet, mask: None })
                    .with(Oxm::EthDst { mac, mask: None }),
                instructions: out
                    .map(|o| vec![Instruction::ApplyActions(vec![Action::output(o)])])
                    .unwrap_or_default(),
                ..FlowMod::default()
            })
            .expect("flow");
        }
        let mut flood: FastMap<u32, FloodSet> = FastMap::default();
        flood.entry(0).or_default().local = vec![1, 2];
        flood.entry(1).or_default().local = vec![3];
        flood.entry(1).or_default().static_tunnels = vec![8];
        flood.entry(5).or_default().local = vec![4];
        (p, MemPorts { flood })
    })
}

/// What left, by port, and what went to the controller.
#[derive(Default)]
struct Recorded {
    out: Vec<(u32, Vec<u8>)>,
    reports: usize,
}

impl Sink for Recorded {
    fn output(&mut self, port: u32, frame: &mut [u8], _: &mut VnetHdr) {
        self.out.push((port, frame.to_vec()));
    }
    fn controller(&mut self, _: &[u8], _: &ToController) {
        self.reports += 1;
    }
    fn dropped(&mut self, why: ExecDrop) {
        panic!("the L2 flows never meter or decrement TTLs, yet {why:?}");
    }
}

/// (in_port, network, is a tunnel, is static).
fn ingress(b: u8) -> (u32, u32) {
    let port_no = [1, 2, 3, 9, 8, 4][usize::from(b / 3) % 6];
    let vnet = [0, 1, 5, 7][usize::from(b / 18) % 4];
    (port_no, vnet)
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; RX_BUF_LEN]);
    static CACHE: RefCell<FlowCache> = RefCell::new(FlowCache::default());
    /// A receive batch's slots, for coalescing.
    static SLOTS: RefCell<Vec<Box<[u8]>>> =
        RefCell::new((0..BATCH).map(|_| vec![0u8; RX_BUF_LEN].into_boxed_slice()).collect());
}

fuzz_target!(|data: &[u8]| {
    let mut c = Control::new(data);
    let (in_port, vnet) = ingress(c.u8());
    let max_frame = usize::from(c.u16());
    let hdr = VnetHdr::parse(&c.bytes::<{ vnet_hdr::LEN }>()).expect("10 bytes");
    let frame = c.rest();

    check_port_security(in_port, frame);
    check_forwarding(in_port, vnet, frame);
    SCRATCH.with(|s| check_offloads(frame, &hdr, max_frame, &mut s.borrow_mut()));
});

/// Port 1 is bound to A, port 2 to B and C, the others to nothing.
fn check_port_security(in_port: u32, frame: &[u8]) {
    let bound: &[Mac] = match in_port {
        1 => &[A],
        2 => &[B, C],
        _ => &[],
    };
    let allowed = source_allowed(bound, frame);
    let want = bound.is_empty() || macs(frame).is_some_and(|(_, src)| bound.contains(&src));
    assert_eq!(allowed, want, "port security of {bound:02x?}");
}

fn check_forwarding(in_port: u32, vnet: u32, frame: &[u8]) {
    // The datapath drops runts and multicast sources before the pipeline.
    let Some((dst, src)) = macs(frame) else { return };
    if is_multicast(&src) {
        return;
    }
    let (p, ports) = world();
    // A local port's frames are in its network; a tunnel's in its key's (any, here).
    let vnet = match ports.role(in_port) {
        PortRole::Local { vnet } => vnet,
        _ => vnet,
    };
    let (key, _) = extract(frame, in_port, vnet as u64);
    let x = translate(p, ports, &key, Origin::Port);
    let cached = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.sync(1);
        match c.lookup(&key) {
            Some(x) => x,
            None => {
                let x = std::sync::Arc::new(translate(p, ports, &key, Origin::Port));
                c.insert(&key, x.clone());
                x
            }
        }
    });
    assert_eq!(
        format!("{:?}", cached.ops),
        format!("{:?}", x.ops),
        "a cached program differs"
    );
    let mut rec = Recorded::default();
    let mut copy = frame.to_vec();
    execute(
        &x.ops,
        &mut copy,
        &VnetHdr::default(),
        &mut Scratch::default(),
        &mut rec,
    );
    let role = ports.role(in_port);
    let learns = matches!(role, PortRole::Local { .. } | PortRole::Tunnel { is_static: true, .. });
    assert!(rec.reports <= 1, "reported {} times", rec.reports);
    assert!(rec.reports == 0 || learns, "{role:?} does not learn but reported");
    let from_tunnel = matches!(role, PortRole::Tunnel { .. });
    for (port, bytes) in &rec.out {
        assert_ne!(*port, in_port, "output back to the ingress port");
        assert_eq!(bytes.as_slice(), frame, "the L2 service edited a frame");
    }
    let placed = l2_location(p, vnet as u64, dst);
    if !is_multicast(&dst) {
        if let Some(out) = placed {
            let want: Vec<u32> = if out == in_port { vec![] } else { vec![out] };
            let got: Vec<u32> = rec.out.iter().map(|(p, _)| *p).collect();
            assert_eq!(got, want, "unicast not sent where table 0 says");
        }
    }
    // Floods stay in the network (every output is a port of it) and never go from a tunnel
    // back into a tunnel (split horizon).
    if is_multicast(&dst) || placed.is_none() {
        for (port, _) in &rec.out {
            let in_net = ports.local_in(vnet).contains(port) || ports.static_tunnels_in(vnet).contains(port);
            assert!(in_net, "flood to port {port} outside network {vnet}");
            assert!(
                !(from_tunnel && matches!(ports.role(*port), PortRole::Tunnel { .. })),
                "a flood from a tunnel went back into a tunnel (split horizon)"
            );
        }
    }
}

fn check_offloads(frame: &[u8], hdr: &VnetHdr, max_frame: usize, scratch: &mut [u8]) {
    let mut copy = frame.to_vec();
    if complete_checksum(&mut copy, hdr).is_ok() {
        assert_eq!(copy.len(), frame.len());
    }

    let mut segments = Vec::new();
    let r = segment(frame, hdr, max_frame, scratch, |seg| {
        assert!(
            max_frame == 0 || seg.len() <= max_frame,
            "{}-byte segment over the {max_frame} limit",
            seg.len()
        );
        verify_checksums(seg);
        segments.push(seg.to_vec());
    });
    if let Ok(n) = r {
        assert_eq!(
            n,
            segments.len(),
            "segment counted {n} segments but emitted {}",
            segments.len()
        );
    }
    let mut parts = Vec::new();
    let r2 = segment_parts(frame, hdr, max_frame, |h, p| parts.push([h, p].concat()));
    assert_eq!(
        r.is_ok(),
        r2.is_ok(),
        "segment and segment_parts disagree: {r:?} / {r2:?}"
    );
    assert!(parts == segments, "segment_parts gave other segments than segment");
    segments.truncate(BATCH);
    SLOTS.with(|s| check_coalesced(&segments, &mut s.borrow_mut()));
}

/// Coalesce `segments` as one receive batch from one tunnel: every segment leaves once, in
/// order within its flow, and every frame's checksums verify once finished.
fn check_coalesced(segments: &[Vec<u8>], slots: &mut [Box<[u8]>]) {
    const AT: usize = 44;
    let source = Source {
        port_no: 0x4001,
        key: 7,
        is_static: false,
    };
    let mut gro = Gro::new();
    let mut out = Vec::new();
    let take = |slots: &[Box<[u8]>], r: cloudrack_vswitch::dp::gro::Ready| {
        let mut f = slots[r.slot][r.off..r.off + r.len].to_vec();
        if r.segments > 1 {
            complete_checksum(&mut f, &r.vnet).unwrap_or_else(|e| panic!("a joined frame cannot be finished: {e}"));
            verify_checksums(&f);
        }
        r.segments
    };
    for (i, seg) in segments.iter().enumerate() {
        slots[i][AT..AT + seg.len()].copy_from_slice(seg);
        let o = gro.offer(slots, i, AT, seg.len(), source, true);
        if let Some(r) = o.flushed {
            out.push(take(slots, r));
        }
        if matches!(o.step, Step::Pass | Step::PassCorrupt) {
            assert_eq!(o.step, Step::Pass, "a segment from `segment` failed its checksum");
            out.push(1);
        }
    }
    while let Some(r) = gro.pop(slots) {
        out.push(take(slots, r));
    }
    assert_eq!(
        out.iter().sum::<u32>() as usize,
        segments.len(),
        "segments lost or doubled"
    );
}

/// Checks a frame that `segment` or `complete_checksum` finished, with a parser of its own:
/// Ethernet (one optional VLAN tag), IPv4 without a bad header checksum or IPv6 without
/// extension headers, TCP or UDP with a checksum that verifies against the pseudo-header.
fn verify_checksums(f: &[u8]) {
    let be16 = |i: usize| u16::from_be_bytes([f[i], f[i + 1]]);
    assert!(f.len() >= 14);
    let (mut l3, mut ethertype) = (14, be16(12));
    if ethertype == 0x8100 {
        ethertype = be16(16);
        l3 = 18;
    }
    let (l4, proto, pseudo) = match ethertype {
        0x0800 => {
            let ihl = usize::from(f[l3] & 0x0f) * 4;
            assert_eq!(fold(sum_words(&f[l3..l3 + ihl], 0)), 0xffff, "bad IPv4 header checksum");
            (l3 + ihl, f[l3 + 9], sum_words(&f[l3 + 12..l3 + 20], 0))
        }
        0x86dd => (l3 + 40, f[l3 + 6], sum_words(&f[l3 + 8..l3 + 40], 0)),
        other => panic!("a finished GSO frame of EtherType {other:#06x}"),
    };
    let l4_len = f.len() - l4;
    let sum = sum_words(&f[l4..], pseudo + u64::from(proto) + l4_len as u64);
    assert_eq!(fold(sum), 0xffff, "bad L4 checksum (protocol {proto})");
}
