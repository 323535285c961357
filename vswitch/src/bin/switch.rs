//! cloudrack-switch: the per-host Cloud Rack virtual switch daemon.

use anyhow::{bail, Context};
use clap::Parser;
use cloudrack_vswitch::dp::{Datapath, DatapathConfig};
use cloudrack_vswitch::os as sys;
use cloudrack_vswitch::switch::{Switch, SwitchConfig};
use cloudrack_vswitch::tunnel::GreSocket;
use cloudrack_vswitch::{ctl, ofp};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "cloudrack-switch",
    version,
    about = "Cloud Rack per-host virtual switch: VM ports, GRE tunnels to other hosts, OpenFlow 1.3 to the controller",
    long_about = "Cloud Rack per-host virtual switch.\n\n\
        Attach VM taps and veths with `cloudrack-ctl add-port`; the controller learns where every \
        VM MAC is and installs forwarding; traffic between hosts crosses GRE tunnels (key = virtual \
        network) that the controller sets up on demand. If the controller goes away, installed \
        flows keep forwarding (fail-secure) and the switch reconnects with backoff.\n\n\
        Every GRE packet is a whole IPv4 packet with DF set that fits the path MTU to its remote \
        (learned from the kernel, which learns it from ICMP): TCP super-frames are cut into \
        segments, and joined again on receive. Set VM MTUs to the path MTU minus 42 (1458 on a \
        1500-byte underlay); a larger IPv4 packet that may be fragmented is, one that may not is \
        answered with ICMP \"fragmentation needed\".\n\nLog level: RUST_LOG (default info)."
)]
struct Args {
    /// Controller to connect to: tls:IP:PORT (mutual TLS; needs --tls-cert, --tls-key,
    /// --tls-ca) or tcp:IP:PORT (plain TCP, for labs). Repeat for several controllers.
    #[arg(long = "controller", value_name = "tls:IP:PORT", required = true)]
    controllers: Vec<String>,
    /// This switch's certificate (PEM), naming its dpid as DPID.dpid.cloudrack (scripts/pki.sh).
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM, PKCS#8).
    #[arg(long, value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// The CA certificate the controller's certificate must come from (PEM).
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// The name the controller's certificate must carry.
    #[arg(long, default_value = cloudrack_channel::CONTROLLER_NAME)]
    tls_controller_name: String,
    /// This host's underlay IPv4 address: tunnels start and end here.
    #[arg(long)]
    underlay_ip: Ipv4Addr,
    /// Datapath id in hex (default: the underlay interface's MAC in the low 48 bits).
    #[arg(long, value_name = "HEX")]
    dpid: Option<String>,
    /// Management socket for cloudrack-ctl.
    #[arg(long, default_value = "/run/cloudrack/switch.sock")]
    ctl: PathBuf,
    /// Passive OpenFlow listener for inspection tools (e.g. 127.0.0.1:6634 for ovs-ofctl).
    #[arg(long, value_name = "IP:PORT")]
    ofp_listen: Option<SocketAddr>,
    /// Datapath worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Pin the datapath workers, one CPU each: alone, worker N to CPU N (mod the CPU count);
    /// with a list such as `2,3` or `4-7`, to those CPUs in turn (e.g. cores kept free of
    /// other work with isolcpus).
    #[arg(long, value_name = "CPUS", num_args = 0..=1, default_missing_value = "")]
    cpu_pin: Option<String>,
    /// PACKET_INs per second allowed from one port (table misses beyond it are counted and dropped).
    #[arg(long, default_value_t = 1000)]
    packet_in_rate: u32,
    /// Most flow entries, all tables together (beyond it FLOW_MOD fails with TABLE_FULL).
    #[arg(long, default_value_t = 1_000_000)]
    max_flows: usize,
    /// Most local ports.
    #[arg(long, default_value_t = 4096)]
    max_ports: usize,
    /// Most tunnels.
    #[arg(long, default_value_t = 4096)]
    max_tunnels: usize,
    /// Cap on the path MTU of every tunnel, in bytes of outer IPv4 packet. The switch learns
    /// each remote's path MTU from the kernel (the underlay route's MTU, lowered by ICMP
    /// "fragmentation needed" from routers on the way); set this where routers drop that ICMP
    /// (a PMTU black hole) or to leave room for another encapsulation further on.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(576..=65535))]
    underlay_mtu: Option<u32>,
    /// Accepted for old scripts, and ignored: offloaded frames are always cut to the path MTU.
    #[arg(long, hide = true)]
    tunnel_mtu_segmentation: bool,
    /// Receive GRE on one raw socket read by one worker, instead of spreading it over all
    /// workers through AF_PACKET fanout on the underlay interface (the fallback the switch
    /// takes by itself when fanout cannot be set up).
    #[arg(long)]
    gre_raw_receive: bool,
    /// Let the host's IP stack process GRE to the underlay address as well. By default, once
    /// the fanout sockets have a packet, a tc ingress (tcx) program on the underlay interface
    /// drops it, so the kernel does not reassemble and deliver every tunnel packet a second
    /// time; it is detached when the switch exits.
    #[arg(long)]
    keep_host_gre: bool,
}

