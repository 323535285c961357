//! Small fixed-layout switch configuration bodies: SET_CONFIG/GET_CONFIG_REPLY, ROLE,
//! GET_ASYNC_REPLY/SET_ASYNC, TABLE_MOD; and the FEATURES_REPLY capability bits.

use super::error::OfpError;
use super::reader::Reader;
use super::writer::Writer;

// Capabilities in FEATURES_REPLY (ofp_capabilities).
pub const OFPC_FLOW_STATS: u32 = 1 << 0;
pub const OFPC_TABLE_STATS: u32 = 1 << 1;
pub const OFPC_PORT_STATS: u32 = 1 << 2;
pub const OFPC_GROUP_STATS: u32 = 1 << 3;
pub const OFPC_IP_REASM: u32 = 1 << 5;
pub const OFPC_QUEUE_STATS: u32 = 1 << 6;
pub const OFPC_PORT_BLOCKED: u32 = 1 << 8;

// SwitchConfig flags (ofp_config_flags).
pub const OFPC_FRAG_NORMAL: u16 = 0;
pub const OFPC_FRAG_DROP: u16 = 1 << 0;
pub const OFPC_FRAG_REASM: u16 = 1 << 1;
pub const OFPC_FRAG_MASK: u16 = 3;

/// Default `miss_send_len`.
pub const OFP_DEFAULT_MISS_SEND_LEN: u16 = 128;

// Controller roles (ofp_controller_role).
pub const OFPCR_ROLE_NOCHANGE: u32 = 0;
pub const OFPCR_ROLE_EQUAL: u32 = 1;
pub const OFPCR_ROLE_MASTER: u32 = 2;
pub const OFPCR_ROLE_SLAVE: u32 = 3;

/// TABLE_MOD config bits reserved for backward compatibility with 1.1/1.2.
pub const OFPTC_DEPRECATED_MASK: u32 = 3;

/// Body of SET_CONFIG and GET_CONFIG_REPLY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SwitchConfig {
    pub flags: u16,
    pub miss_send_len: u16,
}

impl SwitchConfig {
    pub(crate) fn decode(r: &mut Reader) -> Result<SwitchConfig, OfpError> {
        Ok(SwitchConfig {
            flags: r.u16()?,
            miss_send_len: r.u16()?,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u16(self.flags);
        w.u16(self.miss_send_len);
    }
}

/// Body of ROLE_REQUEST and ROLE_REPLY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RoleMsg {
    pub role: u32,
    pub generation_id: u64,
}

impl RoleMsg {
    pub(crate) fn decode(r: &mut Reader) -> Result<RoleMsg, OfpError> {
        let role = r.u32()?;
        r.skip(4)?;
        Ok(RoleMsg {
            role,
            generation_id: r.u64()?,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u32(self.role);
        w.zeros(4);
        w.u64(self.generation_id);
    }
}

/// Body of GET_ASYNC_REPLY and SET_ASYNC. Index 0 applies to master/equal roles, 1 to slave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AsyncConfig {
    /// Bit `1 << OFPR_*` enables that packet-in reason.
    pub packet_in_mask: [u32; 2],
    /// Bit `1 << OFPPR_*`.
    pub port_status_mask: [u32; 2],
    /// Bit `1 << OFPRR_*`.
    pub flow_removed_mask: [u32; 2],
}

impl AsyncConfig {
    pub(crate) fn decode(r: &mut Reader) -> Result<AsyncConfig, OfpError> {
        Ok(AsyncConfig {
            packet_in_mask: [r.u32()?, r.u32()?],
            port_status_mask: [r.u32()?, r.u32()?],
            flow_removed_mask: [r.u32()?, r.u32()?],
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        for mask in [self.packet_in_mask, self.port_status_mask, self.flow_removed_mask] {
            w.u32(mask[0]);
            w.u32(mask[1]);
        }
    }
}

/// Body of TABLE_MOD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TableMod {
    pub table_id: u8,
    pub config: u32,
}

impl TableMod {
    pub(crate) fn decode(r: &mut Reader) -> Result<TableMod, OfpError> {
        let table_id = r.u8()?;
        r.skip(3)?;
        Ok(TableMod {
            table_id,
            config: r.u32()?,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u8(self.table_id);
        w.zeros(3);
        w.u32(self.config);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ofp::writer::to_vec;

    #[test]
    fn layouts() {
        let role = RoleMsg {
            role: OFPCR_ROLE_MASTER,
            generation_id: 0x0102_0304_0506_0708,
        };
        let bytes = to_vec(|w| role.encode(w));
        assert_eq!(bytes, [0, 0, 0, 2, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(RoleMsg::decode(&mut Reader::new(&bytes)), Ok(role));

        let cfg = SwitchConfig {
            flags: OFPC_FRAG_NORMAL,
            miss_send_len: 0xffff,
        };
        assert_eq!(to_vec(|w| cfg.encode(w)), [0, 0, 0xff, 0xff]);

        let asy = AsyncConfig {
            packet_in_mask: [3, 0],
            port_status_mask: [7, 7],
            flow_removed_mask: [0xf, 0],
        };
        let bytes = to_vec(|w| asy.encode(w));
        assert_eq!(bytes.len(), 24);
        assert_eq!(&bytes[..8], &[0, 0, 0, 3, 0, 0, 0, 0]);
        assert_eq!(AsyncConfig::decode(&mut Reader::new(&bytes)), Ok(asy));
        assert_eq!(
            AsyncConfig::decode(&mut Reader::new(&bytes[..20])),
            Err(OfpError::Truncated)
        );

        let tm = TableMod {
            table_id: 0xff,
            config: 3,
        };
        assert_eq!(to_vec(|w| tm.encode(w)), [0xff, 0, 0, 0, 0, 0, 0, 3]);
    }
}
