//! Actions and instructions, checked and compiled from their wire form: what a flow entry,
//! a group bucket or a PACKET_OUT will do. Refusals carry the OpenFlow error the spec names.

use super::field;
use crate::ofp::translate::OfpErr;
use cloudrack_wire::ofp::{self, Action, Instruction};

/// Number of flow tables (0..=253), as Open vSwitch.
pub const N_TABLES: u8 = 254;

/// A value for set_field: up to 16 bytes (an IPv6 address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldValue {
    pub bytes: [u8; 16],
    pub len: u8,
}

impl FieldValue {
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// One action this switch carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Act {
    /// A port, or a reserved port (IN_PORT, TABLE, NORMAL, FLOOD, ALL, CONTROLLER, LOCAL).
    Output {
        port: u32,
        max_len: u16,
    },
    Group(u32),
    SetField {
        field: u8,
        value: FieldValue,
    },
    PushVlan(u16),
    PopVlan,
    DecNwTtl,
    SetNwTtl(u8),
    /// Accepted and counted as done: this switch has one queue per port.
    SetQueue(u32),
    /// MPLS TTL copies: nothing to do without MPLS.
    CopyTtl,
}

impl Act {
    /// The action-set slot (spec 5.10): one action per slot, set-field one per field. Also
    /// the order the set is executed in.
    fn slot(&self) -> (u8, u8) {
        match self {
            Act::CopyTtl => (0, 0),
            Act::PopVlan => (1, 0),
            Act::PushVlan(_) => (2, 0),
            Act::DecNwTtl | Act::SetNwTtl(_) => (3, 0),
            Act::SetField { field, .. } => (4, *field),
            Act::SetQueue(_) => (5, 0),
            Act::Group(_) => (6, 0),
            Act::Output { .. } => (7, 0),
        }
    }

    /// The output port or group this action leads to, for out_port/out_group filters.
    pub fn output_port(&self) -> Option<u32> {
        match self {
            Act::Output { port, .. } => Some(*port),
            _ => None,
        }
    }
}

/// The action set a packet accumulates through write-actions (spec 5.10).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionSet(Vec<Act>);

impl ActionSet {
    pub fn write(&mut self, acts: &[Act]) {
        for a in acts {
            let slot = a.slot();
            match self.0.iter_mut().find(|b| b.slot() == slot) {
                Some(b) => *b = *a,
                None => self.0.push(*a),
            }
        }
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// The set in execution order; a group makes the output moot.
    pub fn in_order(&self) -> Vec<Act> {
        let mut v = self.0.clone();
        v.sort_by_key(|a| a.slot());
        if v.iter().any(|a| matches!(a, Act::Group(_))) {
            v.retain(|a| !matches!(a, Act::Output { .. }));
        }
        v
    }
}

/// A flow entry's instructions, compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Insts {
    pub meter: Option<u32>,
    pub apply: Vec<Act>,
    pub clear: bool,
    pub write: Vec<Act>,
    /// (value, mask)
    pub metadata: Option<(u64, u64)>,
    pub goto: Option<u8>,
}

impl Insts {
    /// Every action, applied or written.
    pub fn actions(&self) -> impl Iterator<Item = &Act> {
        self.apply.iter().chain(&self.write)
    }

    /// A single apply-actions output to a port: the shape the L2 service reads as "this MAC
    /// is behind that port".
    pub fn single_output(&self) -> Option<u32> {
        match (self.apply.as_slice(), self.write.is_empty(), self.goto, self.meter) {
            ([Act::Output { port, .. }], true, None, None) if *port <= ofp::OFPP_MAX => Some(*port),
            _ => None,
        }
    }
}

/// What the checks need to know about the switch.
pub trait Checks {
    fn group_exists(&self, id: u32) -> bool;
    fn meter_exists(&self, id: u32) -> bool;
}

const BAD_ACTION: u16 = ofp::OFPET_BAD_ACTION;
const BAD_INST: u16 = ofp::OFPET_BAD_INSTRUCTION;

/// Where an action list is used: outputs to TABLE only make sense in a PACKET_OUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Flow,
    PacketOut,
    Bucket,
}

