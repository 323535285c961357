//! The OFPMP_TABLE_FEATURES reply: what our single table matches and does. ovs-ofctl asks for it
//! before it sends a flow, so it must be answered. Written as raw bytes (spec 7.3.5.5): the
//! shared codec keeps table features verbatim.

use cloudrack_wire::ofp::{OFPIT_APPLY_ACTIONS, OFPIT_WRITE_ACTIONS};

const OFPTFPT_INSTRUCTIONS: u16 = 0;
const OFPTFPT_NEXT_TABLES: u16 = 2;
const OFPTFPT_WRITE_ACTIONS: u16 = 4;
const OFPTFPT_APPLY_ACTIONS: u16 = 6;
const OFPTFPT_MATCH: u16 = 8;
const OFPTFPT_WILDCARDS: u16 = 10;
const OFPTFPT_WRITE_SETFIELD: u16 = 12;
const OFPTFPT_APPLY_SETFIELD: u16 = 14;
const OFPAT_OUTPUT: u16 = 0;
const OFPAT_SET_FIELD: u16 = 25;
/// OXM headers (class 0x8000, field << 1, length) of the fields the table matches.
const OXM_ETH_DST: u32 = 0x8000_0606;
const OXM_TUNNEL_ID: u32 = 0x8000_4c08;

/// One property: type, length without padding, body, zero padding to 8 bytes.
fn property(out: &mut Vec<u8>, typ: u16, body: &[u8]) {
    out.extend_from_slice(&typ.to_be_bytes());
    out.extend_from_slice(&((4 + body.len()) as u16).to_be_bytes());
    out.extend_from_slice(body);
    out.resize(out.len().next_multiple_of(8), 0);
}

/// A list of instruction or action ids: (type, length 4) pairs.
fn ids(types: &[u16]) -> Vec<u8> {
    types
        .iter()
        .flat_map(|t| [t.to_be_bytes(), 4u16.to_be_bytes()].concat())
        .collect()
}

fn oxms(headers: &[u32]) -> Vec<u8> {
    headers.iter().flat_map(|h| h.to_be_bytes()).collect()
}

/// The reply body for table 0 with room for `max_entries` flows.
pub fn table_features(max_entries: u32) -> Vec<u8> {
    let mut props = Vec::new();
    property(
        &mut props,
        OFPTFPT_INSTRUCTIONS,
        &ids(&[OFPIT_APPLY_ACTIONS, OFPIT_WRITE_ACTIONS]),
    );
    property(&mut props, OFPTFPT_NEXT_TABLES, &[]);
    property(&mut props, OFPTFPT_WRITE_ACTIONS, &ids(&[OFPAT_OUTPUT]));
    property(
        &mut props,
        OFPTFPT_APPLY_ACTIONS,
        &ids(&[OFPAT_OUTPUT, OFPAT_SET_FIELD]),
    );
    property(&mut props, OFPTFPT_MATCH, &oxms(&[OXM_ETH_DST, OXM_TUNNEL_ID]));
    property(&mut props, OFPTFPT_WILDCARDS, &oxms(&[OXM_ETH_DST, OXM_TUNNEL_ID]));
    property(&mut props, OFPTFPT_WRITE_SETFIELD, &[]);
    property(&mut props, OFPTFPT_APPLY_SETFIELD, &oxms(&[OXM_TUNNEL_ID]));

    let mut out = Vec::with_capacity(64 + props.len());
    out.extend_from_slice(&((64 + props.len()) as u16).to_be_bytes());
    out.push(0); // table_id
    out.extend_from_slice(&[0; 5]);
    let mut name = [0u8; 32];
    name[..10].copy_from_slice(b"vnet-mac-0");
    out.extend_from_slice(&name);
    out.extend_from_slice(&0u64.to_be_bytes()); // metadata_match
    out.extend_from_slice(&0u64.to_be_bytes()); // metadata_write
    out.extend_from_slice(&0u32.to_be_bytes()); // config
    out.extend_from_slice(&max_entries.to_be_bytes());
    out.extend_from_slice(&props);
    out
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn layout() {
        let b = table_features(1000);
        assert_eq!(b.len() % 8, 0);
        assert_eq!(u16::from_be_bytes([b[0], b[1]]) as usize, b.len());
        assert_eq!(&b[60..64], &1000u32.to_be_bytes());
        // First property: instructions, two ids -> length 12, padded to 16.
        assert_eq!(&b[64..68], &[0, 0, 0, 12]);
        assert_eq!(&b[68..72], &[0, 4, 0, 4]);
    }
}
