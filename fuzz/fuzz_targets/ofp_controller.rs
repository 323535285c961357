//! Arbitrary bytes as what switches send the controller, fed into `app::App` the way
//! `server.rs` does: each connection's bytes framed by `MsgReader`; HELLO and ECHO answered by
//! the connection itself, malformed messages dropped, a bad length closes the connection; every
//! other message becomes `Event::Message`. Then every connection disconnects and the app ticks.
//!
//! Input: byte 0 is control: bits 0-1 the number of connections (1-3; message k goes to
//! connection `xid % n`), bit 2 registers a switch (dpid = connection id, one port in network 0)
//! on each connection before the fuzzed bytes, bit 3 ticks the app after every event. The rest is
//! the byte stream.
//!
//! Invariants checked beyond "never panics": every message the app queues for a switch (encoded
//! by its `ConnTx` on the app's thread; one that cannot be is refused there) decodes on the
//! switch's side into a typed message, which `Message::decode` gives only for bytes that
//! re-encode exactly; every tunnel the app asks a switch to make has a port
//! number from the controller's range (`tccs::FIRST_TUNNEL_PORT..=LAST_TUNNEL_PORT`, which is
//! what the switch accepts from a controller).

#![no_main]

use cloudrack_controller::app::{App, Config};
use cloudrack_controller::conn_tx::ConnTx;
use cloudrack_controller::event::Event;
use cloudrack_controller::ids::PortNo;
use cloudrack_controller::tccs::{FIRST_TUNNEL_PORT, LAST_TUNNEL_PORT};
use cloudrack_fuzz::Control;
use cloudrack_wire::ofp::{self, Body, Message};
use cloudrack_wire::ofp_stream::{Incoming, MsgReader};
use cloudrack_wire::tccs::TccsMsg;
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let mut c = Control::new(data);
    let ctrl = c.u8();
    let n_conns = 1 + u64::from(ctrl & 3) % 3;
    let register = ctrl & 4 != 0;
    let tick_always = ctrl & 8 != 0;

    let mut app = App::new(Config {
        tunnel_idle: Duration::from_secs(60),
        flow_idle_s: 300,
        limits: Default::default(),
    });
    let mut rx: Vec<ConnTx> = Vec::new();
    let mut open = vec![true; n_conns as usize];
    for conn in 1..=n_conns {
        // ConnTx bounds the queue (16 MiB), which this never reaches: it drains after every
        // event.
        let tx = ConnTx::capture(conn);
        let r = tx.clone();
        let peer = SocketAddr::from(([198, 18, 0, conn as u8], 40_000));
        app.handle(Event::Connected { conn, tx, peer });
        rx.push(r);
        if register {
            for msg in registration(conn) {
                app.handle(Event::Message { conn, msg });
            }
        }
        drain(&rx);
    }

    let mut reader = MsgReader::new(Cursor::new(c.rest()));
    loop {
        let msg = match reader.next_message() {
            Ok(Incoming::Message(m)) => m,
            // Answered with an error by the connection; the app never sees it.
            Ok(Incoming::Malformed { .. }) => continue,
            // A bad length closes the connection it came on; we cannot tell which, so all.
            Err(_) => break,
        };
        let conn = 1 + u64::from(msg.xid) % n_conns;
        if !open[(conn - 1) as usize] {
            continue;
        }
        match &msg.body {
            Body::EchoRequest(_) | Body::EchoReply(_) => continue,
            Body::Hello { version, elements } => {
                if ofp::negotiate_version(*version, elements, &[ofp::OFP_VERSION]).is_none() {
                    open[(conn - 1) as usize] = false;
                    app.handle(Event::Disconnected { conn });
                }
                continue;
            }
            _ => app.handle(Event::Message { conn, msg }),
        }
        if tick_always {
            app.tick();
        }
        drain(&rx);
    }
    for conn in 1..=n_conns {
        if open[(conn - 1) as usize] {
            app.handle(Event::Disconnected { conn });
        }
    }
    app.tick();
    let _ = app.status();
    drain(&rx);
});

/// FEATURES_REPLY, TCCS Register and PortVnet of switch `dpid` (its underlay 198.18.0.dpid).
fn registration(dpid: u64) -> Vec<Message> {
    let features = Body::FeaturesReply {
        datapath_id: dpid,
        n_buffers: 0,
        n_tables: 1,
        auxiliary_id: 0,
        capabilities: 0,
        reserved: 0,
    };
    let register = TccsMsg::Register {
        dpid,
        underlay_ip: Ipv4Addr::new(198, 18, 0, dpid as u8),
        underlay_mac: [2, 0, 0, 0, 1, dpid as u8],
    };
    let port = TccsMsg::PortVnet { port_no: 1, vnet: 0 };
    vec![Message::new(1, features), register.to_message(2), port.to_message(3)]
}

/// Takes what the app queued for the switches, as each connection's I/O thread would
/// (`take_messages` panics on bytes that do not decode).
fn drain(rx: &[ConnTx]) {
    for r in rx {
        for m in r.take_messages() {
            assert!(
                !matches!(m.body, Body::Unknown { .. }),
                "the switch would not decode what the controller sent as it was meant: {}",
                summary(&m)
            );
            if let Some(Ok(TccsMsg::TunnelAdd { port_no, .. })) = TccsMsg::from_body(&m.body) {
                assert!(
                    (FIRST_TUNNEL_PORT..=LAST_TUNNEL_PORT).contains(&PortNo(port_no)),
                    "the controller asks for tunnel port {port_no:#x}, outside its range"
                );
            }
        }
    }
}

/// A message without its (possibly 64 KB of) data, for panic messages.
fn summary(m: &Message) -> String {
    match &m.body {
        Body::PacketOut(po) => format!(
            "PACKET_OUT xid {} in_port {:#x} actions {:?} with {} bytes of data",
            m.xid,
            po.in_port,
            po.actions,
            po.data.len()
        ),
        other => format!("type {} xid {}", other.msg_type(), m.xid),
    }
}
