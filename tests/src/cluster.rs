//! A Cloud Rack deployment in namespaces: N hosts on a WAN, a controller (in host 0's
//! namespace, reached over the WAN), a switch per host, and VMs attached both ways. Plus the
//! traffic helpers the scenarios share: a verified TCP transfer and a gratuitous ARP.

use crate::{add_addr, bin_path, link_up, set_mac, vm_ns, wait_until, workspace_dir, HostNet, Netns, Proc, Vm};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const CONTROLLER_PORT: u16 = 6653;

pub struct Cluster {
    pub switches: Vec<Option<Proc>>,
    pub controller: Option<Proc>,
    pub controller_args: Vec<String>,
    pub ctl_dir: crate::TempDir,
    pub net: HostNet,
    /// The deployment's CA and certificates (scripts/pki.sh); None when the controller runs
    /// with --plain-tcp.
    pub pki: Option<crate::TempDir>,
}

impl Cluster {
    /// A deployment on `net` with nothing started yet: mutual TLS between switches and the
    /// controller (a fresh CA and a certificate per host), unless `controller_args` has
    /// --plain-tcp.
    pub fn new(net: HostNet, controller_args: &[&str]) -> Cluster {
        let pki = if controller_args.contains(&"--plain-tcp") {
            None
        } else {
            let dir = crate::scratch_dir("pki");
            let mut argv = vec![
                "bash".to_string(),
                workspace_dir().join("scripts/pki.sh").display().to_string(),
            ];
            argv.push(dir.path().display().to_string());
            for i in 0..net.len() {
                argv.push("--switch".into());
                argv.push(format!("{:x}", Cluster::dpid(i)));
            }
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            crate::run_cmd(&argv);
            Some(dir)
        };
        Cluster {
            switches: Vec::new(),
            controller: None,
            controller_args: controller_args.iter().map(|s| s.to_string()).collect(),
            ctl_dir: crate::scratch_dir("ctl"),
            net,
            pki,
        }
    }

    /// Host `i`'s datapath id (its certificate names it).
    pub fn dpid(i: usize) -> u64 {
        0x00c1_0da0_0000_0000 | (i as u64 + 1)
    }

    /// One host with a Cloud Rack switch that listens for ovs-ofctl on `ofp_listen` and
    /// connects to `controller` (a third-party controller, or nothing at all: the switch then
    /// forwards on the flows it is given).
    pub fn standalone(controller: &str, ofp_listen: &str) -> Cluster {
        let mut c = Cluster::new(HostNet::new(1), &["--plain-tcp"]);
        let sw = c.spawn_switch_as(0, controller, Cluster::dpid(0), &[], &["--ofp-listen", ofp_listen]);
        c.switches.push(Some(sw));
        let path = c.ctl_path(0);
        assert!(
            wait_until(Duration::from_secs(10), Duration::from_millis(50), || path.exists()),
            "switch did not open its management socket"
        );
        c
    }

    /// Hosts with a switch each and a controller with `controller_args` (e.g. --tunnel-idle).
    pub fn start(n_hosts: usize, controller_args: &[&str]) -> Cluster {
        Cluster::start_with(n_hosts, n_hosts, controller_args, &[])
    }

    /// `n_hosts` hosts, of which the first `n_switches` run a Cloud Rack switch (started with
    /// `switch_args`); the others are left for peers such as Open vSwitch.
    pub fn start_with(n_hosts: usize, n_switches: usize, controller_args: &[&str], switch_args: &[&str]) -> Cluster {
        Cluster::start_on(HostNet::new(n_hosts), n_switches, controller_args, switch_args)
    }

    /// Like `start_with` on hosts made beforehand (which may already run, say, etcd).
    pub fn start_on(net: HostNet, n_switches: usize, controller_args: &[&str], switch_args: &[&str]) -> Cluster {
        let mut c = Cluster::new(net, controller_args);
        c.start_controller();
        c.start_switches(n_switches, switch_args);
        c
    }

    /// Start the switches of hosts 0..n (with `switch_args`) and wait until each is connected.
    pub fn start_switches(&mut self, n_switches: usize, switch_args: &[&str]) {
        let c = self;
        for i in 0..n_switches {
            let sw = c.spawn_switch(i, switch_args);
            c.switches.push(Some(sw));
        }
        for i in 0..n_switches {
            let path = c.ctl_path(i);
            assert!(
                wait_until(Duration::from_secs(10), Duration::from_millis(50), || path.exists()),
                "switch {i} did not open its management socket"
            );
        }
        c.wait_connected();
    }

    pub fn controller_addr(&self) -> String {
        self.controller_addr_on(0)
    }

