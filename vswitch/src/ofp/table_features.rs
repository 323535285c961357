//! The OFPMP_TABLE_FEATURES reply: what each of the pipeline's tables matches and does.
//! ovs-ofctl asks for it before it sends a flow, so it must be answered. Written as raw bytes
//! (spec 7.3.5.5): the shared codec keeps table features verbatim.

use crate::pipeline::actions::N_TABLES;
use crate::pipeline::field::FIELDS;
use cloudrack_wire::ofp::*;

const OFPTFPT_INSTRUCTIONS: u16 = 0;
const OFPTFPT_NEXT_TABLES: u16 = 2;
const OFPTFPT_WRITE_ACTIONS: u16 = 4;
const OFPTFPT_APPLY_ACTIONS: u16 = 6;
const OFPTFPT_MATCH: u16 = 8;
const OFPTFPT_WILDCARDS: u16 = 10;
const OFPTFPT_WRITE_SETFIELD: u16 = 12;
const OFPTFPT_APPLY_SETFIELD: u16 = 14;

/// The actions this switch carries out.
const ACTIONS: &[u16] = &[
    OFPAT_OUTPUT,
    OFPAT_COPY_TTL_OUT,
    OFPAT_COPY_TTL_IN,
    OFPAT_PUSH_VLAN,
    OFPAT_POP_VLAN,
    OFPAT_SET_QUEUE,
    OFPAT_GROUP,
    OFPAT_SET_NW_TTL,
    OFPAT_DEC_NW_TTL,
    OFPAT_SET_FIELD,
];

/// OXM headers (class 0x8000, field << 1, value length) of the fields `pick` selects. Fields
/// that share bytes are listed once each all the same.
fn oxm_headers(pick: impl Fn(&crate::pipeline::field::FieldDef) -> bool) -> Vec<u32> {
    FIELDS
        .iter()
        .filter(|f| pick(f))
        .map(|f| 0x8000_0000 | (u32::from(f.oxm) << 9) | f.range.len() as u32)
        .collect()
}

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

/// The reply entry for table `table_id` with room for `max_entries` flows.
pub fn table_features(table_id: u8, max_entries: u32) -> Vec<u8> {
    let mut props = Vec::new();
    let last = table_id + 1 == N_TABLES;
    let mut insts = vec![
        OFPIT_WRITE_METADATA,
        OFPIT_WRITE_ACTIONS,
        OFPIT_APPLY_ACTIONS,
        OFPIT_CLEAR_ACTIONS,
        OFPIT_METER,
    ];
    if !last {
        insts.insert(0, OFPIT_GOTO_TABLE);
    }
    property(&mut props, OFPTFPT_INSTRUCTIONS, &ids(&insts));
    let next: Vec<u8> = (table_id + 1..N_TABLES).collect();
    property(&mut props, OFPTFPT_NEXT_TABLES, &next);
    property(&mut props, OFPTFPT_WRITE_ACTIONS, &ids(ACTIONS));
    property(&mut props, OFPTFPT_APPLY_ACTIONS, &ids(ACTIONS));
    property(&mut props, OFPTFPT_MATCH, &oxms(&oxm_headers(|_| true)));
    property(&mut props, OFPTFPT_WILDCARDS, &oxms(&oxm_headers(|_| true)));
    let settable = oxms(&oxm_headers(|f| f.settable));
    property(&mut props, OFPTFPT_WRITE_SETFIELD, &settable);
    property(&mut props, OFPTFPT_APPLY_SETFIELD, &settable);

    let mut out = Vec::with_capacity(64 + props.len());
    out.extend_from_slice(&((64 + props.len()) as u16).to_be_bytes());
    out.push(table_id);
    out.extend_from_slice(&[0; 5]);
    let mut name = [0u8; 32];
    let label = format!("table{table_id}");
    name[..label.len()].copy_from_slice(label.as_bytes());
    out.extend_from_slice(&name);
    out.extend_from_slice(&u64::MAX.to_be_bytes()); // metadata_match
    out.extend_from_slice(&u64::MAX.to_be_bytes()); // metadata_write
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
        let b = table_features(0, 1000);
        assert_eq!(b.len() % 8, 0);
        assert_eq!(u16::from_be_bytes([b[0], b[1]]) as usize, b.len());
        assert_eq!(&b[60..64], &1000u32.to_be_bytes());
        // First property: instructions, six ids -> length 28, padded to 32.
        assert_eq!(&b[64..68], &[0, 0, 0, 28]);
        assert_eq!(&b[68..72], &[0, 1, 0, 4], "goto_table first");
        // The last table cannot go anywhere.
        let last = table_features(N_TABLES - 1, 1000);
        assert_eq!(&last[64..68], &[0, 0, 0, 24]);
    }
}
