//! cloudrack-controller: the Cloud Rack controller (OpenFlow 1.3 server with the Commander and
//! TCCS apps).

use anyhow::{bail, Context};
use clap::Parser;
use cloudrack_controller::etcd::{self, election::Election, store::EtcdStore, Etcd};
use cloudrack_controller::event::Event;
use cloudrack_controller::io_counters::IoCounters;
use cloudrack_controller::{app, server};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: Args,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Show the registries kept in etcd (hosts, tunnels, MAC locations) and which controller
    /// is master, read from etcd directly. Each switch's own view of its controllers:
    /// `cloudrack-ctl controllers`.
    Show {
        /// etcd endpoints.
        #[arg(long, value_name = "URL[,URL...]")]
        etcd: String,
        /// Key prefix the controllers use.
        #[arg(long, default_value = "/cloudrack")]
        etcd_prefix: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// List every tunnel and location (else the first 50 of each).
        #[arg(long)]
        all: bool,
    },
}

#[derive(clap::Args)]
#[command(
    name = "cloudrack-controller",
    version,
    about = "Cloud Rack controller: learns where every VM MAC is, sets up GRE tunnels between hosts on demand, re-points forwarding when a VM migrates",
    long_about = "Cloud Rack controller.\n\nSwitches (cloudrack-switch --controller tls:IP:PORT) connect here over OpenFlow 1.3 (mutual TLS, or plain TCP with --plain-tcp). \
        The Commander app keeps the location of every (virtual network, MAC), installs forwarding on both ends of a \
        conversation, relays broadcasts (ARP) to every host, and re-points every entry when a MAC shows up on another \
        host (live migration). The TCCS app knows each host's underlay address, brings GRE tunnels up when a flow \
        first needs one, and releases tunnels idle longer than --tunnel-idle.\n\nState is in memory; after a restart the \
        switches reconnect and the controller rebuilds it from their flow tables. With --etcd the registries live in etcd \
        too, under leases of their hosts, and several controllers may run: they elect a master through etcd, the master \
        claims every switch with an OpenFlow ROLE_REQUEST, the others stand by as SLAVE and take over when it dies.\n\n\
        `cloudrack-controller show --etcd URL` prints the registries and the master.\n\nLog level: RUST_LOG (default info)."
)]
struct Args {
    /// Address to accept switch connections on.
    #[arg(long, default_value = "0.0.0.0:6653")]
    listen: SocketAddr,
    /// Release tunnels that carried nothing for this long (e.g. 60s, 500ms, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    tunnel_idle: Duration,
    /// Idle timeout, in seconds, of forwarding entries towards remote hosts (0: none).
    #[arg(long, default_value_t = 300)]
    flow_idle: u16,
    /// Most VM MACs the controller accepts behind one switch port (a VM inventing source MACs
    /// is refused beyond this, with a log line and a counter).
    #[arg(long, default_value_t = 256)]
    max_macs_per_port: usize,
    /// Most VM MACs the controller accepts in one virtual network.
    #[arg(long, default_value_t = 1_000_000)]
    max_macs_per_vnet: usize,
    /// This controller's certificate (PEM; scripts/pki.sh makes one for controller.cloudrack).
    /// With --tls-key and --tls-ca, switches must connect over TLS with a certificate from
    /// that CA that names their dpid.
    #[arg(long, value_name = "PEM", requires_all = ["tls_key", "tls_ca"], conflicts_with = "plain_tcp")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM, PKCS#8).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// The CA that switch certificates must come from (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_ca: Option<std::path::PathBuf>,
    /// Accept switches over plain TCP, unauthenticated: any host that reaches the port can
    /// register any dpid. For labs only.
    #[arg(long)]
    plain_tcp: bool,
    /// Threads doing the switches' network I/O (TLS, framing, echo), each an event loop
    /// serving its share of the connections; the app's state stays on one thread.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    io_threads: u16,
    /// Keep the registries in etcd and elect a master among the controllers sharing it
    /// (e.g. http://198.18.0.1:2379,http://198.18.0.2:2379). Without it state is in memory.
    #[arg(long, value_name = "URL[,URL...]")]
    etcd: Option<String>,
    /// Key prefix in etcd (controllers of one deployment share it).
    #[arg(long, default_value = "/cloudrack", requires = "etcd")]
    etcd_prefix: String,
    /// Master election lease: a master that died is replaced about this long after its last
    /// renewal (plus an etcd leader election if its etcd member died too). etcd raises a lease
    /// below its minimum (1.5 election timeouts: 1.5 s with etcd's defaults).
    #[arg(long, default_value = "1s", value_parser = parse_duration, requires = "etcd")]
    election_ttl: Duration,
    /// Lease of each host's entries in etcd: a host gone (no controller connected to it) this
    /// long disappears from the registry.
    #[arg(long, default_value = "30s", value_parser = parse_duration, requires = "etcd")]
    host_ttl: Duration,
    /// This controller's name in the election (default: PID@LISTEN).
    #[arg(long)]
    name: Option<String>,
}

