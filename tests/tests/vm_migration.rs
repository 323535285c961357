//! Real QEMU VMs on Cloud Rack switches, and a live migration under a TCP transfer.
//!
//! Three host namespaces on a WAN, a controller and a switch per host. VM1 (QEMU, TCG, 256 MB,
//! 1 vCPU, guest MTU 1458, offloads at their defaults) boots on host 0, VM2 on host 1; QEMU
//! creates their taps in the host namespaces and the switches take them as `system` ports. The
//! guests ping each other through the switches. Then VM1 sends VM2 a known ~15 MB stream over
//! TCP (busybox `nc`, rate-limited so it lasts about 15 s under TCG); while it runs, VM2 is
//! live-migrated to host 2 (destination QEMU started with `--incoming`, its tap attached to
//! host 2's switch before the migration; the source's port removed after it). The transfer must
//! finish with the receiver's SHA-256 equal to the one computed here, and the controller must
//! log the move. Runs as root; fails loudly without QEMU. About a minute.

use cloudrack_tests::*;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

const VM1_MAC: &str = "52:54:00:0c:00:01";
const VM2_MAC: &str = "52:54:00:0c:00:02";
const VM1_IP: &str = "10.12.0.1";
const VM2_IP: &str = "10.12.0.2";
/// 1500-byte underlay minus 42 bytes of GRE (outer IPv4 20 + GRE 8 + inner Ethernet 14).
const GUEST_MTU: u32 = 1458;
const TCP_PORT: u16 = 5001;
const MIGRATION_PORT: u16 = 4444;
/// The stream: CHUNKS times "chunk I\n" followed by `seq 1 BLOCK_LINES` (every line differs
/// from its neighbours and every chunk is numbered, so a lost, repeated or reordered piece
/// changes the hash). The guest sleeps CHUNK_PAUSE_US after each chunk.
const BLOCK_LINES: u32 = 12_000;
const CHUNKS: u32 = 250;
const CHUNK_PAUSE_US: u32 = 20_000;
const SECOND: Duration = Duration::from_secs(1);

fn block() -> String {
    let mut b = String::new();
    for n in 1..=BLOCK_LINES {
        writeln!(b, "{n}").unwrap();
    }
    b
}

/// The bytes the sender produces.
fn expected_stream() -> Vec<u8> {
    let block = block();
    let mut out = Vec::with_capacity(CHUNKS as usize * (block.len() + 12));
    for i in 0..CHUNKS {
        out.extend_from_slice(format!("chunk {i}\n").as_bytes());
        out.extend_from_slice(block.as_bytes());
    }
    out
}

/// SHA-256 (hex) of `data`, by the host's `sha256sum`.
fn sha256_hex(data: &[u8]) -> String {
    let mut child = std::process::Command::new(require_tool("sha256sum"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sha256sum");
    child.stdin.take().unwrap().write_all(data).expect("feed sha256sum");
    let out = child.wait_with_output().expect("sha256sum");
    assert!(out.status.success(), "sha256sum failed");
    first_word(&String::from_utf8_lossy(&out.stdout))
}

fn first_word(s: &str) -> String {
    s.split_whitespace().next().unwrap_or("").to_string()
}

/// The generator loop run in the sender guest (`/tmp/block` holds `seq 1 BLOCK_LINES`).
fn generator(pause_us: u32) -> String {
    let pause = if pause_us > 0 {
        format!("usleep {pause_us}; ")
    } else {
        String::new()
    };
    format!("i=0; while [ $i -lt {CHUNKS} ]; do echo \"chunk $i\"; cat /tmp/block; {pause}i=$((i+1)); done")
}

/// Pings `target` from inside `vm` (busybox ping); retries while the first packets wait for
/// ARP across hosts and the tunnel. Returns the statistics lines.
fn guest_ping(vm: &QemuVm, target: &str) -> String {
    let mut last = None;
    for _ in 0..4 {
        let o = vm.exec(&format!("ping -c 3 -W 3 {target}"), Duration::from_secs(20));
        if o.ok() {
            return o
                .stdout
                .lines()
                .filter(|l| l.contains("packets transmitted") || l.contains("round-trip"))
                .collect::<Vec<_>>()
                .join("; ");
        }
        last = Some(o);
        std::thread::sleep(Duration::from_millis(500));
    }
    let o = last.unwrap();
    panic!(
        "VM {} cannot ping {target} through the switches (exit {}):\n{}{}",
        vm.spec.name, o.code, o.stdout, o.stderr
    );
}

/// Bytes the receiver has written so far (0 before the file exists).
fn rx_bytes(vm: &QemuVm) -> u64 {
    let o = vm.exec("wc -c < /tmp/rx 2>/dev/null || echo 0", Duration::from_secs(20));
    o.stdout.trim().parse().unwrap_or(0)
}

/// Switch state of every host, for failure reports.
fn dump_switches(c: &Cluster) {
    for h in 0..c.net.len() {
        for what in ["show", "stats", "flows", "tunnels"] {
            match c.try_ctl_json(h, &[what]) {
                Some(v) => eprintln!("host {h} `cloudrack-ctl {what} --json`: {v}"),
                None => eprintln!("host {h} `cloudrack-ctl {what} --json` failed"),
            }
        }
    }
}

/// Nonzero datapath counters of host `h`, e.g. "packet_in_sent=12 drop_no_port=1".
fn nonzero_counters(c: &Cluster, h: usize) -> String {
    let s = c.ctl_json(h, &["stats"]);
    let mut out = Vec::new();
    if let Some(dp) = s["datapath"].as_object() {
        for (k, v) in dp {
            if v.as_u64().unwrap_or(0) != 0 {
                out.push(format!("{k}={v}"));
            }
        }
    }
    out.join(" ")
}

fn ms(v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.1} ms"),
        None => "n/a".to_string(),
    }
}

