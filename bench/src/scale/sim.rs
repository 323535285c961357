//! Thousands of simulated switches in one thread: one non-blocking TCP connection each to the
//! real controller, driven by one mio poll loop. Each speaks OpenFlow 1.3 and TCCS the way
//! `vswitch/src/ofp/session.rs` does (HELLO, FEATURES_REPLY, TCCS Register + PortVnet per port,
//! flow stats on request, echo, barrier and role replies) and keeps what the controller installs
//! (flows per (vnet, MAC), tunnels per remote host), so it can tell when a PACKET_IN was answered
//! and when a moved MAC is re-pointed on every switch that held an entry for it.
//!
//! Layout: host `h` is in tenant group `h / hosts_per_vnet`, whose virtual network is
//! `group + 1`; its VMs sit on local ports 1..=macs_per_host, VM `h * macs_per_host + p` on port
//! `p + 1`. VMs talk and migrate only inside their group.

use ahash::AHashMap;
use cloudrack_vswitch::ofp::agent::{Agent, Answer, SwitchOps};
use cloudrack_vswitch::ofp::translate::OfpErr;
use cloudrack_wire::ofp::{self, Body, Message, MultipartRequestBody};
use cloudrack_wire::tccs::TccsMsg;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::frames::{self, Mac};
use super::stats::{Rng, Samples};

/// How a simulated live migration announces the VM at its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MoveVia {
    /// QEMU's RARP self-announce as a PACKET_IN from the destination (the reactive path).
    Rarp,
    /// TCCS MigrationNotify from the destination, as `cloudrack-ctl migrate-in` sends it.
    Notify,
    /// MigrationNotify, then the RARP right after it.
    Both,
}

impl MoveVia {
    pub fn name(self) -> &'static str {
        match self {
            MoveVia::Rarp => "rarp",
            MoveVia::Notify => "notify",
            MoveVia::Both => "both",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub hosts: u32,
    pub macs_per_host: u32,
    pub hosts_per_vnet: u32,
    pub moves_per_sec: f64,
    pub pin_rate: f64,
    pub steady: Duration,
    pub move_via: MoveVia,
    pub window: usize,
    pub connect_window: usize,
    pub phase_timeout: Duration,
    /// Declare each VM port's MAC (TCCS PortBinding) at registration, as a switch whose ports
    /// were added with the VM's MAC does. A migration's destination port is always bound.
    pub bind_ports: bool,
    /// Delete the source's port once a move is done (as the real switch does when the migrated
    /// VM's tap goes away).
    pub delete_source_port: bool,
    pub seed: u64,
}

/// A move not confirmed by every switch within this long counts as failed.
const MOVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Stop loading a switch whose unsent bytes exceed this (the controller is not reading).
const WBUF_LIMIT: usize = 256 * 1024;
/// A first frame that taught nothing within this long is sent again (as the VM's next ARP would
/// be). Long, so that a slow controller is not buried under retransmissions of our making.
const RESEND_AFTER: Duration = Duration::from_secs(10);
const CONNECT_ATTEMPTS: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HState {
    Idle,
    Connecting,
    Handshake,
    Registered,
    Closed,
}

struct Host {
    stream: Option<TcpStream>,
    state: HState,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    dirty: bool,
    /// The protocol's side of this switch: the same agent the real switch runs.
    agent: Agent,
    next_port: u32,
    flows: u32,
    flow_mods: u32,
    attempts: u8,
    t_connect: Option<Instant>,
    t_registered: Option<Instant>,
}

struct Vm {
    host: u32,
    port: u32,
    known: bool,
    moving: bool,
}

struct Move {
    from: u32,
    from_port: u32,
    to: u32,
    to_port: u32,
    started: Instant,
    waiting: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Register,
    Populate,
    Steady,
    Drain,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Register => "register",
            Phase::Populate => "populate",
            Phase::Steady => "steady",
            Phase::Drain => "drain",
        }
    }
}

/// Message and event counts over the whole run of one host count.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Totals {
    pub msgs_in: u64,
    pub msgs_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub flow_mod_add: u64,
    pub flow_mod_delete: u64,
    pub flow_mod_other: u64,
    pub packet_out: u64,
    pub tunnel_add: u64,
    pub tunnel_del: u64,
    pub tccs_other: u64,
    pub barrier: u64,
    pub echo_request: u64,
    pub flow_stats_request: u64,
    pub multipart_other: u64,
    pub set_config: u64,
    pub role_request: u64,
    pub ofp_error_from_controller: u64,
    pub other_from_controller: u64,
    pub malformed_from_controller: u64,
    pub packet_in_unicast: u64,
    pub packet_in_garp: u64,
    pub packet_in_rarp: u64,
    pub packet_in_resent: u64,
    pub migration_notify: u64,
    pub port_status: u64,
    pub port_binding: u64,
    pub connect_errors: u64,
    pub disconnects: u64,
    pub reconnects: u64,
    pub move_flow_mods_elsewhere: u64,
}