fn output_ok(port: u32, ctx: Context) -> bool {
    match port {
        0 | ofp::OFPP_ANY => false,
        ofp::OFPP_TABLE => ctx == Context::PacketOut,
        ofp::OFPP_IN_PORT
        | ofp::OFPP_NORMAL
        | ofp::OFPP_FLOOD
        | ofp::OFPP_ALL
        | ofp::OFPP_CONTROLLER
        | ofp::OFPP_LOCAL => true,
        p => p <= ofp::OFPP_MAX,
    }
}

pub fn compile_actions(actions: &[Action], ctx: Context, checks: &dyn Checks) -> Result<Vec<Act>, OfpErr> {
    actions.iter().map(|a| compile_action(a, ctx, checks)).collect()
}

fn compile_action(a: &Action, ctx: Context, checks: &dyn Checks) -> Result<Act, OfpErr> {
    Ok(match a {
        Action::Output { port, max_len } => {
            if !output_ok(*port, ctx) {
                return Err((BAD_ACTION, ofp::OFPBAC_BAD_OUT_PORT));
            }
            Act::Output {
                port: *port,
                max_len: *max_len,
            }
        }
        Action::Group(id) => {
            if !checks.group_exists(*id) {
                return Err((BAD_ACTION, ofp::OFPBAC_BAD_OUT_GROUP));
            }
            Act::Group(*id)
        }
        Action::SetField(oxm) => {
            let (f, value, mask) = oxm.basic_parts().ok_or((BAD_ACTION, ofp::OFPBAC_BAD_SET_TYPE))?;
            let def = field::def(f)
                .filter(|d| d.settable)
                .ok_or((BAD_ACTION, ofp::OFPBAC_BAD_SET_TYPE))?;
            if value.len() != def.range.len() {
                return Err((BAD_ACTION, ofp::OFPBAC_BAD_SET_LEN));
            }
            if mask.is_some() {
                return Err((BAD_ACTION, ofp::OFPBAC_BAD_SET_ARGUMENT));
            }
            if let Some(valid) = def.valid {
                let v = value.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64);
                if v & !(valid as u64) != 0 {
                    return Err((BAD_ACTION, ofp::OFPBAC_BAD_SET_ARGUMENT));
                }
            }
            let mut bytes = [0u8; 16];
            bytes[..value.len()].copy_from_slice(&value);
            Act::SetField {
                field: def.oxm,
                value: FieldValue {
                    bytes,
                    len: value.len() as u8,
                },
            }
        }
        Action::PushVlan(t) => {
            if *t != 0x8100 && *t != 0x88a8 {
                return Err((BAD_ACTION, ofp::OFPBAC_BAD_ARGUMENT));
            }
            Act::PushVlan(*t)
        }
        Action::PopVlan => Act::PopVlan,
        Action::DecNwTtl => Act::DecNwTtl,
        Action::SetNwTtl(t) => Act::SetNwTtl(*t),
        Action::SetQueue(q) => Act::SetQueue(*q),
        Action::CopyTtlIn | Action::CopyTtlOut => Act::CopyTtl,
        Action::Experimenter { .. } => return Err((BAD_ACTION, ofp::OFPBAC_BAD_EXPERIMENTER)),
        // MPLS and PBB: no such headers here.
        _ => return Err((BAD_ACTION, ofp::OFPBAC_BAD_TYPE)),
    })
}

/// Compile the instructions of a flow entry in `table_id`.
pub fn compile_instructions(insts: &[Instruction], table_id: u8, checks: &dyn Checks) -> Result<Insts, OfpErr> {
    let mut out = Insts::default();
    let mut seen = Vec::new();
    for i in insts {
        let t = i.instruction_type();
        if seen.contains(&t) {
            return Err((BAD_INST, ofp::OFPBIC_UNSUP_INST));
        }
        seen.push(t);
        match i {
            Instruction::GotoTable(t) => {
                if *t <= table_id || *t >= N_TABLES {
                    return Err((BAD_INST, ofp::OFPBIC_BAD_TABLE_ID));
                }
                out.goto = Some(*t);
            }
            Instruction::WriteMetadata { metadata, mask } => out.metadata = Some((*metadata, *mask)),
            Instruction::WriteActions(a) => out.write = compile_actions(a, Context::Flow, checks)?,
            Instruction::ApplyActions(a) => out.apply = compile_actions(a, Context::Flow, checks)?,
            Instruction::ClearActions => out.clear = true,
            Instruction::Meter(id) => {
                if !checks.meter_exists(*id) {
                    return Err((ofp::OFPET_METER_MOD_FAILED, ofp::OFPMMFC_UNKNOWN_METER));
                }
                out.meter = Some(*id);
            }
            Instruction::Experimenter { .. } => return Err((BAD_INST, ofp::OFPBIC_BAD_EXPERIMENTER)),
            Instruction::Unknown { .. } => return Err((BAD_INST, ofp::OFPBIC_UNKNOWN_INST)),
        }
    }
    // A write-actions set may hold one action of each kind (spec 5.10).
    let mut set = ActionSet::default();
    set.write(&out.write);
    if set.0.len() != out.write.len() {
        return Err((BAD_ACTION, ofp::OFPBAC_UNSUPPORTED_ORDER));
    }
    Ok(out)
}

