//! OpenFlow 1.3 controller roles on a real switch with two controllers (`--controller` twice):
//! the master gets PACKET_INs and may modify the switch, a slave may not, a stale generation id
//! is refused, and a new master takes over from the old one. The two controllers are scripted
//! OpenFlow peers (our controller does not elect masters yet), speaking the real wire format.
//! Runs as root, in a namespace.

use cloudrack_tests::*;
use cloudrack_wire::ofp::{self, Body};
use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

/// A FLOW_MOD for `mac` in network 0 out of port 1 from `peer`; the switch's answer to the
/// barrier behind it: Ok, or the error it sent.
fn flow_mod(peer: &mut OfPeer, mac: [u8; 6]) -> Result<(), (u16, u16)> {
    peer.request(Body::FlowMod(ofp::FlowMod {
        priority: 100,
        match_: ofp::Match::new()
            .with(ofp::Oxm::TunnelId { id: 0, mask: None })
            .with(ofp::Oxm::EthDst { mac, mask: None }),
        instructions: vec![ofp::Instruction::ApplyActions(vec![ofp::Action::output(1)])],
        ..ofp::FlowMod::default()
    }))
}

fn is_packet_in(b: &Body) -> bool {
    matches!(b, Body::PacketIn(_))
}

#[test]
fn the_master_controls_the_switch_and_a_new_master_takes_over() {
    let _logs = TestLogs::new("the_master_controls_the_switch_and_a_new_master_takes_over");
    let c = Cluster::new(HostNet::new(1), &["--plain-tcp"]);
    let ns = &c.net[0].ns;
    let (la, lb) = ns.enter(|| {
        (
            TcpListener::bind("127.0.0.1:0").unwrap(),
            TcpListener::bind("127.0.0.1:0").unwrap(),
        )
    });
    let addr = |l: &TcpListener| format!("tcp:127.0.0.1:{}", l.local_addr().unwrap().port());
    let (ca, cb) = (addr(&la), addr(&lb));
    let _sw = c.spawn_switch_as(0, &ca, Cluster::dpid(0), &[], &["--controller", &cb]);
    let mut a = OfPeer::accept(&la);
    let mut b = OfPeer::accept(&lb);
    let vm = c.vm_system(0, "v", "02:00:00:00:5d:01", "10.63.0.1/24", 0);
    let announce = || {
        send_garp(
            &vm.ns,
            "eth0",
            mac_bytes("02:00:00:00:5d:01"),
            Ipv4Addr::new(10, 63, 0, 1),
        )
    };

    // B becomes master (generation 1), A a slave.
    assert_eq!(b.role(ofp::OFPCR_ROLE_MASTER, 1), Ok(ofp::OFPCR_ROLE_MASTER));
    assert_eq!(a.role(ofp::OFPCR_ROLE_SLAVE, 1), Ok(ofp::OFPCR_ROLE_SLAVE));
    // A stale master request (generation 0) is refused.
    assert_eq!(
        a.role(ofp::OFPCR_ROLE_MASTER, 0),
        Err((ofp::OFPET_ROLE_REQUEST_FAILED, ofp::OFPRRFC_STALE))
    );
    // The slave may not modify the switch; the master may.
    assert_eq!(
        flow_mod(&mut a, [2, 0, 0, 0, 0x5d, 0xa]),
        Err((ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_IS_SLAVE))
    );
    assert_eq!(flow_mod(&mut b, [2, 0, 0, 0, 0x5d, 0xb]), Ok(()));
    let flows = c.ctl(0, &["flows"]);
    assert!(
        flows.contains("02:00:00:00:5d:0b") && !flows.contains("02:00:00:00:5d:0a"),
        "{flows}"
    );
    // cloudrack-ctl shows both connections and who is master.
    let ctls = c.ctl_json(0, &["controllers"]);
    let role_of = |addr: &str| {
        let port = addr.rsplit(':').next().unwrap().to_string();
        ctls.as_array()
            .unwrap()
            .iter()
            .find(|x| {
                x["controller"]
                    .as_str()
                    .is_some_and(|a| a.ends_with(&format!(":{port}")))
            })
            .map(|x| x["role"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{addr} missing from {ctls}"))
    };
    assert_eq!(role_of(&cb), "master", "{ctls}");
    assert_eq!(role_of(&ca), "slave", "{ctls}");
    // PACKET_INs go to the master only.
    announce();
    assert!(
        b.sees(Duration::from_secs(3), is_packet_in),
        "the master got no PACKET_IN"
    );
    assert!(
        !a.sees(Duration::from_millis(500), is_packet_in),
        "a slave got a PACKET_IN"
    );

    // Failover: A takes over with a newer generation; B is demoted.
    assert_eq!(a.role(ofp::OFPCR_ROLE_MASTER, 2), Ok(ofp::OFPCR_ROLE_MASTER));
    assert_eq!(b.role(ofp::OFPCR_ROLE_NOCHANGE, 0), Ok(ofp::OFPCR_ROLE_SLAVE));
    assert_eq!(
        flow_mod(&mut b, [2, 0, 0, 0, 0x5d, 0xc]),
        Err((ofp::OFPET_BAD_REQUEST, ofp::OFPBRC_IS_SLAVE))
    );
    assert_eq!(flow_mod(&mut a, [2, 0, 0, 0, 0x5d, 0xd]), Ok(()));
    announce();
    assert!(
        a.sees(Duration::from_secs(3), is_packet_in),
        "the new master got no PACKET_IN"
    );
    // The deposed master's late bid with its old generation fails.
    assert_eq!(
        b.role(ofp::OFPCR_ROLE_MASTER, 1),
        Err((ofp::OFPET_ROLE_REQUEST_FAILED, ofp::OFPRRFC_STALE))
    );
    // Flows installed by either master keep forwarding state: both entries are there.
    let flows = c.ctl(0, &["flows"]);
    assert!(
        flows.contains("02:00:00:00:5d:0b") && flows.contains("02:00:00:00:5d:0d"),
        "{flows}"
    );
}
