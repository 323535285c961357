//! What reaches the app thread, in order: from the server's I/O threads (a switch connected,
//! sent a message, went away) and from etcd (the election, lease renewal). The server and
//! etcd produce these, the app consumes them; neither side depends on the other.

use crate::conn_tx::ConnTx;
use crate::ids::{ConnId, Dpid};
use cloudrack_wire::ofp::Message;

#[derive(Debug)]
pub enum Event {
    Connected {
        conn: ConnId,
        tx: ConnTx,
        peer: std::net::SocketAddr,
    },
    Message {
        conn: ConnId,
        msg: Message,
    },
    Disconnected {
        conn: ConnId,
    },
    /// We won the election (etcd): take over every switch with this generation id.
    Elected {
        generation: u64,
    },
    /// The master is now `name` (possibly us).
    Leader {
        generation: u64,
        name: String,
    },
    /// We may no longer act as master (election lease lost, or fenced out of etcd).
    LeadershipLost {
        reason: String,
    },
    /// A connected host's entries expired in the store: record them again.
    Resync {
        dpid: Dpid,
    },
}
