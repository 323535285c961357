//! The WAN bridge, hosts attached to it, and VM namespaces.

use std::net::Ipv4Addr;
use std::ops::Index;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::netns::{add_addr, bridge_netfilter_off, link_up, set_mtu, veth_into, Netns};
use crate::util::{sanitize_name, unique_tag};

/// Name of the underlay interface [`HostNet`] gives every host.
pub const WAN_IF: &str = "wan0";

/// The underlay network (198.18.0.0/15) that hosts are attached to, in a namespace of its own:
/// a Linux bridge `br0` (one subnet), or a router (a subnet per host, see
/// [`HostNet::routed`]).
#[derive(Debug)]
pub struct Wan {
    ns: Netns,
    next_port: AtomicU32,
    routed: bool,
}

impl Wan {
    /// Creates the WAN namespace and its bridge.
    pub fn new() -> Wan {
        let ns = Netns::new("crwan");
        ns.ip(&["link", "add", "br0", "type", "bridge", "stp_state", "0"]);
        bridge_netfilter_off(&ns);
        link_up(&ns, "br0");
        Wan {
            ns,
            next_port: AtomicU32::new(0),
            routed: false,
        }
    }

    /// Creates a WAN namespace that routes between the hosts' subnets instead of bridging.
    pub fn router() -> Wan {
        let ns = Netns::new("crrtr");
        ns.run(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        Wan {
            ns,
            next_port: AtomicU32::new(0),
            routed: true,
        }
    }

    /// Whether this WAN is a router (else a bridge).
    pub fn is_routed(&self) -> bool {
        self.routed
    }

    /// Connects `host` to the router: a veth pair whose router end gets `gateway_cidr` and
    /// whose other end is `ifname` in `host` with `ip_cidr` and the default route via the
    /// gateway, both up. Returns the router-side port name.
    pub fn attach_routed(&self, host: &Netns, ifname: &str, ip_cidr: &str, gateway_cidr: &str) -> String {
        assert!(self.routed, "attach_routed on a bridged WAN");
        let port = format!("p{}", self.next_port.fetch_add(1, Ordering::Relaxed));
        veth_into(&self.ns, &port, host, ifname);
        add_addr(&self.ns, &port, gateway_cidr);
        add_addr(host, ifname, ip_cidr);
        let gateway = gateway_cidr.split('/').next().unwrap_or(gateway_cidr);
        host.ip(&["route", "add", "default", "via", gateway, "dev", ifname]);
        port
    }

    /// The router-side (or bridge-side) ports, in the order hosts were attached.
    pub fn ports(&self) -> Vec<String> {
        (0..self.next_port.load(Ordering::Relaxed))
            .map(|i| format!("p{i}"))
            .collect()
    }

    /// The WAN's namespace (e.g. to capture on [`bridge`](Self::bridge)).
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// The bridge's name inside [`ns`](Self::ns).
    pub fn bridge(&self) -> &str {
        "br0"
    }

    /// Connects `host` to the WAN: a veth pair whose WAN end is enslaved to
    /// the bridge and whose other end is `ifname` in `host`, with address
    /// `ip_cidr` (none if empty), both up. Returns the WAN-side port name.
    pub fn attach(&self, host: &Netns, ifname: &str, ip_cidr: &str) -> String {
        assert!(!self.routed, "attach on a routed WAN: use attach_routed");
        let port = format!("p{}", self.next_port.fetch_add(1, Ordering::Relaxed));
        veth_into(&self.ns, &port, host, ifname);
        self.ns.ip(&["link", "set", "dev", &port, "master", "br0"]);
        if !ip_cidr.is_empty() {
            add_addr(host, ifname, ip_cidr);
        }
        port
    }
}

impl Default for Wan {
    fn default() -> Self {
        Wan::new()
    }
}

/// One host of a [`HostNet`].
#[derive(Debug)]
pub struct Host {
    /// Position in the `HostNet` (host `h<index>`).
    pub index: usize,
    /// The host's namespace (named `crh<index>-<tag>`).
    pub ns: Netns,
    /// The underlay address on [`wan_if`](Self::wan_if): 198.18.0.(1+index).
    pub underlay_ip: Ipv4Addr,
    /// `underlay_ip` with its prefix length, e.g. `198.18.0.1/24`.
    pub underlay_cidr: String,
    /// The underlay interface (`wan0`).
    pub wan_if: String,
    /// The WAN bridge's port for this host.
    pub wan_port: String,
}

/// `n` host namespaces `h0..` on one WAN, host `i` with underlay address
/// 198.18.0.(1+i)/24 on interface `wan0`.
#[derive(Debug)]
pub struct HostNet {
    /// The hosts, in order.
    pub hosts: Vec<Host>,
    /// The WAN they share (dropped after the hosts).
    pub wan: Wan,
}

impl HostNet {
    /// Builds the hosts and the WAN (interfaces at the default MTU, 1500).
    pub fn new(n_hosts: usize) -> HostNet {
        Self::build(n_hosts, None)
    }