    /// The address of a controller running on host `i`.
    pub fn controller_addr_on(&self, i: usize) -> String {
        let scheme = if self.pki.is_some() { "tls" } else { "tcp" };
        format!("{scheme}:{}:{}", self.net[i].underlay_ip, CONTROLLER_PORT)
    }

    /// `--tls-cert/--tls-key/--tls-ca` for the certificate named `name` (file stem).
    pub fn tls_args(&self, name: &str) -> Vec<String> {
        let Some(pki) = &self.pki else { return Vec::new() };
        let p = |f: &str| pki.path().join(f).display().to_string();
        vec![
            "--tls-cert".into(),
            p(&format!("{name}.pem")),
            "--tls-key".into(),
            p(&format!("{name}.key")),
            "--tls-ca".into(),
            p("ca.pem"),
        ]
    }

    pub fn start_controller(&mut self) {
        let args: Vec<&str> = self.controller_args.iter().map(String::as_str).collect();
        let p = self.spawn_controller_on(0, &args);
        self.controller = Some(p);
    }

    /// Start a controller on host `i` with `args` (and the deployment's TLS arguments).
    pub fn spawn_controller_on(&self, i: usize, args: &[&str]) -> Proc {
        let bin = bin_path("cloudrack-controller");
        let listen = format!("0.0.0.0:{CONTROLLER_PORT}");
        let tls = self.tls_args("controller");
        let mut argv = vec![bin.to_str().unwrap(), "--listen", listen.as_str()];
        argv.extend(tls.iter().map(String::as_str));
        argv.extend_from_slice(args);
        let mut p = self.net[i].ns.spawn_named(&format!("controller-h{i}"), &argv);
        p.expect_log("cloudrack-controller running", Duration::from_secs(10));
        p
    }

    pub fn ctl_path(&self, host: usize) -> PathBuf {
        self.ctl_dir.path().join(format!("sw{host}.sock"))
    }

    /// Start host `i`'s switch with extra arguments.
    pub fn spawn_switch(&self, i: usize, extra: &[&str]) -> Proc {
        let dpid = Cluster::dpid(i);
        let tls = self.tls_args(&format!("switch-{dpid:016x}"));
        let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
        self.spawn_switch_as(i, &self.controller_addr(), dpid, &tls, extra)
    }

    /// Start a switch on host `i` that connects to `controller` as `dpid` with the given TLS
    /// arguments (a test may hand it the wrong ones).
    pub fn spawn_switch_as(&self, i: usize, controller: &str, dpid: u64, tls: &[&str], extra: &[&str]) -> Proc {
        let bin = bin_path("cloudrack-switch");
        let ctl = self.ctl_path(i);
        let ip = self.net[i].underlay_ip.to_string();
        let dpid = format!("{dpid:016x}");
        let mut argv = vec![
            bin.to_str().unwrap(),
            "--controller",
            controller,
            "--underlay-ip",
            ip.as_str(),
            "--ctl",
            ctl.to_str().unwrap(),
            "--dpid",
            dpid.as_str(),
        ];
        argv.extend_from_slice(tls);
        argv.extend_from_slice(extra);
        let mut p = self.net[i].ns.spawn_named(&format!("switch{i}"), &argv);
        p.expect_log("cloudrack-switch running", Duration::from_secs(10));
        p
    }

