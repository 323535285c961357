//! Groups (spec 7.3.4.3 GROUP_MOD, 7.3.5.9-11 group statistics, description and features).
//!
//! The multipart bodies of groups travel as `MultipartRequestBody::Unknown` /
//! `MultipartReplyBody::Unknown` in the message enum (so every captured byte still round-trips);
//! this module decodes and encodes their data.

use super::action::{encode_list, Action};
use super::error::OfpError;
use super::reader::Reader;
use super::writer::{reencodes_to, to_vec, Writer};

// Group mod commands (ofp_group_mod_command).
pub const OFPGC_ADD: u16 = 0;
pub const OFPGC_MODIFY: u16 = 1;
pub const OFPGC_DELETE: u16 = 2;

// Group types (ofp_group_type).
pub const OFPGT_ALL: u8 = 0;
pub const OFPGT_SELECT: u8 = 1;
pub const OFPGT_INDIRECT: u8 = 2;
pub const OFPGT_FF: u8 = 3;

// Group capabilities (ofp_group_capabilities).
pub const OFPGFC_SELECT_WEIGHT: u32 = 1 << 0;
pub const OFPGFC_SELECT_LIVENESS: u32 = 1 << 1;
pub const OFPGFC_CHAINING: u32 = 1 << 2;
pub const OFPGFC_CHAINING_CHECKS: u32 = 1 << 3;

/// Group mod failures beyond those in `error.rs` (ofp_group_mod_failed_code).
pub const OFPGMFC_WEIGHT_UNSUPPORTED: u16 = 2;
pub const OFPGMFC_OUT_OF_GROUPS: u16 = 3;
pub const OFPGMFC_OUT_OF_BUCKETS: u16 = 4;
pub const OFPGMFC_CHAINING_UNSUPPORTED: u16 = 5;
pub const OFPGMFC_WATCH_UNSUPPORTED: u16 = 6;
pub const OFPGMFC_LOOP: u16 = 7;
pub const OFPGMFC_CHAINED_GROUP: u16 = 9;
pub const OFPGMFC_BAD_TYPE: u16 = 10;
pub const OFPGMFC_BAD_COMMAND: u16 = 11;
pub const OFPGMFC_BAD_BUCKET: u16 = 12;
pub const OFPGMFC_BAD_WATCH: u16 = 13;

const BUCKET_HEADER: usize = 16;

/// One bucket of a group: its actions, and for select/fast-failover its weight and watches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Bucket {
    pub weight: u16,
    pub watch_port: u32,
    pub watch_group: u32,
    pub actions: Vec<Action>,
}

impl Bucket {
    fn decode(r: &mut Reader) -> Result<Bucket, OfpError> {
        let raw = r.tlv(0, BUCKET_HEADER, 8, OfpError::BadLength)?;
        let mut b = Reader::new(raw);
        b.skip(2)?;
        let weight = b.u16()?;
        let watch_port = b.u32()?;
        let watch_group = b.u32()?;
        b.skip(4)?;
        Ok(Bucket {
            weight,
            watch_port,
            watch_group,
            actions: Action::decode_list(b.rest())?,
        })
    }

    fn encode(&self, w: &mut Writer) {
        let start = w.pos();
        let len_at = w.len_placeholder();
        w.u16(self.weight);
        w.u32(self.watch_port);
        w.u32(self.watch_group);
        w.zeros(4);
        encode_list(&self.actions, w);
        w.patch_len(len_at, start);
    }

    fn decode_list(buf: &[u8]) -> Result<Vec<Bucket>, OfpError> {
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        while !r.is_empty() {
            out.push(Bucket::decode(&mut r)?);
        }
        Ok(out)
    }
}

/// OFPT_GROUP_MOD body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupMod {
    pub command: u16,
    pub group_type: u8,
    pub group_id: u32,
    pub buckets: Vec<Bucket>,
}

