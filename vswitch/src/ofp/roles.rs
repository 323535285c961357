//! OpenFlow 1.3 controller roles (spec 6.3.7): every connection starts EQUAL; a controller
//! asking to be MASTER turns the previous master into a SLAVE; MASTER and SLAVE requests carry
//! a generation id, and one older than the newest seen is refused as stale, so a deposed
//! master that comes back late cannot take the switch back. A SLAVE may read but not modify
//! the switch, and gets no PACKET_INs. Pure state; `Hub` keeps it beside the connections.

use cloudrack_wire::ofp::{
    OFPCR_ROLE_EQUAL, OFPCR_ROLE_MASTER, OFPCR_ROLE_NOCHANGE, OFPCR_ROLE_SLAVE, OFPET_ROLE_REQUEST_FAILED,
    OFPRRFC_BAD_ROLE, OFPRRFC_STALE,
};

/// (OpenFlow error type, code).
pub type RoleErr = (u16, u16);

#[derive(Debug, Default)]
pub struct Roles {
    links: Vec<(u64, u32)>,
    /// The newest generation id of a MASTER/SLAVE request, once there was one.
    generation: Option<u64>,
}

impl Roles {
    pub fn add(&mut self, id: u64) {
        self.links.push((id, OFPCR_ROLE_EQUAL));
    }

    pub fn remove(&mut self, id: u64) {
        self.links.retain(|(i, _)| *i != id);
    }

    pub fn role(&self, id: u64) -> u32 {
        self.links
            .iter()
            .find(|(i, _)| *i == id)
            .map_or(OFPCR_ROLE_EQUAL, |(_, r)| *r)
    }

    pub fn is_slave(&self, id: u64) -> bool {
        self.role(id) == OFPCR_ROLE_SLAVE
    }

    /// Carry out a ROLE_REQUEST from connection `id`; returns the role to reply with.
    pub fn request(&mut self, id: u64, role: u32, generation_id: u64) -> Result<u32, RoleErr> {
        match role {
            OFPCR_ROLE_NOCHANGE => return Ok(self.role(id)),
            OFPCR_ROLE_EQUAL => {}
            OFPCR_ROLE_MASTER | OFPCR_ROLE_SLAVE => {
                // Compared as the spec says: a signed distance, so the id may wrap around.
                if self
                    .generation
                    .is_some_and(|g| (generation_id.wrapping_sub(g) as i64) < 0)
                {
                    return Err((OFPET_ROLE_REQUEST_FAILED, OFPRRFC_STALE));
                }
                self.generation = Some(generation_id);
            }
            _ => return Err((OFPET_ROLE_REQUEST_FAILED, OFPRRFC_BAD_ROLE)),
        }
        if role == OFPCR_ROLE_MASTER {
            for (i, r) in self.links.iter_mut() {
                if *i != id && *r == OFPCR_ROLE_MASTER {
                    *r = OFPCR_ROLE_SLAVE;
                }
            }
        }
        match self.links.iter_mut().find(|(i, _)| *i == id) {
            Some((_, r)) => *r = role,
            None => self.links.push((id, role)),
        }
        Ok(role)
    }

    /// Who gets PACKET_INs: the master, else the first EQUAL connection; never a slave.
    pub fn primary(&self) -> Option<u64> {
        self.links
            .iter()
            .find(|(_, r)| *r == OFPCR_ROLE_MASTER)
            .or_else(|| self.links.iter().find(|(_, r)| *r == OFPCR_ROLE_EQUAL))
            .map(|(i, _)| *i)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_new_master_demotes_the_old_one() {
        let mut r = Roles::default();
        r.add(1);
        r.add(2);
        assert_eq!(r.primary(), Some(1), "both EQUAL: the first");
        assert_eq!(r.request(2, OFPCR_ROLE_MASTER, 5), Ok(OFPCR_ROLE_MASTER));
        assert_eq!(r.primary(), Some(2));
        assert_eq!(r.request(1, OFPCR_ROLE_MASTER, 6), Ok(OFPCR_ROLE_MASTER));
        assert!(r.is_slave(2));
        assert_eq!(r.primary(), Some(1));
        assert_eq!(r.request(2, OFPCR_ROLE_NOCHANGE, 0), Ok(OFPCR_ROLE_SLAVE));
        r.remove(1);
        assert_eq!(r.primary(), None, "a slave alone gets no PACKET_INs");
        assert_eq!(r.request(2, OFPCR_ROLE_EQUAL, 0), Ok(OFPCR_ROLE_EQUAL));
        assert_eq!(r.primary(), Some(2));
    }

    #[test]
    fn a_stale_generation_is_refused() {
        let mut r = Roles::default();
        r.add(1);
        r.add(2);
        assert_eq!(r.request(1, OFPCR_ROLE_MASTER, 10), Ok(OFPCR_ROLE_MASTER));
        // The deposed master's late request, with the old generation id.
        assert_eq!(
            r.request(2, OFPCR_ROLE_MASTER, 9),
            Err((OFPET_ROLE_REQUEST_FAILED, OFPRRFC_STALE))
        );
        assert_eq!(r.primary(), Some(1));
        assert_eq!(r.request(2, OFPCR_ROLE_SLAVE, 10), Ok(OFPCR_ROLE_SLAVE));
        // Generation ids may wrap.
        assert_eq!(r.request(2, OFPCR_ROLE_MASTER, 10u64.wrapping_add(u64::MAX / 2)), Ok(2));
        assert_eq!(r.request(1, 7, 0), Err((OFPET_ROLE_REQUEST_FAILED, OFPRRFC_BAD_ROLE)));
    }
}
