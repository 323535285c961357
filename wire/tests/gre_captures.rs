//! Golden GRE captures from two Open vSwitch 3.1 hosts (`options:key=5`, and `key=0` with
//! `csum=true`): every packet parses (checksums verified), carries what OVS sent, and our
//! emitter rebuilds its GRE header byte for byte.

mod common;

use cloudrack_wire::gre::{GrePacket, GreRepr, FLAG_C, FLAG_K, PROTO_TEB};
use common::*;

/// (GRE bytes of every GRE packet in a capture).
fn gre_packets(name: &str) -> Vec<Vec<u8>> {
    let pcap = parse_pcap(&read_capture(name));
    let out: Vec<Vec<u8>> = pcap
        .frames
        .iter()
        .filter_map(|f| ipv4_packet(pcap.linktype, f))
        .filter(|ip| ip[9] == 47)
        .map(|ip| {
            let ihl = (ip[0] & 0x0f) as usize * 4;
            let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            ip[ihl..total].to_vec()
        })
        .collect();
    assert!(!out.is_empty(), "{name} holds no GRE");
    out
}

fn check(name: &str, key: u32, csum: bool) {
    for (i, bytes) in gre_packets(name).iter().enumerate() {
        let p = GrePacket::new_checked(&bytes[..]).unwrap_or_else(|e| panic!("{name} #{i}: {e}"));
        let repr = GreRepr::parse(&p).unwrap_or_else(|e| panic!("{name} #{i}: {e}"));
        assert_eq!(repr.protocol, PROTO_TEB, "{name} #{i}");
        assert_eq!(repr.key, Some(key), "{name} #{i}");
        assert_eq!(repr.checksum, csum, "{name} #{i}");
        assert_eq!(repr.sequence, None, "{name} #{i}");
        let flags = if csum { FLAG_C | FLAG_K } else { FLAG_K };
        assert_eq!(p.flags(), flags, "{name} #{i}");
        // Re-emit the header in front of the same payload: identical bytes, checksum included.
        let mut again = vec![0u8; bytes.len()];
        let hl = repr.header_len();
        again[hl..].copy_from_slice(&bytes[hl..]);
        assert_eq!(repr.emit(&mut again), hl);
        assert_eq!(again, *bytes, "{name} #{i}: re-emitted GRE differs");
        // A flipped payload bit must fail the checksum.
        if csum {
            let mut bad = bytes.clone();
            *bad.last_mut().unwrap() ^= 1;
            assert!(
                GreRepr::parse(&GrePacket::new_checked(&bad[..]).unwrap()).is_err(),
                "{name} #{i}"
            );
        }
    }
}

#[test]
fn ovs_keyed_gre_round_trips() {
    check("gre-ovs31-key5.pcap", 5, false);
}

#[test]
fn ovs_checksummed_gre_round_trips() {
    check("gre-ovs31-key0-csum.pcap", 0, true);
}
