//! The meter table (spec 5.7): token-bucket meters with drop and DSCP-remark bands, and
//! METER_MOD. A meter's buckets are shared by every worker (a short mutex per metered packet;
//! unmetered traffic never touches it).

use crate::dp::stats::now_ms;
use crate::ofp::translate::OfpErr;
use cloudrack_wire::ofp::{self, MeterBand, MeterMod};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

pub const MAX_METERS: usize = 65_536;
pub const MAX_BANDS: usize = 8;

/// What a meter decides for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    /// Raise the DSCP drop precedence by this much.
    Remark(u8),
}

#[derive(Debug, Default)]
pub struct BandCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
}

#[derive(Debug)]
struct Bucket {
    /// Tokens in thousandths of a unit (bits or packets), so slow rates still refill.
    tokens_milli: u64,
    last_ns: u64,
}

#[derive(Debug)]
pub struct Band {
    pub wire: MeterBand,
    pub counters: BandCounters,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
pub struct Meter {
    pub id: u32,
    pub flags: u16,
    /// Highest rate first.
    pub bands: Vec<Band>,
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub installed_ms: u64,
}

fn now_ns() -> u64 {
    now_ms() * 1_000_000
}

impl Meter {
    fn unit_cost(&self, len: usize) -> u64 {
        if self.flags & ofp::OFPMF_PKTPS != 0 {
            1000
        } else {
            // kbit/s: one token per kilobit; `tokens_milli` then counts bits.
            len as u64 * 8
        }
    }

    /// Account one packet of `len` bytes at `now_ns` and say what happens to it: the band
    /// with the highest rate the packet exceeds applies (spec 5.7.1).
    pub fn admit_at(&self, len: usize, now_ns: u64) -> Verdict {
        self.packets.fetch_add(1, Relaxed);
        self.bytes.fetch_add(len as u64, Relaxed);
        let cost = self.unit_cost(len);
        let mut verdict = Verdict::Pass;
        for band in &self.bands {
            let rate = band.wire.rate as u64; // units per second
            let burst = if self.flags & ofp::OFPMF_BURST != 0 && band.wire.burst_size > 0 {
                band.wire.burst_size as u64
            } else {
                rate.max(1)
            };
            let cap = burst * 1000;
            let mut b = band.bucket.lock().unwrap_or_else(|e| e.into_inner());
            let elapsed = now_ns.saturating_sub(b.last_ns);
            b.last_ns = now_ns;
            // rate units/s = rate * 1000 milli-units per 1e9 ns.
            b.tokens_milli = (b.tokens_milli + elapsed.saturating_mul(rate) / 1_000_000).min(cap);
            if b.tokens_milli >= cost {
                b.tokens_milli -= cost;
            } else if verdict == Verdict::Pass {
                band.counters.packets.fetch_add(1, Relaxed);
                band.counters.bytes.fetch_add(len as u64, Relaxed);
                verdict = match band.wire.band_type {
                    ofp::OFPMBT_DSCP_REMARK => Verdict::Remark(band.wire.prec_level().unwrap_or(0)),
                    _ => Verdict::Drop,
                };
            }
        }
        verdict
    }

    pub fn admit(&self, len: usize) -> Verdict {
        self.admit_at(len, now_ns())
    }
}

pub type Meters = imbl::HashMap<u32, Arc<Meter>>;

const MMF: u16 = ofp::OFPET_METER_MOD_FAILED;

#[derive(Debug, Default)]
pub struct MeterModOutcome {
    pub deleted: Vec<u32>,
}

pub fn meter_mod(meters: &mut Meters, mm: &MeterMod) -> Result<MeterModOutcome, OfpErr> {
    let mut out = MeterModOutcome::default();
    let id_ok = |id: u32| (1..=ofp::OFPM_MAX).contains(&id);
    match mm.command {
        ofp::OFPMC_DELETE => {
            if mm.meter_id == ofp::OFPM_ALL {
                out.deleted = meters.keys().copied().collect();
                meters.clear();
            } else if id_ok(mm.meter_id) {
                if meters.remove(&mm.meter_id).is_some() {
                    out.deleted.push(mm.meter_id);
                }
            } else {
                return Err((MMF, ofp::OFPMMFC_INVALID_METER));
            }
            return Ok(out);
        }
        ofp::OFPMC_ADD | ofp::OFPMC_MODIFY => {}
        _ => return Err((MMF, ofp::OFPMMFC_BAD_COMMAND)),
    }
    if !id_ok(mm.meter_id) {
        return Err((MMF, ofp::OFPMMFC_INVALID_METER));
    }
    let exists = meters.contains_key(&mm.meter_id);
    if mm.command == ofp::OFPMC_ADD && exists {
        return Err((MMF, ofp::OFPMMFC_METER_EXISTS));
    }
    if mm.command == ofp::OFPMC_MODIFY && !exists {
        return Err((MMF, ofp::OFPMMFC_UNKNOWN_METER));
    }
    if mm.command == ofp::OFPMC_ADD && meters.len() >= MAX_METERS {
        return Err((MMF, ofp::OFPMMFC_OUT_OF_METERS));
    }
    let units = mm.flags & (ofp::OFPMF_KBPS | ofp::OFPMF_PKTPS);
    let known = ofp::OFPMF_KBPS | ofp::OFPMF_PKTPS | ofp::OFPMF_BURST | ofp::OFPMF_STATS;
    if units == 0 || units == (ofp::OFPMF_KBPS | ofp::OFPMF_PKTPS) || mm.flags & !known != 0 {
        return Err((MMF, ofp::OFPMMFC_BAD_FLAGS));
    }
    if mm.bands.is_empty() {
        return Err((MMF, ofp::OFPMMFC_BAD_BAND));
    }
    if mm.bands.len() > MAX_BANDS {
        return Err((MMF, ofp::OFPMMFC_OUT_OF_BANDS));
    }
    let mut bands = Vec::with_capacity(mm.bands.len());
    for b in &mm.bands {
        match b.band_type {
            ofp::OFPMBT_DROP | ofp::OFPMBT_DSCP_REMARK => {}
            _ => return Err((MMF, ofp::OFPMMFC_BAD_BAND)),
        }
        if b.rate == 0 {
            return Err((MMF, ofp::OFPMMFC_BAD_RATE));
        }
        if mm.flags & ofp::OFPMF_BURST == 0 && b.burst_size != 0 {
            return Err((MMF, ofp::OFPMMFC_BAD_BURST));
        }
        let burst = if mm.flags & ofp::OFPMF_BURST != 0 && b.burst_size > 0 {
            b.burst_size as u64
        } else {
            b.rate as u64
        };
        bands.push(Band {
            wire: b.clone(),
            counters: BandCounters::default(),
            // Start full: the first burst passes.
            bucket: Mutex::new(Bucket {
                tokens_milli: burst * 1000,
                last_ns: now_ns(),
            }),
        });
    }
    bands.sort_by_key(|b| std::cmp::Reverse(b.wire.rate));
    let installed_ms = meters.get(&mm.meter_id).map_or_else(now_ms, |m| m.installed_ms);
    meters.insert(
        mm.meter_id,
        Arc::new(Meter {
            id: mm.meter_id,
            flags: mm.flags,
            bands,
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            installed_ms,
        }),
    );
    Ok(out)
}

#[cfg(test)]
mod test {
    use super::*;