/// Live migration under TCG (no KVM here) sometimes corrupts the guest's memory: the migrated
/// guest's kernel panics right after RESUME (seen in about 1 of 15 migrations, with or without
/// traffic through Cloud Rack; the switch only hands frames to a tap and cannot reach guest
/// memory). When, and only when, the migrated guest's console shows a kernel panic, the whole
/// scenario runs again with fresh VMs (at most twice more: two such panics in a row were seen
/// once in CI), saying so loudly. Any other failure fails the test.
#[test]
fn live_migration_during_tcp_transfer_keeps_every_byte() {
    const ATTEMPTS: usize = 3;
    for attempt in 1..=ATTEMPTS {
        let started = std::time::SystemTime::now();
        let result = std::panic::catch_unwind(migration_scenario);
        let Err(panic) = result else { return };
        let crashed = guest_kernel_panicked_since(started);
        if crashed && attempt < ATTEMPTS {
            eprintln!(
                "##### attempt {attempt}: the migrated guest's kernel panicked after RESUME (QEMU TCG migration); \
                 running the scenario again with fresh VMs #####"
            );
            continue;
        }
        std::panic::resume_unwind(panic);
    }
}

/// Whether a migrated guest's console (in a test directory kept after a failure) written since
/// `since` shows a kernel panic.
fn guest_kernel_panicked_since(since: std::time::SystemTime) -> bool {
    let Ok(dirs) = std::fs::read_dir(harness_tmp_root()) else {
        return false;
    };
    dirs.flatten()
        .filter(|d| d.file_name().to_string_lossy().starts_with("vm_live_migration-"))
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .filter(|vm| vm.file_name().to_string_lossy().starts_with("in-"))
        .map(|vm| vm.path().join("console.log"))
        .filter(|log| log.metadata().and_then(|m| m.modified()).is_ok_and(|t| t >= since))
        .any(|log| std::fs::read_to_string(log).is_ok_and(|text| text.contains("Kernel panic")))
}

