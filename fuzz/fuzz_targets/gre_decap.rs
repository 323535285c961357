//! Arbitrary bytes as the IPv4 packet a raw IPPROTO_GRE socket returns, through the switch's
//! `tunnel::decap` and the GRE codec's checked parse.
//!
//! Invariants checked beyond "never panics":
//! - After `GrePacket::new_checked`, every accessor works and header + payload is the buffer.
//! - A parsed `GreRepr` emitted in front of the same payload parses back to the same repr and
//!   payload, and the header bytes are the received ones except the checksum word (ones'
//!   complement has two zeros, 0x0000 and 0xffff, and Reserved1 is not checked on receive).
//! - A decapsulated frame re-encapsulated the way it was sent (outer IPv4, the tunnel's
//!   prebuilt keyed header, or the offload header of an older Cloud Rack host if there was
//!   one) decapsulates to the same key, frame and offload header.

#![no_main]

use cloudrack_vswitch::dp::fib::Tunnel;
use cloudrack_vswitch::tunnel::{decap, PathMtu};
use cloudrack_wire::gre::{self, GrePacket, GreRepr};
use cloudrack_wire::vnet_hdr;
use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;

fuzz_target!(|data: &[u8]| {
    // The GRE header alone, and where the IPv4 header says it starts.
    check_gre(data);
    if let Some(b0) = data.first() {
        let ihl = usize::from(b0 & 0x0f) * 4;
        if ihl >= 20 && ihl <= data.len() {
            check_gre(&data[ihl..]);
        }
    }
    check_decap(data);
});

fn check_gre(bytes: &[u8]) {
    let Ok(pkt) = GrePacket::new_checked(bytes) else {
        return;
    };
    let hl = pkt.header_len();
    let _ = (pkt.flags(), pkt.protocol(), pkt.key(), pkt.sequence(), pkt.checksum());
    let payload = pkt.payload();
    assert_eq!(hl + payload.len(), bytes.len(), "GRE header and payload do not add up");
    let Ok(repr) = GreRepr::parse(&pkt) else {
        assert!(pkt.checksum().is_some(), "parse failed without a checksum to blame");
        return;
    };
    assert_eq!(repr.header_len(), hl, "repr and packet disagree on the header length");

    let mut out = vec![0u8; hl + payload.len()];
    out[hl..].copy_from_slice(payload);
    assert_eq!(repr.emit(&mut out), hl, "emit wrote another header length");
    let again = GrePacket::new_checked(&out[..]).expect("an emitted GRE header does not pass new_checked");
    assert_eq!(GreRepr::parse(&again), Ok(repr), "emit/parse asymmetry");
    assert_eq!(again.payload(), payload);
    let csum_word = if repr.checksum {
        gre::BASE_LEN..gre::BASE_LEN + 4
    } else {
        0..0
    };
    for i in (0..hl).filter(|i| !csum_word.contains(i)) {
        assert_eq!(out[i], bytes[i], "re-emitted GRE header differs at byte {i}");
    }
}

fn check_decap(packet: &[u8]) {
    let Ok(d) = decap(packet) else {
        return;
    };
    assert!(
        d.inner.start <= d.inner.end && d.inner.end <= packet.len(),
        "inner range {:?} outside a {}-byte packet",
        d.inner,
        packet.len()
    );
    let inner = &packet[d.inner.clone()];
    assert!(inner.len() >= 14, "decap returned a runt inner frame");

    // What the sender on the other host would emit for this frame (the kernel adds the IPv4
    // header of a raw socket's packet; we write a plain 20-byte one).
    let tunnel = Tunnel::new(1, d.src, d.key, 0, false, 0, PathMtu::fixed(1500));
    // Super-frames with an offload header come only from older Cloud Rack hosts now.
    let gre_header = if d.vnet.is_some() {
        let mut h = [0u8; gre::KEYED_LEN];
        GreRepr {
            protocol: gre::PROTO_OFFLOAD,
            ..GreRepr::keyed_ethernet(d.key)
        }
        .emit(&mut h);
        h
    } else {
        tunnel.header
    };
    let vnet_len = if d.vnet.is_some() { vnet_hdr::LEN } else { 0 };
    let Ok(total) = u16::try_from(20 + gre_header.len() + vnet_len + inner.len()) else {
        return;
    };
    let mut out = ipv4_header(d.src, d.dst, total);
    out.extend_from_slice(&gre_header);
    if let Some(h) = &d.vnet {
        let mut hb = [0u8; vnet_hdr::LEN];
        h.emit(&mut hb);
        out.extend_from_slice(&hb);
    }
    out.extend_from_slice(inner);
    let again = decap(&out).unwrap_or_else(|e| panic!("re-encapsulated frame does not decap: {e}"));
    assert_eq!((again.src, again.dst, again.key), (d.src, d.dst, d.key));
    assert_eq!(again.vnet, d.vnet, "offload header changed across encap/decap");
    assert_eq!(
        &out[again.inner.clone()],
        inner,
        "inner frame changed across encap/decap"
    );
}

fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, total: u16) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0, 64, gre::IPPROTO_GRE as u8, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let csum = gre::internet_checksum(&h);
    h[10..12].copy_from_slice(&csum.to_be_bytes());
    h
}
