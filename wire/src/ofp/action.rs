//! Actions (spec 7.2.5). Every action is a `type:16 len:16` TLV whose length includes any padding
//! and must be a multiple of 8.

use super::consts::OFPCML_NO_BUFFER;
use super::error::OfpError;
use super::oxm::Oxm;
use super::port::OFPP_CONTROLLER;
use super::reader::Reader;
use super::writer::{reencodes_to, to_vec, Writer};

pub const OFPAT_OUTPUT: u16 = 0;
pub const OFPAT_COPY_TTL_OUT: u16 = 11;
pub const OFPAT_COPY_TTL_IN: u16 = 12;
pub const OFPAT_SET_MPLS_TTL: u16 = 15;
pub const OFPAT_DEC_MPLS_TTL: u16 = 16;
pub const OFPAT_PUSH_VLAN: u16 = 17;
pub const OFPAT_POP_VLAN: u16 = 18;
pub const OFPAT_PUSH_MPLS: u16 = 19;
pub const OFPAT_POP_MPLS: u16 = 20;
pub const OFPAT_SET_QUEUE: u16 = 21;
pub const OFPAT_GROUP: u16 = 22;
pub const OFPAT_SET_NW_TTL: u16 = 23;
pub const OFPAT_DEC_NW_TTL: u16 = 24;
pub const OFPAT_SET_FIELD: u16 = 25;
pub const OFPAT_PUSH_PBB: u16 = 26;
pub const OFPAT_POP_PBB: u16 = 27;
pub const OFPAT_EXPERIMENTER: u16 = 0xffff;

/// One action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// `max_len` only matters when `port` is OFPP_CONTROLLER.
    Output {
        port: u32,
        max_len: u16,
    },
    CopyTtlOut,
    CopyTtlIn,
    SetMplsTtl(u8),
    DecMplsTtl,
    /// Ethertype of the new tag (0x8100 or 0x88a8).
    PushVlan(u16),
    PopVlan,
    PushMpls(u16),
    /// Ethertype of the payload after the pop.
    PopMpls(u16),
    SetQueue(u32),
    Group(u32),
    SetNwTtl(u8),
    DecNwTtl,
    SetField(Oxm),
    PushPbb(u16),
    PopPbb,
    /// `data` follows the experimenter id; encode pads it with zeros to a multiple of 8.
    Experimenter {
        experimenter: u32,
        data: Vec<u8>,
    },
    /// Anything else, or a known type whose bytes are not in canonical form (e.g. non-zero
    /// padding): `data` is everything after the 4-byte type/length header.
    Unknown {
        typ: u16,
        data: Vec<u8>,
    },
}

impl Action {
    /// Output to `port`; the whole packet when `port` is the controller.
    pub fn output(port: u32) -> Action {
        let max_len = if port == OFPP_CONTROLLER { OFPCML_NO_BUFFER } else { 0 };
        Action::Output { port, max_len }
    }

    /// The OFPAT_* type.
    pub fn action_type(&self) -> u16 {
        match self {
            Action::Output { .. } => OFPAT_OUTPUT,
            Action::CopyTtlOut => OFPAT_COPY_TTL_OUT,
            Action::CopyTtlIn => OFPAT_COPY_TTL_IN,
            Action::SetMplsTtl(_) => OFPAT_SET_MPLS_TTL,
            Action::DecMplsTtl => OFPAT_DEC_MPLS_TTL,
            Action::PushVlan(_) => OFPAT_PUSH_VLAN,
            Action::PopVlan => OFPAT_POP_VLAN,
            Action::PushMpls(_) => OFPAT_PUSH_MPLS,
            Action::PopMpls(_) => OFPAT_POP_MPLS,
            Action::SetQueue(_) => OFPAT_SET_QUEUE,
            Action::Group(_) => OFPAT_GROUP,
            Action::SetNwTtl(_) => OFPAT_SET_NW_TTL,
            Action::DecNwTtl => OFPAT_DEC_NW_TTL,
            Action::SetField(_) => OFPAT_SET_FIELD,
            Action::PushPbb(_) => OFPAT_PUSH_PBB,
            Action::PopPbb => OFPAT_POP_PBB,
            Action::Experimenter { .. } => OFPAT_EXPERIMENTER,
            Action::Unknown { typ, .. } => *typ,
        }
    }

