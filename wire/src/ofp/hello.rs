//! HELLO elements (spec 7.5.1) and version negotiation. Element lengths exclude the zero padding
//! that aligns each element to 8 bytes.

use super::error::OfpError;
use super::reader::Reader;
use super::writer::{pad8, reencodes_to, Writer};

pub const OFPHET_VERSIONBITMAP: u16 = 1;

/// One element of a HELLO message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HelloElement {
    /// Bit `v % 32` of word `v / 32` set means version `v` is supported.
    VersionBitmap(Vec<u32>),
    /// Any other element (or a bitmap not made of whole u32s): `data` follows the 4-byte header;
    /// encode appends zero padding.
    Unknown { typ: u16, data: Vec<u8> },
}

impl HelloElement {
    /// A bitmap element advertising exactly `versions`.
    pub fn version_bitmap(versions: &[u8]) -> HelloElement {
        let words = versions.iter().map(|v| usize::from(*v) / 32 + 1).max().unwrap_or(0);
        let mut bitmap = vec![0u32; words];
        for v in versions {
            if let Some(word) = bitmap.get_mut(usize::from(*v) / 32) {
                *word |= 1 << (v % 32);
            }
        }
        HelloElement::VersionBitmap(bitmap)
    }

    pub(crate) fn decode_list(buf: &[u8]) -> Result<Vec<HelloElement>, OfpError> {
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        while !r.is_empty() {
            let len = usize::from(r.peek_u16(2).map_err(|_| OfpError::BadHelloElementLength)?);
            if len < 4 {
                return Err(OfpError::BadHelloElementLength);
            }
            let raw = r.bytes(len + pad8(len)).map_err(|_| OfpError::BadHelloElementLength)?;
            let mut er = Reader::new(raw);
            let typ = er.u16()?;
            er.skip(2)?;
            let data = er.bytes(len - 4)?;
            let typed = (typ == OFPHET_VERSIONBITMAP).then(|| {
                let mut br = Reader::new(data);
                let mut words = Vec::with_capacity(data.len() / 4);
                while let Ok(word) = br.u32() {
                    words.push(word);
                }
                HelloElement::VersionBitmap(words)
            });
            out.push(match typed {
                Some(el) if reencodes_to(raw, |w| el.encode(w)) => el,
                _ => HelloElement::Unknown {
                    typ,
                    data: data.to_vec(),
                },
            });
        }
        Ok(out)
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        let start = w.pos();
        let len_at = match self {
            HelloElement::VersionBitmap(words) => {
                w.u16(OFPHET_VERSIONBITMAP);
                let at = w.len_placeholder();
                for word in words {
                    w.u32(*word);
                }
                at
            }
            HelloElement::Unknown { typ, data } => {
                w.u16(*typ);
                let at = w.len_placeholder();
                w.bytes(data);
                at
            }
        };
        w.patch_len(len_at, start);
        w.pad_to_8(start);
    }
}

/// Whether version `v` is set in `bitmap`.
pub fn bitmap_has_version(bitmap: &[u32], v: u8) -> bool {
    bitmap
        .get(usize::from(v) / 32)
        .is_some_and(|word| word & (1 << (v % 32)) != 0)
}

/// Version negotiation (spec 6.3.1): with a peer bitmap, the highest version both sides list;
/// without one, the lower of the peer's header version and our highest, if we support it.
pub fn negotiate_version(peer_version: u8, peer_elements: &[HelloElement], ours: &[u8]) -> Option<u8> {
    let peer_bitmap = peer_elements.iter().find_map(|e| match e {
        HelloElement::VersionBitmap(words) => Some(words),
        HelloElement::Unknown { .. } => None,
    });
    match peer_bitmap {
        Some(words) => ours.iter().copied().filter(|v| bitmap_has_version(words, *v)).max(),
        None => {
            let candidate = peer_version.min(ours.iter().copied().max()?);
            ours.contains(&candidate).then_some(candidate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ofp::writer::to_vec;

    #[test]
    fn version_bitmap_for_1_3_only() {
        // As sent by OVS: type 1, length 8, bitmap 0x00000010 (bit 4 = version 0x04).
        let bytes = [0, 1, 0, 8, 0, 0, 0, 0x10];
        let els = HelloElement::decode_list(&bytes).unwrap();
        assert_eq!(els, vec![HelloElement::VersionBitmap(vec![0x10])]);
        assert_eq!(els, vec![HelloElement::version_bitmap(&[4])]);
        assert_eq!(to_vec(|w| els[0].encode(w)), bytes);
    }

    #[test]
    fn elements_are_padded_and_unknown_kept() {
        // A bitmap of two words needs no padding; an unknown 5-byte element gets 3.
        let bytes = [
            0, 1, 0, 12, 0, 0, 0, 0x12, 0, 0, 0, 1, 0, 0, 0, 0, // bitmap + 4 pad
            0, 9, 0, 5, 0xaa, 0, 0, 0, // unknown, 1 data byte, 3 pad
        ];
        let els = HelloElement::decode_list(&bytes).unwrap();
        assert_eq!(
            els,
            vec![
                HelloElement::VersionBitmap(vec![0x12, 1]),
                HelloElement::Unknown {
                    typ: 9,
                    data: vec![0xaa]
                }
            ]
        );
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        for e in &els {
            e.encode(&mut w);
        }
        assert_eq!(out, bytes);
        assert!(bitmap_has_version(&[0x12, 1], 32));
        assert!(bitmap_has_version(&[0x12, 1], 4));
        assert!(!bitmap_has_version(&[0x12, 1], 5));
        assert!(!bitmap_has_version(&[0x12, 1], 64));
    }

    #[test]
    fn bad_lengths() {
        for bytes in [
            &[0u8, 1, 0, 0, 0, 0, 0, 0][..],            // zero
            &[0, 1, 0, 3, 0, 0, 0, 0][..],              // below the header
            &[0, 1, 0, 8, 0, 0][..],                    // beyond the message
            &[0, 1, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0][..], // padding missing
            &[0, 1][..],
        ] {
            assert_eq!(
                HelloElement::decode_list(bytes),
                Err(OfpError::BadHelloElementLength),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn negotiation() {
        let bitmap_1_0_and_1_3 = [HelloElement::version_bitmap(&[1, 4])];
        assert_eq!(negotiate_version(4, &bitmap_1_0_and_1_3, &[4]), Some(4));
        assert_eq!(
            negotiate_version(6, &[HelloElement::version_bitmap(&[1, 6])], &[4]),
            None
        );
        assert_eq!(negotiate_version(6, &[], &[4]), Some(4));
        assert_eq!(negotiate_version(4, &[], &[4]), Some(4));
        assert_eq!(negotiate_version(1, &[], &[4]), None);
        assert_eq!(negotiate_version(4, &[], &[]), None);
    }
}
