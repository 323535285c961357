//! Statistics records carried in multipart replies (spec 7.3.5): switch description, flow,
//! table and port statistics.

use super::error::OfpError;
use super::flow_match::Match;
use super::instruction::{encode_instructions, Instruction};
use super::port::{fixed_bytes, fixed_str};
use super::reader::Reader;
use super::writer::{to_vec, Writer};

pub const DESC_STR_LEN: usize = 256;
pub const SERIAL_NUM_LEN: usize = 32;

/// Size of `ofp_desc`.
pub const DESC_STATS_LEN: usize = 4 * DESC_STR_LEN + SERIAL_NUM_LEN;
/// Size of `ofp_table_stats`.
pub const TABLE_STATS_LEN: usize = 24;
/// Size of `ofp_port_stats`.
pub const PORT_STATS_LEN: usize = 112;
/// Fixed part of `ofp_flow_stats` before its match.
pub(crate) const FLOW_STATS_FIXED_LEN: usize = 48;

/// `ofp_desc`: five NUL-padded strings, kept as their exact wire bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DescStats {
    pub mfr_desc: [u8; DESC_STR_LEN],
    pub hw_desc: [u8; DESC_STR_LEN],
    pub sw_desc: [u8; DESC_STR_LEN],
    pub serial_num: [u8; SERIAL_NUM_LEN],
    pub dp_desc: [u8; DESC_STR_LEN],
}

impl DescStats {
    /// Builds the record from text (each truncated so a NUL terminator remains).
    pub fn new(mfr: &str, hw: &str, sw: &str, serial: &str, dp: &str) -> DescStats {
        DescStats {
            mfr_desc: fixed_bytes(mfr),
            hw_desc: fixed_bytes(hw),
            sw_desc: fixed_bytes(sw),
            serial_num: fixed_bytes(serial),
            dp_desc: fixed_bytes(dp),
        }
    }

    pub fn mfr(&self) -> String {
        fixed_str(&self.mfr_desc)
    }

    pub fn hw(&self) -> String {
        fixed_str(&self.hw_desc)
    }

    pub fn sw(&self) -> String {
        fixed_str(&self.sw_desc)
    }

    pub fn serial(&self) -> String {
        fixed_str(&self.serial_num)
    }