    /// Wait until every switch says it is registered with the controller.
    pub fn wait_connected(&self) {
        for i in 0..self.switches.len() {
            let ok = wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
                self.try_ctl_json(i, &["show"])
                    .is_some_and(|v| v["controller_connected"] == true)
            });
            assert!(ok, "switch {i} did not connect to the controller");
        }
    }

    /// Run cloudrack-ctl against host `i`'s switch; panics with its output on failure.
    pub fn ctl(&self, i: usize, args: &[&str]) -> String {
        let bin = bin_path("cloudrack-ctl");
        let ctl = self.ctl_path(i);
        let mut argv = vec![bin.to_str().unwrap(), "--ctl", ctl.to_str().unwrap()];
        argv.extend_from_slice(args);
        crate::run_cmd(&argv)
    }

    pub fn try_ctl_json(&self, i: usize, args: &[&str]) -> Option<serde_json::Value> {
        let bin = bin_path("cloudrack-ctl");
        let ctl = self.ctl_path(i);
        let mut argv = vec![bin.to_str().unwrap(), "--ctl", ctl.to_str().unwrap()];
        argv.extend_from_slice(args);
        argv.push("--json");
        let out = crate::exec_cmd(&argv);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn ctl_json(&self, i: usize, args: &[&str]) -> serde_json::Value {
        self.try_ctl_json(i, args)
            .unwrap_or_else(|| panic!("cloudrack-ctl {args:?} on host {i} failed"))
    }

    /// A VM namespace attached to host `i` through a veth end as a `system` port.
    pub fn vm_system(&self, i: usize, name: &str, mac: &str, ip_cidr: &str, vnet: u32) -> Vm {
        self.vm_system_with(i, name, mac, ip_cidr, vnet, &[])
    }

    /// Like [`vm_system`](Self::vm_system), with the port bound to the VM's MAC (port
    /// security; only a bound port may take a MAC over).
    pub fn vm_system_bound(&self, i: usize, name: &str, mac: &str, ip_cidr: &str, vnet: u32) -> Vm {
        self.vm_system_with(i, name, mac, ip_cidr, vnet, &["--mac", mac])
    }

    fn vm_system_with(&self, i: usize, name: &str, mac: &str, ip_cidr: &str, vnet: u32, extra: &[&str]) -> Vm {
        let vm = vm_ns(&self.net[i], name, mac, ip_cidr);
        let v = vnet.to_string();
        let mut args = vec!["add-port", &vm.host_if, "--kind", "system", "--vnet", &v];
        args.extend_from_slice(extra);
        self.ctl(i, &args);
        vm
    }

    /// The controller's last periodic state report (its "controller state" log line), or Null.
    pub fn controller_status(&self) -> serde_json::Value {
        self.controller
            .as_ref()
            .map_or(serde_json::Value::Null, controller_status_of)
    }

    /// A VM namespace whose NIC is a tap the switch created and that was moved into it.
    pub fn vm_tap(&self, i: usize, name: &str, mac: &str, ip_cidr: &str, vnet: u32) -> (Netns, String) {
        let ns = Netns::new(name);
        let tap = format!("t{}", &ns.name()[ns.name().len().saturating_sub(8)..]).replace('-', "");
        let v = vnet.to_string();
        self.ctl(i, &["add-port", &tap, "--kind", "tap", "--vnet", &v]);
        self.net[i].ns.run(&["ip", "link", "set", &tap, "netns", ns.name()]);
        set_mac(&ns, &tap, mac);
        add_addr(&ns, &tap, ip_cidr);
        link_up(&ns, &tap);
        (ns, tap)
    }

    /// Move a `vm_system` VM from host `from` to host `to` by hand: its NIC on `from` goes
    /// away (port deleted), a new one with the same MAC and address appears as a port on `to`.
    /// Returns the new host-side interface. The VM has not announced itself yet.
    pub fn move_vm_system(&self, vm: &Vm, from: usize, to: usize) -> String {
        self.ctl(from, &["del-port", &vm.host_if]);
        vm.ns.ip(&["link", "del", &vm.ifname]);
        let new_if = format!("mv{}", crate::unique_tag());
        crate::veth_into(&vm.ns, &vm.ifname, &self.net[to].ns, &new_if);
        set_mac(&vm.ns, &vm.ifname, &vm.mac);
        add_addr(&vm.ns, &vm.ifname, &vm.ip_cidr);
        link_up(&vm.ns, &vm.ifname);
        self.ctl(to, &["add-port", &new_if]);
        new_if
    }

    pub fn kill_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            c.signal(libc::SIGKILL);
            c.wait_exit(Duration::from_secs(5));
        }
    }
}

/// A controller's last periodic state report (its "controller state" log line), or Null.
pub fn controller_status_of(p: &Proc) -> serde_json::Value {
    p.logs()
        .lines()
        .rev()
        .filter(|l| l.contains("controller state"))
        .find_map(|l| {
            let json = &l[l.find("status=")? + "status=".len()..];
            serde_json::from_str(json.trim()).ok()
        })
        .unwrap_or(serde_json::Value::Null)
}

/// Deterministic test payload: byte i of the stream.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// Send `bytes` over TCP from namespace `src` to `dst_ip:port` where a receiver runs in `dst`;
/// the receiver checks every byte. Returns the elapsed time. Panics on any mismatch.
pub fn tcp_transfer(src: &Netns, dst: &Netns, dst_ip: Ipv4Addr, port: u16, bytes: u64, timeout: Duration) -> Duration {
    tcp_transfer_paced(src, dst, dst_ip, port, bytes, None, timeout)
}

