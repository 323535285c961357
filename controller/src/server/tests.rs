//! The server on real sockets on 127.0.0.1: plain and TLS switches (certificates from
//! scripts/pki.sh), the app's side played by the test through the events and `ConnTx`.

use super::session::{ECHO_INTERVAL, WRITE_STALL};
use super::*;
use crate::conn_tx::{ConnTx, SendError};
use cloudrack_channel::{client_config, server_config, Channel, TlsFiles, CONTROLLER_NAME};
use cloudrack_wire::ofp::{self, Body, Message};
use cloudrack_wire::ofp_stream::{Incoming, MsgReader};
use crossbeam_channel::{bounded, Receiver};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

const WAIT: Duration = Duration::from_secs(5);

struct Server {
    addr: SocketAddr,
    events: Receiver<Event>,
    counters: Arc<IoCounters>,
}

fn server(tls: Option<Arc<ServerConfig>>, io_threads: usize) -> Server {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    sock.listen(4096).unwrap();
    let listener: TcpListener = sock.into();
    let addr = listener.local_addr().unwrap();
    let (tx, events) = bounded(65_536);
    let counters = Arc::new(IoCounters::default());
    spawn(listener, tx, counters.clone(), tls, io_threads).unwrap();
    Server { addr, events, counters }
}

impl Server {
    fn event(&self) -> Event {
        self.events.recv_timeout(WAIT).expect("no event from the server")
    }

    /// The next connection, answered as the app does: HELLO and FEATURES_REQUEST.
    fn connected(&self) -> (ConnId, ConnTx) {
        match self.event() {
            Event::Connected { conn, tx, .. } => {
                tx.send(&Message::new(0, Body::hello(&[ofp::OFP_VERSION]))).unwrap();
                tx.send(&Message::new(1, Body::FeaturesRequest)).unwrap();
                (conn, tx)
            }
            other => panic!("expected a connection, got {other:?}"),
        }
    }

