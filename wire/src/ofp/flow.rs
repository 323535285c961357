//! FLOW_MOD (spec 7.3.4.2) and FLOW_REMOVED (spec 7.4.2).

use super::consts::{OFPG_ANY, OFP_NO_BUFFER};
use super::error::OfpError;
use super::flow_match::Match;
use super::instruction::{encode_instructions, Instruction};
use super::port::OFPP_ANY;
use super::reader::Reader;
use super::writer::Writer;

// Flow mod commands (ofp_flow_mod_command).
pub const OFPFC_ADD: u8 = 0;
pub const OFPFC_MODIFY: u8 = 1;
pub const OFPFC_MODIFY_STRICT: u8 = 2;
pub const OFPFC_DELETE: u8 = 3;
pub const OFPFC_DELETE_STRICT: u8 = 4;

// Flow mod flags (ofp_flow_mod_flags).
pub const OFPFF_SEND_FLOW_REM: u16 = 1 << 0;
pub const OFPFF_CHECK_OVERLAP: u16 = 1 << 1;
pub const OFPFF_RESET_COUNTS: u16 = 1 << 2;
pub const OFPFF_NO_PKT_COUNTS: u16 = 1 << 3;
pub const OFPFF_NO_BYT_COUNTS: u16 = 1 << 4;

// Flow removed reasons (ofp_flow_removed_reason).
pub const OFPRR_IDLE_TIMEOUT: u8 = 0;
pub const OFPRR_HARD_TIMEOUT: u8 = 1;
pub const OFPRR_DELETE: u8 = 2;
pub const OFPRR_GROUP_DELETE: u8 = 3;

/// OFPT_FLOW_MOD body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowMod {
    pub cookie: u64,
    pub cookie_mask: u64,
    pub table_id: u8,
    /// One of OFPFC_*; kept as a number so unknown commands survive a round trip.
    pub command: u8,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub priority: u16,
    pub buffer_id: u32,
    pub out_port: u32,
    pub out_group: u32,
    pub flags: u16,
    pub match_: Match,
    pub instructions: Vec<Instruction>,
}

impl Default for FlowMod {
    /// An OFPFC_ADD into table 0 with no buffer and no out_port/out_group restriction.
    fn default() -> Self {
        FlowMod {
            cookie: 0,
            cookie_mask: 0,
            table_id: 0,
            command: OFPFC_ADD,
            idle_timeout: 0,
            hard_timeout: 0,
            priority: 0,
            buffer_id: OFP_NO_BUFFER,
            out_port: OFPP_ANY,
            out_group: OFPG_ANY,
            flags: 0,
            match_: Match::default(),
            instructions: Vec::new(),
        }
    }
}