    /// Decodes a list of actions occupying all of `buf`.
    pub fn decode_list(buf: &[u8]) -> Result<Vec<Action>, OfpError> {
        let mut r = Reader::new(buf);
        let mut actions = Vec::new();
        while !r.is_empty() {
            actions.push(Action::decode(&mut r)?);
        }
        Ok(actions)
    }

    /// Wire form of a list of actions.
    pub fn encode_list(actions: &[Action]) -> Vec<u8> {
        to_vec(|w| encode_list(actions, w))
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Action, OfpError> {
        let raw = r.tlv(2, 8, 8, OfpError::BadActionLength)?;
        let mut tr = Reader::new(raw);
        let typ = tr.u16()?;
        tr.skip(2)?;
        let body = tr.rest();
        let typed = decode_typed(typ, body).map_err(|e| match e {
            OfpError::Truncated => OfpError::BadActionLength,
            other => other,
        })?;
        Ok(match typed {
            Some(action) if reencodes_to(raw, |w| action.encode(w)) => action,
            _ => Action::Unknown {
                typ,
                data: body.to_vec(),
            },
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        let start = w.pos();
        w.u16(self.action_type());
        let len_at = w.len_placeholder();
        match self {
            Action::Output { port, max_len } => {
                w.u32(*port);
                w.u16(*max_len);
                w.zeros(6);
            }
            Action::CopyTtlOut
            | Action::CopyTtlIn
            | Action::DecMplsTtl
            | Action::PopVlan
            | Action::DecNwTtl
            | Action::PopPbb => w.zeros(4),
            Action::SetMplsTtl(ttl) | Action::SetNwTtl(ttl) => {
                w.u8(*ttl);
                w.zeros(3);
            }
            Action::PushVlan(ethertype)
            | Action::PushMpls(ethertype)
            | Action::PopMpls(ethertype)
            | Action::PushPbb(ethertype) => {
                w.u16(*ethertype);
                w.zeros(2);
            }
            Action::SetQueue(id) | Action::Group(id) => w.u32(*id),
            Action::SetField(oxm) => oxm.encode(w),
            Action::Experimenter { experimenter, data } => {
                w.u32(*experimenter);
                w.bytes(data);
            }
            Action::Unknown { data, .. } => w.bytes(data),
        }
        // Set-field and variable actions are padded so the next action stays 8-byte aligned.
        w.pad_to_8(start);
        w.patch_len(len_at, start);
    }
}

pub(crate) fn encode_list(actions: &[Action], w: &mut Writer) {
    for action in actions {
        action.encode(w);
    }
}

/// Typed form of an action body (the bytes after type/length), or None for unmodelled types.
fn decode_typed(typ: u16, body: &[u8]) -> Result<Option<Action>, OfpError> {
    let mut r = Reader::new(body);
    let action = match typ {
        OFPAT_OUTPUT => Action::Output {
            port: r.u32()?,
            max_len: r.u16()?,
        },
        OFPAT_COPY_TTL_OUT => Action::CopyTtlOut,
        OFPAT_COPY_TTL_IN => Action::CopyTtlIn,
        OFPAT_SET_MPLS_TTL => Action::SetMplsTtl(r.u8()?),
        OFPAT_DEC_MPLS_TTL => Action::DecMplsTtl,
        OFPAT_PUSH_VLAN => Action::PushVlan(r.u16()?),
        OFPAT_POP_VLAN => Action::PopVlan,
        OFPAT_PUSH_MPLS => Action::PushMpls(r.u16()?),
        OFPAT_POP_MPLS => Action::PopMpls(r.u16()?),
        OFPAT_SET_QUEUE => Action::SetQueue(r.u32()?),
        OFPAT_GROUP => Action::Group(r.u32()?),
        OFPAT_SET_NW_TTL => Action::SetNwTtl(r.u8()?),
        OFPAT_DEC_NW_TTL => Action::DecNwTtl,
        OFPAT_SET_FIELD => Action::SetField(Oxm::decode(&mut r)?),
        OFPAT_PUSH_PBB => Action::PushPbb(r.u16()?),
        OFPAT_POP_PBB => Action::PopPbb,
        OFPAT_EXPERIMENTER => Action::Experimenter {
            experimenter: r.u32()?,
            data: r.rest().to_vec(),
        },
        _ => return Ok(None),
    };
    Ok(Some(action))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(bytes: &[u8], expected: Vec<Action>) {
        assert_eq!(Action::decode_list(bytes), Ok(expected.clone()));
        assert_eq!(Action::encode_list(&expected), bytes);
    }

    #[test]
    fn output_to_controller_as_in_table_miss_flow() {
        round_trip(
            &[0, 0, 0, 16, 0xff, 0xff, 0xff, 0xfd, 0xff, 0xff, 0, 0, 0, 0, 0, 0],
            vec![Action::output(OFPP_CONTROLLER)],
        );
    }

    #[test]
    fn fixed_size_actions() {
        round_trip(
            &[
                0, 17, 0, 8, 0x81, 0x00, 0, 0, // push_vlan 0x8100
                0, 18, 0, 8, 0, 0, 0, 0, // pop_vlan
                0, 22, 0, 8, 0, 0, 0, 9, // group 9
                0, 21, 0, 8, 0, 0, 0, 3, // set_queue 3
                0, 23, 0, 8, 64, 0, 0, 0, // set_nw_ttl 64
                0, 24, 0, 8, 0, 0, 0, 0, // dec_nw_ttl
                0, 20, 0, 8, 0x08, 0x00, 0, 0, // pop_mpls 0x0800
            ],
            vec![
                Action::PushVlan(0x8100),
                Action::PopVlan,
                Action::Group(9),
                Action::SetQueue(3),
                Action::SetNwTtl(64),
                Action::DecNwTtl,
                Action::PopMpls(0x0800),
            ],
        );
    }

    #[test]
    fn set_field_tunnel_id_is_padded_to_16() {
        // 4 (action header) + 12 (OXM) = 16: no padding needed.
        let tun = [0, 25, 0, 16, 0x80, 0x00, 0x4c, 0x08, 0, 0, 0, 0, 0, 0, 0, 5];
        round_trip(&tun, vec![Action::SetField(Oxm::TunnelId { id: 5, mask: None })]);
        // 4 + 10 (ETH_DST) = 14, padded to 16.
        let eth = [0, 25, 0, 16, 0x80, 0x00, 0x06, 0x06, 2, 0, 0, 0, 0, 1, 0, 0];
        round_trip(
            &eth,
            vec![Action::SetField(Oxm::EthDst {
                mac: [2, 0, 0, 0, 0, 1],
                mask: None,
            })],
        );
    }

    #[test]
    fn experimenter_and_unknown() {
        round_trip(
            &[0xff, 0xff, 0, 16, 0x00, 0x00, 0x23, 0x20, 0, 1, 2, 3, 4, 5, 6, 7],
            vec![Action::Experimenter {
                experimenter: 0x2320,
                data: vec![0, 1, 2, 3, 4, 5, 6, 7],
            }],
        );
        round_trip(
            &[0, 99, 0, 8, 1, 2, 3, 4],
            vec![Action::Unknown {
                typ: 99,
                data: vec![1, 2, 3, 4],
            }],
        );
    }

    #[test]
    fn non_canonical_known_actions_stay_raw() {
        // Output with non-zero padding.
        let bytes = [0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        let actions = Action::decode_list(&bytes).unwrap();
        assert_eq!(
            actions,
            vec![Action::Unknown {
                typ: 0,
                data: bytes[4..].to_vec()
            }]
        );
        assert_eq!(Action::encode_list(&actions), bytes);
        // Pop-vlan that is 16 bytes long.
        let bytes = [0, 18, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let actions = Action::decode_list(&bytes).unwrap();
        assert!(matches!(actions[..], [Action::Unknown { typ: 18, .. }]));
        assert_eq!(Action::encode_list(&actions), bytes);
    }

    #[test]
    fn bad_lengths() {
        for bytes in [
            &[0u8, 0, 0, 0, 0, 0, 0, 0][..],                     // zero length
            &[0, 0, 0, 4, 0, 0, 0, 0][..],                       // below 8
            &[0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0][..],          // not a multiple of 8
            &[0, 0, 0, 16, 0, 0, 0, 1][..],                      // beyond the list
            &[0, 0, 0, 8, 0, 0, 0, 1][..],                       // output too short for its fields
            &[0, 25, 0, 8, 0x80, 0, 0x4c, 8][..],                // set-field OXM overruns
            &[0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0][..], // truncated
            &[0, 0][..],
        ] {
            let err = Action::decode_list(bytes).unwrap_err();
            assert!(
                matches!(err, OfpError::BadActionLength | OfpError::BadOxmLength),
                "{bytes:?} -> {err:?}"
            );
        }
    }
}
