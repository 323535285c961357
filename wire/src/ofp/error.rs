//! Codec errors, and the OpenFlow error types/codes (spec 7.4.4) carried by OFPT_ERROR.

/// Why a buffer could not be decoded (or, for [`OfpError::TooLong`], encoded).
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum OfpError {
    /// The buffer ends before a field or a length it declares.
    #[error("OpenFlow message truncated")]
    Truncated,
    /// A non-HELLO message with a version other than 0x04.
    #[error("unsupported OpenFlow version {0:#04x}")]
    BadVersion(u8),
    /// The header length is below 8 or disagrees with the buffer.
    #[error("bad OpenFlow message length")]
    BadLength,
    /// A match whose type is not OFPMT_OXM.
    #[error("unsupported match type {0}")]
    BadMatchType(u16),
    /// A match length below 4 or beyond its message.
    #[error("bad match length")]
    BadMatchLength,
    /// An OXM TLV that does not fit its match or set-field action.
    #[error("bad OXM length")]
    BadOxmLength,
    /// An action length that is below 8, not a multiple of 8, beyond its list, or too short for
    /// the action's fields.
    #[error("bad action length")]
    BadActionLength,
    /// The same, for an instruction.
    #[error("bad instruction length")]
    BadInstructionLength,
    /// A multipart body or entry whose length does not fit its type.
    #[error("bad multipart body length")]
    BadMultipartLength,
    /// A hello element length below 4 or beyond the message.
    #[error("bad hello element length")]
    BadHelloElementLength,
    /// Encoding only: a length does not fit its 8- or 16-bit field (split multipart replies
    /// with `split_multipart_reply`).
    #[error("encoded OpenFlow object exceeds its length field")]
    TooLong,
}

impl OfpError {
    /// The OFPT_ERROR (type, code) a switch should answer a request that failed to decode with.
    pub fn ofp_error_code(&self) -> (u16, u16) {
        match self {
            OfpError::Truncated | OfpError::BadLength | OfpError::TooLong => (OFPET_BAD_REQUEST, OFPBRC_BAD_LEN),
            OfpError::BadVersion(_) => (OFPET_BAD_REQUEST, OFPBRC_BAD_VERSION),
            OfpError::BadMatchType(_) => (OFPET_BAD_MATCH, OFPBMC_BAD_TYPE),
            OfpError::BadMatchLength | OfpError::BadOxmLength => (OFPET_BAD_MATCH, OFPBMC_BAD_LEN),
            OfpError::BadActionLength => (OFPET_BAD_ACTION, OFPBAC_BAD_LEN),
            OfpError::BadInstructionLength => (OFPET_BAD_INSTRUCTION, OFPBIC_BAD_LEN),
            OfpError::BadMultipartLength => (OFPET_BAD_REQUEST, OFPBRC_BAD_LEN),
            OfpError::BadHelloElementLength => (OFPET_HELLO_FAILED, OFPHFC_INCOMPATIBLE),
        }
    }
}

/// How many bytes of a failed request an error message echoes (the spec asks for at least 64).
pub const OFP_ERROR_DATA_LEN: usize = 64;

// Error types (ofp_error_type).
pub const OFPET_HELLO_FAILED: u16 = 0;
pub const OFPET_BAD_REQUEST: u16 = 1;
pub const OFPET_BAD_ACTION: u16 = 2;
pub const OFPET_BAD_INSTRUCTION: u16 = 3;
pub const OFPET_BAD_MATCH: u16 = 4;
pub const OFPET_FLOW_MOD_FAILED: u16 = 5;
pub const OFPET_GROUP_MOD_FAILED: u16 = 6;
pub const OFPET_PORT_MOD_FAILED: u16 = 7;
pub const OFPET_TABLE_MOD_FAILED: u16 = 8;
pub const OFPET_QUEUE_OP_FAILED: u16 = 9;
pub const OFPET_SWITCH_CONFIG_FAILED: u16 = 10;
pub const OFPET_ROLE_REQUEST_FAILED: u16 = 11;
pub const OFPET_METER_MOD_FAILED: u16 = 12;
pub const OFPET_TABLE_FEATURES_FAILED: u16 = 13;
/// Experimenter error: the `code` field holds exp_type and `data` starts with the experimenter id.
pub const OFPET_EXPERIMENTER: u16 = 0xffff;