pub struct Sim {
    pub plan: Plan,
    addr: SocketAddr,
    poll: Poll,
    events: Events,
    ready_events: Vec<(usize, bool, bool)>,
    scratch: Vec<u8>,
    hosts: Vec<Host>,
    vms: Vec<Vm>,
    dirty: Vec<u32>,
    flows: AHashMap<(u32, u64), u32>,
    holders: AHashMap<u64, Vec<u32>>,
    tunnels: AHashMap<(u32, u32, u32), u32>,
    tunnel_ports: AHashMap<(u32, u32), (u32, u32)>,
    pending: AHashMap<(u32, u64), (Instant, Phase)>,
    moves: AHashMap<u32, Move>,
    waiters: AHashMap<u32, Vec<u32>>,
    unconfirmed: AHashMap<u32, Instant>,
    released: VecDeque<u32>,
    retry: VecDeque<(Instant, u32)>,
    rng: Rng,
    pub phase: Phase,
    pub t: Totals,
    pub connected: u32,
    pub registered: u32,
    pub known: u32,
    pub first_connect: Option<Instant>,
    pub last_registered: Option<Instant>,
    pub reg_ms: Samples,
    pub pin_ms_populate: Samples,
    pub pin_ms_steady: Samples,
    pub move_ms: Samples,
    pub move_holders: Samples,
    pub moves_started: u64,
    pub moves_failed: u64,
    pub pins_steady_sent: u64,
    pub steady_secs: f64,
    pub populate_secs: f64,
    pub close_reasons: Vec<String>,
    pub controller_errors: Vec<String>,
}

impl Sim {
    pub fn new(plan: Plan, addr: SocketAddr) -> Result<Sim, String> {
        let poll = Poll::new().map_err(|e| format!("mio poll: {e}"))?;
        let p = plan.macs_per_host;
        let hosts = (0..plan.hosts)
            .map(|_| Host {
                stream: None,
                state: HState::Idle,
                rbuf: Vec::new(),
                wbuf: Vec::new(),
                wpos: 0,
                dirty: false,
                agent: Agent::new(true),
                next_port: p + 1,
                flows: 0,
                flow_mods: 0,
                attempts: 0,
                t_connect: None,
                t_registered: None,
            })
            .collect();
        let vms = (0..plan.hosts * p)
            .map(|v| Vm {
                host: v / p,
                port: v % p + 1,
                known: false,
                moving: false,
            })
            .collect();
        Ok(Sim {
            rng: Rng::new(plan.seed),
            plan,
            addr,
            poll,
            events: Events::with_capacity(4096),
            ready_events: Vec::with_capacity(4096),
            scratch: vec![0; 256 * 1024],
            hosts,
            vms,
            dirty: Vec::new(),
            flows: AHashMap::new(),
            holders: AHashMap::new(),
            tunnels: AHashMap::new(),
            tunnel_ports: AHashMap::new(),
            pending: AHashMap::new(),
            moves: AHashMap::new(),
            waiters: AHashMap::new(),
            unconfirmed: AHashMap::new(),
            released: VecDeque::new(),
            retry: VecDeque::new(),
            phase: Phase::Register,
            t: Totals::default(),
            connected: 0,
            registered: 0,
            known: 0,
            first_connect: None,
            last_registered: None,
            reg_ms: Samples::default(),
            pin_ms_populate: Samples::default(),
            pin_ms_steady: Samples::default(),
            move_ms: Samples::default(),
            move_holders: Samples::default(),
            moves_started: 0,
            moves_failed: 0,
            pins_steady_sent: 0,
            steady_secs: 0.0,
            populate_secs: 0.0,
            close_reasons: Vec::new(),
            controller_errors: Vec::new(),
        })
    }

    pub fn total_macs(&self) -> u32 {
        self.vms.len() as u32
    }

    pub fn moves_done(&self) -> usize {
        self.move_ms.len()
    }

    pub fn moves_active(&self) -> usize {
        self.moves.len()
    }

    pub fn tunnels(&self) -> usize {
        self.tunnels.len()
    }

    pub fn flows_installed(&self) -> usize {
        self.flows.len()
    }

    /// Min, median and max FLOW_MODs one switch received.
    pub fn flow_mods_per_switch(&self) -> (u32, u32, u32) {
        let mut v: Vec<u32> = self.hosts.iter().map(|h| h.flow_mods).collect();
        v.sort_unstable();
        if v.is_empty() {
            return (0, 0, 0);
        }
        (v[0], v[v.len() / 2], v[v.len() - 1])
    }

    fn vnet_of_vm(&self, vm: u32) -> u32 {
        vm / self.plan.macs_per_host / self.plan.hosts_per_vnet + 1
    }

    fn vnet_of_host(&self, h: u32) -> u32 {
        h / self.plan.hosts_per_vnet + 1
    }

    /// Hosts of host `h`'s group: first..end.
    fn group(&self, h: u32) -> (u32, u32) {
        let g = self.plan.hosts_per_vnet;
        let first = h / g * g;
        (first, (first + g).min(self.plan.hosts))
    }

    // ---- I/O ------------------------------------------------------------------------------