    fn mm(command: u16, flags: u16, id: u32, bands: Vec<MeterBand>) -> MeterMod {
        MeterMod {
            command,
            flags,
            meter_id: id,
            bands,
        }
    }

    #[test]
    fn packet_rate_drop_band_limits_to_its_rate() {
        let mut m = Meters::default();
        meter_mod(
            &mut m,
            &mm(ofp::OFPMC_ADD, ofp::OFPMF_PKTPS, 1, vec![MeterBand::drop(100, 0)]),
        )
        .unwrap();
        let meter = m.get(&1).unwrap();
        // 1000 packets over one simulated second: the burst (100) plus 100/s pass.
        let start = now_ns();
        let passed = (0..1000u64)
            .filter(|i| meter.admit_at(64, start + i * 1_000_000) == Verdict::Pass)
            .count();
        assert!((190..=210).contains(&passed), "passed {passed}");
        assert_eq!(meter.packets.load(Relaxed), 1000);
        assert_eq!(meter.bands[0].counters.packets.load(Relaxed), 1000 - passed as u64);
    }

    #[test]
    fn kbps_meter_counts_bits() {
        let mut m = Meters::default();
        meter_mod(
            &mut m,
            &mm(ofp::OFPMC_ADD, ofp::OFPMF_KBPS, 2, vec![MeterBand::drop(8, 0)]),
        )
        .unwrap();
        let meter = m.get(&2).unwrap();
        let t = now_ns();
        // 8 kbit of burst: one 1000-byte packet passes, the next at once does not.
        assert_eq!(meter.admit_at(1000, t), Verdict::Pass);
        assert_eq!(meter.admit_at(1000, t), Verdict::Drop);
        // A second later 8 kbit more have come in.
        assert_eq!(meter.admit_at(1000, t + 1_000_000_000), Verdict::Pass);
    }

    #[test]
    fn meter_mod_errors() {
        let mut m = Meters::default();
        let e = |m: &mut Meters, x| meter_mod(m, &x).unwrap_err().1;
        assert_eq!(
            e(&mut m, mm(ofp::OFPMC_ADD, 0, 1, vec![MeterBand::drop(1, 0)])),
            ofp::OFPMMFC_BAD_FLAGS
        );
        assert_eq!(
            e(
                &mut m,
                mm(ofp::OFPMC_ADD, ofp::OFPMF_KBPS, 0, vec![MeterBand::drop(1, 0)])
            ),
            ofp::OFPMMFC_INVALID_METER
        );
        assert_eq!(
            e(&mut m, mm(ofp::OFPMC_ADD, ofp::OFPMF_KBPS, 1, vec![])),
            ofp::OFPMMFC_BAD_BAND
        );
        assert_eq!(
            e(
                &mut m,
                mm(ofp::OFPMC_ADD, ofp::OFPMF_KBPS, 1, vec![MeterBand::drop(0, 0)])
            ),
            ofp::OFPMMFC_BAD_RATE
        );
        assert_eq!(
            e(
                &mut m,
                mm(ofp::OFPMC_MODIFY, ofp::OFPMF_KBPS, 1, vec![MeterBand::drop(1, 0)])
            ),
            ofp::OFPMMFC_UNKNOWN_METER
        );
        meter_mod(
            &mut m,
            &mm(ofp::OFPMC_ADD, ofp::OFPMF_KBPS, 1, vec![MeterBand::drop(1, 0)]),
        )
        .unwrap();
        assert_eq!(
            e(
                &mut m,
                mm(ofp::OFPMC_ADD, ofp::OFPMF_KBPS, 1, vec![MeterBand::drop(1, 0)])
            ),
            ofp::OFPMMFC_METER_EXISTS
        );
        let out = meter_mod(&mut m, &mm(ofp::OFPMC_DELETE, 0, ofp::OFPM_ALL, vec![])).unwrap();
        assert_eq!(out.deleted, [1]);
    }
}
