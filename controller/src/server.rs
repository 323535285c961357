//! The OpenFlow server: accepts switch connections; per connection a reader thread (TLS
//! handshake, framing, echo replies, liveness, the switch's identity) and a writer thread.
//! Every decoded message of an authenticated switch goes to the app thread.

use crate::app::{ConnId, Event};
use cloudrack_channel::rustls::ServerConfig;
use cloudrack_channel::Channel;
use cloudrack_wire::ofp::{self, Body, Message};
use cloudrack_wire::ofp_stream::{Incoming, MsgReader};
use crossbeam_channel::{unbounded, Receiver, Sender};
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Silence after which we probe a switch, and how many probes may go unanswered.
const ECHO_INTERVAL: Duration = Duration::from_secs(2);
const MAX_MISSED_ECHOES: u32 = 3;

#[derive(Default)]
pub struct Counters {
    pub malformed: AtomicU64,
    pub connections: AtomicU64,
    /// TLS handshakes that failed (no certificate, another CA, not TLS at all).
    pub tls_refused: AtomicU64,
    /// Switches whose certificate does not name the dpid they claimed.
    pub identity_refused: AtomicU64,
    /// Messages dropped because they came before the switch proved its dpid.
    pub unauthenticated: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "connections": self.connections.load(Relaxed),
            "malformed": self.malformed.load(Relaxed),
            "tls_refused": self.tls_refused.load(Relaxed),
            "identity_refused": self.identity_refused.load(Relaxed),
            "unauthenticated": self.unauthenticated.load(Relaxed),
        })
    }
}

/// Accept switches, over mutual TLS when `tls` is set (else plain TCP).
pub fn serve(listener: TcpListener, events: Sender<Event>, counters: Arc<Counters>, tls: Option<Arc<ServerConfig>>) {
    let next = AtomicU64::new(1);
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let id = next.fetch_add(1, Relaxed);
                counters.connections.fetch_add(1, Relaxed);
                let (ev, c, tls) = (events.clone(), counters.clone(), tls.clone());
                let _ = std::thread::Builder::new().name(format!("conn-{id}")).spawn(move || {
                    let peer = stream.peer_addr().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
                    let channel = match tls {
                        Some(cfg) => match Channel::tls_server(stream, cfg) {
                            Ok(ch) => ch,
                            Err(e) => {
                                c.tls_refused.fetch_add(1, Relaxed);
                                warn!(conn = id, %peer, error = %e, "switch refused: no valid certificate");
                                return;
                            }
                        },
                        None => Channel::plain(stream),
                    };
                    if let Err(e) = connection(id, channel, peer, ev, c) {
                        debug!(conn = id, error = %e, "connection ended");
                    }
                });
            }
            Err(e) => {
                // Out of descriptors, say: back off instead of spinning on the error.
                warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn connection(
    id: ConnId,
    stream: Channel,
    peer: SocketAddr,
    events: Sender<Event>,
    counters: Arc<Counters>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(ECHO_INTERVAL))?;
    // Unbounded (a bounded crossbeam channel allocates every slot up front: 1.7 MB per switch,
    // 17 GB at 10,000); the app caps each queue at MAX_QUEUED instead.
    let (tx, rx) = unbounded::<Message>();
    let writer = stream.clone();
    let wt = std::thread::Builder::new()
        .name(format!("conn-{id}-tx"))
        .spawn(move || write_loop(writer, rx))?;
    info!(conn = id, %peer, tls = stream.is_tls(), "switch connection");
    let _ = events.send(Event::Connected {
        conn: id,
        tx: tx.clone(),
        peer,
    });
    let result = read_loop(id, stream, &tx, &events, &counters);
    let _ = events.send(Event::Disconnected { conn: id });
    drop(tx);
    let _ = wt.join();
    result
}

