//! Meters (spec 7.3.4.4 METER_MOD, 7.3.5.12-14 meter statistics, configuration and features).
//! As for groups, the multipart bodies travel raw in the message enum and are decoded here.

use super::error::OfpError;
use super::reader::Reader;
use super::writer::{reencodes_to, to_vec, Writer};

// Meter mod commands (ofp_meter_mod_command).
pub const OFPMC_ADD: u16 = 0;
pub const OFPMC_MODIFY: u16 = 1;
pub const OFPMC_DELETE: u16 = 2;

// Meter flags (ofp_meter_flags).
pub const OFPMF_KBPS: u16 = 1 << 0;
pub const OFPMF_PKTPS: u16 = 1 << 1;
pub const OFPMF_BURST: u16 = 1 << 2;
pub const OFPMF_STATS: u16 = 1 << 3;

// Band types (ofp_meter_band_type).
pub const OFPMBT_DROP: u16 = 1;
pub const OFPMBT_DSCP_REMARK: u16 = 2;
pub const OFPMBT_EXPERIMENTER: u16 = 0xffff;

/// Meter mod failures beyond those in `error.rs` (ofp_meter_mod_failed_code).
pub const OFPMMFC_METER_EXISTS: u16 = 1;
pub const OFPMMFC_BAD_COMMAND: u16 = 4;
pub const OFPMMFC_BAD_FLAGS: u16 = 5;
pub const OFPMMFC_BAD_RATE: u16 = 6;
pub const OFPMMFC_BAD_BURST: u16 = 7;
pub const OFPMMFC_BAD_BAND: u16 = 8;
pub const OFPMMFC_BAD_BAND_VALUE: u16 = 9;
pub const OFPMMFC_OUT_OF_METERS: u16 = 10;
pub const OFPMMFC_OUT_OF_BANDS: u16 = 11;

/// One band of a meter. `extra` is what follows rate and burst: for DROP 4 bytes of padding,
/// for DSCP_REMARK the precedence level and 3 bytes of padding, for EXPERIMENTER the
/// experimenter id and its data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MeterBand {
    pub band_type: u16,
    pub rate: u32,
    pub burst_size: u32,
    pub extra: Vec<u8>,
}

impl MeterBand {
    pub fn drop(rate: u32, burst_size: u32) -> MeterBand {
        MeterBand {
            band_type: OFPMBT_DROP,
            rate,
            burst_size,
            extra: vec![0; 4],
        }
    }

    /// The precedence-level increase of a DSCP_REMARK band.
    pub fn prec_level(&self) -> Option<u8> {
        (self.band_type == OFPMBT_DSCP_REMARK)
            .then(|| self.extra.first().copied())
            .flatten()
    }

    fn decode_list(buf: &[u8]) -> Result<Vec<MeterBand>, OfpError> {
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        while !r.is_empty() {
            let raw = r.tlv(2, 16, 8, OfpError::BadLength)?;
            let mut b = Reader::new(raw);
            let band_type = b.u16()?;
            b.skip(2)?;
            out.push(MeterBand {
                band_type,
                rate: b.u32()?,
                burst_size: b.u32()?,
                extra: b.rest().to_vec(),
            });
        }
        Ok(out)
    }

    fn encode(&self, w: &mut Writer) {
        let start = w.pos();
        w.u16(self.band_type);
        let len_at = w.len_placeholder();
        w.u32(self.rate);
        w.u32(self.burst_size);
        w.bytes(&self.extra);
        w.pad_to_8(start);
        w.patch_len(len_at, start);
    }
}

/// OFPT_METER_MOD body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MeterMod {
    pub command: u16,
    pub flags: u16,
    pub meter_id: u32,
    pub bands: Vec<MeterBand>,
}

impl MeterMod {
    pub(crate) fn decode(r: &mut Reader) -> Result<MeterMod, OfpError> {
        let command = r.u16()?;
        let flags = r.u16()?;
        let meter_id = r.u32()?;
        Ok(MeterMod {
            command,
            flags,
            meter_id,
            bands: MeterBand::decode_list(r.rest())?,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u16(self.command);
        w.u16(self.flags);
        w.u32(self.meter_id);
        for b in &self.bands {
            b.encode(w);
        }
    }
}

/// One entry of an OFPMP_METER_CONFIG reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MeterConfig {
    pub flags: u16,
    pub meter_id: u32,
    pub bands: Vec<MeterBand>,
}

impl MeterConfig {
    pub fn decode_list(buf: &[u8]) -> Result<Vec<MeterConfig>, OfpError> {
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        while !r.is_empty() {
            let raw = r.tlv(0, 8, 8, OfpError::BadLength)?;
            let mut e = Reader::new(raw);
            e.skip(2)?;
            let flags = e.u16()?;
            let meter_id = e.u32()?;
            out.push(MeterConfig {
                flags,
                meter_id,
                bands: MeterBand::decode_list(e.rest())?,
            });
        }
        Ok(out)
    }

