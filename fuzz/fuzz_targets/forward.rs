//! Arbitrary Ethernet frames through the forwarding decision (`dp::forward::decide`) against a
//! small FIB, and through the software offloads (`dp::offload`) with a virtio-net header taken
//! from the input, whatever it claims.
//!
//! Input: byte 0 picks the ingress (local port, dynamic or static tunnel; port; network),
//! bytes 1-2 a frame size limit (little-endian, 0 = none), bytes 3-12 the virtio-net header,
//! the rest is the frame.
//!
//! Invariants checked beyond "never panics":
//! - Port security (`source_allowed`) lets a bound port send only from its MACs.
//! - `decide` follows the rules in forward.rs: runts and multicast sources are dropped, output
//!   goes where the FIB says and never back to the ingress port, floods stay in the ingress
//!   network and go into tunnels only from local ports, only learning ingresses report.
//! - `segment` calls `emit` once per segment it counts; every segment fits the limit and has
//!   a valid IPv4 header checksum and L4 checksum.
//! - `segment_parts` (what a tunnel sends) gives the same segments without copying them.
//! - The segments of a batch, coalesced as a receiving switch does (`dp::gro`), come out as
//!   frames that each hold segments once, in order, and whose checksums verify once the
//!   partial checksum of a joined frame is finished.

#![no_main]

use cloudrack_fuzz::Control;
use cloudrack_vswitch::dp::fib::{Fib, Mac, MacEntry};
use cloudrack_vswitch::dp::forward::{decide, is_multicast, macs, source_allowed, Action, DropReason, Ingress};
use cloudrack_vswitch::dp::gro::{Gro, Source, Step};
use cloudrack_vswitch::dp::offload::{complete_checksum, segment, segment_parts};
use cloudrack_vswitch::port::batch::BATCH;
use cloudrack_vswitch::port::RX_BUF_LEN;
use cloudrack_wire::gre::{fold, sum_words};
use cloudrack_wire::vnet_hdr::{self, VnetHdr};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::sync::OnceLock;

const A: Mac = [2, 0, 0, 0, 0, 0xa];
const B: Mac = [2, 0, 0, 0, 0, 0xb];
const C: Mac = [2, 0, 0, 0, 0, 0xc];
const D: Mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

/// Ports 1-3 are local, 9 a dynamic tunnel, 8 a static one; networks 0, 1 and 5.
fn fib() -> &'static Fib {
    static FIB: OnceLock<Fib> = OnceLock::new();
    FIB.get_or_init(|| {
        let mut fib = Fib::default();
        for (vnet, mac, out_port) in [
            (0, A, Some(1)),
            (0, B, Some(2)),
            (0, C, None),
            (0, D, Some(9)),
            (1, A, Some(3)),
            (1, B, Some(8)),
            (5, D, Some(1)),
        ] {
            let entry = MacEntry {
                out_port,
                counters: Default::default(),
            };
            fib.macs.insert((vnet, mac), entry);
        }
        fib
    })
}

fn ingress(b: u8) -> Ingress {
    let port_no = [1, 2, 3, 9, 8, 4][usize::from(b / 3) % 6];
    let vnet = [0, 1, 5, 7][usize::from(b / 18) % 4];
    match b % 3 {
        0 => Ingress::Local { port_no, vnet },
        1 => Ingress::Tunnel {
            port_no,
            vnet,
            is_static: false,
        },
        _ => Ingress::Tunnel {
            port_no,
            vnet,
            is_static: true,
        },
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; RX_BUF_LEN]);
    /// A receive batch's slots, for coalescing.
    static SLOTS: RefCell<Vec<Box<[u8]>>> =
        RefCell::new((0..BATCH).map(|_| vec![0u8; RX_BUF_LEN].into_boxed_slice()).collect());
}

fuzz_target!(|data: &[u8]| {
    let mut c = Control::new(data);
    let ingress = ingress(c.u8());
    let max_frame = usize::from(c.u16());
    let hdr = VnetHdr::parse(&c.bytes::<{ vnet_hdr::LEN }>()).expect("10 bytes");
    let frame = c.rest();

    check_port_security(ingress, frame);
    check_decide(ingress, frame);
    SCRATCH.with(|s| check_offloads(frame, &hdr, max_frame, &mut s.borrow_mut()));
});

/// Port 1 is bound to A, port 2 to B and C, the others to nothing.
fn check_port_security(ingress: Ingress, frame: &[u8]) {
    let bound: &[Mac] = match ingress.port_no() {
        1 => &[A],
        2 => &[B, C],
        _ => &[],
    };
    let allowed = source_allowed(bound, frame);
    let want = bound.is_empty() || macs(frame).is_some_and(|(_, src)| bound.contains(&src));
    assert_eq!(allowed, want, "port security of {bound:02x?}");
}

fn check_decide(ingress: Ingress, frame: &[u8]) {
    let fib = fib();
    let v = decide(fib, ingress, frame);
    let learns = matches!(ingress, Ingress::Local { .. } | Ingress::Tunnel { is_static: true, .. });
    let Some((dst, src)) = macs(frame) else {
        assert_eq!(v.action, Action::Drop(DropReason::Runt), "{} bytes", frame.len());
        assert!(!v.packet_in);
        return;
    };
    assert!(frame.len() >= 14, "a {}-byte frame was not a runt", frame.len());
    if is_multicast(&src) {
        assert_eq!(v.action, Action::Drop(DropReason::BadSrcMac));
        assert!(!v.packet_in);
        return;
    }
    assert!(!v.packet_in || learns, "{ingress:?} does not learn but reported {v:?}");
    let (in_port, vnet) = (ingress.port_no(), ingress.vnet());
    let entry = fib.macs.get(&(vnet, dst)).map(|e| e.out_port);
    match v.action {
        Action::Output(p) => {
            assert_ne!(p, in_port, "output back to the ingress port");
            assert!(!is_multicast(&dst));
            assert_eq!(entry, Some(Some(p)), "output not from the FIB");
        }
        Action::Flood {
            vnet: fv,
            except,
            tunnels,
        } => {
            assert_eq!((fv, except), (vnet, in_port), "flood outside its network or back in");
            assert!(
                !tunnels || matches!(ingress, Ingress::Local { .. }),
                "{ingress:?} flooded into tunnels (split horizon)"
            );
            assert!(is_multicast(&dst) || entry.is_none());
        }
        Action::Drop(DropReason::Hairpin) => assert_eq!(entry, Some(Some(in_port))),
        Action::Drop(DropReason::Flow) => assert_eq!(entry, Some(None)),
        Action::Drop(DropReason::ToController) => {
            assert!(entry.is_none() && learns && v.packet_in)
        }
        Action::Drop(r) => panic!("unexpected drop {r:?} of a well-formed frame"),
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