/// CPUs the system has, online or not.
fn configured_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    n.max(1) as usize
}

/// `--cpu-pin`'s list: CPU numbers and ranges, comma-separated (`0,2,4-7`), each below
/// `n_cpus`. Empty: one CPU per worker by its number.
fn parse_cpu_list(s: &str, n_cpus: usize) -> anyhow::Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("--cpu-pin: {part:?} is not a CPU number or range like 2-5");
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (
                a.parse::<usize>().with_context(bad)?,
                b.parse::<usize>().with_context(bad)?,
            ),
            None => {
                let n = part.parse::<usize>().with_context(bad)?;
                (n, n)
            }
        };
        if lo > hi {
            bail!("--cpu-pin: range {part:?} runs backwards");
        }
        if hi >= n_cpus {
            bail!(
                "--cpu-pin: CPU {hi} does not exist (this machine has CPUs 0-{})",
                n_cpus - 1
            );
        }
        cpus.extend(lo..=hi);
    }
    Ok(cpus)
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// `tls:IP[:PORT]`, `ssl:IP[:PORT]` (Open vSwitch's spelling) or `tcp:IP[:PORT]` → (TLS?, address).
fn parse_controller(s: &str) -> anyhow::Result<(bool, SocketAddr)> {
    let bad = || format!("controller {s:?} must look like tls:IP:PORT or tcp:IP:PORT");
    let (tls, rest) = match s.split_once(':') {
        Some(("tls" | "ssl", rest)) => (true, rest),
        Some(("tcp", rest)) => (false, rest),
        _ => bail!(bad()),
    };
    // IP alone means the standard OpenFlow port.
    if let Ok(ip) = rest.parse::<Ipv4Addr>() {
        return Ok((tls, SocketAddr::from((ip, 6653))));
    }
    Ok((tls, rest.parse().with_context(bad)?))
}

