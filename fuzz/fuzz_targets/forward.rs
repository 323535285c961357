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
//! - Every piece `split` makes fits the limit, its checksum can be finished, a GSO piece can be
//!   segmented, and a Cloud Rack peer's `decap` accepts it with its offload header.

#![no_main]

use cloudrack_fuzz::Control;
use cloudrack_vswitch::dp::fib::{Fib, Mac, MacEntry, Tunnel};
use cloudrack_vswitch::dp::forward::{decide, is_multicast, macs, source_allowed, Action, DropReason, Ingress};
use cloudrack_vswitch::dp::offload::{complete_checksum, segment, split};
use cloudrack_vswitch::port::RX_BUF_LEN;
use cloudrack_vswitch::tunnel::decap;
use cloudrack_wire::gre::{self, fold, sum_words};
use cloudrack_wire::vnet_hdr::{self, VnetHdr};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::net::Ipv4Addr;
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

    let mut emitted = 0;
    let r = segment(frame, hdr, max_frame, scratch, |seg| {
        emitted += 1;
        assert!(
            max_frame == 0 || seg.len() <= max_frame,
            "{}-byte segment over the {max_frame} limit",
            seg.len()
        );
        verify_checksums(seg);
    });
    if let Ok(n) = r {
        assert_eq!(n, emitted, "segment counted {n} segments but emitted {emitted}");
    }

    let mut pieces = Vec::new();
    let r = split(frame, hdr, max_frame, scratch, |p, h| pieces.push((p.to_vec(), *h)));
    let Ok(n) = r else { return };
    assert_eq!(n, pieces.len(), "split counted {n} pieces but emitted {}", pieces.len());
    for (mut piece, h) in pieces {
        assert!(
            piece.len() <= max_frame,
            "{}-byte piece over the {max_frame} limit",
            piece.len()
        );
        assert!(usize::from(h.hdr_len) <= piece.len(), "hdr_len beyond the piece");
        accepted_by_peer(&piece, &h);
        if h.is_gso() {
            let mut segs = 0;
            segment(&piece, &h, 0, scratch, |seg| {
                segs += 1;
                verify_checksums(seg);
            })
            .unwrap_or_else(|e| panic!("a GSO piece from split cannot be segmented: {e}"));
            assert!(segs > 1, "a GSO piece of one segment");
        }
        complete_checksum(&mut piece, &h).unwrap_or_else(|e| panic!("a piece from split cannot be finished: {e}"));
        verify_checksums(&piece);
    }
}

/// What a Cloud Rack peer does with a piece sent with its offload header: `decap` must take it.
fn accepted_by_peer(piece: &[u8], h: &VnetHdr) {
    let tunnel = Tunnel::new(9, Ipv4Addr::new(198, 18, 0, 2), 5, 2, false, 0, true);
    let Ok(total) = u16::try_from(20 + tunnel.offload_header.len() + vnet_hdr::LEN + piece.len()) else {
        return;
    };
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[
        0,
        0,
        0x40,
        0,
        64,
        gre::IPPROTO_GRE as u8,
        0,
        0,
        198,
        18,
        0,
        1,
        198,
        18,
        0,
        2,
    ]);
    p.extend_from_slice(&tunnel.offload_header);
    let mut hb = [0u8; vnet_hdr::LEN];
    h.emit(&mut hb);
    p.extend_from_slice(&hb);
    p.extend_from_slice(piece);
    let d = decap(&p).unwrap_or_else(|e| panic!("the peer refuses a piece from split ({h:?}): {e}"));
    assert_eq!(d.vnet, Some(*h));
    assert_eq!(&p[d.inner], piece);
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
