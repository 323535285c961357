//! A deterministic driver of the datapath's per-frame work, without I/O, for instruction
//! counting under callgrind (see bench/PROFILE.md):
//!
//!   valgrind --tool=callgrind cargo-built-example decide|segment|coalesce N
//!
//! `decide`: the forwarding decision for N 64-byte frames against a 10 000-entry table 0 of
//! L2 flows (what the Cloud Rack controller installs): flow key, flow cache, and on a miss the
//! pipeline's translation, as a worker does per frame.
//! `segment`: cutting N 64 KB TCP super-frames into segments for a tunnel with a 1500-byte
//! path MTU: every segment's headers and full checksums, the payload left in place (what every
//! tunnel does with a super-frame). `coalesce`: joining those segments back into one
//! super-frame, as a receiving switch does (every segment's checksums verified, its payload
//! copied after the first).

use cloudrack_vswitch::dp::fib::Fib;
use cloudrack_vswitch::dp::gro::{Gro, Source};
use cloudrack_vswitch::dp::offload;
use cloudrack_vswitch::pipeline::cache::FlowCache;
use cloudrack_vswitch::pipeline::key::extract;
use cloudrack_vswitch::pipeline::xlate::{translate, Origin};
use cloudrack_vswitch::pipeline::{normal_table_miss, Pipeline};
use cloudrack_wire::ofp::{Action, FlowMod, Instruction, Match, Oxm};
use cloudrack_wire::vnet_hdr::{VnetHdr, F_NEEDS_CSUM, GSO_TCPV4};
use std::hint::black_box;
use std::sync::Arc;

fn tcp_super_frame(payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 32 + payload];
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    let ip_len = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
    f[30..34].copy_from_slice(&[10, 0, 0, 2]);
    f[34 + 12] = 8 << 4; // data offset: 32 bytes
    f[34 + 13] = 0x18;
    for (i, b) in f[66..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "decide".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    match what.as_str() {
        "decide" => {
            let mut pipeline = Pipeline::new(20_000);
            pipeline.insert(normal_table_miss());
            for i in 0..10_000u32 {
                let b = i.to_be_bytes();
                let mac = [2, 0, b[0], b[1], b[2], b[3]];
                pipeline
                    .flow_mod(&FlowMod {
                        priority: 100,
                        match_: Match::new()
                            .with(Oxm::TunnelId { id: 0, mask: None })
                            .with(Oxm::EthDst { mac, mask: None }),
                        instructions: vec![Instruction::ApplyActions(vec![Action::output(1 + i % 8)])],
                        ..FlowMod::default()
                    })
                    .unwrap();
            }
            let fib = Fib {
                pipeline,
                ..Fib::default()
            };
            let mut cache = FlowCache::default();
            cache.sync(1);
            let mut frame = vec![0u8; 64];
            frame[..6].copy_from_slice(&[2, 0, 0, 0, 0x10, 0x00]);
            frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0x00, 0x01]);
            let mut outputs = 0usize;
            for i in 0..n {
                frame[5] = i as u8;
                let (key, _) = extract(black_box(&frame), 2, 0);
                let x = match cache.lookup(&key) {
                    Some(x) => x,
                    None => {
                        let x = Arc::new(translate(&fib.pipeline, &fib, &key, Origin::Port));
                        cache.insert(&key, x.clone());
                        x
                    }
                };
                outputs += x.ops.len();
            }
            println!("decide: {n} frames, {outputs} outputs, {:?}", cache.stats);
        }
        "segment" | "coalesce" => {
            let frame = tcp_super_frame(63_712);
            let hdr = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: 66,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16,
            };
            // The segments, each in a receive slot of its own, as a batch would hold them.
            let mut slots: Vec<Box<[u8]>> = Vec::new();
            let mut lens = Vec::new();
            offload::segment_parts(&frame, &hdr, 1472, |h, p| {
                let mut b = vec![0u8; 66_000].into_boxed_slice();
                b[..h.len()].copy_from_slice(h);
                b[h.len()..h.len() + p.len()].copy_from_slice(p);
                lens.push(h.len() + p.len());
                slots.push(b);
            })
            .unwrap();
            let first_headers = slots[0][..66].to_vec();
            let mut gro = Gro::new();
            let source = Source {
                port_no: 1,
                key: 0,
                is_static: false,
            };
            let mut work = 0usize;
            for _ in 0..n {
                if what == "segment" {
                    offload::segment_parts(black_box(&frame), &hdr, 1472, |h, p| work += h[50] as usize + p.len())
                        .unwrap();
                } else {
                    // Joining rewrites only the first segment's headers: restore them.
                    slots[0][..66].copy_from_slice(&first_headers);
                    for (i, &len) in lens.iter().enumerate() {
                        gro.offer(&mut slots, i, 0, len, source, true);
                    }
                    while let Some(r) = gro.pop(&mut slots) {
                        assert_eq!(r.segments as usize, lens.len(), "not joined into one frame");
                        work += r.len;
                    }
                }
            }
            println!("{what}: {n} super-frames of {} bytes ({work})", frame.len());
        }
        other => panic!("unknown workload {other:?}: decide, segment or coalesce"),
    }
}