/// `tcp_transfer` at no more than `rate` bytes per second (None: as fast as it goes), so a
/// transfer can span an event such as a controller failover.
pub fn tcp_transfer_paced(
    src: &Netns,
    dst: &Netns,
    dst_ip: Ipv4Addr,
    port: u16,
    bytes: u64,
    rate: Option<u64>,
    timeout: Duration,
) -> Duration {
    let listener = dst.enter(move || TcpListener::bind(SocketAddr::from((dst_ip, port))).expect("bind receiver"));
    let receiver = std::thread::spawn(move || -> Result<u64, String> {
        let (mut s, _) = listener.accept().map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(timeout)).ok();
        let mut buf = vec![0u8; 256 * 1024];
        let mut off = 0u64;
        loop {
            let n = s
                .read(&mut buf)
                .map_err(|e| format!("receive failed after {off} bytes: {e}"))?;
            if n == 0 {
                break;
            }
            for (k, b) in buf[..n].iter().enumerate() {
                if *b != pattern(off + k as u64) {
                    return Err(format!("byte {} corrupted", off + k as u64));
                }
            }
            off += n as u64;
        }
        s.write_all(b"ok").ok();
        Ok(off)
    });
    let started = Instant::now();
    let sent = src.enter(move || -> Result<(), String> {
        let mut s = TcpStream::connect_timeout(&SocketAddr::from((dst_ip, port)), Duration::from_secs(10))
            .map_err(|e| format!("connect: {e}"))?;
        s.set_write_timeout(Some(timeout)).ok();
        let started_send = Instant::now();
        let mut buf = vec![0u8; if rate.is_some() { 64 * 1024 } else { 256 * 1024 }];
        let mut off = 0u64;
        while off < bytes {
            let n = (bytes - off).min(buf.len() as u64) as usize;
            for (k, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern(off + k as u64);
            }
            s.write_all(&buf[..n])
                .map_err(|e| format!("send failed after {off} bytes: {e}"))?;
            off += n as u64;
            if let Some(rate) = rate {
                let due = Duration::from_secs_f64(off as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started_send.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        s.shutdown(std::net::Shutdown::Write).ok();
        let mut ack = [0u8; 2];
        s.set_read_timeout(Some(timeout)).ok();
        s.read_exact(&mut ack).map_err(|e| format!("no acknowledgement: {e}"))?;
        Ok(())
    });
    let received = receiver.join().expect("receiver thread");
    sent.unwrap_or_else(|e| panic!("TCP sender: {e}"));
    let got = received.unwrap_or_else(|e| panic!("TCP receiver: {e}"));
    assert_eq!(got, bytes, "receiver got {got} of {bytes} bytes");
    started.elapsed()
}

/// A VM's gratuitous ARP for its own MAC and address, as it announces itself after a move.
pub fn announce(vm: &Vm) {
    send_garp(&vm.ns, &vm.ifname, mac_bytes(&vm.mac), vm.ip);
}

/// Send one gratuitous ARP (request for our own IP, broadcast) from `ifname` in `ns`, as a VM
/// announces itself after a move.
pub fn send_garp(ns: &Netns, ifname: &str, mac: [u8; 6], ip: Ipv4Addr) {
    let ifname = ifname.to_string();
    ns.enter(move || {
        let mut frame = Vec::with_capacity(42);
        frame.extend_from_slice(&[0xff; 6]);
        frame.extend_from_slice(&mac);
        frame.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        frame.extend_from_slice(&mac);
        frame.extend_from_slice(&ip.octets());
        frame.extend_from_slice(&[0; 6]);
        frame.extend_from_slice(&ip.octets());
        raw_send(&ifname, &frame);
    });
}

/// Send one raw Ethernet frame out of `ifname` (in the current thread's namespace).
pub fn raw_send(ifname: &str, frame: &[u8]) {
    raw_send_many(ifname, frame, 1);
}

/// Send `count` copies of a raw Ethernet frame out of `ifname` through one socket (closing an
/// AF_PACKET socket waits for an RCU grace period: one socket per frame is slow).
pub fn raw_send_many(ifname: &str, frame: &[u8], count: usize) {
    let sent = raw_send_each(ifname, std::iter::repeat_n(frame, count));
    assert_eq!(sent, count, "raw send failed");
}

/// Send each frame once out of `ifname` (in the current thread's namespace) through one socket.
/// Returns how many the kernel took (a full queue refuses some; that is not an error here).
pub fn raw_send_each<F: AsRef<[u8]>>(ifname: &str, frames: impl Iterator<Item = F>) -> usize {
    let c = std::ffi::CString::new(ifname).unwrap();
    let mut sent = 0;
    // SAFETY: plain libc calls with valid, live arguments; the fd is closed at the end.
    unsafe {
        let idx = libc::if_nametoindex(c.as_ptr());
        assert!(idx != 0, "no interface {ifname}");
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(fd >= 0, "AF_PACKET socket");
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = idx as i32;
        sll.sll_halen = 6;
        for frame in frames {
            let frame = frame.as_ref();
            let rc = libc::sendto(
                fd,
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            if rc == frame.len() as isize {
                sent += 1;
            }
        }
        libc::close(fd);
    }
    sent
}

/// Parse "aa:bb:cc:dd:ee:ff".
pub fn mac_bytes(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s.split(':').map(|p| u8::from_str_radix(p, 16).expect("mac")).collect();
    v.try_into().expect("6 bytes")
}