impl GroupMod {
    pub(crate) fn decode(r: &mut Reader) -> Result<GroupMod, OfpError> {
        let command = r.u16()?;
        let group_type = r.u8()?;
        r.skip(1)?;
        let group_id = r.u32()?;
        Ok(GroupMod {
            command,
            group_type,
            group_id,
            buckets: Bucket::decode_list(r.rest())?,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u16(self.command);
        w.u8(self.group_type);
        w.zeros(1);
        w.u32(self.group_id);
        for b in &self.buckets {
            b.encode(w);
        }
    }
}

/// One entry of an OFPMP_GROUP_DESC reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupDesc {
    pub group_type: u8,
    pub group_id: u32,
    pub buckets: Vec<Bucket>,
}

impl GroupDesc {
    /// Decodes the data of an OFPMP_GROUP_DESC reply.
    pub fn decode_list(buf: &[u8]) -> Result<Vec<GroupDesc>, OfpError> {
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        while !r.is_empty() {
            let raw = r.tlv(0, 8, 8, OfpError::BadLength)?;
            let mut e = Reader::new(raw);
            e.skip(2)?;
            let group_type = e.u8()?;
            e.skip(1)?;
            let group_id = e.u32()?;
            out.push(GroupDesc {
                group_type,
                group_id,
                buckets: Bucket::decode_list(e.rest())?,
            });
        }
        Ok(out)
    }

    /// The data of an OFPMP_GROUP_DESC reply.
    pub fn encode_list(descs: &[GroupDesc]) -> Vec<u8> {
        to_vec(|w| {
            for d in descs {
                let start = w.pos();
                let len_at = w.len_placeholder();
                w.u8(d.group_type);
                w.zeros(1);
                w.u32(d.group_id);
                for b in &d.buckets {
                    b.encode(w);
                }
                w.patch_len(len_at, start);
            }
        })
    }
}

/// One entry of an OFPMP_GROUP reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupStats {
    pub group_id: u32,
    pub ref_count: u32,
    pub packet_count: u64,
    pub byte_count: u64,
    pub duration_sec: u32,
    pub duration_nsec: u32,
    /// (packet_count, byte_count) per bucket.
    pub buckets: Vec<(u64, u64)>,
}

impl GroupStats {
    pub fn decode_list(buf: &[u8]) -> Result<Vec<GroupStats>, OfpError> {
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        while !r.is_empty() {
            let raw = r.tlv(0, 40, 8, OfpError::BadLength)?;
            let mut e = Reader::new(raw);
            e.skip(4)?;
            let group_id = e.u32()?;
            let ref_count = e.u32()?;
            e.skip(4)?;
            let packet_count = e.u64()?;
            let byte_count = e.u64()?;
            let duration_sec = e.u32()?;
            let duration_nsec = e.u32()?;
            let mut buckets = Vec::new();
            while !e.is_empty() {
                buckets.push((e.u64()?, e.u64()?));
            }
            out.push(GroupStats {
                group_id,
                ref_count,
                packet_count,
                byte_count,
                duration_sec,
                duration_nsec,
                buckets,
            });
        }
        Ok(out)
    }

    pub fn encode_list(stats: &[GroupStats]) -> Vec<u8> {
        to_vec(|w| {
            for s in stats {
                let start = w.pos();
                let len_at = w.len_placeholder();
                w.zeros(2);
                w.u32(s.group_id);
                w.u32(s.ref_count);
                w.zeros(4);
                w.u64(s.packet_count);
                w.u64(s.byte_count);
                w.u32(s.duration_sec);
                w.u32(s.duration_nsec);
                for (p, b) in &s.buckets {
                    w.u64(*p);
                    w.u64(*b);
                }
                w.patch_len(len_at, start);
            }
        })
    }
}

/// The group id an OFPMP_GROUP request asks about (OFPG_ALL for every group).
pub fn group_stats_request(data: &[u8]) -> Result<u32, OfpError> {
    let mut r = Reader::new(data);
    let id = r.u32()?;
    r.skip(4)?;
    if !r.is_empty() {
        return Err(OfpError::BadLength);
    }
    Ok(id)
}