    pub fn encode_list(configs: &[MeterConfig]) -> Vec<u8> {
        to_vec(|w| {
            for c in configs {
                let start = w.pos();
                let len_at = w.len_placeholder();
                w.u16(c.flags);
                w.u32(c.meter_id);
                for b in &c.bands {
                    b.encode(w);
                }
                w.patch_len(len_at, start);
            }
        })
    }
}

/// One entry of an OFPMP_METER reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MeterStats {
    pub meter_id: u32,
    pub flow_count: u32,
    pub packet_in_count: u64,
    pub byte_in_count: u64,
    pub duration_sec: u32,
    pub duration_nsec: u32,
    /// (packet_band_count, byte_band_count) per band.
    pub bands: Vec<(u64, u64)>,
}

impl MeterStats {
    pub fn decode_list(buf: &[u8]) -> Result<Vec<MeterStats>, OfpError> {
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        while !r.is_empty() {
            let raw = r.tlv(4, 40, 8, OfpError::BadLength)?;
            let mut e = Reader::new(raw);
            let meter_id = e.u32()?;
            e.skip(8)?;
            let flow_count = e.u32()?;
            let packet_in_count = e.u64()?;
            let byte_in_count = e.u64()?;
            let duration_sec = e.u32()?;
            let duration_nsec = e.u32()?;
            let mut bands = Vec::new();
            while !e.is_empty() {
                bands.push((e.u64()?, e.u64()?));
            }
            out.push(MeterStats {
                meter_id,
                flow_count,
                packet_in_count,
                byte_in_count,
                duration_sec,
                duration_nsec,
                bands,
            });
        }
        Ok(out)
    }

    pub fn encode_list(stats: &[MeterStats]) -> Vec<u8> {
        to_vec(|w| {
            for s in stats {
                let start = w.pos();
                w.u32(s.meter_id);
                let len_at = w.len_placeholder();
                w.zeros(6);
                w.u32(s.flow_count);
                w.u64(s.packet_in_count);
                w.u64(s.byte_in_count);
                w.u32(s.duration_sec);
                w.u32(s.duration_nsec);
                for (p, b) in &s.bands {
                    w.u64(*p);
                    w.u64(*b);
                }
                w.patch_len(len_at, start);
            }
        })
    }
}

/// The OFPMP_METER_FEATURES reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MeterFeatures {
    pub max_meter: u32,
    /// Bitmap of (1 << OFPMBT_*).
    pub band_types: u32,
    /// Bitmap of OFPMF_*.
    pub capabilities: u32,
    pub max_bands: u8,
    pub max_color: u8,
}

impl MeterFeatures {
    pub fn decode(buf: &[u8]) -> Result<MeterFeatures, OfpError> {
        let mut r = Reader::new(buf);
        let f = MeterFeatures {
            max_meter: r.u32()?,
            band_types: r.u32()?,
            capabilities: r.u32()?,
            max_bands: r.u8()?,
            max_color: r.u8()?,
        };
        if !reencodes_to(buf, |w| f.encode(w)) {
            return Err(OfpError::BadLength);
        }
        Ok(f)
    }

    fn encode(&self, w: &mut Writer) {
        w.u32(self.max_meter);
        w.u32(self.band_types);
        w.u32(self.capabilities);
        w.u8(self.max_bands);
        w.u8(self.max_color);
        w.zeros(2);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        to_vec(|w| self.encode(w))
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::ofp::{Body, Message};

    #[test]
    fn meter_mod_round_trips() {
        let m = Message::new(
            3,
            Body::MeterMod(MeterMod {
                command: OFPMC_ADD,
                flags: OFPMF_PKTPS | OFPMF_BURST | OFPMF_STATS,
                meter_id: 1,
                bands: vec![
                    MeterBand::drop(1000, 100),
                    MeterBand {
                        band_type: OFPMBT_DSCP_REMARK,
                        rate: 10,
                        burst_size: 0,
                        extra: vec![2, 0, 0, 0],
                    },
                ],
            }),
        );
        let bytes = m.encode();
        assert_eq!(bytes.len(), 8 + 8 + 16 + 16);
        assert_eq!(Message::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn stats_config_features_round_trip() {
        let c = vec![MeterConfig {
            flags: OFPMF_KBPS,
            meter_id: 9,
            bands: vec![MeterBand::drop(5, 6)],
        }];
        assert_eq!(MeterConfig::decode_list(&MeterConfig::encode_list(&c)).unwrap(), c);
        let s = vec![MeterStats {
            meter_id: 9,
            flow_count: 1,
            packet_in_count: 2,
            byte_in_count: 3,
            duration_sec: 4,
            duration_nsec: 5,
            bands: vec![(6, 7)],
        }];
        let b = MeterStats::encode_list(&s);
        assert_eq!(b.len(), 56);
        assert_eq!(MeterStats::decode_list(&b).unwrap(), s);
        let f = MeterFeatures {
            max_meter: 1024,
            band_types: 1 << OFPMBT_DROP,
            capabilities: u32::from(OFPMF_KBPS | OFPMF_PKTPS),
            max_bands: 1,
            max_color: 0,
        };
        assert_eq!(MeterFeatures::decode(&f.to_bytes()).unwrap(), f);
    }

    #[test]
    fn short_band_is_an_error() {
        let mut bytes = Message::new(
            1,
            Body::MeterMod(MeterMod {
                command: OFPMC_ADD,
                flags: OFPMF_KBPS,
                meter_id: 1,
                bands: vec![MeterBand::drop(1, 1)],
            }),
        )
        .encode();
        bytes[18] = 0;
        bytes[19] = 8;
        assert!(Message::decode(&bytes).is_err());
    }
}
