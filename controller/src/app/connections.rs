//! Switches connecting, saying which they are (FEATURES_REPLY) and registering with TCCS,
//! going away; and sending to a switch by its dpid.

use super::log::{debug, info, warn};
use crate::conn_tx::{ConnTx, SendError};
use crate::ids::Mac;
use crate::ids::{ConnId, Dpid};
use crate::reconcile::Occasion;
use crate::store::Change;
use cloudrack_wire::ofp::{self, Body, Message};
use std::net::{Ipv4Addr, SocketAddr};

/// A connection the app was told of.
pub(super) struct Conn {
    pub(super) tx: ConnTx,
    /// Known from its FEATURES_REPLY.
    pub(super) dpid: Option<Dpid>,
    pub(super) peer: SocketAddr,
}

impl super::App {
    /// A new connection: HELLO, and the question which switch it is.
    pub(super) fn connected(&mut self, conn: ConnId, tx: ConnTx, peer: SocketAddr) {
        debug!(conn, %peer, "switch connected");
        let _ = tx.send(&Message::new(0, Body::hello(&[ofp::OFP_VERSION])));
        let _ = tx.send(&Message::new(1, Body::FeaturesRequest));
        self.conns.insert(conn, Conn { tx, dpid: None, peer });
    }

    /// A connection ended. If it was its switch's current one, the switch is gone: its entries
    /// in the store may expire, and it answers no reconciliation.
    pub(super) fn disconnected(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            if let Some(dpid) = c.dpid {
                if self.by_dpid.get(&dpid) == Some(&conn) {
                    self.by_dpid.remove(&dpid);
                    self.record(Change::HostDown { dpid });
                    self.reconciler.disconnected(dpid);
                }
                warn!(dpid = format!("{dpid:016x}"), peer = %c.peer, "switch disconnected; its installed flows keep forwarding");
            }
        }
    }

    /// The switch on `conn` is `datapath_id` (a switch that reconnected replaces its old
    /// connection).
    pub(super) fn features_reply(&mut self, conn: ConnId, datapath_id: Dpid) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.dpid = Some(datapath_id);
        }
        if let Some(old) = self.by_dpid.insert(datapath_id, conn) {
            if old != conn {
                warn!(
                    dpid = format!("{datapath_id:016x}"),
                    "switch reconnected; replacing its old connection"
                );
            }
        }
        let config = ofp::SwitchConfig {
            flags: 0,
            miss_send_len: ofp::OFPCML_NO_BUFFER,
        };
        self.send(datapath_id, Body::SetConfig(config));
        if let Some(req) = self.role_request() {
            self.send(datapath_id, req);
        }
        self.record(Change::HostUp { dpid: datapath_id });
    }

    /// TCCS Register from the connection of switch `dpid` (None before its FEATURES_REPLY):
    /// switch `reg` and its underlay address.
    pub(super) fn host_registered(&mut self, dpid: Option<Dpid>, reg: Dpid, underlay_ip: Ipv4Addr, underlay_mac: Mac) {
        if dpid.is_some_and(|d| d != reg) {
            warn!(features = ?dpid, register = reg.0, "register names another dpid than the features reply; ignored");
            return;
        }
        self.tccs.register(reg, underlay_ip, underlay_mac);
        self.record(Change::Host {
            dpid: reg,
            underlay_ip,
            underlay_mac,
        });
        // Its ports follow (PortVnet, PortBinding), all of them.
        self.members.remove_switch(reg);
        self.commander.unbind_switch(reg);
        info!(dpid = format!("{reg:016x}"), %underlay_ip, "host registered");
        // Reconcile with what this switch has (a restarted controller rebuilds from
        // it; ports may have gone while it was away from us); a standby asks when it
        // takes over.
        if self.is_master() {
            self.ask_switches(&[reg], Occasion::Registration);
        }
    }

    /// The next transaction id (never 0).
    pub(super) fn xid(&mut self) -> u32 {
        self.next_xid = self.next_xid.wrapping_add(1).max(1);
        self.next_xid
    }

    /// Send to a switch by dpid; false if it is not connected.
    pub(super) fn send(&mut self, dpid: Dpid, body: Body) -> bool {
        let xid = self.xid();
        self.send_xid(dpid, xid, body)
    }

    pub(super) fn send_xid(&self, dpid: Dpid, xid: u32, body: Body) -> bool {
        let Some(conn) = self.by_dpid.get(&dpid).and_then(|c| self.conns.get(c)) else {
            return false;
        };
        match conn.tx.send(&Message::new(xid, body)) {
            Ok(()) => true,
            // A PACKET_OUT carries the frame of a PACKET_IN plus actions: from a switch that sent
            // a frame near 64 KB it would not fit OpenFlow's length field (found by fuzzing).
            Err(SendError::Encode(e)) => {
                debug!(dpid = format!("{dpid:016x}"), error = %e, "message too large to send; dropped");
                false
            }
            Err(SendError::Full(_)) => {
                warn!(dpid = format!("{dpid:016x}"), "switch is not reading; message dropped");
                false
            }
            Err(SendError::Closed) => false,
        }
    }
}
