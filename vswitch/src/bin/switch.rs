//! cloudrack-switch: the per-host Cloud Rack virtual switch daemon.

use anyhow::{bail, Context};
use clap::Parser;
use cloudrack_vswitch::dp::{Datapath, DatapathConfig};
use cloudrack_vswitch::port::sys;
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
        Set VM MTUs to the underlay MTU minus 42 (1458 on a 1500-byte underlay); larger frames \
        still arrive, as fragmented GRE.\n\nLog level: RUST_LOG (default info)."
)]
struct Args {
    /// Controller to connect to, as tcp:IP:PORT (repeat for several controllers).
    #[arg(long = "controller", value_name = "tcp:IP:PORT", required = true)]
    controllers: Vec<String>,
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
    /// Pin worker N to CPU N (mod the CPU count).
    #[arg(long)]
    cpu_pin: bool,
    /// PACKET_INs per second allowed from one port (table misses beyond it are counted and dropped).
    #[arg(long, default_value_t = 1000)]
    packet_in_rate: u32,
    /// Most flows in the table.
    #[arg(long, default_value_t = 100_000)]
    max_flows: usize,
    /// Most local ports.
    #[arg(long, default_value_t = 4096)]
    max_ports: usize,
    /// Most tunnels.
    #[arg(long, default_value_t = 4096)]
    max_tunnels: usize,
    /// Cut offloaded (TSO/GSO) frames to the underlay MTU on every tunnel. By default they
    /// cross tunnels to other Cloud Rack hosts whole, with their offload metadata, and the
    /// underlay IP layer fragments them; static tunnels (e.g. to Open vSwitch) always cut.
    #[arg(long)]
    tunnel_mtu_segmentation: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn parse_controller(s: &str) -> anyhow::Result<SocketAddr> {
    let rest = s
        .strip_prefix("tcp:")
        .with_context(|| format!("controller {s:?} must look like tcp:IP:PORT"))?;
    // Accept tcp:IP too, with the standard OpenFlow port.
    if let Ok(ip) = rest.parse::<Ipv4Addr>() {
        return Ok(SocketAddr::from((ip, 6653)));
    }
    rest.parse()
        .with_context(|| format!("controller {s:?} must look like tcp:IP:PORT"))
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
    let controllers = args
        .controllers
        .iter()
        .map(|c| parse_controller(c))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let underlay_if = sys::iface_with_ipv4(args.underlay_ip)?.with_context(|| {
        format!(
            "no interface has the underlay address {}; assign it first",
            args.underlay_ip
        )
    })?;
    let underlay_mac = sys::mac(&underlay_if).with_context(|| format!("reading the MAC of {underlay_if}"))?;
    let underlay_mtu = sys::mtu(&underlay_if).unwrap_or(1500) as usize;
    let dpid = match &args.dpid {
        Some(h) => {
            u64::from_str_radix(h.trim_start_matches("0x"), 16).with_context(|| format!("--dpid {h:?} is not hex"))?
        }
        None => underlay_mac.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64),
    };
    if args.workers == 0 || args.workers > 64 {
        bail!("--workers must be 1..=64");
    }
    let gre = GreSocket::open(args.underlay_ip).context("opening the raw GRE socket (needs root or CAP_NET_RAW)")?;
    let (dp, channels) = Datapath::start(DatapathConfig {
        workers: args.workers,
        gre: Some(gre),
        underlay_mtu,
        packet_in_rate: args.packet_in_rate,
        packet_in_burst: args.packet_in_rate.max(10),
        cpu_pin: args.cpu_pin,
    })?;
    let switch = Arc::new(Switch::new(
        SwitchConfig {
            dpid,
            underlay_ip: args.underlay_ip,
            underlay_mac,
            max_ports: args.max_ports,
            max_tunnels: args.max_tunnels,
            max_flows: args.max_flows,
            tunnel_offloads: !args.tunnel_mtu_segmentation,
        },
        dp,
    ));
    ctl::serve(switch.clone(), &args.ctl).with_context(|| format!("management socket {}", args.ctl.display()))?;
    ofp::start(
        switch.clone(),
        controllers.clone(),
        args.ofp_listen,
        channels.packet_in_rx,
    )?;
    info!(
        dpid = format!("{dpid:016x}"),
        underlay = %args.underlay_ip,
        underlay_if,
        underlay_mtu,
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