/// Each controller with its transport; TLS ones share one client configuration.
fn controller_targets(args: &Args) -> anyhow::Result<Vec<ofp::ControllerTarget>> {
    let parsed = args
        .controllers
        .iter()
        .map(|c| parse_controller(c))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tls = if parsed.iter().any(|(tls, _)| *tls) {
        let (Some(cert), Some(key), Some(ca)) = (&args.tls_cert, &args.tls_key, &args.tls_ca) else {
            bail!("a tls: controller needs --tls-cert, --tls-key and --tls-ca (scripts/pki.sh makes them)");
        };
        let files = cloudrack_channel::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        };
        Some(cloudrack_channel::client_config(&files)?)
    } else {
        None
    };
    Ok(parsed
        .into_iter()
        .map(|(is_tls, addr)| ofp::ControllerTarget {
            addr,
            tls: if is_tls {
                tls.clone().map(|c| (c, args.tls_controller_name.clone()))
            } else {
                None
            },
        })
        .collect())
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = run(Args::parse()) {
        error!("{e:#}");
        eprintln!("cloudrack-switch: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let controllers = controller_targets(&args)?;
    let underlay_if = sys::iface_with_ipv4(args.underlay_ip)?.with_context(|| {
        format!(
            "no interface has the underlay address {}; assign it first",
            args.underlay_ip
        )
    })?;
    let underlay_mac = sys::mac(&underlay_if).with_context(|| format!("reading the MAC of {underlay_if}"))?;
    let underlay_mtu = sys::mtu(&underlay_if).unwrap_or(1500);
    if args.tunnel_mtu_segmentation {
        info!("--tunnel-mtu-segmentation is ignored: super-frames are always cut to the path MTU");
    }
    let dpid = match &args.dpid {
        Some(h) => {
            u64::from_str_radix(h.trim_start_matches("0x"), 16).with_context(|| format!("--dpid {h:?} is not hex"))?
        }
        None => underlay_mac.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64),
    };
    if args.workers == 0 || args.workers > 64 {
        bail!("--workers must be 1..=64");
    }
    let cpu_pin = match &args.cpu_pin {
        None => None,
        Some(list) => Some(parse_cpu_list(list, configured_cpus())?),
    };
    let gre = GreSocket::open(args.underlay_ip).context("opening the raw GRE socket (needs root or CAP_NET_RAW)")?;
    let (dp, channels) = Datapath::start(DatapathConfig {
        workers: args.workers,
        gre: Some(gre),
        gre_fanout: (!args.gre_raw_receive).then(|| (underlay_if.clone(), args.underlay_ip)),
        claim_host_gre: !args.keep_host_gre,
        underlay_ip: args.underlay_ip,
        underlay_mtu,
        underlay_mtu_cap: args.underlay_mtu,
        packet_in_rate: args.packet_in_rate,
        packet_in_burst: args.packet_in_rate.max(10),
        cpu_pin,
    })?;
    let switch = Arc::new(Switch::new(
        SwitchConfig {
            dpid,
            underlay_ip: args.underlay_ip,
            underlay_mac,
            max_ports: args.max_ports,
            max_tunnels: args.max_tunnels,
            max_flows: args.max_flows,
        },
        dp,
    ));
    let hub = ofp::start(
        switch.clone(),
        controllers.clone(),
        args.ofp_listen,
        channels.packet_in_rx,
    )?;
    ctl::serve(switch.clone(), hub, &args.ctl).with_context(|| format!("management socket {}", args.ctl.display()))?;
    info!(
        dpid = format!("{dpid:016x}"),
        underlay = %args.underlay_ip,
        underlay_if,
        underlay_mtu,
        underlay_mtu_cap = ?args.underlay_mtu,
        workers = args.workers,
        controllers = ?controllers,
        "cloudrack-switch running"
    );

    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    // The control loop: datapath events and timers (flow expiry, idle tunnels, vanished ports).
    let tick = Duration::from_millis(200);
    let mut last_tick = std::time::Instant::now();
    while !STOP.load(Ordering::Relaxed) {
        match channels.events_rx.recv_timeout(tick) {
            Ok(ev) => switch.handle_event(ev),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        if last_tick.elapsed() >= tick {
            last_tick = std::time::Instant::now();
            switch.tick();
        }
    }
    info!("stopping");
    let _ = std::fs::remove_file(&args.ctl);
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn cpu_lists_parse_and_are_checked() {
        assert_eq!(parse_cpu_list("", 4).unwrap(), Vec::<usize>::new());
        assert_eq!(parse_cpu_list("2,3", 4).unwrap(), vec![2, 3]);
        assert_eq!(parse_cpu_list("0, 2-3", 4).unwrap(), vec![0, 2, 3]);
        for bad in ["4", "1-4", "3-1", "x", "1-", "-1"] {
            assert!(parse_cpu_list(bad, 4).is_err(), "{bad:?} accepted");
        }
    }
}