    /// Like [`new`](Self::new) with the MTU of every WAN link (both veth ends
    /// and the bridge) set to `mtu`, e.g. 1600 to carry full-size tunnelled
    /// frames.
    pub fn with_wan_mtu(n_hosts: usize, mtu: u32) -> HostNet {
        Self::build(n_hosts, Some(mtu))
    }

    /// `n` hosts, each in a subnet of its own behind one router (the WAN namespace, which
    /// forwards): host `i` is 198.18.(1+i).1/24 on `wan0` with its default route via the
    /// router's 198.18.(1+i).254. Every link, both ends, gets MTU `mtu`. For impairments
    /// (rate limits, loss, a smaller MTU further on) see `Wan::limit_rate`,
    /// `Wan::set_loss_per_million`, `Wan::set_port_mtu` and [`crate::segment_in_software`].
    pub fn routed(n_hosts: usize, mtu: u32) -> HostNet {
        Self::build_on(Wan::router(), n_hosts, Some(mtu))
    }

    fn build(n_hosts: usize, mtu: Option<u32>) -> HostNet {
        Self::build_on(Wan::new(), n_hosts, mtu)
    }

    fn build_on(wan: Wan, n_hosts: usize, mtu: Option<u32>) -> HostNet {
        assert!((1..=250).contains(&n_hosts), "HostNet supports 1..=250 hosts");
        let mut hosts = Vec::with_capacity(n_hosts);
        for i in 0..n_hosts {
            let ns = Netns::new(&format!("crh{i}"));
            let (underlay_ip, wan_port) = if wan.is_routed() {
                let ip = Ipv4Addr::new(198, 18, 1 + i as u8, 1);
                let gateway = format!("198.18.{}.254/24", 1 + i);
                (ip, wan.attach_routed(&ns, WAN_IF, &format!("{ip}/24"), &gateway))
            } else {
                let ip = Ipv4Addr::new(198, 18, 0, 1 + i as u8);
                (ip, wan.attach(&ns, WAN_IF, &format!("{ip}/24")))
            };
            let underlay_cidr = format!("{underlay_ip}/24");
            if let Some(mtu) = mtu {
                set_mtu(&wan.ns, &wan_port, mtu);
                set_mtu(&ns, WAN_IF, mtu);
            }
            hosts.push(Host {
                index: i,
                ns,
                underlay_ip,
                underlay_cidr,
                wan_if: WAN_IF.to_string(),
                wan_port,
            });
        }
        HostNet { hosts, wan }
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether there are no hosts (never, by construction).
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Names of every namespace of this topology.
    pub fn namespace_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.hosts.iter().map(|h| h.ns.name().to_string()).collect();
        v.push(self.wan.ns.name().to_string());
        v
    }
}

impl Index<usize> for HostNet {
    type Output = Host;
    fn index(&self, i: usize) -> &Host {
        &self.hosts[i]
    }
}

/// A VM: a namespace with `eth0`, whose peer sits in a host namespace.
#[derive(Debug)]
pub struct Vm {
    /// The VM's namespace (named `crvm-<name>-<tag>`).
    pub ns: Netns,
    /// The host-side end of the veth pair (unique name, ≤ 15 chars), to be
    /// attached to the switch as a `system` port.
    pub host_if: String,
    /// The VM's interface, `eth0`.
    pub ifname: String,
    /// MAC of `eth0`.
    pub mac: String,
    /// Address of `eth0` without prefix length.
    pub ip: Ipv4Addr,
    /// Address of `eth0` with prefix length.
    pub ip_cidr: String,
}

/// Creates a VM namespace for `host`: a veth pair whose VM end is `eth0`
/// with `mac` and `ip_cidr` (up), and whose host end (up, no address) gets a
/// unique name made of up to 8 characters of `name` and a tag, returned in
/// [`Vm::host_if`]. Offloads are left at the kernel defaults.
pub fn vm_ns(host: &Host, name: &str, mac: &str, ip_cidr: &str) -> Vm {
    let clean = sanitize_name(name);
    let ip: Ipv4Addr = ip_cidr
        .split('/')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad VM address {ip_cidr:?}: expected a.b.c.d/len"));
    let ns = Netns::new(&format!("crvm-{clean}"));
    let short: String = clean.chars().take(8).collect();
    let host_if = format!("{short}{}", unique_tag());
    ns.ip(&[
        "link",
        "add",
        "eth0",
        "address",
        mac,
        "type",
        "veth",
        "peer",
        "name",
        &host_if,
        "netns",
        host.ns.name(),
    ]);
    add_addr(&ns, "eth0", ip_cidr);
    link_up(&ns, "eth0");
    link_up(&host.ns, &host_if);
    Vm {
        ns,
        host_if,
        ifname: "eth0".to_string(),
        mac: mac.to_ascii_lowercase(),
        ip,
        ip_cidr: ip_cidr.to_string(),
    }
}
