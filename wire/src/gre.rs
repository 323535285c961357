//! GRE per RFC 2784 (base header, checksum) and RFC 2890 (key and sequence number).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |C| |K|S| Reserved0       | Ver |         Protocol Type         |
//! |      Checksum (optional)      |       Reserved1 (optional)    |
//! |                         Key (optional)                        |
//! |                 Sequence Number (optional)                    |
//! ```
//!
//! Cloud Rack carries Ethernet (protocol 0x6558, Transparent Ethernet Bridging) with the K bit
//! set and key = virtual network id, as Linux `gretap` and Open vSwitch `type=gre` ports do.
//! On receive we accept C and S, verify the checksum, and reject a non-zero version or any other
//! flag (Open vSwitch drops those too: routing (R) and strict source route bits are obsolete).

use thiserror::Error;

/// Transparent Ethernet Bridging: the payload is a whole Ethernet frame.
pub const PROTO_TEB: u16 = 0x6558;
/// The payload older Cloud Rack hosts sent each other: a virtio-net header (10 bytes,
/// little-endian) followed by an Ethernet frame, so TCP super-frames crossed a tunnel whole
/// with their offload metadata (and the underlay fragmented them). Still accepted on receive;
/// no longer sent: every packet is plain Ethernet over GRE, cut to the path MTU. 0x88B5 is
/// IEEE 802's "local experimental EtherType 1", reserved for private protocols.
pub const PROTO_OFFLOAD: u16 = 0x88b5;
/// IPv4 protocol number of GRE.
pub const IPPROTO_GRE: i32 = 47;

pub const FLAG_C: u16 = 0x8000;
pub const FLAG_K: u16 = 0x2000;
pub const FLAG_S: u16 = 0x1000;
const VERSION_MASK: u16 = 0x0007;
const KNOWN_FLAGS: u16 = FLAG_C | FLAG_K | FLAG_S;

/// Base header length (flags/version + protocol type).
pub const BASE_LEN: usize = 4;
/// Header length with the key only, what we send by default.
pub const KEYED_LEN: usize = 8;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum GreError {
    #[error("GRE packet truncated: {have} bytes, header needs {need}")]
    Truncated { have: usize, need: usize },
    #[error("GRE version {0} is not 0")]
    BadVersion(u8),
    #[error("GRE flags {0:#06x} carry bits other than C, K, S")]
    UnsupportedFlags(u16),
    #[error("GRE checksum mismatch")]
    BadChecksum,
}

/// A read view over a GRE header and its payload.
#[derive(Debug, Clone, Copy)]
pub struct GrePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GrePacket<T> {
    /// Wrap without any check. For emission into a buffer of the right size.
    pub fn new_unchecked(buffer: T) -> Self {
        GrePacket { buffer }
    }

    /// Wrap and check that the buffer holds the whole header the flags announce, that the
    /// version is 0 and that no unknown flag is set. After this the accessors never panic.
    pub fn new_checked(buffer: T) -> Result<Self, GreError> {
        let packet = GrePacket { buffer };
        packet.check()?;
        Ok(packet)
    }