fn migration_scenario() {
    let _logs = TestLogs::new("vm_live_migration");
    let test_started = Instant::now();
    require_qemu();
    ensure_guest_image();
    let expected = expected_stream();
    let expected_sha = sha256_hex(&expected);
    let block_sha = sha256_hex(block().as_bytes());

    let mut c = Cluster::start(3, &[]);

    // Two VMs: VM1 on host 0, VM2 on host 1, their QEMU taps attached as system ports.
    let spec1 = VmSpec::new("vm1", VM1_MAC, &format!("{VM1_IP}/24"), Some(GUEST_MTU));
    let spec2 = VmSpec::new("vm2", VM2_MAC, &format!("{VM2_IP}/24"), Some(GUEST_MTU));
    let tap1 = format!("qa{}", unique_tag());
    let tap2 = format!("qb{}", unique_tag());
    let tap3 = format!("qc{}", unique_tag());
    let booted = Instant::now();
    let vm1 = QemuVm::start(&c.net[0].ns, &tap1, &spec1, None);
    c.ctl(0, &["add-port", &tap1, "--kind", "system", "--mac", VM1_MAC]);
    let mut vm2 = QemuVm::start(&c.net[1].ns, &tap2, &spec2, None);
    c.ctl(1, &["add-port", &tap2, "--kind", "system", "--mac", VM2_MAC]);
    vm1.wait_ready(Duration::from_secs(120));
    vm2.wait_ready(Duration::from_secs(120));
    println!(
        "VM1 (host 0, tap {tap1}) and VM2 (host 1, tap {tap2}) booted, agents answer after {:.1} s",
        booted.elapsed().as_secs_f64()
    );
    for vm in [&vm1, &vm2] {
        let mtu = vm.run("cat /sys/class/net/eth0/mtu", 10 * SECOND);
        assert_eq!(
            mtu.trim(),
            GUEST_MTU.to_string(),
            "VM {} has the wrong MTU",
            vm.spec.name
        );
    }
    let offloads = vm1.run(
        "ethtool -k eth0 | grep -E '^(tx-checksumming|tcp-segmentation-offload|generic-receive-offload):' | tr '\\n' ' '",
        10 * SECOND,
    );
    println!("guest MTU {GUEST_MTU}; guest offloads (defaults): {}", offloads.trim());

    // Connectivity both ways through the switches.
    println!("ping VM1 -> VM2: {}", guest_ping(&vm1, VM2_IP));
    println!("ping VM2 -> VM1: {}", guest_ping(&vm2, VM1_IP));

    // Receiver on VM2: nc's stdin is a FIFO opened read-write, which never ends (busybox nc
    // would otherwise half-close at once, and the sender stop at the receiver's FIN).
    vm2.run(
        &format!(
            "rm -f /tmp/rx /tmp/rx.rc /tmp/rx.err /tmp/rx.fifo; mkfifo /tmp/rx.fifo; \
             (nc -l -p {TCP_PORT} <>/tmp/rx.fifo >/tmp/rx 2>/tmp/rx.err; echo $? >/tmp/rx.rc) \
             </dev/null >/dev/null 2>&1 &"
        ),
        10 * SECOND,
    );
    vm2.run(
        &format!(
            "for i in $(seq 100); do netstat -ltn | grep -q ':{TCP_PORT} ' && exit 0; usleep 100000; done; exit 1"
        ),
        20 * SECOND,
    );
    // Sender on VM1: the generator, rate-limited, into nc.
    let guest_block_sha = first_word(&vm1.run(
        &format!("seq 1 {BLOCK_LINES} > /tmp/block && sha256sum /tmp/block"),
        30 * SECOND,
    ));
    assert_eq!(
        guest_block_sha, block_sha,
        "the guest's `seq` writes other bytes than expected"
    );
    vm1.run(
        &format!(
            "rm -f /tmp/tx.rc /tmp/tx.err; ({} | nc {VM2_IP} {TCP_PORT} >/dev/null 2>/tmp/tx.err; \
             echo $? >/tmp/tx.rc) </dev/null >/dev/null 2>&1 &",
            generator(CHUNK_PAUSE_US)
        ),
        10 * SECOND,
    );
    let transfer_started = Instant::now();
    println!(
        "transfer started: VM1 -> VM2, {} bytes ({CHUNKS} chunks, {CHUNK_PAUSE_US} us pause each), sha256 {expected_sha}",
        expected.len()
    );

    // Wait until it is well under way.
    let mut at_start = 0;
    let flowing = wait_until(Duration::from_secs(30), Duration::from_millis(300), || {
        at_start = rx_bytes(&vm2);
        at_start >= 1 << 20
    });
    if !flowing {
        dump_switches(&c);
        panic!(
            "the transfer is not flowing: {at_start} bytes after {:?}; sender: {}",
            transfer_started.elapsed(),
            vm1.exec("cat /tmp/tx.rc /tmp/tx.err 2>&1", 10 * SECOND).stdout
        );
    }

    // Migration destination on host 2, its tap on host 2's switch before the migration, bound to
    // the VM (only a bound port may take its MAC over).
    let uri = format!("tcp:{}:{MIGRATION_PORT}", c.net[2].underlay_ip);
    let vm2_dst = QemuVm::start(&c.net[2].ns, &tap3, &spec2, Some(&uri));
    c.ctl(2, &["add-port", &tap3, "--kind", "system", "--mac", VM2_MAC]);
    let before_migration = rx_bytes(&vm2);
    let migration_began = transfer_started.elapsed();
    let mig = migrate(&vm2, &vm2_dst, &uri, &[]);
    let migration_ended = transfer_started.elapsed();
    // The source is paused for good: its port goes, then its QEMU.
    c.ctl(1, &["del-port", &tap2]);
    vm2.stop();
    assert!(!vm2.process_alive(), "the source QEMU still runs");

    println!(
        "migration host 1 -> host 2 from {:.1} s to {:.1} s into the transfer ({before_migration} bytes received \
         when it began): total {}, QEMU downtime {}, STOP->RESUME {}, RAM transferred {} bytes",
        migration_began.as_secs_f64(),
        migration_ended.as_secs_f64(),
        ms(&mig["total_time_ms"]),
        ms(&mig["downtime_ms"]),
        ms(&mig["pause_ms"]),
        mig["ram"]["transferred"]
    );
    // The transfer must have spanned the migration.
    let sender = vm1.exec("cat /tmp/tx.rc 2>/dev/null || echo running", 10 * SECOND);
    assert_eq!(
        sender.stdout.trim(),
        "running",
        "the transfer ended before the migration did (make the stream longer): {}",
        sender.stdout
    );

    // The controller saw VM2 on host 2 and re-pointed every switch.
    let ctl = c.controller.as_mut().unwrap();
    let logged = ctl.wait_for_log("MAC move re-pointed on every switch", Duration::from_secs(10));
    let move_lines: Vec<String> = ctl
        .logs()
        .lines()
        .filter(|l| l.contains("move_repointed_ms"))
        .map(|l| l.trim().to_string())
        .collect();
    if !logged {
        dump_switches(&c);
    }
    assert!(logged, "the controller logged no MAC move after the migration");
    for l in &move_lines {
        println!("controller: {l}");
    }

    // The transfer completes on the migrated VM.
    let mut rc = String::new();
    let mut progress = 0;
    let done = wait_until(Duration::from_secs(120), Duration::from_millis(500), || {
        let o = vm2_dst.exec(
            "cat /tmp/rx.rc 2>/dev/null || echo running; wc -c < /tmp/rx",
            10 * SECOND,
        );
        let mut lines = o.stdout.lines();
        rc = lines.next().unwrap_or("").trim().to_string();
        progress = lines.next().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
        !rc.is_empty() && rc != "running"
    });
    let transfer_time = transfer_started.elapsed();
    if !done {
        dump_switches(&c);
        panic!(
            "the transfer did not complete after the migration: the receiver has {progress} of {} bytes after {:.1} s; \
             sender: {}",
            expected.len(),
            transfer_time.as_secs_f64(),
            vm1.exec("cat /tmp/tx.rc /tmp/tx.err 2>&1", 10 * SECOND).stdout
        );
    }
    let rx = vm2_dst.run(
        "wc -c < /tmp/rx; sha256sum /tmp/rx | cut -d' ' -f1; cat /tmp/rx.err",
        60 * SECOND,
    );
    let mut lines = rx.lines();
    let rx_len: u64 = lines.next().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
    let rx_sha = lines.next().unwrap_or("").trim().to_string();
    let rx_err: Vec<&str> = lines.collect();
    let sender_ok = wait_until(Duration::from_secs(20), Duration::from_millis(500), || {
        vm1.exec("cat /tmp/tx.rc", 10 * SECOND).stdout.trim() == "0"
    });
    let tx = vm1.exec("cat /tmp/tx.rc /tmp/tx.err 2>&1", 10 * SECOND).stdout;
    println!(
        "transfer: {rx_len} bytes in {:.1} s ({:.2} Mbit/s), receiver sha256 {rx_sha}, nc exit codes: receiver {rc}, \
         sender {}",
        transfer_time.as_secs_f64(),
        rx_len as f64 * 8.0 / transfer_time.as_secs_f64() / 1e6,
        tx.trim()
    );
    if rx_len != expected.len() as u64 || rx_sha != expected_sha {
        // Where does it differ? Regenerate the stream in the guest (no pauses) and compare.
        let diag = vm2_dst.exec(
            &format!(
                "{} > /tmp/exp; cmp /tmp/exp /tmp/rx; grep -c '^chunk ' /tmp/rx; grep '^chunk ' /tmp/rx | tail -n 3",
                generator(0)
            ),
            90 * SECOND,
        );
        dump_switches(&c);
        panic!(
            "the stream arrived damaged: {rx_len} of {} bytes, sha256 {rx_sha} (expected {expected_sha}); \
             receiver stderr {rx_err:?}; in the guest: {}",
            expected.len(),
            diag.stdout
        );
    }
    assert_eq!(rc, "0", "the receiver's nc failed: {rx_err:?}");
    assert!(sender_ok, "the sender's nc failed: {tx}");

    // VM2 is reachable at its new host, both ways, and nothing was malformed on the way.
    println!("after the migration, ping VM1 -> VM2: {}", guest_ping(&vm1, VM2_IP));
    println!("after the migration, ping VM2 -> VM1: {}", guest_ping(&vm2_dst, VM1_IP));
    for h in 0..3 {
        println!("host {h} datapath counters: {}", nonzero_counters(&c, h));
        let s = c.ctl_json(h, &["stats"]);
        assert_eq!(s["datapath"]["gre_rx_malformed"], 0, "host {h}: {s}");
        assert_eq!(s["datapath"]["drop_offload"], 0, "host {h}: {s}");
    }
    let flows = c.ctl_json(1, &["flows"]);
    if let Some(entry) = flows.as_array().and_then(|a| a.iter().find(|f| f["mac"] == VM2_MAC)) {
        println!("host 1 (old host) entry for VM2 now: {entry}");
    }
    println!("test took {:.1} s", test_started.elapsed().as_secs_f64());
}
