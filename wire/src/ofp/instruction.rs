//! Instructions (spec 7.2.4): `type:16 len:16` TLVs, length a multiple of 8.

use super::action::{encode_list, Action};
use super::error::OfpError;
use super::reader::Reader;
use super::writer::{reencodes_to, to_vec, Writer};

pub const OFPIT_GOTO_TABLE: u16 = 1;
pub const OFPIT_WRITE_METADATA: u16 = 2;
pub const OFPIT_WRITE_ACTIONS: u16 = 3;
pub const OFPIT_APPLY_ACTIONS: u16 = 4;
pub const OFPIT_CLEAR_ACTIONS: u16 = 5;
pub const OFPIT_METER: u16 = 6;
pub const OFPIT_EXPERIMENTER: u16 = 0xffff;

/// One instruction of a flow entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Instruction {
    GotoTable(u8),
    WriteMetadata {
        metadata: u64,
        mask: u64,
    },
    WriteActions(Vec<Action>),
    ApplyActions(Vec<Action>),
    ClearActions,
    Meter(u32),
    /// `data` follows the experimenter id; encode pads it with zeros to a multiple of 8.
    Experimenter {
        experimenter: u32,
        data: Vec<u8>,
    },
    /// Anything else, or a known type in non-canonical form: `data` is everything after the
    /// 4-byte type/length header.
    Unknown {
        typ: u16,
        data: Vec<u8>,
    },
}

impl Instruction {
    /// The OFPIT_* type.
    pub fn instruction_type(&self) -> u16 {
        match self {
            Instruction::GotoTable(_) => OFPIT_GOTO_TABLE,
            Instruction::WriteMetadata { .. } => OFPIT_WRITE_METADATA,
            Instruction::WriteActions(_) => OFPIT_WRITE_ACTIONS,
            Instruction::ApplyActions(_) => OFPIT_APPLY_ACTIONS,
            Instruction::ClearActions => OFPIT_CLEAR_ACTIONS,
            Instruction::Meter(_) => OFPIT_METER,
            Instruction::Experimenter { .. } => OFPIT_EXPERIMENTER,
            Instruction::Unknown { typ, .. } => *typ,
        }
    }

    /// Decodes a list of instructions occupying all of `buf`.
    pub fn decode_list(buf: &[u8]) -> Result<Vec<Instruction>, OfpError> {
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        while !r.is_empty() {
            out.push(Instruction::decode(&mut r)?);
        }
        Ok(out)
    }

