//! The controller channel is mutual TLS: a host without a valid certificate cannot register a
//! dpid or send PACKET_INs, and a host with a valid certificate cannot claim another host's
//! dpid. Runs as root, in namespaces, with a CA made by scripts/pki.sh for this run.

use cloudrack_tests::*;
use std::time::Duration;

/// The controller's server counters from its last state report.
fn server_counter(c: &Cluster, name: &str) -> u64 {
    c.controller_status()["server"][name].as_u64().unwrap_or(0)
}

/// Start a switch on host 2 with `tls` and `dpid`, give it time to try, and return whether it
/// says it is connected; the switch is stopped again.
fn try_switch(c: &Cluster, controller: &str, dpid: u64, tls: &[String]) -> bool {
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let mut sw = c.spawn_switch_as(2, controller, dpid, &tls, &[]);
    // The switch counts itself connected once it has sent its registration, a moment before
    // a controller that refuses it closes the connection (and it retries every ~1.6 s): a
    // registered switch stays connected, so three sightings in a row (200 ms) are asked for.
    let mut in_a_row = 0;
    let connected = wait_until(Duration::from_secs(4), Duration::from_millis(100), || {
        let up = c
            .try_ctl_json(2, &["show"])
            .is_some_and(|v| v["controller_connected"] == true);
        in_a_row = if up { in_a_row + 1 } else { 0 };
        in_a_row >= 3
    });
    sw.stop();
    let _ = std::fs::remove_file(c.ctl_path(2));
    connected
}

#[test]
fn only_a_certificate_that_names_the_dpid_registers_it() {
    let _logs = TestLogs::new("only_a_certificate_that_names_the_dpid_registers_it");
    // Hosts 0 and 1 run switches with their own certificates; host 2 is for the impostors.
    let c = Cluster::start_with(3, 2, &[], &[]);
    let a = c.vm_system(0, "a", "02:00:00:00:5c:01", "10.62.0.1/24", 0);
    let b = c.vm_system(1, "b", "02:00:00:00:5c:02", "10.62.0.2/24", 0);
    assert!(
        ping(&a.ns, "10.62.0.2", 2, Duration::from_secs(10)),
        "TLS deployment does not forward"
    );
    let tls_addr = c.controller_addr();
    assert!(tls_addr.starts_with("tls:"), "the cluster does not use TLS: {tls_addr}");
    let plain_addr = tls_addr.replacen("tls:", "tcp:", 1);
    let host2 = Cluster::dpid(2);

    // 1. Plain TCP, no certificate at all.
    assert!(
        !try_switch(&c, &plain_addr, host2, &[]),
        "a plain-TCP switch registered"
    );
    assert!(server_counter(&c, "tls_refused") >= 1, "{}", c.controller_status());

    // 2. A certificate from another CA (which also trusts nothing of ours).
    let rogue = scratch_dir("rogue-pki");
    run_cmd(&[
        "bash",
        workspace_dir().join("scripts/pki.sh").to_str().unwrap(),
        rogue.path().to_str().unwrap(),
        "--switch",
        &format!("{host2:x}"),
    ]);
    let rogue_file = |f: &str| rogue.path().join(f).display().to_string();
    let name = format!("switch-{host2:016x}");
    let rogue_tls = vec![
        "--tls-cert".to_string(),
        rogue_file(&format!("{name}.pem")),
        "--tls-key".into(),
        rogue_file(&format!("{name}.key")),
        "--tls-ca".into(),
        rogue_file("ca.pem"),
    ];
    let before = server_counter(&c, "tls_refused");
    assert!(
        !try_switch(&c, &tls_addr, host2, &rogue_tls),
        "a switch from another CA registered"
    );
    let refused = wait_until(Duration::from_secs(3), Duration::from_millis(100), || {
        server_counter(&c, "tls_refused") > before
    });
    assert!(
        refused,
        "the controller did not count the rogue handshake: {}",
        c.controller_status()
    );

    // 3. A valid certificate (host 1's) used to claim host 0's dpid.
    let stolen = c.tls_args(&format!("switch-{:016x}", Cluster::dpid(1)));
    assert!(
        !try_switch(&c, &tls_addr, Cluster::dpid(0), &stolen),
        "host 0's dpid was taken over"
    );
    let refused = wait_until(Duration::from_secs(3), Duration::from_millis(100), || {
        server_counter(&c, "identity_refused") >= 1
    });
    assert!(refused, "no identity refusal counted: {}", c.controller_status());
    let ctl = c.controller.as_ref().unwrap();
    assert!(
        ctl.logs().contains("certificate does not name the dpid"),
        "no log line for the refused identity"
    );
    // Host 0 kept its registration and its traffic.
    assert!(
        ping(&a.ns, "10.62.0.2", 3, Duration::from_secs(5)),
        "host 0 lost forwarding"
    );
    assert!(
        c.ctl_json(0, &["show"])["controller_connected"] == true,
        "host 0 was disconnected by the impostor"
    );
    let hosts = c.controller_status()["hosts"].clone();
    let registered: Vec<&str> = hosts
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["dpid"].as_str())
        .collect();
    assert!(
        !registered.contains(&format!("{host2:016x}").as_str()),
        "an impostor registered host 2's dpid: {registered:?}"
    );

    // 4. Host 2 with its own certificate: welcome.
    let own = c.tls_args(&format!("switch-{host2:016x}"));
    let own: Vec<&str> = own.iter().map(String::as_str).collect();
    let _sw = c.spawn_switch_as(2, &tls_addr, host2, &own, &[]);
    let ok = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        c.try_ctl_json(2, &["show"])
            .is_some_and(|v| v["controller_connected"] == true)
    });
    assert!(ok, "host 2 with its own certificate did not register");
    let d = c.vm_system(2, "d", "02:00:00:00:5c:04", "10.62.0.4/24", 0);
    assert!(
        ping(&d.ns, "10.62.0.2", 2, Duration::from_secs(10)),
        "host 2 does not forward"
    );
    println!("controller server counters: {}", c.controller_status()["server"]);
    drop(b);
}

#[test]
fn a_controller_without_certificates_refuses_to_start_unless_told_plain() {
    let bin = bin_path("cloudrack-controller");
    let out = std::process::Command::new(&bin)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("run cloudrack-controller");
    assert!(
        !out.status.success(),
        "the controller started without TLS or --plain-tcp"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--tls-cert") && err.contains("--plain-tcp"),
        "the error does not say what to do: {err}"
    );
}