    fn send(&mut self, h: u32, m: &Message) {
        let host = &mut self.hosts[h as usize];
        if host.stream.is_none() {
            return;
        }
        let before = host.wbuf.len();
        m.encode_into(&mut host.wbuf);
        self.t.msgs_out += 1;
        self.t.bytes_out += (host.wbuf.len() - before) as u64;
        if !host.dirty {
            host.dirty = true;
            self.dirty.push(h);
        }
    }

    fn can_load(&self, h: u32) -> bool {
        let host = &self.hosts[h as usize];
        host.state == HState::Registered && host.wbuf.len() - host.wpos < WBUF_LIMIT
    }

    fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &h in &dirty {
            let host = &mut self.hosts[h as usize];
            host.dirty = false;
            let Some(stream) = host.stream.as_mut() else { continue };
            let mut failed = None;
            while host.wpos < host.wbuf.len() {
                match stream.write(&host.wbuf[host.wpos..]) {
                    Ok(0) => {
                        failed = Some("write returned 0".to_string());
                        break;
                    }
                    Ok(n) => host.wpos += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        failed = Some(format!("write: {e}"));
                        break;
                    }
                }
            }
            if host.wpos == host.wbuf.len() {
                host.wbuf.clear();
                host.wpos = 0;
            } else if host.wpos > 64 * 1024 {
                host.wbuf.drain(..host.wpos);
                host.wpos = 0;
            }
            if let Some(why) = failed {
                self.close(h, &why);
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    fn connect(&mut self, h: u32) {
        let now = Instant::now();
        self.first_connect.get_or_insert(now);
        let host = &mut self.hosts[h as usize];
        host.attempts += 1;
        host.t_connect.get_or_insert(now);
        match TcpStream::connect(self.addr) {
            Ok(mut s) => {
                if let Err(e) =
                    self.poll
                        .registry()
                        .register(&mut s, Token(h as usize), Interest::READABLE | Interest::WRITABLE)
                {
                    self.t.connect_errors += 1;
                    self.note_close(format!("register with poll: {e}"));
                    return;
                }
                host.stream = Some(s);
                host.state = HState::Connecting;
            }
            Err(e) => {
                self.t.connect_errors += 1;
                self.note_close(format!("connect: {e}"));
                self.schedule_retry(h);
            }
        }
    }

    fn schedule_retry(&mut self, h: u32) {
        let host = &mut self.hosts[h as usize];
        if host.attempts < CONNECT_ATTEMPTS {
            host.state = HState::Idle;
            self.retry.push_back((Instant::now() + Duration::from_millis(200), h));
        } else {
            host.state = HState::Closed;
        }
    }

    fn note_close(&mut self, why: String) {
        if self.close_reasons.len() < 8 && !self.close_reasons.contains(&why) {
            self.close_reasons.push(why);
        }
    }

    fn close(&mut self, h: u32, why: &str) {
        let host = &mut self.hosts[h as usize];
        if let Some(mut s) = host.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        let was = host.state;
        host.rbuf.clear();
        host.wbuf.clear();
        host.wpos = 0;
        host.agent = Agent::new(true);
        self.t.disconnects += 1;
        match was {
            HState::Registered => {
                self.registered -= 1;
                self.connected -= 1;
                host.state = HState::Closed;
            }
            HState::Handshake => {
                self.connected -= 1;
                self.schedule_retry(h);
            }
            HState::Connecting => self.schedule_retry(h),
            _ => {}
        }
        self.note_close(format!("{why} ({})", self.phase.name()));
    }

    fn connected_now(&mut self, h: u32) {
        let host = &mut self.hosts[h as usize];
        let Some(s) = host.stream.as_mut() else { return };
        match s.take_error() {
            Ok(Some(e)) | Err(e) => {
                self.t.connect_errors += 1;
                return self.close(h, &format!("connect: {e}"));
            }
            Ok(None) => {}
        }
        match s.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotConnected => return,
            Err(e) => {
                self.t.connect_errors += 1;
                return self.close(h, &format!("connect: {e}"));
            }
        }
        let _ = s.set_nodelay(true);
        host.state = HState::Handshake;
        if host.attempts > 1 {
            self.t.reconnects += 1;
        }
        self.connected += 1;
        self.send(h, &Message::new(0, Body::hello(&[ofp::OFP_VERSION])));
    }

