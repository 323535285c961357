//! The group table (spec 5.6): all, select, indirect and fast-failover groups, and GROUP_MOD.

use super::actions::{compile_actions, Act, Checks, Context};
use crate::dp::stats::{now_ms, FlowCounters};
use crate::ofp::translate::OfpErr;
use cloudrack_wire::ofp::{self, GroupMod};
use std::sync::Arc;

/// Most groups, and buckets per group.
pub const MAX_GROUPS: usize = 65_536;
pub const MAX_BUCKETS: usize = 64;

#[derive(Debug)]
pub struct GroupBucket {
    pub weight: u16,
    pub watch_port: u32,
    pub watch_group: u32,
    pub actions: Vec<Act>,
    pub counters: Arc<FlowCounters>,
}

#[derive(Debug)]
pub struct Group {
    pub id: u32,
    pub group_type: u8,
    pub buckets: Vec<GroupBucket>,
    /// As the controller sent them, to report back.
    pub wire: Vec<ofp::Bucket>,
    pub counters: Arc<FlowCounters>,
    pub installed_ms: u64,
}

pub type Groups = imbl::HashMap<u32, Arc<Group>>;

const GMF: u16 = ofp::OFPET_GROUP_MOD_FAILED;

/// Whether group `from` (with these bucket actions) reaches group `target` through chained
/// group actions: adding it would make a loop.
fn reaches(groups: &Groups, actions: &[&[Act]], target: u32, depth: usize) -> bool {
    if depth > 32 {
        return true;
    }
    actions.iter().flat_map(|a| a.iter()).any(|a| match a {
        Act::Group(g) if *g == target => true,
        Act::Group(g) => groups.get(g).is_some_and(|next| {
            let acts: Vec<&[Act]> = next.buckets.iter().map(|b| b.actions.as_slice()).collect();
            reaches(groups, &acts, target, depth + 1)
        }),
        _ => false,
    })
}

/// What a GROUP_MOD did.
#[derive(Debug, Default)]
pub struct GroupModOutcome {
    /// Groups deleted (their flows must go too).
    pub deleted: Vec<u32>,
}

/// Apply a GROUP_MOD to `groups`.
pub fn group_mod(groups: &mut Groups, gm: &GroupMod, checks: &dyn Checks) -> Result<GroupModOutcome, OfpErr> {
    let mut out = GroupModOutcome::default();
    if gm.command == ofp::OFPGC_DELETE {
        if gm.group_id == ofp::OFPG_ALL {
            out.deleted = groups.keys().copied().collect();
            groups.clear();
        } else if gm.group_id <= ofp::OFPG_MAX {
            if groups.remove(&gm.group_id).is_some() {
                out.deleted.push(gm.group_id);
            }
        } else {
            return Err((GMF, ofp::OFPGMFC_INVALID_GROUP));
        }
        return Ok(out);
    }
    if gm.command != ofp::OFPGC_ADD && gm.command != ofp::OFPGC_MODIFY {
        return Err((GMF, ofp::OFPGMFC_BAD_COMMAND));
    }
    if gm.group_id > ofp::OFPG_MAX {
        return Err((GMF, ofp::OFPGMFC_INVALID_GROUP));
    }
    let exists = groups.contains_key(&gm.group_id);
    if gm.command == ofp::OFPGC_ADD && exists {
        return Err((GMF, ofp::OFPGMFC_GROUP_EXISTS));
    }
    if gm.command == ofp::OFPGC_MODIFY && !exists {
        return Err((GMF, ofp::OFPGMFC_UNKNOWN_GROUP));
    }
    if gm.command == ofp::OFPGC_ADD && groups.len() >= MAX_GROUPS {
        return Err((GMF, ofp::OFPGMFC_OUT_OF_GROUPS));
    }
    if gm.group_type > ofp::OFPGT_FF {
        return Err((GMF, ofp::OFPGMFC_BAD_TYPE));
    }
    if gm.buckets.len() > MAX_BUCKETS {
        return Err((GMF, ofp::OFPGMFC_OUT_OF_BUCKETS));
    }
    if gm.group_type == ofp::OFPGT_INDIRECT && gm.buckets.len() != 1 {
        return Err((GMF, ofp::OFPGMFC_BAD_BUCKET));
    }
    let mut buckets = Vec::with_capacity(gm.buckets.len());
    for b in &gm.buckets {
        if gm.group_type != ofp::OFPGT_SELECT && b.weight != 0 {
            return Err((GMF, ofp::OFPGMFC_BAD_BUCKET));
        }
        if gm.group_type == ofp::OFPGT_FF && b.watch_port == ofp::OFPP_ANY && b.watch_group == ofp::OFPG_ANY {
            return Err((GMF, ofp::OFPGMFC_BAD_WATCH));
        }
        let actions = compile_actions(&b.actions, Context::Bucket, checks).map_err(|(t, c)| {
            if (t, c) == (ofp::OFPET_BAD_ACTION, ofp::OFPBAC_BAD_OUT_GROUP) {
                (GMF, ofp::OFPGMFC_CHAINING_UNSUPPORTED)
            } else {
                (t, c)
            }
        })?;
        buckets.push(GroupBucket {
            weight: b.weight,
            watch_port: b.watch_port,
            watch_group: b.watch_group,
            actions,
            counters: Arc::default(),
        });
    }
    let acts: Vec<&[Act]> = buckets.iter().map(|b| b.actions.as_slice()).collect();
    if reaches(groups, &acts, gm.group_id, 0) {
        return Err((GMF, ofp::OFPGMFC_LOOP));
    }
    let group = Group {
        id: gm.group_id,
        group_type: gm.group_type,
        buckets,
        wire: gm.buckets.clone(),
        counters: groups.get(&gm.group_id).map(|g| g.counters.clone()).unwrap_or_default(),
        installed_ms: groups.get(&gm.group_id).map_or_else(now_ms, |g| g.installed_ms),
    };
    groups.insert(gm.group_id, Arc::new(group));
    Ok(out)
}