// OFPET_HELLO_FAILED codes.
pub const OFPHFC_INCOMPATIBLE: u16 = 0;
pub const OFPHFC_EPERM: u16 = 1;

// OFPET_BAD_REQUEST codes.
pub const OFPBRC_BAD_VERSION: u16 = 0;
pub const OFPBRC_BAD_TYPE: u16 = 1;
pub const OFPBRC_BAD_MULTIPART: u16 = 2;
pub const OFPBRC_BAD_EXPERIMENTER: u16 = 3;
pub const OFPBRC_BAD_EXP_TYPE: u16 = 4;
pub const OFPBRC_EPERM: u16 = 5;
pub const OFPBRC_BAD_LEN: u16 = 6;
pub const OFPBRC_BUFFER_EMPTY: u16 = 7;
pub const OFPBRC_BUFFER_UNKNOWN: u16 = 8;
pub const OFPBRC_BAD_TABLE_ID: u16 = 9;
pub const OFPBRC_IS_SLAVE: u16 = 10;
pub const OFPBRC_BAD_PORT: u16 = 11;
pub const OFPBRC_BAD_PACKET: u16 = 12;
pub const OFPBRC_MULTIPART_BUFFER_OVERFLOW: u16 = 13;

// OFPET_BAD_ACTION codes.
pub const OFPBAC_BAD_TYPE: u16 = 0;
pub const OFPBAC_BAD_LEN: u16 = 1;
pub const OFPBAC_BAD_EXPERIMENTER: u16 = 2;
pub const OFPBAC_BAD_EXP_TYPE: u16 = 3;
pub const OFPBAC_BAD_OUT_PORT: u16 = 4;
pub const OFPBAC_BAD_ARGUMENT: u16 = 5;
pub const OFPBAC_EPERM: u16 = 6;
pub const OFPBAC_TOO_MANY: u16 = 7;
pub const OFPBAC_BAD_QUEUE: u16 = 8;
pub const OFPBAC_BAD_OUT_GROUP: u16 = 9;
pub const OFPBAC_MATCH_INCONSISTENT: u16 = 10;
pub const OFPBAC_UNSUPPORTED_ORDER: u16 = 11;
pub const OFPBAC_BAD_TAG: u16 = 12;
pub const OFPBAC_BAD_SET_TYPE: u16 = 13;
pub const OFPBAC_BAD_SET_LEN: u16 = 14;
pub const OFPBAC_BAD_SET_ARGUMENT: u16 = 15;

// OFPET_BAD_INSTRUCTION codes.
pub const OFPBIC_UNKNOWN_INST: u16 = 0;
pub const OFPBIC_UNSUP_INST: u16 = 1;
pub const OFPBIC_BAD_TABLE_ID: u16 = 2;
pub const OFPBIC_UNSUP_METADATA: u16 = 3;
pub const OFPBIC_UNSUP_METADATA_MASK: u16 = 4;
pub const OFPBIC_BAD_EXPERIMENTER: u16 = 5;
pub const OFPBIC_BAD_EXP_TYPE: u16 = 6;
pub const OFPBIC_BAD_LEN: u16 = 7;
pub const OFPBIC_EPERM: u16 = 8;

// OFPET_BAD_MATCH codes.
pub const OFPBMC_BAD_TYPE: u16 = 0;
pub const OFPBMC_BAD_LEN: u16 = 1;
pub const OFPBMC_BAD_TAG: u16 = 2;
pub const OFPBMC_BAD_DL_ADDR_MASK: u16 = 3;
pub const OFPBMC_BAD_NW_ADDR_MASK: u16 = 4;
pub const OFPBMC_BAD_WILDCARDS: u16 = 5;
pub const OFPBMC_BAD_FIELD: u16 = 6;
pub const OFPBMC_BAD_VALUE: u16 = 7;
pub const OFPBMC_BAD_MASK: u16 = 8;
pub const OFPBMC_BAD_PREREQ: u16 = 9;
pub const OFPBMC_DUP_FIELD: u16 = 10;
pub const OFPBMC_EPERM: u16 = 11;