    fn check(&self) -> Result<(), GreError> {
        let data = self.buffer.as_ref();
        if data.len() < BASE_LEN {
            return Err(GreError::Truncated {
                have: data.len(),
                need: BASE_LEN,
            });
        }
        let word = self.flags_version();
        let version = (word & VERSION_MASK) as u8;
        if version != 0 {
            return Err(GreError::BadVersion(version));
        }
        let flags = word & !VERSION_MASK;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(GreError::UnsupportedFlags(flags));
        }
        let need = self.header_len();
        if data.len() < need {
            return Err(GreError::Truncated { have: data.len(), need });
        }
        Ok(())
    }

    fn flags_version(&self) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[0], d[1]])
    }

    /// The flag bits (C, K, S) without the version.
    pub fn flags(&self) -> u16 {
        self.flags_version() & !VERSION_MASK
    }

    pub fn protocol(&self) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[2], d[3]])
    }

    /// Header length implied by the flags: 4, plus 4 for each of C, K, S.
    pub fn header_len(&self) -> usize {
        let flags = self.flags();
        BASE_LEN + 4 * [FLAG_C, FLAG_K, FLAG_S].iter().filter(|f| flags & **f != 0).count()
    }

    fn word_at(&self, offset: usize) -> u32 {
        let d = self.buffer.as_ref();
        u32::from_be_bytes([d[offset], d[offset + 1], d[offset + 2], d[offset + 3]])
    }

    /// The checksum field, if C is set.
    pub fn checksum(&self) -> Option<u16> {
        (self.flags() & FLAG_C != 0).then(|| (self.word_at(BASE_LEN) >> 16) as u16)
    }

    pub fn key(&self) -> Option<u32> {
        let flags = self.flags();
        if flags & FLAG_K == 0 {
            return None;
        }
        let offset = BASE_LEN + if flags & FLAG_C != 0 { 4 } else { 0 };
        Some(self.word_at(offset))
    }

    pub fn sequence(&self) -> Option<u32> {
        let flags = self.flags();
        if flags & FLAG_S == 0 {
            return None;
        }
        let offset = self.header_len() - 4;
        Some(self.word_at(offset))
    }

    /// True if there is no checksum or it verifies over header and payload (RFC 2784 2.5).
    pub fn verify_checksum(&self) -> bool {
        self.checksum().is_none() || internet_checksum(self.buffer.as_ref()) == 0
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

/// The meaning of a GRE header, parsed from or emitted into a [`GrePacket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GreRepr {
    pub protocol: u16,
    pub key: Option<u32>,
    pub sequence: Option<u32>,
    /// On emit: compute and write a checksum. On parse: the packet carried a (valid) checksum.
    pub checksum: bool,
}

impl GreRepr {
    /// The header Cloud Rack sends: Ethernet payload, keyed with the virtual network id.
    pub fn keyed_ethernet(key: u32) -> Self {
        GreRepr {
            protocol: PROTO_TEB,
            key: Some(key),
            sequence: None,
            checksum: false,
        }
    }

    /// Parse a checked packet; a present checksum must verify.
    pub fn parse<T: AsRef<[u8]>>(packet: &GrePacket<T>) -> Result<Self, GreError> {
        if !packet.verify_checksum() {
            return Err(GreError::BadChecksum);
        }
        Ok(GreRepr {
            protocol: packet.protocol(),
            key: packet.key(),
            sequence: packet.sequence(),
            checksum: packet.checksum().is_some(),
        })
    }

    pub fn header_len(&self) -> usize {
        BASE_LEN
            + if self.checksum { 4 } else { 0 }
            + if self.key.is_some() { 4 } else { 0 }
            + if self.sequence.is_some() { 4 } else { 0 }
    }

    /// Write the header into the front of `buf`, whose rest must already hold the payload
    /// (the checksum covers it). Returns the header length.
    ///
    /// # Panics
    /// If `buf` is shorter than [`header_len`](Self::header_len): emission is our own code's
    /// job and a short buffer there is a bug, not bad input.
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let mut flags = 0u16;
        if self.checksum {
            flags |= FLAG_C;
        }
        if self.key.is_some() {
            flags |= FLAG_K;
        }
        if self.sequence.is_some() {
            flags |= FLAG_S;
        }
        buf[0..2].copy_from_slice(&flags.to_be_bytes());
        buf[2..4].copy_from_slice(&self.protocol.to_be_bytes());
        let mut offset = BASE_LEN;
        if self.checksum {
            buf[offset..offset + 4].fill(0);
            offset += 4;
        }
        if let Some(key) = self.key {
            buf[offset..offset + 4].copy_from_slice(&key.to_be_bytes());
            offset += 4;
        }
        if let Some(seq) = self.sequence {
            buf[offset..offset + 4].copy_from_slice(&seq.to_be_bytes());
            offset += 4;
        }
        if self.checksum {
            let sum = internet_checksum(buf);
            buf[BASE_LEN..BASE_LEN + 2].copy_from_slice(&sum.to_be_bytes());
        }
        offset
    }
}