    /// Wire form of a list of instructions.
    pub fn encode_list(instructions: &[Instruction]) -> Vec<u8> {
        to_vec(|w| encode_instructions(instructions, w))
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Instruction, OfpError> {
        let raw = r.tlv(2, 8, 8, OfpError::BadInstructionLength)?;
        let mut tr = Reader::new(raw);
        let typ = tr.u16()?;
        tr.skip(2)?;
        let body = tr.rest();
        // Only this instruction's own fields map to BadInstructionLength; errors from nested
        // actions keep their own kind.
        let typed = decode_typed(typ, body).map_err(|e| match e {
            OfpError::Truncated => OfpError::BadInstructionLength,
            other => other,
        })?;
        Ok(match typed {
            Some(inst) if reencodes_to(raw, |w| inst.encode(w)) => inst,
            _ => Instruction::Unknown {
                typ,
                data: body.to_vec(),
            },
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        let start = w.pos();
        w.u16(self.instruction_type());
        let len_at = w.len_placeholder();
        match self {
            Instruction::GotoTable(table) => {
                w.u8(*table);
                w.zeros(3);
            }
            Instruction::WriteMetadata { metadata, mask } => {
                w.zeros(4);
                w.u64(*metadata);
                w.u64(*mask);
            }
            Instruction::WriteActions(actions) | Instruction::ApplyActions(actions) => {
                w.zeros(4);
                encode_list(actions, w);
            }
            Instruction::ClearActions => w.zeros(4),
            Instruction::Meter(id) => w.u32(*id),
            Instruction::Experimenter { experimenter, data } => {
                w.u32(*experimenter);
                w.bytes(data);
            }
            Instruction::Unknown { data, .. } => w.bytes(data),
        }
        w.pad_to_8(start);
        w.patch_len(len_at, start);
    }
}

pub(crate) fn encode_instructions(instructions: &[Instruction], w: &mut Writer) {
    for inst in instructions {
        inst.encode(w);
    }
}

fn decode_typed(typ: u16, body: &[u8]) -> Result<Option<Instruction>, OfpError> {
    let mut r = Reader::new(body);
    let inst = match typ {
        OFPIT_GOTO_TABLE => Instruction::GotoTable(r.u8()?),
        OFPIT_WRITE_METADATA => {
            r.skip(4)?;
            Instruction::WriteMetadata {
                metadata: r.u64()?,
                mask: r.u64()?,
            }
        }
        OFPIT_WRITE_ACTIONS | OFPIT_APPLY_ACTIONS => {
            r.skip(4)?;
            let actions = Action::decode_list(r.rest())?;
            if typ == OFPIT_WRITE_ACTIONS {
                Instruction::WriteActions(actions)
            } else {
                Instruction::ApplyActions(actions)
            }
        }
        OFPIT_CLEAR_ACTIONS => Instruction::ClearActions,
        OFPIT_METER => Instruction::Meter(r.u32()?),
        OFPIT_EXPERIMENTER => Instruction::Experimenter {
            experimenter: r.u32()?,
            data: r.rest().to_vec(),
        },
        _ => return Ok(None),
    };
    Ok(Some(inst))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ofp::port::OFPP_CONTROLLER;

    fn round_trip(bytes: &[u8], expected: Vec<Instruction>) {
        assert_eq!(Instruction::decode_list(bytes), Ok(expected.clone()));
        assert_eq!(Instruction::encode_list(&expected), bytes);
    }

    #[test]
    fn apply_actions_output_controller() {
        // The table-miss instruction from the captured FLOW_MOD.
        round_trip(
            &[
                0x00, 0x04, 0x00, 0x18, 0, 0, 0, 0, // apply-actions, 24 bytes
                0x00, 0x00, 0x00, 0x10, 0xff, 0xff, 0xff, 0xfd, 0xff, 0xff, 0, 0, 0, 0, 0, 0,
            ],
            vec![Instruction::ApplyActions(vec![Action::output(OFPP_CONTROLLER)])],
        );
    }

    #[test]
    fn other_instructions() {
        round_trip(
            &[
                0, 1, 0, 8, 3, 0, 0, 0, // goto table 3
                0, 2, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0, 5, 0, 8, 0, 0, 0,
                0, // clear-actions
                0, 3, 0, 8, 0, 0, 0, 0, // write-actions, empty
                0, 6, 0, 8, 0, 0, 0, 7, // meter 7
                0xff, 0xff, 0, 8, 0, 0, 0x23, 0x20, // experimenter, no data
                0, 42, 0, 8, 9, 9, 9, 9, // unknown
            ],
            vec![
                Instruction::GotoTable(3),
                Instruction::WriteMetadata {
                    metadata: 1,
                    mask: 0xff,
                },
                Instruction::ClearActions,
                Instruction::WriteActions(vec![]),
                Instruction::Meter(7),
                Instruction::Experimenter {
                    experimenter: 0x2320,
                    data: vec![],
                },
                Instruction::Unknown {
                    typ: 42,
                    data: vec![9, 9, 9, 9],
                },
            ],
        );
    }

    #[test]
    fn non_canonical_goto_stays_raw() {
        let bytes = [0, 1, 0, 8, 3, 0, 1, 0];
        let insts = Instruction::decode_list(&bytes).unwrap();
        assert_eq!(
            insts,
            vec![Instruction::Unknown {
                typ: 1,
                data: vec![3, 0, 1, 0]
            }]
        );
        assert_eq!(Instruction::encode_list(&insts), bytes);
    }

    #[test]
    fn bad_lengths() {
        assert_eq!(
            Instruction::decode_list(&[0, 4, 0, 0, 0, 0, 0, 0]),
            Err(OfpError::BadInstructionLength)
        );
        assert_eq!(
            Instruction::decode_list(&[0, 4, 0, 16, 0, 0, 0, 0]),
            Err(OfpError::BadInstructionLength)
        );
        assert_eq!(
            Instruction::decode_list(&[0, 2, 0, 8, 0, 0, 0, 0]),
            Err(OfpError::BadInstructionLength)
        );
        // A bad action inside apply-actions reports the action error.
        assert_eq!(
            Instruction::decode_list(&[0, 4, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(OfpError::BadActionLength)
        );
    }
}
