//! What the I/O side counts: the server's threads (connections, refusals, garbage) and the
//! connections' send handles (messages dropped because a switch is not reading). Its own
//! module so `conn_tx` can count without depending on the server that owns it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct IoCounters {
    pub malformed: AtomicU64,
    pub connections: AtomicU64,
    /// TLS handshakes that failed (no certificate, another CA, not TLS at all).
    pub tls_refused: AtomicU64,
    /// Switches whose certificate does not name the dpid they claimed.
    pub identity_refused: AtomicU64,
    /// Messages dropped because they came before the switch proved its dpid.
    pub unauthenticated: AtomicU64,
    /// Messages the app could not queue because their switch is not reading.
    pub send_dropped: AtomicU64,
}

impl IoCounters {
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "connections": self.connections.load(Relaxed),
            "malformed": self.malformed.load(Relaxed),
            "tls_refused": self.tls_refused.load(Relaxed),
            "identity_refused": self.identity_refused.load(Relaxed),
            "unauthenticated": self.unauthenticated.load(Relaxed),
            "send_dropped": self.send_dropped.load(Relaxed),
        })
    }
}