impl FlowMod {
    pub(crate) fn decode(r: &mut Reader) -> Result<FlowMod, OfpError> {
        let cookie = r.u64()?;
        let cookie_mask = r.u64()?;
        let table_id = r.u8()?;
        let command = r.u8()?;
        let idle_timeout = r.u16()?;
        let hard_timeout = r.u16()?;
        let priority = r.u16()?;
        let buffer_id = r.u32()?;
        let out_port = r.u32()?;
        let out_group = r.u32()?;
        let flags = r.u16()?;
        r.skip(2)?;
        Ok(FlowMod {
            cookie,
            cookie_mask,
            table_id,
            command,
            idle_timeout,
            hard_timeout,
            priority,
            buffer_id,
            out_port,
            out_group,
            flags,
            match_: Match::decode(r)?,
            instructions: Instruction::decode_list(r.rest())?,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u64(self.cookie);
        w.u64(self.cookie_mask);
        w.u8(self.table_id);
        w.u8(self.command);
        w.u16(self.idle_timeout);
        w.u16(self.hard_timeout);
        w.u16(self.priority);
        w.u32(self.buffer_id);
        w.u32(self.out_port);
        w.u32(self.out_group);
        w.u16(self.flags);
        w.zeros(2);
        self.match_.encode(w);
        encode_instructions(&self.instructions, w);
    }
}

/// OFPT_FLOW_REMOVED body.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FlowRemoved {
    pub cookie: u64,
    pub priority: u16,
    pub reason: u8,
    pub table_id: u8,
    pub duration_sec: u32,
    pub duration_nsec: u32,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub packet_count: u64,
    pub byte_count: u64,
    pub match_: Match,
}

impl FlowRemoved {
    pub(crate) fn decode(r: &mut Reader) -> Result<FlowRemoved, OfpError> {
        Ok(FlowRemoved {
            cookie: r.u64()?,
            priority: r.u16()?,
            reason: r.u8()?,
            table_id: r.u8()?,
            duration_sec: r.u32()?,
            duration_nsec: r.u32()?,
            idle_timeout: r.u16()?,
            hard_timeout: r.u16()?,
            packet_count: r.u64()?,
            byte_count: r.u64()?,
            match_: Match::decode(r)?,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u64(self.cookie);
        w.u16(self.priority);
        w.u8(self.reason);
        w.u8(self.table_id);
        w.u32(self.duration_sec);
        w.u32(self.duration_nsec);
        w.u16(self.idle_timeout);
        w.u16(self.hard_timeout);
        w.u64(self.packet_count);
        w.u64(self.byte_count);
        self.match_.encode(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ofp::action::Action;
    use crate::ofp::oxm::Oxm;
    use crate::ofp::writer::to_vec;

    #[test]
    fn flow_mod_body_from_os_ken() {
        // The learned flow from the capture: priority 1, in_port=2, eth_dst=02:00:00:00:00:01,
        // apply-actions output:1 (max_len 0xffe5), buffer NO_BUFFER, out_port/group 0.
        let bytes = [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // cookie, cookie_mask
            0, 0, 0, 0, 0, 0, 0, 1, // table, command, idle, hard, priority
            0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // buffer, ports, flags
            0, 1, 0, 0x16, 0x80, 0, 0, 4, 0, 0, 0, 2, 0x80, 0, 6, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0x18, 0, 0, 0, 0,
            0, 0, 0, 0x10, 0, 0, 0, 1, 0xff, 0xe5, 0, 0, 0, 0, 0, 0,
        ];
        let fm = FlowMod::decode(&mut Reader::new(&bytes)).unwrap();
        let expected = FlowMod {
            priority: 1,
            out_port: 0,
            out_group: 0,
            match_: Match::new().with(Oxm::InPort(2)).with(Oxm::EthDst {
                mac: [2, 0, 0, 0, 0, 1],
                mask: None,
            }),
            instructions: vec![Instruction::ApplyActions(vec![Action::Output {
                port: 1,
                max_len: 0xffe5,
            }])],
            ..FlowMod::default()
        };
        assert_eq!(fm, expected);
        assert_eq!(to_vec(|w| fm.encode(w)), bytes);
        assert_eq!(
            FlowMod::decode(&mut Reader::new(&bytes[..40])),
            Err(OfpError::Truncated)
        );
    }

    #[test]
    fn flow_removed_body() {
        let fr = FlowRemoved {
            cookie: 0x42,
            priority: 100,
            reason: OFPRR_IDLE_TIMEOUT,
            table_id: 0,
            duration_sec: 10,
            duration_nsec: 5,
            idle_timeout: 10,
            hard_timeout: 0,
            packet_count: 7,
            byte_count: 700,
            match_: Match::new().with(Oxm::TunnelId { id: 9, mask: None }),
        };
        let bytes = to_vec(|w| fr.encode(w));
        assert_eq!(bytes.len(), 40 + 16);
        assert_eq!(&bytes[..12], &[0, 0, 0, 0, 0, 0, 0, 0x42, 0, 100, 0, 0]);
        assert_eq!(FlowRemoved::decode(&mut Reader::new(&bytes)), Ok(fr));
    }
}