/// The Internet checksum (RFC 1071) of `data`: ones' complement of the ones' complement sum.
/// Over data that contains a correct checksum field, the result is 0.
pub fn internet_checksum(data: &[u8]) -> u16 {
    !fold(sum_words(data, 0))
}

/// Add `data` as big-endian 16-bit words into a 64-bit accumulator (odd tail padded with 0).
/// The value returned is congruent, modulo 0xffff, to that plain sum and zero exactly when it
/// is, which is all a ones' complement checksum ([`fold`]) depends on.
///
/// Fast, because every byte of a segmented or coalesced TCP stream passes through here: it adds
/// 32-bit native-endian words into a 64-bit sum (which the compiler vectorizes) and turns the
/// folded result into big-endian order at the end; the ones' complement sum does not depend on
/// the byte order it was taken in, apart from that final swap (RFC 1071, 2.B).
pub fn sum_words(data: &[u8], acc: u64) -> u64 {
    let mut sum = 0u64;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        sum += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    sum += u64::from(u32::from_ne_bytes(tail));
    acc + u64::from(u16::from_be(fold(sum)))
}

/// Fold a ones' complement accumulator to 16 bits.
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

#[cfg(test)]
mod test {
    use super::*;

    // Keyed GRE as Open vSwitch sends it (flags 0x2000, TEB, key 5) followed by 4 payload bytes.
    static KEYED: [u8; 12] = [0x20, 0x00, 0x65, 0x58, 0, 0, 0, 5, 0xde, 0xad, 0xbe, 0xef];

    #[test]
    fn parse_keyed() {
        let p = GrePacket::new_checked(&KEYED[..]).unwrap();
        assert_eq!(p.header_len(), 8);
        assert_eq!(p.key(), Some(5));
        assert_eq!(p.sequence(), None);
        assert_eq!(p.checksum(), None);
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        let r = GreRepr::parse(&p).unwrap();
        assert_eq!(r, GreRepr::keyed_ethernet(5));
    }

    #[test]
    fn emit_keyed_matches_ovs_bytes() {
        let mut buf = [0u8; 12];
        buf[8..].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        let n = GreRepr::keyed_ethernet(5).emit(&mut buf);
        assert_eq!(n, 8);
        assert_eq!(buf, KEYED);
    }

