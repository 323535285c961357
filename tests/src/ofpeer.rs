//! A scripted OpenFlow 1.3 controller: accepts a switch's connection on a listener, speaks the
//! real wire format, answers echo requests, and waits for the messages a test expects. What it
//! reads while waiting for something else is kept, in order, for a later wait (asynchronous
//! messages such as FLOW_REMOVED may come before the barrier reply a test waits for first).

use cloudrack_wire::ofp::{self, Body, Message};
use cloudrack_wire::ofp_stream::{Incoming, MsgReader};
use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

pub struct OfPeer {
    out: TcpStream,
    reader: MsgReader<TcpStream>,
    xid: u32,
    /// Messages read but not yet asked for.
    kept: VecDeque<Message>,
}

impl OfPeer {
    /// Accept the switch on `l`, exchange HELLO and wait for its FEATURES_REPLY.
    pub fn accept(l: &TcpListener) -> OfPeer {
        l.set_nonblocking(false).unwrap();
        let (s, _) = l.accept().expect("the switch did not connect");
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut p = OfPeer {
            out: s.try_clone().unwrap(),
            reader: MsgReader::new(s),
            xid: 100,
            kept: VecDeque::new(),
        };
        p.send(Body::hello(&[ofp::OFP_VERSION]));
        p.send(Body::FeaturesRequest);
        p.wait_for("FEATURES_REPLY", |b| matches!(b, Body::FeaturesReply { .. }));
        p
    }

    /// Send a message; returns its xid.
    pub fn send(&mut self, body: Body) -> u32 {
        self.xid += 1;
        self.out.write_all(&Message::new(self.xid, body).encode()).unwrap();
        self.xid
    }

    /// Messages until one satisfies `pred` (echo requests answered); panics after 5 s.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Body) -> bool) -> Message {
        self.wait_within(what, Duration::from_secs(5), pred)
            .unwrap_or_else(|| panic!("no {what} from the switch within 5 s"))
    }

    /// Like `wait_for`, with a timeout of its own, `None` when nothing came. Kept messages are
    /// looked at first.
    pub fn wait_within(&mut self, _what: &str, wait: Duration, pred: impl Fn(&Body) -> bool) -> Option<Message> {
        if let Some(i) = self.kept.iter().position(|m| pred(&m.body)) {
            return self.kept.remove(i);
        }
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            match self.reader.next_message() {
                Ok(Incoming::Message(m)) => {
                    if let Body::EchoRequest(d) = &m.body {
                        let reply = Message::new(m.xid, Body::EchoReply(d.clone())).encode();
                        self.out.write_all(&reply).unwrap();
                    } else if pred(&m.body) {
                        return Some(m);
                    } else if self.kept.len() < 100_000 {
                        self.kept.push_back(m);
                    }
                }
                Ok(Incoming::Malformed { error, .. }) => panic!("malformed message from the switch: {error}"),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("connection to the switch failed: {e}"),
            }
        }
        None
    }

    /// Whether a message satisfying `pred` arrives within `wait`, from now on (what was kept
    /// from before is dropped).
    pub fn sees(&mut self, wait: Duration, pred: impl Fn(&Body) -> bool) -> bool {
        self.kept.clear();
        self.wait_within("", wait, pred).is_some()
    }

    /// Send `body` and a barrier; Ok when the barrier reply comes first, else the error the
    /// switch sent for `body`.
    pub fn request(&mut self, body: Body) -> Result<(), (u16, u16)> {
        self.send(body);
        self.send(Body::BarrierRequest);
        let m = self.wait_for("BARRIER_REPLY or ERROR", |b| {
            matches!(b, Body::BarrierReply | Body::Error { .. })
        });
        match m.body {
            Body::Error { typ, code, .. } => Err((typ, code)),
            _ => Ok(()),
        }
    }

    /// A ROLE_REQUEST; the role granted or the error.
    pub fn role(&mut self, role: u32, generation_id: u64) -> Result<u32, (u16, u16)> {
        let xid = self.send(Body::RoleRequest(ofp::RoleMsg { role, generation_id }));
        let m = self.wait_for("ROLE_REPLY or ERROR", |b| {
            matches!(b, Body::RoleReply(_) | Body::Error { .. })
        });
        assert_eq!(m.xid, xid);
        match m.body {
            Body::RoleReply(r) => Ok(r.role),
            Body::Error { typ, code, .. } => Err((typ, code)),
            _ => unreachable!(),
        }
    }
}