    fn message(&self) -> (ConnId, Message) {
        match self.event() {
            Event::Message { conn, msg } => (conn, msg),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    fn quiet(&self) -> Option<Event> {
        self.events.recv_timeout(Duration::from_millis(300)).ok()
    }

    fn count(&self, name: &str) -> u64 {
        self.counters.snapshot()[name].as_u64().unwrap()
    }

    /// Wait for counter `name` to reach `n`.
    fn counted(&self, name: &str, n: u64) -> bool {
        let until = Instant::now() + WAIT;
        while Instant::now() < until {
            if self.count(name) >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

/// A switch's end of the connection.
struct Switch {
    ch: Channel,
    reader: MsgReader<Channel>,
}

impl Switch {
    fn plain(addr: SocketAddr) -> Switch {
        Switch::over(Channel::plain(TcpStream::connect(addr).unwrap()))
    }

    fn tls(addr: SocketAddr, files: &TlsFiles) -> std::io::Result<Switch> {
        let s = TcpStream::connect(addr)?;
        let ch = Channel::tls_client(s, client_config(files).unwrap(), CONTROLLER_NAME)?;
        Ok(Switch::over(ch))
    }

    fn over(ch: Channel) -> Switch {
        ch.set_read_timeout(Some(WAIT)).unwrap();
        Switch {
            reader: MsgReader::new(ch.clone()),
            ch,
        }
    }

    fn send(&mut self, xid: u32, body: Body) {
        self.raw(&Message::new(xid, body).encode());
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.ch.write_all(bytes).unwrap();
    }

    fn recv(&mut self) -> Message {
        match self.reader.next_message() {
            Ok(Incoming::Message(m)) => m,
            other => panic!("expected a message from the controller, got {other:?}"),
        }
    }

    /// HELLO and FEATURES_REPLY in answer to the controller's HELLO and FEATURES_REQUEST.
    fn handshake(&mut self, dpid: u64) {
        assert!(matches!(self.recv().body, Body::Hello { .. }));
        assert_eq!(self.recv().body, Body::FeaturesRequest);
        self.send(1, Body::hello(&[ofp::OFP_VERSION]));
        self.send(1, features(dpid));
    }

    /// Whether the controller closed the connection (after reading what is left).
    fn closed(&mut self) -> bool {
        loop {
            match self.reader.next_message() {
                Ok(_) => {}
                Err(e) => return e.kind() != ErrorKind::WouldBlock && e.kind() != ErrorKind::TimedOut,
            }
        }
    }
}

fn features(dpid: u64) -> Body {
    Body::FeaturesReply {
        datapath_id: dpid,
        n_buffers: 0,
        n_tables: 1,
        auxiliary_id: 0,
        capabilities: 0,
        reserved: 0,
    }
}

/// Certificates from scripts/pki.sh in a directory removed at the end of the test.
struct Pki(PathBuf);

impl Pki {
    fn new(tag: &str, switches: &[&str]) -> Pki {
        let dir = std::env::temp_dir().join(format!("cloudrack-server-pki-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pki.sh");
        let mut cmd = std::process::Command::new("bash");
        cmd.arg(script).arg(&dir);
        for s in switches {
            cmd.args(["--switch", s]);
        }
        let out = cmd.output().expect("run scripts/pki.sh");
        assert!(out.status.success(), "pki.sh: {}", String::from_utf8_lossy(&out.stderr));
        Pki(dir)
    }

    fn files(&self, name: &str) -> TlsFiles {
        TlsFiles {
            cert: self.0.join(format!("{name}.pem")),
            key: self.0.join(format!("{name}.key")),
            ca: self.0.join("ca.pem"),
        }
    }

    fn server(&self) -> Arc<ServerConfig> {
        server_config(&self.files("controller")).unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_plain_switch_reaches_the_app_and_is_answered() {
    let srv = server(None, 1);
    let mut sw = Switch::plain(srv.addr);
    let (conn, tx) = srv.connected();
    sw.handshake(0x42);
    // HELLO stays in the server; FEATURES_REPLY goes on.
    let (c, msg) = srv.message();
    assert_eq!((c, msg.body), (conn, features(0x42)));
    // Echo is answered by the I/O thread, and the app never sees it.
    sw.send(77, Body::EchoRequest(vec![1, 2, 3]));
    let reply = sw.recv();
    assert_eq!((reply.xid, reply.body), (77, Body::EchoReply(vec![1, 2, 3])));
    sw.send(78, Body::BarrierReply);
    assert_eq!(srv.message().1, Message::new(78, Body::BarrierReply));
    // The app's messages arrive in order.
    for xid in 100..110 {
        tx.send(&Message::new(xid, Body::BarrierRequest)).unwrap();
    }
    for xid in 100..110 {
        assert_eq!(sw.recv(), Message::new(xid, Body::BarrierRequest));
    }
    drop(sw);
    assert!(matches!(srv.event(), Event::Disconnected { conn: c } if c == conn));
    assert!(matches!(
        tx.send(&Message::new(1, Body::BarrierRequest)),
        Err(SendError::Closed)
    ));
    assert_eq!(srv.count("connections"), 1);
}

#[test]
fn a_silent_switch_is_probed_then_closed() {
    let srv = server(None, 1);
    let mut sw = Switch::plain(srv.addr);
    let (conn, _tx) = srv.connected();
    assert!(matches!(sw.recv().body, Body::Hello { .. }));
    assert_eq!(sw.recv().body, Body::FeaturesRequest);
    let started = Instant::now();
    // Answering the first probe keeps it open; the next three go unanswered.
    let probe = sw.recv();
    assert_eq!(probe.body, Body::EchoRequest(vec![]));
    let first = started.elapsed();
    assert!(
        first >= ECHO_INTERVAL && first < ECHO_INTERVAL + TICK * 2 * SLICES as u32,
        "{first:?}"
    );
    sw.send(probe.xid, Body::EchoReply(vec![]));
    for _ in 0..3 {
        assert_eq!(sw.recv().body, Body::EchoRequest(vec![]));
    }
    assert!(sw.closed());
    let total = started.elapsed();
    assert!(total >= ECHO_INTERVAL * 4, "closed after {total:?}");
    assert!(matches!(srv.event(), Event::Disconnected { conn: c } if c == conn));
}

#[test]
fn a_switch_without_openflow_1_3_is_told_and_closed() {
    let srv = server(None, 1);
    let mut sw = Switch::plain(srv.addr);
    let (conn, _tx) = srv.connected();
    sw.recv();
    sw.recv();
    // OpenFlow 1.0 only.
    sw.send(9, Body::hello(&[0x01]));
    let err = sw.recv();
    assert_eq!(err.xid, 9);
    assert!(
        matches!(err.body, Body::Error { typ, code, .. } if typ == ofp::OFPET_HELLO_FAILED && code == ofp::OFPHFC_INCOMPATIBLE)
    );
    assert!(sw.closed());
    assert!(matches!(srv.event(), Event::Disconnected { conn: c } if c == conn));
}

#[test]
fn malformed_messages_are_answered_and_garbage_closes() {
    let srv = server(None, 1);
    let mut sw = Switch::plain(srv.addr);
    let (conn, _tx) = srv.connected();
    sw.handshake(7);
    srv.message();
    // A FLOW_MOD too short for its type: an error reply, the connection stays.
    sw.raw(&[0x04, 0x0e, 0x00, 0x10, 0, 0, 0, 5, 1, 2, 3, 4, 5, 6, 7, 8]);
    let err = sw.recv();
    assert_eq!(err.xid, 5);
    assert!(
        matches!(err.body, Body::Error { typ, code, .. } if typ == ofp::OFPET_BAD_REQUEST && code == ofp::OFPBRC_BAD_LEN)
    );
    assert_eq!(srv.count("malformed"), 1);
    assert!(srv.quiet().is_none(), "a malformed message reached the app");
    // A length below the header's: framing is lost, the connection closed.
    sw.raw(&[0x04, 0x00, 0x00, 0x04, 0, 0, 0, 1]);
    assert!(sw.closed());
    assert!(matches!(srv.event(), Event::Disconnected { conn: c } if c == conn));
    assert_eq!(srv.count("malformed"), 2);
}

#[test]
fn a_switch_that_does_not_read_is_cut_off() {
    let srv = server(None, 1);
    let sw = Switch::plain(srv.addr);
    let (_, tx) = srv.connected();
    let big = Message::new(1, Body::EchoRequest(vec![0; 60_000]));
    let mut sent = 0usize;
    let refused = loop {
        match tx.send(&big) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 100_000, "no bound");
    };
    assert!(matches!(refused, SendError::Full(_)), "{refused}");
    // The bound, plus what the sockets' buffers took.
    assert!(sent * 60_008 >= crate::conn_tx::MAX_QUEUED_BYTES, "{sent}");
    assert!(srv.count("send_dropped") >= 1);
    // Taking nothing for WRITE_STALL closes the connection (its probes go unanswered too, but
    // that takes 8 s).
    match srv.events.recv_timeout(WRITE_STALL + Duration::from_secs(1)) {
        Ok(Event::Disconnected { .. }) => {}
        other => panic!("expected the connection to close, got {other:?}"),
    }
    drop(sw);
}

#[test]
fn tls_switch_proves_its_dpid_before_the_app_hears_from_it() {
    let pki = Pki::new("ok", &["a1"]);
    let srv = server(Some(pki.server()), 1);
    let mut sw = Switch::tls(srv.addr, &pki.files("switch-00000000000000a1")).unwrap();
    let (conn, _tx) = srv.connected();
    assert!(matches!(sw.recv().body, Body::Hello { .. }));
    assert_eq!(sw.recv().body, Body::FeaturesRequest);
    sw.send(1, Body::hello(&[ofp::OFP_VERSION]));
    // Before FEATURES_REPLY: dropped and counted (echo is still answered).
    sw.send(2, Body::BarrierReply);
    sw.send(3, Body::EchoRequest(vec![]));
    assert_eq!(sw.recv().body, Body::EchoReply(vec![]));
    assert!(srv.counted("unauthenticated", 1));
    sw.send(4, features(0xa1));
    sw.send(5, Body::BarrierReply);
    assert_eq!(srv.message(), (conn, Message::new(4, features(0xa1))));
    assert_eq!(srv.message(), (conn, Message::new(5, Body::BarrierReply)));
    assert_eq!(srv.count("identity_refused"), 0);
}

#[test]
fn tls_switch_claiming_another_dpid_is_refused() {
    let pki = Pki::new("steal", &["a1"]);
    let srv = server(Some(pki.server()), 1);
    let mut sw = Switch::tls(srv.addr, &pki.files("switch-00000000000000a1")).unwrap();
    let (conn, _tx) = srv.connected();
    sw.recv();
    sw.recv();
    sw.send(1, Body::hello(&[ofp::OFP_VERSION]));
    sw.send(2, features(0xa2));
    assert!(sw.closed());
    assert!(matches!(srv.event(), Event::Disconnected { conn: c } if c == conn));
    assert_eq!(srv.count("identity_refused"), 1);
}

#[test]
fn tls_refuses_plain_clients_garbage_and_other_cas() {
    let pki = Pki::new("refuse", &[]);
    let rogue = Pki::new("rogue", &["a1"]);
    let srv = server(Some(pki.server()), 1);
    // An OpenFlow HELLO where a ClientHello should be.
    let mut plain = TcpStream::connect(srv.addr).unwrap();
    plain.write_all(&Message::new(1, Body::hello(&[4])).encode()).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 64];
    // An alert at most, then the end.
    while plain.read(&mut buf).is_ok_and(|n| n > 0) {}
    // Noise, then gone.
    let mut noise = TcpStream::connect(srv.addr).unwrap();
    noise.write_all(&[0x16; 3]).unwrap();
    drop(noise);
    // A certificate from another CA.
    let mut f = rogue.files("switch-00000000000000a1");
    f.ca = pki.0.join("ca.pem");
    let outcome = Switch::tls(srv.addr, &f).map(|mut s| s.closed());
    assert!(outcome.is_err() || outcome.is_ok_and(|closed| closed));
    assert!(srv.counted("tls_refused", 3), "{}", srv.counters.snapshot());
    assert!(srv.quiet().is_none(), "the app heard of a refused connection");
}

#[test]
fn a_tls_handshake_that_never_comes_times_out() {
    let pki = Pki::new("slow", &[]);
    let srv = server(Some(pki.server()), 1);
    let _idle = TcpStream::connect(srv.addr).unwrap();
    std::thread::sleep(cloudrack_channel::HANDSHAKE_TIMEOUT);
    assert!(srv.counted("tls_refused", 1));
}

/// Threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Raise the soft limit on open files (both ends of every connection are in this process).
fn allow_files(n: u64) {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < n {
            lim.rlim_cur = n.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[test]
fn two_thousand_switches_on_two_threads() {
    const N: usize = 2_000;
    allow_files(3 * N as u64 + 256);
    let srv = server(None, 2);
    let before = threads();
    let mut switches: Vec<Switch> = (0..N).map(|_| Switch::plain(srv.addr)).collect();
    let mut txs = Vec::new();
    for _ in 0..N {
        txs.push(srv.connected());
    }
    // Other tests in this process may start a few threads meanwhile; not one per connection.
    let grown = threads().saturating_sub(before);
    assert!(grown < 50, "{grown} more threads with {N} connections");
    for (i, sw) in switches.iter_mut().enumerate() {
        sw.handshake(i as u64 + 1);
    }
    let mut dpids: Vec<u64> = (0..N)
        .map(|_| match srv.message().1.body {
            Body::FeaturesReply { datapath_id, .. } => datapath_id,
            other => panic!("{other:?}"),
        })
        .collect();
    dpids.sort_unstable();
    assert_eq!(dpids, (1..=N as u64).collect::<Vec<_>>());
    // Every connection's own handle reaches its own switch.
    for (conn, tx) in &txs {
        tx.send(&Message::new(*conn as u32, Body::BarrierRequest)).unwrap();
    }
    let mut got: Vec<u32> = switches.iter_mut().map(|sw| sw.recv().xid).collect();
    got.sort_unstable();
    let mut want: Vec<u32> = txs.iter().map(|(c, _)| *c as u32).collect();
    want.sort_unstable();
    assert_eq!(got, want);
    for sw in &mut switches {
        sw.send(3, Body::EchoRequest(vec![]));
    }
    for sw in &mut switches {
        assert_eq!(sw.recv().body, Body::EchoReply(vec![]));
    }
    drop(switches);
    for _ in 0..N {
        assert!(matches!(srv.event(), Event::Disconnected { .. }));
    }
    assert_eq!(srv.count("connections"), N as u64);
}