/// The bucket a select group takes for a packet with flow hash `hash`: weighted.
pub fn select_bucket(g: &Group, hash: u64) -> Option<usize> {
    let total: u64 = g.buckets.iter().map(|b| b.weight as u64).sum();
    if total == 0 {
        return None;
    }
    let mut pick = hash % total;
    for (i, b) in g.buckets.iter().enumerate() {
        if pick < b.weight as u64 {
            return Some(i);
        }
        pick -= b.weight as u64;
    }
    None
}

#[cfg(test)]
mod test {
    use super::*;
    use cloudrack_wire::ofp::{Action, Bucket};

    struct C<'a>(&'a Groups);
    impl Checks for C<'_> {
        fn group_exists(&self, id: u32) -> bool {
            self.0.contains_key(&id)
        }
        fn meter_exists(&self, _: u32) -> bool {
            false
        }
    }

    fn bucket(weight: u16, actions: Vec<Action>) -> Bucket {
        Bucket {
            weight,
            watch_port: ofp::OFPP_ANY,
            watch_group: ofp::OFPG_ANY,
            actions,
        }
    }

    fn gm(command: u16, group_type: u8, id: u32, buckets: Vec<Bucket>) -> GroupMod {
        GroupMod {
            command,
            group_type,
            group_id: id,
            buckets,
        }
    }

    fn apply(groups: &mut Groups, m: GroupMod) -> Result<GroupModOutcome, OfpErr> {
        let snapshot = groups.clone();
        group_mod(groups, &m, &C(&snapshot))
    }

    #[test]
    fn add_modify_delete_and_their_errors() {
        let mut g = Groups::default();
        let all = gm(
            ofp::OFPGC_ADD,
            ofp::OFPGT_ALL,
            1,
            vec![bucket(0, vec![Action::output(1)])],
        );
        apply(&mut g, all.clone()).unwrap();
        assert_eq!(apply(&mut g, all).unwrap_err(), (GMF, ofp::OFPGMFC_GROUP_EXISTS));
        let m = gm(ofp::OFPGC_MODIFY, ofp::OFPGT_ALL, 2, vec![]);
        assert_eq!(apply(&mut g, m).unwrap_err(), (GMF, ofp::OFPGMFC_UNKNOWN_GROUP));
        let two = gm(
            ofp::OFPGC_ADD,
            ofp::OFPGT_INDIRECT,
            2,
            vec![bucket(0, vec![]), bucket(0, vec![])],
        );
        assert_eq!(apply(&mut g, two).unwrap_err(), (GMF, ofp::OFPGMFC_BAD_BUCKET));
        let ff = gm(ofp::OFPGC_ADD, ofp::OFPGT_FF, 3, vec![bucket(0, vec![])]);
        assert_eq!(apply(&mut g, ff).unwrap_err(), (GMF, ofp::OFPGMFC_BAD_WATCH));
        let chain = gm(
            ofp::OFPGC_ADD,
            ofp::OFPGT_ALL,
            4,
            vec![bucket(0, vec![Action::Group(9)])],
        );
        assert_eq!(
            apply(&mut g, chain).unwrap_err(),
            (GMF, ofp::OFPGMFC_CHAINING_UNSUPPORTED)
        );
        // 5 -> 1 is fine; then making 1 point at 5 is a loop.
        let to1 = gm(
            ofp::OFPGC_ADD,
            ofp::OFPGT_ALL,
            5,
            vec![bucket(0, vec![Action::Group(1)])],
        );
        apply(&mut g, to1).unwrap();
        let loop_ = gm(
            ofp::OFPGC_MODIFY,
            ofp::OFPGT_ALL,
            1,
            vec![bucket(0, vec![Action::Group(5)])],
        );
        assert_eq!(apply(&mut g, loop_).unwrap_err(), (GMF, ofp::OFPGMFC_LOOP));
        let del = apply(&mut g, gm(ofp::OFPGC_DELETE, 0, ofp::OFPG_ALL, vec![])).unwrap();
        assert_eq!(del.deleted.len(), 2);
        assert!(g.is_empty());
    }

    #[test]
    fn select_is_weighted() {
        let mut g = Groups::default();
        let sel = gm(
            ofp::OFPGC_ADD,
            ofp::OFPGT_SELECT,
            1,
            vec![bucket(1, vec![Action::output(1)]), bucket(3, vec![Action::output(2)])],
        );
        apply(&mut g, sel).unwrap();
        let grp = g.get(&1).unwrap();
        let mut n = [0; 2];
        for h in 0..400u64 {
            n[select_bucket(grp, h).unwrap()] += 1;
        }
        assert_eq!(n, [100, 300]);
    }
}