fn read_loop(
    id: ConnId,
    stream: Channel,
    tx: &Sender<Message>,
    events: &Sender<Event>,
    counters: &Counters,
) -> std::io::Result<()> {
    let tls = stream.is_tls();
    let identity = stream.clone();
    let mut reader = MsgReader::new(stream);
    let mut missed = 0;
    // Over TLS nothing reaches the app before the switch's certificate proves its dpid.
    let mut authenticated = !tls;
    loop {
        match reader.next_message() {
            Ok(Incoming::Message(msg)) => {
                missed = 0;
                match msg.body {
                    // Answered here so a busy app never makes a switch think we died.
                    Body::EchoRequest(data) => {
                        let _ = tx.try_send(Message::new(msg.xid, Body::EchoReply(data)));
                    }
                    Body::EchoReply(_) => {}
                    Body::Hello { version, ref elements } => {
                        if ofp::negotiate_version(version, elements, &[ofp::OFP_VERSION]).is_none() {
                            warn!(conn = id, version, "switch does not speak OpenFlow 1.3; closing");
                            let _ = tx.try_send(Message::new(
                                msg.xid,
                                Body::error_reply(ofp::OFPET_HELLO_FAILED, ofp::OFPHFC_INCOMPATIBLE, &msg.encode()),
                            ));
                            return Ok(());
                        }
                    }
                    Body::FeaturesReply { datapath_id, .. } if tls => {
                        if !identity.peer_names_dpid(datapath_id) {
                            counters.identity_refused.fetch_add(1, Relaxed);
                            warn!(
                                conn = id,
                                dpid = format!("{datapath_id:016x}"),
                                expected = cloudrack_channel::dpid_name(datapath_id),
                                "switch refused: its certificate does not name the dpid it claims; closing"
                            );
                            return Ok(());
                        }
                        authenticated = true;
                        if events.send(Event::Message { conn: id, msg }).is_err() {
                            return Ok(());
                        }
                    }
                    Body::Error { .. } | Body::FeaturesReply { .. } => {
                        if events.send(Event::Message { conn: id, msg }).is_err() {
                            return Ok(());
                        }
                    }
                    _ if !authenticated => {
                        counters.unauthenticated.fetch_add(1, Relaxed);
                        debug!(conn = id, "message before the switch proved its dpid; dropped");
                    }
                    _ => {
                        if events.send(Event::Message { conn: id, msg }).is_err() {
                            return Ok(());
                        }
                    }
                }
            }
            Ok(Incoming::Malformed { raw, error }) => {
                counters.malformed.fetch_add(1, Relaxed);
                warn!(conn = id, %error, "malformed OpenFlow message from switch");
                let xid = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
                let _ = tx.try_send(Message::new(
                    xid,
                    Body::error_reply(ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_LEN, &raw),
                ));
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                missed += 1;
                if missed > MAX_MISSED_ECHOES {
                    warn!(conn = id, "switch stopped answering echo requests; closing");
                    return Err(e);
                }
                let _ = tx.try_send(Message::new(0, Body::EchoRequest(Vec::new())));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                if e.kind() == ErrorKind::InvalidData {
                    counters.malformed.fetch_add(1, Relaxed);
                    warn!(conn = id, error = %e, "garbage on an OpenFlow connection; closing it");
                }
                return Err(e);
            }
        }
    }
}

fn write_loop(mut stream: Channel, rx: Receiver<Message>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Ok(m) = rx.recv() {
        buf.clear();
        encode_or_skip(&m, &mut buf);
        while let Ok(m) = rx.try_recv() {
            encode_or_skip(&m, &mut buf);
            if buf.len() > 256 * 1024 {
                break;
            }
        }
        if stream.write_all(&buf).is_err() {
            break;
        }
    }
    stream.shutdown();
}

/// Append `m`'s encoding, or log and skip a message too large for OpenFlow's length field (a
/// writer must never die of one bad message).
fn encode_or_skip(m: &Message, buf: &mut Vec<u8>) {
    if let Err(e) = m.try_encode_into(buf) {
        warn!(msg_type = m.msg_type(), xid = m.xid, error = %e, "message cannot be encoded; not sent");
    }
}
