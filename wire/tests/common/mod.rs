//! Reading the shared golden captures (classic pcap, Ethernet or Linux cooked link layer),
//! shared by the wire-format tests.

use std::path::PathBuf;

// ---------------------------------------------------------------------------------------------
// Locating the captures

pub fn captures_dir() -> PathBuf {
    let dir = match std::env::var_os("CLOUDRACK_CAPTURES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/captures"),
    };
    assert!(
        dir.is_dir(),
        "golden capture directory {} is missing: the OpenFlow codec cannot be checked against \
         real traffic. Set CLOUDRACK_CAPTURES to the directory holding the shared captures.",
        dir.display()
    );
    dir
}

pub fn read_capture(name: &str) -> Vec<u8> {
    let path = captures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Classic pcap

pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_LINUX_SLL: u32 = 113;
pub const LINKTYPE_LINUX_SLL2: u32 = 276;

pub struct Pcap {
    pub linktype: u32,
    pub frames: Vec<Vec<u8>>,
}

pub fn parse_pcap(file: &[u8]) -> Pcap {
    assert!(file.len() >= 24, "pcap file shorter than its global header");
    let little_endian = match file[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => panic!("not a classic pcap file (magic {:02x?})", &file[..4]),
    };
    let u32_at = |off: usize| {
        let b: [u8; 4] = file[off..off + 4].try_into().unwrap();
        if little_endian {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    // The upper bits of the link-type word may carry FCS information.
    let linktype = u32_at(20) & 0xffff;
    let mut frames = Vec::new();
    let mut off = 24;
    while off < file.len() {
        assert!(off + 16 <= file.len(), "truncated pcap record header");
        let incl = u32_at(off + 8) as usize;
        let orig = u32_at(off + 12) as usize;
        assert_eq!(incl, orig, "frame truncated by the capture's snaplen");
        let start = off + 16;
        assert!(start + incl <= file.len(), "truncated pcap record");
        frames.push(file[start..start + incl].to_vec());
        off = start + incl;
    }
    Pcap { linktype, frames }
}

/// The IPv4 packet inside a frame, or None for other network protocols.
pub fn ipv4_packet(linktype: u32, frame: &[u8]) -> Option<&[u8]> {
    let (mut ethertype, mut rest) = match linktype {
        LINKTYPE_ETHERNET => (u16::from_be_bytes([frame[12], frame[13]]), &frame[14..]),
        LINKTYPE_LINUX_SLL => (u16::from_be_bytes([frame[14], frame[15]]), &frame[16..]),
        LINKTYPE_LINUX_SLL2 => (u16::from_be_bytes([frame[0], frame[1]]), &frame[20..]),
        other => panic!("unsupported pcap link type {other} (want Ethernet or Linux cooked)"),
    };
    // 802.1Q / 802.1ad tags.
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        ethertype = u16::from_be_bytes([rest[2], rest[3]]);
        rest = &rest[4..];
    }
    (ethertype == 0x0800).then_some(rest)
}