// OFPET_FLOW_MOD_FAILED codes.
pub const OFPFMFC_UNKNOWN: u16 = 0;
pub const OFPFMFC_TABLE_FULL: u16 = 1;
pub const OFPFMFC_BAD_TABLE_ID: u16 = 2;
pub const OFPFMFC_OVERLAP: u16 = 3;
pub const OFPFMFC_EPERM: u16 = 4;
pub const OFPFMFC_BAD_TIMEOUT: u16 = 5;
pub const OFPFMFC_BAD_COMMAND: u16 = 6;
pub const OFPFMFC_BAD_FLAGS: u16 = 7;

// OFPET_GROUP_MOD_FAILED codes (the ones a switch without groups needs).
pub const OFPGMFC_GROUP_EXISTS: u16 = 0;
pub const OFPGMFC_INVALID_GROUP: u16 = 1;
pub const OFPGMFC_UNKNOWN_GROUP: u16 = 8;
pub const OFPGMFC_EPERM: u16 = 14;

// OFPET_PORT_MOD_FAILED codes.
pub const OFPPMFC_BAD_PORT: u16 = 0;
pub const OFPPMFC_BAD_HW_ADDR: u16 = 1;
pub const OFPPMFC_BAD_CONFIG: u16 = 2;
pub const OFPPMFC_BAD_ADVERTISE: u16 = 3;
pub const OFPPMFC_EPERM: u16 = 4;

// OFPET_TABLE_MOD_FAILED codes.
pub const OFPTMFC_BAD_TABLE: u16 = 0;
pub const OFPTMFC_BAD_CONFIG: u16 = 1;
pub const OFPTMFC_EPERM: u16 = 2;

// OFPET_QUEUE_OP_FAILED codes.
pub const OFPQOFC_BAD_PORT: u16 = 0;
pub const OFPQOFC_BAD_QUEUE: u16 = 1;
pub const OFPQOFC_EPERM: u16 = 2;

// OFPET_SWITCH_CONFIG_FAILED codes.
pub const OFPSCFC_BAD_FLAGS: u16 = 0;
pub const OFPSCFC_BAD_LEN: u16 = 1;
pub const OFPSCFC_EPERM: u16 = 2;

// OFPET_ROLE_REQUEST_FAILED codes.
pub const OFPRRFC_STALE: u16 = 0;
pub const OFPRRFC_UNSUP: u16 = 1;
pub const OFPRRFC_BAD_ROLE: u16 = 2;

// OFPET_METER_MOD_FAILED codes (the ones a switch without meters needs).
pub const OFPMMFC_UNKNOWN: u16 = 0;
pub const OFPMMFC_INVALID_METER: u16 = 2;
pub const OFPMMFC_UNKNOWN_METER: u16 = 3;

// OFPET_TABLE_FEATURES_FAILED codes.
pub const OFPTFFC_BAD_TABLE: u16 = 0;
pub const OFPTFFC_BAD_METADATA: u16 = 1;
pub const OFPTFFC_BAD_TYPE: u16 = 2;
pub const OFPTFFC_BAD_LEN: u16 = 3;
pub const OFPTFFC_BAD_ARGUMENT: u16 = 4;
pub const OFPTFFC_EPERM: u16 = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_map_to_spec_codes() {
        assert_eq!(OfpError::Truncated.ofp_error_code(), (1, 6));
        assert_eq!(OfpError::BadVersion(1).ofp_error_code(), (1, 0));
        assert_eq!(OfpError::BadMatchType(0).ofp_error_code(), (4, 0));
        assert_eq!(OfpError::BadOxmLength.ofp_error_code(), (4, 1));
        assert_eq!(OfpError::BadActionLength.ofp_error_code(), (2, 1));
        assert_eq!(OfpError::BadInstructionLength.ofp_error_code(), (3, 7));
        assert_eq!(OfpError::BadVersion(5).to_string(), "unsupported OpenFlow version 0x05");
    }
}