    #[test]
    fn unkeyed_header_is_four_bytes() {
        let bytes = [0x00, 0x00, 0x65, 0x58, 1, 2];
        let p = GrePacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.header_len(), 4);
        assert_eq!(p.key(), None);
        assert_eq!(p.payload(), &[1, 2]);
    }

    #[test]
    fn checksum_key_sequence_round_trip() {
        let repr = GreRepr {
            protocol: PROTO_TEB,
            key: Some(0x01020304),
            sequence: Some(7),
            checksum: true,
        };
        let mut buf = vec![0u8; repr.header_len() + 5];
        buf[16..].copy_from_slice(b"hello");
        assert_eq!(repr.emit(&mut buf), 16);
        assert_eq!(&buf[0..4], &[0xb0, 0x00, 0x65, 0x58]);
        assert_eq!(&buf[8..16], &[1, 2, 3, 4, 0, 0, 0, 7]);
        let p = GrePacket::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(GreRepr::parse(&p).unwrap(), repr);
        assert_eq!(p.payload(), b"hello");
    }

    #[test]
    fn checksum_value_is_rfc1071() {
        // C+K header (0xa000, 0x6558), key 0, payload 0x0001: sum = a000+6558+0001 = 10559 ->
        // 0559+1 = 055a, complement = faa5.
        let repr = GreRepr {
            protocol: PROTO_TEB,
            key: Some(0),
            sequence: None,
            checksum: true,
        };
        let mut buf = [0u8; 14];
        buf[12..].copy_from_slice(&[0x00, 0x01]);
        repr.emit(&mut buf);
        assert_eq!(&buf[4..6], &[0xfa, 0xa5]);
    }

    #[test]
    fn wrong_checksum_is_rejected() {
        let repr = GreRepr {
            protocol: PROTO_TEB,
            key: Some(9),
            sequence: None,
            checksum: true,
        };
        let mut buf = vec![0u8; 12 + 3];
        repr.emit(&mut buf);
        buf[14] ^= 0x40;
        let p = GrePacket::new_checked(&buf[..]).unwrap();
        assert!(!p.verify_checksum());
        assert_eq!(GreRepr::parse(&p), Err(GreError::BadChecksum));
    }

    /// The plain definition: big-endian words, one at a time.
    fn sum_words_slowly(data: &[u8], mut acc: u64) -> u64 {
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            acc += u16::from_be_bytes([c[0], c[1]]) as u64;
        }
        if let [last] = chunks.remainder() {
            acc += (*last as u64) << 8;
        }
        acc
    }

    #[test]
    fn fast_sum_folds_like_the_plain_definition() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut bytes = vec![0u8; 3000];
        for b in bytes.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        for len in (0..40).chain([1447, 1448, 1449, 2999, 3000]) {
            for start in 0..3 {
                let d = &bytes[start..start + len.min(3000 - start)];
                for acc in [0, 0x1_2345, 0xffff] {
                    assert_eq!(
                        fold(sum_words(d, acc)),
                        fold(sum_words_slowly(d, acc)),
                        "len {len} start {start}"
                    );
                }
            }
        }
        // All ones and all zeros: the two representations of zero stay apart.
        assert_eq!(fold(sum_words(&[0xff; 64], 0)), 0xffff);
        assert_eq!(fold(sum_words(&[0; 64], 0)), 0);
    }

    #[test]
    fn nonzero_version_is_rejected() {
        let bytes = [0x20, 0x01, 0x65, 0x58, 0, 0, 0, 5];
        assert_eq!(GrePacket::new_checked(&bytes[..]).unwrap_err(), GreError::BadVersion(1));
    }

    #[test]
    fn routing_bit_is_rejected_without_panic() {
        // R (0x4000) is what crashes pnet's parser; we refuse it.
        let bytes = [0x40, 0x00, 0x65, 0x58, 0, 0, 0, 0];
        assert_eq!(
            GrePacket::new_checked(&bytes[..]).unwrap_err(),
            GreError::UnsupportedFlags(0x4000)
        );
    }

    #[test]
    fn truncated_headers_are_rejected() {
        assert_eq!(
            GrePacket::new_checked(&[0x20u8, 0x00][..]).unwrap_err(),
            GreError::Truncated { have: 2, need: 4 }
        );
        // K announced, key missing.
        assert_eq!(
            GrePacket::new_checked(&[0x20u8, 0x00, 0x65, 0x58, 0, 0][..]).unwrap_err(),
            GreError::Truncated { have: 6, need: 8 }
        );
        // C, K and S announced: 16 bytes needed.
        assert_eq!(
            GrePacket::new_checked(&[0xb0u8, 0x00, 0x65, 0x58, 0, 0, 0, 0, 0, 0, 0, 0][..]).unwrap_err(),
            GreError::Truncated { have: 12, need: 16 }
        );
    }

    #[test]
    fn any_short_input_never_panics() {
        for len in 0..20 {
            for first in [0x00u8, 0x10, 0x20, 0x30, 0x80, 0xa0, 0xb0, 0xff] {
                let mut bytes = vec![0u8; len];
                if len > 0 {
                    bytes[0] = first;
                }
                if let Ok(p) = GrePacket::new_checked(&bytes[..]) {
                    let _ = GreRepr::parse(&p);
                    let _ = p.payload();
                }
            }
        }
    }
}