/// A listening socket with a backlog for thousands of switches reconnecting at once (std's
/// `TcpListener::bind` uses 128).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(sock.into())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 60s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Some(Cmd::Show {
            etcd,
            etcd_prefix,
            json,
            all,
        }) => show(&etcd, &etcd_prefix, json, all),
        None => run(cli.run),
    };
    if let Err(e) = result {
        error!("{e:#}");
        eprintln!("cloudrack-controller: {e:#}");
        std::process::exit(1);
    }
}

fn show(endpoints: &str, prefix: &str, json: bool, all: bool) -> anyhow::Result<()> {
    let etcd = Etcd::connect(&etcd::parse_endpoints(endpoints), prefix).context("connecting to etcd")?;
    let v = etcd::show::registry(&etcd)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", etcd::show::render(&v, all));
    }
    Ok(())
}

/// Set by SIGTERM/SIGINT: the main loop resigns from the election and exits.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn run(args: Args) -> anyhow::Result<()> {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_stop_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_stop_signal as *const () as libc::sighandler_t);
    }
    let tls = match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        (Some(cert), Some(key), Some(ca)) => Some(cloudrack_channel::server_config(&cloudrack_channel::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        })?),
        _ if args.plain_tcp => None,
        _ => bail!(
            "switches connect over mutual TLS: give --tls-cert, --tls-key and --tls-ca (scripts/pki.sh makes a CA and \
             certificates), or --plain-tcp for an unauthenticated lab setup"
        ),
    };
    let listener = listen(args.listen).with_context(|| format!("listening on {}", args.listen))?;
    info!(listen = %args.listen, tls = tls.is_some(), tunnel_idle = ?args.tunnel_idle, "cloudrack-controller running");
    if tls.is_none() {
        warn!("plain TCP: switches are not authenticated (--plain-tcp)");
    }
    let (tx, rx) = crossbeam_channel::bounded::<Event>(65_536);
    let tx_app = tx.clone();
    let counters = Arc::new(IoCounters::default());
    server::spawn(listener, tx, counters.clone(), tls, usize::from(args.io_threads))
        .context("starting the OpenFlow server")?;
    let cfg = app::Config {
        tunnel_idle: args.tunnel_idle,
        flow_idle_s: args.flow_idle,
        limits: cloudrack_controller::commander::Limits {
            macs_per_port: args.max_macs_per_port,
            macs_per_vnet: args.max_macs_per_vnet,
        },
    };
    let mut candidacy = None;
    let mut app = match &args.etcd {
        None => app::App::new(cfg),
        Some(endpoints) => {
            let endpoints = etcd::parse_endpoints(endpoints);
            let etcd = Etcd::connect(&endpoints, &args.etcd_prefix)
                .with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))?;
            let store = EtcdStore::start(etcd.clone(), args.host_ttl, tx_app.clone());
            let name = args
                .name
                .clone()
                .unwrap_or_else(|| format!("{}@{}", std::process::id(), args.listen));
            info!(endpoints = %endpoints.join(","), prefix = %args.etcd_prefix, %name, "registries in etcd; standing by until elected");
            candidacy = Some(
                Election {
                    name,
                    ttl: args.election_ttl,
                }
                .start(etcd, Some(store.fencer()), tx_app.clone()),
            );
            app::App::with_store(cfg, Box::new(store), app::Role::Standby)
        }
    };
    drop(tx_app);
    let tick = Duration::from_millis(500);
    let mut last = std::time::Instant::now();
    let mut last_status = serde_json::Value::Null;
    loop {
        // Short waits so a stop signal is seen quickly; periodic work still runs every tick.
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(ev) => {
                app.handle(ev);
                if let Some(why) = app.must_stop() {
                    bail!("stopping: {why} (another controller takes over)");
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => bail!("the listener stopped"),
        }
        if STOP.load(std::sync::atomic::Ordering::Relaxed) {
            info!("stopping (signal)");
            if let Some(c) = &candidacy {
                c.resign();
            }
            return Ok(());
        }
        if last.elapsed() >= tick {
            last = std::time::Instant::now();
            app.tick();
            let mut status = app.status();
            status["server"] = counters.snapshot();
            if status != last_status {
                info!(status = %status, "controller state");
                last_status = status;
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
