//! Which virtual networks each switch has local ports in, indexed both ways, so relaying a
//! broadcast touches only the hosts of its network (not every port of every host).

use crate::ids::{Dpid, PortNo, Vnet};
use std::collections::HashMap;

#[derive(Default)]
pub struct Members {
    /// dpid → port → vnet.
    ports: HashMap<Dpid, HashMap<PortNo, Vnet>>,
    /// vnet → dpid → number of its ports in the network.
    hosts: HashMap<Vnet, HashMap<Dpid, usize>>,
}

impl Members {
    pub fn set(&mut self, dpid: Dpid, port: PortNo, vnet: Vnet) {
        if let Some(old) = self.ports.entry(dpid).or_default().insert(port, vnet) {
            self.leave(old, dpid);
        }
        *self.hosts.entry(vnet).or_default().entry(dpid).or_default() += 1;
    }

    pub fn remove_port(&mut self, dpid: Dpid, port: PortNo) {
        if let Some(vnet) = self.ports.get_mut(&dpid).and_then(|p| p.remove(&port)) {
            self.leave(vnet, dpid);
        }
    }

    /// The ports of a switch we know of.
    pub fn ports_of(&self, dpid: Dpid) -> Vec<PortNo> {
        self.ports
            .get(&dpid)
            .map(|p| p.keys().copied().collect())
            .unwrap_or_default()
    }

    /// A switch re-registers: its ports are declared again.
    pub fn remove_switch(&mut self, dpid: Dpid) {
        for (_, vnet) in self.ports.remove(&dpid).unwrap_or_default() {
            self.leave(vnet, dpid);
        }
    }

    fn leave(&mut self, vnet: Vnet, dpid: Dpid) {
        if let Some(hosts) = self.hosts.get_mut(&vnet) {
            if let Some(n) = hosts.get_mut(&dpid) {
                *n -= 1;
                if *n == 0 {
                    hosts.remove(&dpid);
                }
            }
            if hosts.is_empty() {
                self.hosts.remove(&vnet);
            }
        }
    }

    /// Switches with at least one port in `vnet`.
    pub fn hosts_in(&self, vnet: Vnet) -> impl Iterator<Item = Dpid> + '_ {
        self.hosts.get(&vnet).into_iter().flat_map(|h| h.keys().copied())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// The hosts in network `vnet`, as numbers.
    fn hosts(m: &Members, vnet: u32) -> Vec<u64> {
        let mut v: Vec<u64> = m.hosts_in(Vnet(vnet)).map(|d| d.0).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn follows_ports_in_and_out_of_networks() {
        let mut m = Members::default();
        m.set(Dpid(1), PortNo(1), Vnet(7));
        m.set(Dpid(1), PortNo(2), Vnet(7));
        m.set(Dpid(2), PortNo(1), Vnet(7));
        m.set(Dpid(2), PortNo(2), Vnet(8));
        assert_eq!(hosts(&m, 7), vec![1, 2]);
        assert_eq!(hosts(&m, 8), vec![2]);
        m.remove_port(Dpid(1), PortNo(1));
        assert_eq!(hosts(&m, 7), vec![1, 2], "host 1 still has port 2 in network 7");
        assert_eq!(m.ports_of(Dpid(1)), vec![PortNo(2)]);
        m.set(Dpid(1), PortNo(2), Vnet(8)); // the port moved to another network
        assert_eq!(hosts(&m, 7), vec![2]);
        assert_eq!(hosts(&m, 8), vec![1, 2]);
        m.remove_switch(Dpid(2));
        assert_eq!(hosts(&m, 7), Vec::<u64>::new());
        assert_eq!(hosts(&m, 8), vec![1]);
        m.remove_port(Dpid(9), PortNo(9)); // unknown: nothing happens
    }
}