#[cfg(test)]
mod test {
    use super::*;
    use cloudrack_wire::ofp::Oxm;

    struct None_;
    impl Checks for None_ {
        fn group_exists(&self, id: u32) -> bool {
            id == 1
        }
        fn meter_exists(&self, id: u32) -> bool {
            id == 2
        }
    }

    #[test]
    fn compile_checks_ports_groups_meters_and_tables() {
        let c = &None_;
        let ok = compile_instructions(
            &[
                Instruction::Meter(2),
                Instruction::ApplyActions(vec![Action::output(ofp::OFPP_FLOOD), Action::Group(1)]),
                Instruction::WriteMetadata { metadata: 1, mask: 1 },
                Instruction::GotoTable(3),
            ],
            1,
            c,
        )
        .unwrap();
        assert_eq!(ok.goto, Some(3));
        assert_eq!(ok.meter, Some(2));
        let e = |i: Instruction, t| compile_instructions(&[i], t, c).unwrap_err();
        assert_eq!(e(Instruction::GotoTable(1), 1), (BAD_INST, ofp::OFPBIC_BAD_TABLE_ID));
        assert_eq!(e(Instruction::GotoTable(254), 0), (BAD_INST, ofp::OFPBIC_BAD_TABLE_ID));
        assert_eq!(
            e(Instruction::Meter(9), 0),
            (ofp::OFPET_METER_MOD_FAILED, ofp::OFPMMFC_UNKNOWN_METER)
        );
        let a = |act: Action| compile_actions(&[act], Context::Flow, c).unwrap_err().1;
        assert_eq!(a(Action::Group(5)), ofp::OFPBAC_BAD_OUT_GROUP);
        assert_eq!(a(Action::output(ofp::OFPP_TABLE)), ofp::OFPBAC_BAD_OUT_PORT);
        assert_eq!(a(Action::output(ofp::OFPP_ANY)), ofp::OFPBAC_BAD_OUT_PORT);
        assert_eq!(a(Action::PushMpls(0x8847)), ofp::OFPBAC_BAD_TYPE);
        assert_eq!(a(Action::PushVlan(0x0800)), ofp::OFPBAC_BAD_ARGUMENT);
        assert_eq!(a(Action::SetField(Oxm::EthType(0x0800))), ofp::OFPBAC_BAD_SET_TYPE);
        assert_eq!(
            a(Action::SetField(Oxm::VlanVid {
                vid: 0x2000,
                mask: None
            })),
            ofp::OFPBAC_BAD_SET_ARGUMENT
        );
        assert!(compile_actions(&[Action::output(ofp::OFPP_TABLE)], Context::PacketOut, c).is_ok());
    }

    #[test]
    fn action_set_keeps_one_per_kind_in_spec_order() {
        let mut s = ActionSet::default();
        s.write(&[
            Act::Output { port: 1, max_len: 0 },
            Act::PushVlan(0x8100),
            Act::DecNwTtl,
        ]);
        s.write(&[Act::Output { port: 2, max_len: 0 }]);
        assert_eq!(
            s.in_order(),
            [
                Act::PushVlan(0x8100),
                Act::DecNwTtl,
                Act::Output { port: 2, max_len: 0 }
            ]
        );
        s.write(&[Act::Group(1)]);
        assert!(!s.in_order().iter().any(|a| matches!(a, Act::Output { .. })));
        s.clear();
        assert!(s.in_order().is_empty());
    }
}