/// The data of an OFPMP_GROUP (or meter) request for `id`.
pub fn id_request(id: u32) -> Vec<u8> {
    to_vec(|w| {
        w.u32(id);
        w.zeros(4);
    })
}

/// The OFPMP_GROUP_FEATURES reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupFeatures {
    /// Bitmap of OFPGT_* supported.
    pub types: u32,
    pub capabilities: u32,
    pub max_groups: [u32; 4],
    /// Bitmaps of OFPAT_* supported, per group type.
    pub actions: [u32; 4],
}

impl GroupFeatures {
    pub fn decode(buf: &[u8]) -> Result<GroupFeatures, OfpError> {
        let mut r = Reader::new(buf);
        let types = r.u32()?;
        let capabilities = r.u32()?;
        let mut max_groups = [0; 4];
        for m in &mut max_groups {
            *m = r.u32()?;
        }
        let mut actions = [0; 4];
        for a in &mut actions {
            *a = r.u32()?;
        }
        let f = GroupFeatures {
            types,
            capabilities,
            max_groups,
            actions,
        };
        if !reencodes_to(buf, |w| f.encode(w)) {
            return Err(OfpError::BadLength);
        }
        Ok(f)
    }

    fn encode(&self, w: &mut Writer) {
        w.u32(self.types);
        w.u32(self.capabilities);
        self.max_groups.iter().for_each(|m| w.u32(*m));
        self.actions.iter().for_each(|a| w.u32(*a));
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        to_vec(|w| self.encode(w))
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::ofp::{Body, Message, OFPP_ANY};

    fn sample() -> GroupMod {
        GroupMod {
            command: OFPGC_ADD,
            group_type: OFPGT_SELECT,
            group_id: 7,
            buckets: vec![
                Bucket {
                    weight: 1,
                    watch_port: OFPP_ANY,
                    watch_group: crate::ofp::OFPG_ANY,
                    actions: vec![Action::output(1)],
                },
                Bucket {
                    weight: 3,
                    watch_port: 2,
                    watch_group: crate::ofp::OFPG_ANY,
                    actions: vec![Action::DecNwTtl, Action::output(2)],
                },
            ],
        }
    }

    #[test]
    fn group_mod_round_trips_with_lengths() {
        let m = Message::new(9, Body::GroupMod(sample()));
        let bytes = m.encode();
        // header 8 + 8 + bucket (16 + 16) + bucket (16 + 8 + 16)
        assert_eq!(bytes.len(), 8 + 8 + 32 + 40);
        assert_eq!(&bytes[16..18], &32u16.to_be_bytes(), "first bucket length");
        assert_eq!(Message::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn bucket_length_below_header_is_an_error_not_a_loop() {
        let mut bytes = Message::new(1, Body::GroupMod(sample())).encode();
        bytes[16] = 0;
        bytes[17] = 0;
        assert!(Message::decode(&bytes).is_err());
    }

    #[test]
    fn desc_and_stats_round_trip() {
        let d = vec![GroupDesc {
            group_type: OFPGT_ALL,
            group_id: 1,
            buckets: sample().buckets,
        }];
        assert_eq!(GroupDesc::decode_list(&GroupDesc::encode_list(&d)).unwrap(), d);
        let s = vec![GroupStats {
            group_id: 1,
            ref_count: 2,
            packet_count: 3,
            byte_count: 4,
            duration_sec: 5,
            duration_nsec: 6,
            buckets: vec![(7, 8), (9, 10)],
        }];
        let b = GroupStats::encode_list(&s);
        assert_eq!(b.len(), 40 + 32);
        assert_eq!(GroupStats::decode_list(&b).unwrap(), s);
        let f = GroupFeatures {
            types: 15,
            capabilities: OFPGFC_SELECT_WEIGHT,
            max_groups: [1, 2, 3, 4],
            actions: [5, 6, 7, 8],
        };
        assert_eq!(GroupFeatures::decode(&f.to_bytes()).unwrap(), f);
        assert_eq!(group_stats_request(&id_request(42)).unwrap(), 42);
        assert!(group_stats_request(&[0; 3]).is_err());
    }
}
