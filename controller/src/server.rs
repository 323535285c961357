//! The OpenFlow server: accepts switch connections; per connection a reader thread (framing,
//! echo replies, liveness) and a writer thread. Every decoded message goes to the app thread.

use crate::app::{ConnId, Event};
use cloudrack_wire::ofp::{self, Body, Message};
use cloudrack_wire::ofp_stream::{Incoming, MsgReader};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::io::{ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
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
}

pub fn serve(listener: TcpListener, events: Sender<Event>, counters: Arc<Counters>) {
    let next = AtomicU64::new(1);
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let id = next.fetch_add(1, Relaxed);
                counters.connections.fetch_add(1, Relaxed);
                let (ev, c) = (events.clone(), counters.clone());
                let _ = std::thread::Builder::new().name(format!("conn-{id}")).spawn(move || {
                    if let Err(e) = connection(id, stream, ev, c) {
                        debug!(conn = id, error = %e, "connection ended");
                    }
                });
            }
            Err(e) => warn!(error = %e, "accept failed"),
        }
    }
}

fn connection(id: ConnId, stream: TcpStream, events: Sender<Event>, counters: Arc<Counters>) -> std::io::Result<()> {
    let peer = stream.peer_addr()?;
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(ECHO_INTERVAL))?;
    let (tx, rx) = bounded::<Message>(16_384);
    let writer = stream.try_clone()?;
    let wt = std::thread::Builder::new()
        .name(format!("conn-{id}-tx"))
        .spawn(move || write_loop(writer, rx))?;
    info!(conn = id, %peer, "switch connection");
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
    stream: TcpStream,
    tx: &Sender<Message>,
    events: &Sender<Event>,
    counters: &Counters,
) -> std::io::Result<()> {
    let mut reader = MsgReader::new(stream);
    let mut missed = 0;
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

fn write_loop(mut stream: TcpStream, rx: Receiver<Message>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Ok(m) = rx.recv() {
        buf.clear();
        m.encode_into(&mut buf);
        while let Ok(m) = rx.try_recv() {
            m.encode_into(&mut buf);
            if buf.len() > 256 * 1024 {
                break;
            }
        }
        if stream.write_all(&buf).is_err() {
            break;
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}