    /// One poll round: read and answer everything that arrived, then write what is queued.
    fn turn(&mut self, timeout: Duration) -> Result<(), String> {
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
            if e.kind() != ErrorKind::Interrupted {
                return Err(format!("poll: {e}"));
            }
        }
        let mut ready = std::mem::take(&mut self.ready_events);
        ready.clear();
        ready.extend(self.events.iter().map(|e| {
            (
                e.token().0,
                e.is_readable() || e.is_read_closed() || e.is_error(),
                e.is_writable() || e.is_error(),
            )
        }));
        for &(h, readable, writable) in &ready {
            let h = h as u32;
            if self.hosts[h as usize].state == HState::Connecting {
                if !(readable || writable) {
                    continue;
                }
                self.connected_now(h);
            }
            if readable {
                self.read(h);
            }
            let host = &mut self.hosts[h as usize];
            if writable && host.wbuf.len() > host.wpos && !host.dirty {
                host.dirty = true;
                self.dirty.push(h);
            }
        }
        self.ready_events = ready;
        self.flush();
        Ok(())
    }

    fn read(&mut self, h: u32) {
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(s) = self.hosts[h as usize].stream.as_mut() {
            match s.read(&mut scratch) {
                Ok(0) => {
                    self.close(h, "connection closed by the controller");
                    break;
                }
                Ok(n) => {
                    self.t.bytes_in += n as u64;
                    let mut buf = std::mem::take(&mut self.hosts[h as usize].rbuf);
                    buf.extend_from_slice(&scratch[..n]);
                    let used = self.parse(h, &buf);
                    buf.drain(..used);
                    let host = &mut self.hosts[h as usize];
                    if host.stream.is_some() {
                        host.rbuf = buf;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(h, &format!("read: {e}"));
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    /// Handles every whole message in `buf`; returns the bytes used.
    fn parse(&mut self, h: u32, buf: &[u8]) -> usize {
        let mut off = 0;
        loop {
            let len = match ofp::frame_len(&buf[off..]) {
                Ok(Some(len)) if off + len <= buf.len() => len,
                Ok(_) => return off,
                Err(e) => {
                    self.t.malformed_from_controller += 1;
                    self.close(h, &format!("bad framing from the controller: {e}"));
                    return buf.len();
                }
            };
            self.t.msgs_in += 1;
            match Message::decode(&buf[off..off + len]) {
                Ok(m) => self.handle(h, m, &buf[off..off + len]),
                Err(_) => self.t.malformed_from_controller += 1,
            }
            off += len;
            if self.hosts[h as usize].stream.is_none() {
                return buf.len();
            }
        }
    }

    // ---- the switch's side of the protocol ---------------------------------------------------

    /// One message from the controller, through the switch's own protocol agent (the code the
    /// real switch runs) with this simulated switch behind it.
    fn handle(&mut self, h: u32, m: Message, raw: &[u8]) {
        let mut agent = std::mem::replace(&mut self.hosts[h as usize].agent, Agent::new(true));
        let replies = agent.on_message(m, raw, &mut SimSwitch { sim: self, h });
        for r in &replies {
            self.send(h, r);
        }
        if let Some(host) = self.hosts.get_mut(h as usize) {
            host.agent = agent;
        }
    }

    /// Register with TCCS, name every local port's network and declare its VM, as the real
    /// switch does right after its FEATURES_REPLY.
    fn registration(&mut self, h: u32) -> Vec<Body> {
        let dpid = frames::dpid_of_mac(&frames::host_mac(h));
        let mut out = vec![frames::register(dpid, frames::host_ip(h), frames::host_mac(h)).body];
        let vnet = self.vnet_of_host(h);
        let p = self.plan.macs_per_host;
        for port in 1..=p {
            out.push(frames::port_vnet(port, vnet).body);
            if self.plan.bind_ports {
                self.t.port_binding += 1;
                let mac = frames::vm_mac(h * p + port - 1);
                out.push(frames::port_binding(port, vnet, mac, true).body);
            }
        }
        out
    }

    /// The controller asks for our flows right after it handled the Register: from here on
    /// it knows this host.
    fn flow_stats_requested(&mut self, h: u32) {
        let host = &mut self.hosts[h as usize];
        if host.state == HState::Handshake {
            host.state = HState::Registered;
            let now = Instant::now();
            host.t_registered = Some(now);
            if let Some(t0) = host.t_connect {
                self.reg_ms.push(ms(now - t0));
            }
            self.registered += 1;
            self.last_registered = Some(now);
        }
    }

    fn flow_stats(&self, h: u32) -> Vec<ofp::FlowStats> {
        if self.hosts[h as usize].flows == 0 {
            return Vec::new();
        }
        self.flows
            .iter()
            .filter(|((fh, _), _)| *fh == h)
            .map(|((_, key), port)| frames::flow_stats(*key, *port))
            .collect()
    }

    fn tccs(&mut self, h: u32, msg: TccsMsg) {
        match msg {
            TccsMsg::TunnelAdd {
                remote_dpid,
                key,
                port_no,
                ..
            } => {
                self.t.tunnel_add += 1;
                if let Some(r) = frames::host_of_dpid(remote_dpid) {
                    self.tunnels.insert((h, r, key), port_no);
                    self.tunnel_ports.insert((h, port_no), (r, key));
                }
            }
            TccsMsg::TunnelDel { port_no, .. } => {
                self.t.tunnel_del += 1;
                if let Some((r, key)) = self.tunnel_ports.remove(&(h, port_no)) {
                    self.tunnels.remove(&(h, r, key));
                }
            }
            _ => self.t.tccs_other += 1,
        }
    }

    fn flow_mod(&mut self, h: u32, fm: &ofp::FlowMod) {
        self.hosts[h as usize].flow_mods += 1;
        let Some(mac) = fm.match_.eth_dst() else {
            self.t.flow_mod_other += 1;
            return;
        };
        let vnet = fm.match_.tunnel_id().unwrap_or(0) as u32;
        let key = frames::flow_key(vnet, &mac);
        match fm.command {
            ofp::OFPFC_ADD | ofp::OFPFC_MODIFY | ofp::OFPFC_MODIFY_STRICT => {
                self.t.flow_mod_add += 1;
                let Some(port) = frames::output_port(fm) else { return };
                if self.flows.insert((h, key), port).is_none() {
                    self.hosts[h as usize].flows += 1;
                    self.holders.entry(key).or_default().push(h);
                }
                self.installed(h, key, &mac, vnet, port);
            }
            ofp::OFPFC_DELETE | ofp::OFPFC_DELETE_STRICT => {
                self.t.flow_mod_delete += 1;
                if self.flows.remove(&(h, key)).is_some() {
                    self.hosts[h as usize].flows -= 1;
                    if let Some(v) = self.holders.get_mut(&key) {
                        v.retain(|x| *x != h);
                    }
                }
            }
            _ => self.t.flow_mod_other += 1,
        }
    }

    /// A forwarding entry for (vnet, mac) → `port` arrived on host `h`: answers a PACKET_IN,
    /// confirms a VM was learnt, or re-points a moved MAC on one more switch.
    fn installed(&mut self, h: u32, key: u64, mac: &Mac, vnet: u32, port: u32) {
        let now = Instant::now();
        if let Some((t, phase)) = self.pending.remove(&(h, key)) {
            match phase {
                Phase::Steady | Phase::Drain => self.pin_ms_steady.push(ms(now - t)),
                _ => self.pin_ms_populate.push(ms(now - t)),
            }
        }
        let Some(vm) = frames::vm_of_mac(mac).filter(|v| (*v as usize) < self.vms.len()) else {
            return;
        };
        let v = &mut self.vms[vm as usize];
        if !v.known && v.host == h && v.port == port {
            v.known = true;
            self.known += 1;
            self.unconfirmed.remove(&vm);
            if let Some(w) = self.waiters.remove(&vm) {
                self.released.extend(w);
            }
        }
        let Some(mv) = self.moves.get_mut(&vm) else { return };
        let Some(i) = mv.waiting.iter().position(|x| *x == h) else {
            return;
        };
        let expect = if h == mv.to {
            Some(mv.to_port)
        } else {
            self.tunnels.get(&(h, mv.to, vnet)).copied()
        };
        if expect != Some(port) {
            // Still the old way (a PACKET_IN answered just before the move), or not yet.
            self.t.move_flow_mods_elsewhere += 1;
            return;
        }
        mv.waiting.swap_remove(i);
        if mv.waiting.is_empty() {
            let mv = self.moves.remove(&vm).expect("present");
            self.move_ms.push(ms(now - mv.started));
            self.finish_move(vm, &mv);
        }
    }

    fn finish_move(&mut self, vm: u32, mv: &Move) {
        let v = &mut self.vms[vm as usize];
        v.host = mv.to;
        v.port = mv.to_port;
        v.moving = false;
        if !self.plan.delete_source_port {
            return;
        }
        // The source's tap goes away once the VM runs at the destination.
        let gone = frames::port_status(ofp::OFPPR_DELETE, mv.from_port, [0xfe, 0x54, 0, 0, 0, 0]);
        self.t.port_status += 1;
        self.send(mv.from, &gone);
    }

    // ---- phases ---------------------------------------------------------------------------

    /// Connect every switch (at most `connect_window` handshakes at a time) until each has
    /// registered: HELLO, FEATURES_REPLY, TCCS Register and PortVnet, and the controller's flow
    /// stats request that proves it handled the Register.
    pub fn register_all(&mut self, watch: &mut dyn FnMut(&Sim) -> Result<(), String>) -> Result<(), String> {
        self.phase = Phase::Register;
        let start = Instant::now();
        let mut next = 0u32;
        let mut last_watch = Instant::now();
        loop {
            let now = Instant::now();
            while let Some(&(at, h)) = self.retry.front() {
                if at > now {
                    break;
                }
                self.retry.pop_front();
                self.connect(h);
            }
            let handshaking = self
                .hosts
                .iter()
                .take(next as usize)
                .filter(|h| matches!(h.state, HState::Connecting | HState::Handshake))
                .count();
            let mut budget = self.plan.connect_window.saturating_sub(handshaking);
            while next < self.plan.hosts && budget > 0 {
                self.connect(next);
                next += 1;
                budget -= 1;
            }
            self.turn(Duration::from_millis(2))?;
            let failed = self.hosts.iter().filter(|h| h.state == HState::Closed).count() as u32;
            if self.registered + failed >= self.plan.hosts && next == self.plan.hosts && self.retry.is_empty() {
                return if failed == 0 {
                    Ok(())
                } else {
                    Err(format!(
                        "{failed} of {} switches could not register: {}",
                        self.plan.hosts,
                        self.close_reasons.join("; ")
                    ))
                };
            }
            if start.elapsed() > self.plan.phase_timeout {
                return Err(format!(
                    "registration timed out after {:?}: {} of {} registered ({} connected); {}",
                    self.plan.phase_timeout,
                    self.registered,
                    self.plan.hosts,
                    self.connected,
                    self.close_reasons.join("; ")
                ));
            }
            if last_watch.elapsed() >= Duration::from_millis(250) {
                last_watch = Instant::now();
                watch(self)?;
            }
        }
    }

    /// The frame VM `vm` first sends: unicast to its designated peer (a VM of its group on
    /// another host, taught to the controller before it), or a gratuitous ARP for the one VM
    /// per group that starts the chain.
    fn first_peer(&self, vm: u32) -> Option<u32> {
        let p = self.plan.macs_per_host;
        let (h, port) = (vm / p, vm % p);
        let (first, end) = self.group(h);
        if end - first < 2 {
            return None;
        }
        let prev = if h > first { h - 1 } else { end - 1 };
        match (port, h == first) {
            (0, true) => None,
            (0, false) => Some(first * p),
            (_, _) => Some(prev * p + port - 1),
        }
    }

    fn announce(&mut self, vm: u32, peer: Option<u32>) {
        let v = &self.vms[vm as usize];
        let (h, port) = (v.host, v.port);
        let vnet = self.vnet_of_vm(vm);
        let src = frames::vm_mac(vm);
        let m = match peer {
            Some(d) => {
                let dst = frames::vm_mac(d);
                self.pending
                    .entry((h, frames::flow_key(vnet, &dst)))
                    .or_insert((Instant::now(), self.phase));
                self.t.packet_in_unicast += 1;
                frames::packet_in(port, vnet, frames::unicast_frame(&dst, &src))
            }
            None => {
                self.t.packet_in_garp += 1;
                let ip = (0x0a00_0000u32 + vm + 1).to_be_bytes();
                frames::packet_in(port, vnet, frames::garp_frame(&src, ip))
            }
        };
        self.send(h, &m);
    }

    /// Every VM sends its first frame (at most `window` not yet learnt at a time); done when the
    /// controller has installed each VM's local entry on its own host.
    pub fn populate(&mut self, watch: &mut dyn FnMut(&Sim) -> Result<(), String>) -> Result<(), String> {
        self.phase = Phase::Populate;
        let start = Instant::now();
        let p = self.plan.macs_per_host;
        let h_n = self.plan.hosts;
        // Port-major order: every host's first VM, then every host's second...
        let mut order = (0..p).flat_map(move |port| (0..h_n).map(move |h| h * p + port));
        let mut exhausted = false;
        let mut last_watch = Instant::now();
        let mut last_resend = Instant::now();
        let total = self.vms.len() as u32;
        let mut skipped = 0u32;
        loop {
            while self.unconfirmed.len() < self.plan.window {
                let vm = match self.released.pop_front() {
                    Some(v) => v,
                    None if exhausted => break,
                    None => match order.next() {
                        Some(v) => v,
                        None => {
                            exhausted = true;
                            break;
                        }
                    },
                };
                let h = self.vms[vm as usize].host;
                if self.hosts[h as usize].state != HState::Registered {
                    skipped += 1;
                    continue;
                }
                if !self.can_load(h) {
                    self.released.push_front(vm);
                    break;
                }
                let peer = self.first_peer(vm);
                if let Some(d) = peer {
                    if !self.vms[d as usize].known {
                        self.waiters.entry(d).or_default().push(vm);
                        continue;
                    }
                }
                self.announce(vm, peer);
                self.unconfirmed.insert(vm, Instant::now());
            }
            self.turn(Duration::from_millis(2))?;
            if self.known + skipped >= total {
                self.populate_secs = start.elapsed().as_secs_f64();
                return Ok(());
            }
            if last_resend.elapsed() >= Duration::from_secs(1) {
                last_resend = Instant::now();
                let stale: Vec<u32> = self
                    .unconfirmed
                    .iter()
                    .filter(|(_, t)| t.elapsed() > RESEND_AFTER)
                    .map(|(v, _)| *v)
                    .collect();
                for vm in stale {
                    self.t.packet_in_resent += 1;
                    self.unconfirmed.insert(vm, Instant::now());
                    let peer = self.first_peer(vm);
                    self.announce(vm, peer);
                }
            }
            if start.elapsed() > self.plan.phase_timeout {
                self.populate_secs = start.elapsed().as_secs_f64();
                return Err(format!(
                    "populate timed out after {:?}: {} of {total} MACs learnt ({} waiting for an answer)",
                    self.plan.phase_timeout,
                    self.known,
                    self.unconfirmed.len()
                ));
            }
            if last_watch.elapsed() >= Duration::from_millis(250) {
                last_watch = Instant::now();
                watch(self)?;
            }
        }
    }

    /// A VM that is learnt, not moving, on a switch we can load.
    fn pick_vm(&mut self) -> Option<u32> {
        for _ in 0..16 {
            let vm = self.rng.below(self.vms.len() as u32);
            let v = &self.vms[vm as usize];
            if v.known && !v.moving && self.can_load(v.host) {
                return Some(vm);
            }
        }
        None
    }

    /// A new conversation: a VM sends to another VM of its group on another host that its
    /// switch has no entry for yet. Latency: until that switch gets the FLOW_MOD for the
    /// destination.
    fn steady_packet_in(&mut self) {
        let Some(src) = self.pick_vm() else { return };
        let p = self.plan.macs_per_host;
        let sh = self.vms[src as usize].host;
        let (first, end) = self.group(src / p);
        if end - first < 2 {
            return;
        }
        let vnet = self.vnet_of_vm(src);
        for _ in 0..16 {
            let d = first * p + self.rng.below((end - first) * p);
            let dv = &self.vms[d as usize];
            if !dv.known || dv.moving || dv.host == sh {
                continue;
            }
            let dst = frames::vm_mac(d);
            let key = frames::flow_key(vnet, &dst);
            if self.flows.contains_key(&(sh, key)) || self.pending.contains_key(&(sh, key)) {
                continue;
            }
            self.pending.insert((sh, key), (Instant::now(), self.phase));
            self.pins_steady_sent += 1;
            self.t.packet_in_unicast += 1;
            let m = frames::packet_in(
                self.vms[src as usize].port,
                vnet,
                frames::unicast_frame(&dst, &frames::vm_mac(src)),
            );
            self.send(sh, &m);
            return;
        }
    }

    /// A live migration: the VM's new tap appears on another host of its group (PortStatus ADD
    /// and PortVnet), then the destination announces it (RARP and/or MigrationNotify). Done when
    /// every switch holding an entry for the MAC (the source included) and the destination got
    /// a FLOW_MOD pointing the new way.
    fn start_move(&mut self) {
        let Some(vm) = self.pick_vm() else { return };
        let from = self.vms[vm as usize].host;
        let (first, end) = self.group(from);
        if end - first < 2 {
            return;
        }
        let mut to = from;
        for _ in 0..8 {
            let c = first + self.rng.below(end - first);
            if c != from && self.can_load(c) {
                to = c;
                break;
            }
        }
        if to == from {
            return;
        }
        let vnet = self.vnet_of_vm(vm);
        let mac = frames::vm_mac(vm);
        let key = frames::flow_key(vnet, &mac);
        let to_port = self.hosts[to as usize].next_port;
        self.hosts[to as usize].next_port += 1;
        self.t.port_status += 1;
        self.send(
            to,
            &frames::port_status(ofp::OFPPR_ADD, to_port, [0xfe, 0x54, 0, 0, 0, 1]),
        );
        self.send(to, &frames::port_vnet(to_port, vnet));
        self.t.port_binding += 1;
        self.send(to, &frames::port_binding(to_port, vnet, mac, true));
        let mut waiting = self.holders.get(&key).cloned().unwrap_or_default();
        for x in [from, to] {
            if !waiting.contains(&x) {
                waiting.push(x);
            }
        }
        // Switches that went away cannot answer.
        waiting.retain(|x| self.hosts[*x as usize].state == HState::Registered);
        self.move_holders.push(waiting.len() as f64);
        let started = Instant::now();
        let dpid = frames::dpid_of_mac(&frames::host_mac(to));
        if matches!(self.plan.move_via, MoveVia::Notify | MoveVia::Both) {
            self.t.migration_notify += 1;
            self.send(to, &frames::migration_notify(vnet, mac, dpid, to_port));
        }
        if matches!(self.plan.move_via, MoveVia::Rarp | MoveVia::Both) {
            self.t.packet_in_rarp += 1;
            self.send(to, &frames::packet_in(to_port, vnet, frames::rarp_frame(&mac)));
        }
        let from_port = self.vms[vm as usize].port;
        self.vms[vm as usize].moving = true;
        self.moves_started += 1;
        self.moves.insert(
            vm,
            Move {
                from,
                from_port,
                to,
                to_port,
                started,
                waiting,
            },
        );
    }

    fn expire_moves(&mut self) {
        let stale: Vec<u32> = self
            .moves
            .iter()
            .filter(|(_, m)| m.started.elapsed() > MOVE_TIMEOUT)
            .map(|(v, _)| *v)
            .collect();
        for vm in stale {
            let mv = self.moves.remove(&vm).expect("present");
            self.moves_failed += 1;
            self.finish_move(vm, &mv);
        }
    }

    /// New conversations at `pin_rate` and moves at `moves_per_sec`, open loop, for the
    /// planned duration; then up to 10 s for what is still in flight.
    pub fn steady(&mut self, watch: &mut dyn FnMut(&Sim) -> Result<(), String>) -> Result<(), String> {
        self.phase = Phase::Steady;
        let start = Instant::now();
        let end = start + self.plan.steady;
        let pin_every = (self.plan.pin_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / self.plan.pin_rate));
        let move_every =
            (self.plan.moves_per_sec > 0.0).then(|| Duration::from_secs_f64(1.0 / self.plan.moves_per_sec));
        let (mut next_pin, mut next_move) = (start, start);
        let mut last_watch = Instant::now();
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            if let Some(every) = pin_every {
                let mut n = 0;
                while next_pin <= now && n < 1000 {
                    self.steady_packet_in();
                    next_pin += every;
                    n += 1;
                }
            }
            if let Some(every) = move_every {
                let mut n = 0;
                while next_move <= now && n < 1000 {
                    self.start_move();
                    next_move += every;
                    n += 1;
                }
            }
            self.expire_moves();
            let mut wait = Duration::from_millis(5);
            if pin_every.is_some() {
                wait = wait.min(next_pin.saturating_duration_since(now));
            }
            if move_every.is_some() {
                wait = wait.min(next_move.saturating_duration_since(now));
            }
            // Flush what was queued at once; poll waits at least a millisecond anyway.
            self.flush();
            self.turn(wait)?;
            if last_watch.elapsed() >= Duration::from_millis(250) {
                last_watch = Instant::now();
                watch(self)?;
            }
        }
        self.steady_secs = start.elapsed().as_secs_f64();
        self.phase = Phase::Drain;
        let drain_end = Instant::now() + MOVE_TIMEOUT + Duration::from_millis(500);
        while Instant::now() < drain_end {
            let waiting_pins = self.pending.values().any(|(_, p)| *p == Phase::Steady);
            if self.moves.is_empty() && !waiting_pins {
                break;
            }
            self.expire_moves();
            self.turn(Duration::from_millis(5))?;
            if last_watch.elapsed() >= Duration::from_millis(250) {
                last_watch = Instant::now();
                watch(self)?;
            }
        }
        self.expire_moves();
        Ok(())
    }

    /// PACKET_INs never answered, by phase (populate, steady).
    pub fn unanswered(&self) -> (usize, usize) {
        let steady = self
            .pending
            .values()
            .filter(|(_, p)| matches!(p, Phase::Steady | Phase::Drain))
            .count();
        (self.pending.len() - steady, steady)
    }

    /// Close every connection now (the controller is already stopped, so the TIME_WAITs are on
    /// its side and our ephemeral ports are free for the next run).
    pub fn shutdown(&mut self) {
        for h in &mut self.hosts {
            if let Some(mut s) = h.stream.take() {
                let _ = self.poll.registry().deregister(&mut s);
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One simulated switch, as the protocol agent sees it.
struct SimSwitch<'a> {
    sim: &'a mut Sim,
    h: u32,
}

impl SwitchOps for SimSwitch<'_> {
    fn dpid(&self) -> u64 {
        frames::dpid_of_mac(&frames::host_mac(self.h))
    }

    fn registration(&mut self) -> Vec<Body> {
        self.sim.registration(self.h)
    }

    fn role(&mut self, role: u32, _generation_id: u64) -> Result<u32, OfpErr> {
        self.sim.t.role_request += 1;
        Ok(if role == ofp::OFPCR_ROLE_NOCHANGE {
            ofp::OFPCR_ROLE_EQUAL
        } else {
            role
        })
    }

    fn is_slave(&self) -> bool {
        false
    }

    fn flow_mod(&mut self, fm: &ofp::FlowMod) -> Result<(), OfpErr> {
        self.sim.flow_mod(self.h, fm);
        Ok(())
    }

    fn group_mod(&mut self, _: &ofp::GroupMod) -> Result<(), OfpErr> {
        Err((ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_TYPE))
    }

    fn meter_mod(&mut self, _: &ofp::MeterMod) -> Result<(), OfpErr> {
        Err((ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_TYPE))
    }

    fn packet_out(&mut self, _: &ofp::PacketOut) -> Result<(), OfpErr> {
        self.sim.t.packet_out += 1;
        Ok(())
    }

    fn barrier(&mut self) {
        self.sim.t.barrier += 1;
    }

    fn multipart(&mut self, req: MultipartRequestBody) -> Result<Answer, OfpErr> {
        match req {
            MultipartRequestBody::Flow(_) => {
                self.sim.t.flow_stats_request += 1;
                let stats = self.sim.flow_stats(self.h);
                self.sim.flow_stats_requested(self.h);
                Ok(Answer::Flows(stats))
            }
            _ => {
                self.sim.t.multipart_other += 1;
                Err((ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_BAD_MULTIPART))
            }
        }
    }

    fn tccs(&mut self, msg: TccsMsg) -> Result<(), OfpErr> {
        self.sim.tccs(self.h, msg);
        Ok(())
    }

    /// The simulator's own accounting of what the controller sends.
    fn seen(&mut self, m: &Message) {
        let t = &mut self.sim.t;
        match &m.body {
            Body::EchoRequest(_) => t.echo_request += 1,
            Body::SetConfig(_) | Body::SetAsync(_) => t.set_config += 1,
            Body::Error { typ, code, .. } => {
                t.ofp_error_from_controller += 1;
                let e = format!("OFPT_ERROR type {typ} code {code}");
                if self.sim.controller_errors.len() < 5 && !self.sim.controller_errors.contains(&e) {
                    self.sim.controller_errors.push(e);
                }
            }
            Body::Experimenter { .. } if TccsMsg::from_body(&m.body).is_none_or(|r| r.is_err()) => t.tccs_other += 1,
            Body::Hello { .. }
            | Body::EchoReply(_)
            | Body::FeaturesRequest
            | Body::GetConfigRequest
            | Body::BarrierRequest
            | Body::RoleRequest(_)
            | Body::MultipartRequest { .. }
            | Body::FlowMod(_)
            | Body::PacketOut(_)
            | Body::Experimenter { .. } => {}
            _ => t.other_from_controller += 1,
        }
    }
}