    pub fn dp(&self) -> String {
        fixed_str(&self.dp_desc)
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<DescStats, OfpError> {
        Ok(DescStats {
            mfr_desc: r.array()?,
            hw_desc: r.array()?,
            sw_desc: r.array()?,
            serial_num: r.array()?,
            dp_desc: r.array()?,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.bytes(&self.mfr_desc);
        w.bytes(&self.hw_desc);
        w.bytes(&self.sw_desc);
        w.bytes(&self.serial_num);
        w.bytes(&self.dp_desc);
    }
}

/// One `ofp_flow_stats` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FlowStats {
    pub table_id: u8,
    pub duration_sec: u32,
    pub duration_nsec: u32,
    pub priority: u16,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub flags: u16,
    pub cookie: u64,
    pub packet_count: u64,
    pub byte_count: u64,
    pub match_: Match,
    pub instructions: Vec<Instruction>,
}

impl FlowStats {
    /// Size of this entry on the wire.
    pub fn encoded_len(&self) -> usize {
        to_vec(|w| self.encode(w)).len()
    }

    /// `raw` is one whole entry, its length field already validated.
    pub(crate) fn decode(raw: &[u8]) -> Result<FlowStats, OfpError> {
        let mut r = Reader::new(raw);
        r.skip(2)?;
        let table_id = r.u8()?;
        r.skip(1)?;
        let duration_sec = r.u32()?;
        let duration_nsec = r.u32()?;
        let priority = r.u16()?;
        let idle_timeout = r.u16()?;
        let hard_timeout = r.u16()?;
        let flags = r.u16()?;
        r.skip(4)?;
        Ok(FlowStats {
            table_id,
            duration_sec,
            duration_nsec,
            priority,
            idle_timeout,
            hard_timeout,
            flags,
            cookie: r.u64()?,
            packet_count: r.u64()?,
            byte_count: r.u64()?,
            match_: Match::decode(&mut r)?,
            instructions: Instruction::decode_list(r.rest())?,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        let start = w.pos();
        let len_at = w.len_placeholder();
        w.u8(self.table_id);
        w.zeros(1);
        w.u32(self.duration_sec);
        w.u32(self.duration_nsec);
        w.u16(self.priority);
        w.u16(self.idle_timeout);
        w.u16(self.hard_timeout);
        w.u16(self.flags);
        w.zeros(4);
        w.u64(self.cookie);
        w.u64(self.packet_count);
        w.u64(self.byte_count);
        self.match_.encode(w);
        encode_instructions(&self.instructions, w);
        w.patch_len(len_at, start);
    }
}

/// One `ofp_table_stats` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TableStats {
    pub table_id: u8,
    pub active_count: u32,
    pub lookup_count: u64,
    pub matched_count: u64,
}

impl TableStats {
    pub(crate) fn decode(r: &mut Reader) -> Result<TableStats, OfpError> {
        let table_id = r.u8()?;
        r.skip(3)?;
        Ok(TableStats {
            table_id,
            active_count: r.u32()?,
            lookup_count: r.u64()?,
            matched_count: r.u64()?,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u8(self.table_id);
        w.zeros(3);
        w.u32(self.active_count);
        w.u64(self.lookup_count);
        w.u64(self.matched_count);
    }
}

/// One `ofp_port_stats` entry. Unsupported counters are all ones by convention.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PortStats {
    pub port_no: u32,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_frame_err: u64,
    pub rx_over_err: u64,
    pub rx_crc_err: u64,
    pub collisions: u64,
    pub duration_sec: u32,
    pub duration_nsec: u32,
}

impl PortStats {
    pub(crate) fn decode(r: &mut Reader) -> Result<PortStats, OfpError> {
        let port_no = r.u32()?;
        r.skip(4)?;
        Ok(PortStats {
            port_no,
            rx_packets: r.u64()?,
            tx_packets: r.u64()?,
            rx_bytes: r.u64()?,
            tx_bytes: r.u64()?,
            rx_dropped: r.u64()?,
            tx_dropped: r.u64()?,
            rx_errors: r.u64()?,
            tx_errors: r.u64()?,
            rx_frame_err: r.u64()?,
            rx_over_err: r.u64()?,
            rx_crc_err: r.u64()?,
            collisions: r.u64()?,
            duration_sec: r.u32()?,
            duration_nsec: r.u32()?,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u32(self.port_no);
        w.zeros(4);
        for v in [
            self.rx_packets,
            self.tx_packets,
            self.rx_bytes,
            self.tx_bytes,
            self.rx_dropped,
            self.tx_dropped,
            self.rx_errors,
            self.tx_errors,
            self.rx_frame_err,
            self.rx_over_err,
            self.rx_crc_err,
            self.collisions,
        ] {
            w.u64(v);
        }
        w.u32(self.duration_sec);
        w.u32(self.duration_nsec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_stats_entry_from_ovs() {
        // Port 1 of the captured OFPMP_PORT_STATS reply (ovs-ofctl: rx 10 pkts / 852 bytes,
        // tx 15 pkts / 1278 bytes, duration 4.077s).
        let mut bytes = vec![0, 0, 0, 1, 0, 0, 0, 0];
        for v in [10u64, 15, 852, 1278, 0, 0, 0, 0, 0, 0, 0, 0] {
            bytes.extend_from_slice(&v.to_be_bytes());
        }
        bytes.extend_from_slice(&[0, 0, 0, 4, 0x04, 0x96, 0xed, 0x40]);
        assert_eq!(bytes.len(), PORT_STATS_LEN);
        let stats = PortStats::decode(&mut Reader::new(&bytes)).unwrap();
        assert_eq!(
            stats,
            PortStats {
                port_no: 1,
                rx_packets: 10,
                tx_packets: 15,
                rx_bytes: 852,
                tx_bytes: 1278,
                duration_sec: 4,
                duration_nsec: 77_000_000,
                ..PortStats::default()
            }
        );
        assert_eq!(to_vec(|w| stats.encode(w)), bytes);
        assert_eq!(
            PortStats::decode(&mut Reader::new(&bytes[..111])),
            Err(OfpError::Truncated)
        );
    }

    #[test]
    fn desc_and_table_layouts() {
        let desc = DescStats::new("Cloud Rack", "hw", "sw", "0123456789abcdef0123456789abcdefXYZ", "dp");
        let bytes = to_vec(|w| desc.encode(w));
        assert_eq!(bytes.len(), DESC_STATS_LEN);
        assert_eq!(&bytes[..11], b"Cloud Rack\0");
        assert_eq!(&bytes[256..259], b"hw\0");
        // The serial number is cut to 31 bytes plus its NUL.
        assert_eq!(&bytes[768..800], b"0123456789abcdef0123456789abcde\0");
        assert_eq!(&bytes[800..803], b"dp\0");
        assert_eq!(desc.serial(), "0123456789abcdef0123456789abcde");
        assert_eq!(DescStats::decode(&mut Reader::new(&bytes)), Ok(desc));

        let t = TableStats {
            table_id: 2,
            active_count: 1,
            lookup_count: 2,
            matched_count: 3,
        };
        assert_eq!(
            to_vec(|w| t.encode(w)),
            [2, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3]
        );
    }
}
