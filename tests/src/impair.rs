//! A worse WAN: a rate limit and random loss at the router of a routed [`HostNet`], a smaller
//! MTU on one of its links, and hosts that segment in software what they send, so the router
//! sees the packets a wire would carry.
//!
//! Everything lives in namespaces the topology created (the router's qdiscs and nftables
//! table, the hosts' interface settings) and goes with them.
//!
//! [`HostNet`]: crate::HostNet

use crate::netns::{set_mtu, Netns};
use crate::topology::Wan;
use crate::util::require_tool;

/// The nftables table the loss rule lives in, in the router's namespace.
const TABLE: &str = "crimpair";

impl Wan {
    /// Limit every router port's egress to `rate` (tc's syntax, e.g. `1gbit`) with a token
    /// bucket (TBF, burst 128 KB, at most 5 ms of queue).
    pub fn limit_rate(&self, rate: &str) {
        assert!(self.is_routed(), "rate limits are set on a routed WAN");
        require_tool("tc");
        for port in self.ports() {
            self.ns().run(&[
                "tc", "qdisc", "replace", "dev", &port, "root", "tbf", "rate", rate, "burst", "128kb", "latency", "5ms",
            ]);
        }
    }

    /// Drop `per_million` of every million packets the router forwards, at random (nftables
    /// `numgen random`), in both directions; 0 drops none. Replaces the previous setting.
    pub fn set_loss_per_million(&self, per_million: u32) {
        assert!(self.is_routed(), "loss is set on a routed WAN");
        assert!(per_million <= 1_000_000, "more than a million per million");
        require_tool("nft");
        let ns = self.ns();
        // Recreated each time: `delete` of a missing table fails, so create it first.
        ns.run(&["nft", "add", "table", "inet", TABLE]);
        ns.run(&["nft", "delete", "table", "inet", TABLE]);
        ns.run(&["nft", "add", "table", "inet", TABLE]);
        ns.run(&[
            "nft",
            "add chain inet crimpair forward { type filter hook forward priority 0; policy accept; }",
        ]);
        let rule = match per_million {
            0 => return,
            1_000_000 => format!("add rule inet {TABLE} forward counter drop"),
            n => format!("add rule inet {TABLE} forward numgen random mod 1000000 < {n} counter drop"),
        };
        ns.run(&["nft", &rule]);
    }

    /// Packets the loss rule dropped so far.
    pub fn dropped(&self) -> u64 {
        let out = self.ns().exec(&["nft", "list", "table", "inet", TABLE]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Set the MTU of the router's port to host `i` (the last hop towards it): packets with DF
    /// over it are answered with ICMP "fragmentation needed", as on a real path.
    pub fn set_port_mtu(&self, i: usize, mtu: u32) {
        let port = self
            .ports()
            .get(i)
            .cloned()
            .unwrap_or_else(|| panic!("no port to host {i}"));
        set_mtu(self.ns(), &port, mtu);
    }
}

/// Make `ifname` in `ns` segment and checksum in software everything it sends (TSO, GSO and the
/// tunnel segmentation offloads off), as a host whose NIC puts wire-sized packets on the wire:
/// the router then forwards, rate-limits and drops packets, not 64 KB super-packets.
pub fn segment_in_software(ns: &Netns, ifname: &str) {
    require_tool("ethtool");
    ns.run(&[
        "ethtool",
        "-K",
        ifname,
        "tso",
        "off",
        "gso",
        "off",
        "gro",
        "off",
        "tx-gre-segmentation",
        "off",
        "tx-gre-csum-segmentation",
        "off",
        "tx-ipxip4-segmentation",
        "off",
        "tx-udp_tnl-segmentation",
        "off",
        "tx-udp_tnl-csum-segmentation",
        "off",
        "tx-udp-segmentation",
        "off",
        "tx-gso-list",
        "off",
    ]);
}
