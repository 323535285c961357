//! Results: what one measurement produced, and the side-by-side table (text and JSON).

use serde::Serialize;
use serde_json::{json, Value};

use crate::cpu::CpuUsage;
use crate::flood::ZeroLossReport;
use crate::rr::RrReport;
use crate::systems::{Placement, System};

/// The measurements made for every VM pair, in the order they run (the unbounded UDP flood
/// last, so that whatever it does to a switch cannot spoil the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    Tcp1,
    Tcp4,
    Rr,
    Udp64,
    /// 64-byte UDP from a `sendmmsg` sender to a counting `recvmmsg` receiver (`flood.rs`).
    Flood64,
    /// The highest paced 64-byte rate that loses at most 0.1 % (`flood::zero_loss`).
    ZeroLoss64,
}

impl Test {
    pub const ALL: [Test; 6] = [
        Test::Tcp1,
        Test::Tcp4,
        Test::Rr,
        Test::Udp64,
        Test::Flood64,
        Test::ZeroLoss64,
    ];

    pub fn parse(name: &str) -> Option<Test> {
        Test::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Test::Tcp1 => "tcp-1",
            Test::Tcp4 => "tcp-4",
            Test::Rr => "rr",
            Test::Udp64 => "udp-64",
            Test::Flood64 => "flood-64",
            Test::ZeroLoss64 => "zero-loss-64",
        }
    }
}

/// Figures of one measurement; which ones are set depends on the test.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Metrics {
    /// TCP: receiver throughput.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gbps: Option<f64>,
    /// Payload bytes the receiver got.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retransmits: Option<u64>,
    /// UDP: datagrams per second the sender sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_sent_fps: Option<f64>,
    /// UDP: datagrams per second the receiving VM got.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_delivered_fps: Option<f64>,
    /// UDP: frames per second that arrived at the server VM's NIC (its eth0 rx counter): what
    /// the datapath forwarded, whether or not the receiving iperf3 kept up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_nic_rx_fps: Option<f64>,
    /// UDP: frames per second the client VM's NIC sent (its eth0 tx counter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_nic_tx_fps: Option<f64>,
    /// iperf3's delivered rate divided by the datapath's forwarding threads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_delivered_fps_per_worker: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_loss_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rr: Option<RrReport>,
    /// The zero-loss rate search, every trial.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_loss: Option<ZeroLossReport>,
    /// CPU used while the measurement ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuUsage>,
    /// Datapath CPU seconds per gigabit received (TCP) .
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datapath_cpu_s_per_gbit: Option<f64>,
    /// Machine-wide softirq seconds per gigabit received (TCP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub softirq_s_per_gbit: Option<f64>,
    /// Machine-wide busy CPU seconds per gigabit received (TCP): everything, iperf3 included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_cpu_s_per_gbit: Option<f64>,
    /// UDP: datapath CPU microseconds per frame forwarded to the server VM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datapath_cpu_us_per_frame: Option<f64>,
}

/// One measurement's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    #[serde(skip)]
    pub sys: System,
    #[serde(skip)]
    pub place: Placement,
    #[serde(skip)]
    pub kind: Test,
    pub system: &'static str,
    pub placement: &'static str,
    pub test: &'static str,
    pub round: u32,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    pub seconds: f64,
}

impl Record {
    pub fn new(
        sys: System,
        place: Placement,
        kind: Test,
        round: u32,
        outcome: Result<Metrics, String>,
        seconds: f64,
    ) -> Record {
        let (ok, error, metrics) = match outcome {
            Ok(m) => (true, None, Some(m)),
            Err(e) => (false, Some(e), None),
        };
        Record {
            sys,
            place,
            kind,
            system: sys.name(),
            placement: place.name(),
            test: kind.name(),
            round,
            ok,
            error,
            metrics,
            seconds,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

struct RowSpec {
    label: &'static str,
    test: Test,
    better: Better,
    decimals: usize,
    get: fn(&Metrics) -> Option<f64>,
}

const ROWS: &[RowSpec] = &[
    RowSpec {
        label: "TCP 1 stream, Gbit/s",
        test: Test::Tcp1,
        better: Better::Higher,
        decimals: 2,
        get: |m| m.gbps,
    },
    RowSpec {
        label: "TCP 4 streams, Gbit/s",
        test: Test::Tcp4,
        better: Better::Higher,
        decimals: 2,
        get: |m| m.gbps,
    },
    RowSpec {
        label: "UDP 64 B, kframes/s delivered",
        test: Test::Udp64,
        better: Better::Higher,
        decimals: 0,
        get: |m| m.udp_delivered_fps.map(|x| x / 1e3),
    },
    RowSpec {
        label: "UDP 64 B, kframes/s into VM NIC",
        test: Test::Udp64,
        better: Better::Higher,
        decimals: 0,
        get: |m| m.udp_nic_rx_fps.map(|x| x / 1e3),
    },
    RowSpec {
        label: "UDP 64 B, kframes/s per worker",
        test: Test::Udp64,
        better: Better::Higher,
        decimals: 0,
        get: |m| m.udp_delivered_fps_per_worker.map(|x| x / 1e3),
    },
    RowSpec {
        label: "UDP 64 B, loss % (sent at max)",
        test: Test::Udp64,
        better: Better::Lower,
        decimals: 1,
        get: |m| m.udp_loss_percent,
    },
    RowSpec {
        label: "UDP 64 B, datapath CPU us/frame",
        test: Test::Udp64,
        better: Better::Lower,
        decimals: 2,
        get: |m| m.datapath_cpu_us_per_frame,
    },
    RowSpec {
        label: "64 B flood, kframes/s delivered",
        test: Test::Flood64,
        better: Better::Higher,
        decimals: 0,
        get: |m| m.udp_delivered_fps.map(|x| x / 1e3),
    },
    RowSpec {
        label: "64 B flood, datapath CPU us/frame",
        test: Test::Flood64,
        better: Better::Lower,
        decimals: 2,
        get: |m| m.datapath_cpu_us_per_frame,
    },
    RowSpec {
        label: "64 B zero-loss rate, kframes/s",
        test: Test::ZeroLoss64,
        better: Better::Higher,
        decimals: 0,
        get: |m| m.zero_loss.as_ref().map(|z| z.rate / 1e3),
    },
    RowSpec {
        label: "RR latency p50, us",
        test: Test::Rr,
        better: Better::Lower,
        decimals: 1,
        get: |m| m.rr.map(|r| r.p50_us),
    },
    RowSpec {
        label: "RR latency p99, us",
        test: Test::Rr,
        better: Better::Lower,
        decimals: 1,
        get: |m| m.rr.map(|r| r.p99_us),
    },
    RowSpec {
        label: "CPU s/Gbit, datapath, TCP 1",
        test: Test::Tcp1,
        better: Better::Lower,
        decimals: 3,
        get: |m| m.datapath_cpu_s_per_gbit,
    },
    RowSpec {
        label: "CPU s/Gbit, datapath, TCP 4",
        test: Test::Tcp4,
        better: Better::Lower,
        decimals: 3,
        get: |m| m.datapath_cpu_s_per_gbit,
    },
    RowSpec {
        label: "CPU s/Gbit, whole machine, TCP 1",
        test: Test::Tcp1,
        better: Better::Lower,
        decimals: 3,
        get: |m| m.machine_cpu_s_per_gbit,
    },
];

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Peers cloudrack is divided by, in column order.
const PEERS: [System; 3] = [System::Ovs, System::Kernel, System::Bridge];

#[derive(Debug, Clone)]
enum Cell {
    /// The system has no such VM pair (e.g. `kernel` same-host: that is `bridge`).
    NotApplicable,
    /// The system was not selected (`--only`).
    NotRun,
    /// The measurement failed: footnote number.
    Error(usize),
    /// The measurement ran but this figure is unavailable.
    Missing,
    /// Median over the rounds that worked, the footnote of a failed round if any, and every
    /// round's figure.
    Value {
        median: f64,
        failed: Option<usize>,
        rounds: Vec<f64>,
    },
}

/// Rounds whose spread (max - min) exceeds this share of their median are marked `~`.
const NOISY: f64 = 0.25;

impl Cell {
    fn value(&self) -> Option<f64> {
        match self {
            Cell::Value { median, .. } => Some(*median),
            _ => None,
        }
    }

    fn render(&self, decimals: usize) -> String {
        match self {
            Cell::NotApplicable => String::new(),
            Cell::NotRun => "-".into(),
            Cell::Error(n) => format!("ERR[{n}]"),
            Cell::Missing => "n/a".into(),
            Cell::Value { median, failed, rounds } => {
                let (lo, hi) = rounds.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
                    (lo.min(*x), hi.max(*x))
                });
                let noisy = rounds.len() > 1 && hi - lo > NOISY * median.abs();
                let mut t = format!("{median:.decimals$}");
                if noisy {
                    t.push('~');
                }
                if let Some(n) = failed {
                    t += &format!(" [{n}]");
                }
                t
            }
        }
    }

    fn json(&self) -> Value {
        match self {
            Cell::Value { median, .. } if median.is_finite() => json!(median),
            Cell::Error(n) => json!(format!("error {n}")),
            _ => Value::Null,
        }
    }
}

/// One line of the table.
struct Row {
    label: &'static str,
    placement: &'static str,
    better: Better,
    decimals: usize,
    /// One per system, in [`System::ALL`] order.
    cells: Vec<Cell>,
    /// cloudrack / peer, in [`PEERS`] order.
    ratios: Vec<Option<f64>>,
}

/// The comparison, built from every record.
pub struct Table {
    rows: Vec<Row>,
    /// (number, "system placement test", message)
    pub footnotes: Vec<(usize, String, String)>,
}

impl Table {
    pub fn build(records: &[Record], selected: &[System]) -> Table {
        let mut footnotes: Vec<(usize, String, String)> = Vec::new();
        let mut note_for = |r: &Record| -> usize {
            let msg = r.error.clone().unwrap_or_default();
            // One footnote per distinct message and system (a setup failure fails everything).
            if let Some((n, _, _)) = footnotes.iter().find(|(_, w, m)| *m == msg && w.starts_with(r.system)) {
                return *n;
            }
            let n = footnotes.len() + 1;
            footnotes.push((n, format!("{} {} {}", r.system, r.placement, r.test), msg));
            n
        };
        let mut rows = Vec::new();
        for place in [Placement::Cross, Placement::Same] {
            for spec in ROWS {
                let mut cells = Vec::new();
                for sys in System::ALL {
                    let cell = if !sys.placements().contains(&place) {
                        Cell::NotApplicable
                    } else if !selected.contains(&sys) {
                        Cell::NotRun
                    } else {
                        let recs: Vec<&Record> = records
                            .iter()
                            .filter(|r| r.sys == sys && r.place == place && r.kind == spec.test)
                            .collect();
                        let failed = recs.iter().find(|r| !r.ok).map(|r| note_for(r));
                        let values: Vec<f64> = recs
                            .iter()
                            .filter_map(|r| r.metrics.as_ref().and_then(spec.get))
                            .filter(|v| v.is_finite())
                            .collect();
                        if recs.is_empty() {
                            Cell::NotRun
                        } else if let Some(m) = median(values.clone()) {
                            Cell::Value {
                                median: m,
                                failed,
                                rounds: values,
                            }
                        } else if let Some(n) = failed {
                            Cell::Error(n)
                        } else {
                            Cell::Missing
                        }
                    };
                    cells.push(cell);
                }
                let ours = cells[0].value();
                let ratios = PEERS
                    .iter()
                    .map(|peer| {
                        let idx = System::ALL.iter().position(|s| s == peer).expect("peer");
                        match (ours, cells[idx].value()) {
                            (Some(a), Some(b)) if b != 0.0 => Some(a / b),
                            _ => None,
                        }
                    })
                    .collect();
                rows.push(Row {
                    label: spec.label,
                    placement: place.name(),
                    better: spec.better,
                    decimals: spec.decimals,
                    cells,
                    ratios,
                });
            }
        }
        Table { rows, footnotes }
    }

    /// The table as text, with a legend and the footnotes.
    pub fn render(&self) -> String {
        let mut header = vec!["metric".to_string(), "where".to_string(), "best".to_string()];
        header.extend(System::ALL.iter().map(|s| s.name().to_string()));
        header.extend(PEERS.iter().map(|p| format!("cr/{}", p.name())));
        let mut lines: Vec<Vec<String>> = vec![header];
        for row in &self.rows {
            let mut l = vec![
                row.label.to_string(),
                row.placement.to_string(),
                match row.better {
                    Better::Higher => "high".into(),
                    Better::Lower => "low".into(),
                },
            ];
            l.extend(row.cells.iter().map(|c| c.render(row.decimals)));
            l.extend(
                row.ratios
                    .iter()
                    .map(|r| r.map(|x| format!("{x:.2}")).unwrap_or_default()),
            );
            lines.push(l);
        }
        let ncol = lines[0].len();
        let widths: Vec<usize> = (0..ncol)
            .map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        let mut last_place = String::new();
        for (k, l) in lines.iter().enumerate() {
            if k > 1 && l[1] != last_place {
                out.push('\n');
            }
            last_place = l[1].clone();
            let mut s = String::new();
            for (i, cell) in l.iter().enumerate() {
                let w = widths[i];
                if i < 3 {
                    s += &format!("{cell:<w$}  ");
                } else {
                    s += &format!("{cell:>w$}  ");
                }
            }
            out += s.trim_end();
            out.push('\n');
            if k == 0 {
                out += &"-".repeat(widths.iter().sum::<usize>() + 2 * (ncol - 1));
                out.push('\n');
            }
        }
        out += "\nbest: whether a higher or a lower figure is better. cr/X = cloudrack / X \
                (for `high` rows above 1 means cloudrack is ahead, for `low` rows below 1).\n\
                kernel = Linux bridges + VXLAN across hosts; bridge = one Linux bridge (same host). \
                '-' = not run, blank = not applicable, ERR[n] = failed (see below), \
                '~' = the rounds differ by more than 25 % (each round is in the JSON).\n";
        if !self.footnotes.is_empty() {
            out += "\nfailures:\n";
            for (n, what, msg) in &self.footnotes {
                out += &format!("[{n}] {what}: {msg}\n");
            }
        }
        out
    }

    /// The table as JSON rows.
    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let values: serde_json::Map<String, Value> = System::ALL
                    .iter()
                    .zip(&row.cells)
                    .map(|(s, c)| (s.name().to_string(), c.json()))
                    .collect();
                let rounds: serde_json::Map<String, Value> = System::ALL
                    .iter()
                    .zip(&row.cells)
                    .filter_map(|(s, c)| match c {
                        Cell::Value { rounds, .. } => Some((s.name().to_string(), json!(rounds))),
                        _ => None,
                    })
                    .collect();
                let ratio_map: serde_json::Map<String, Value> = PEERS
                    .iter()
                    .zip(&row.ratios)
                    .map(|(p, r)| (format!("cloudrack/{}", p.name()), json!(r)))
                    .collect();
                json!({
                    "metric": row.label,
                    "placement": row.placement,
                    "better": if row.better == Better::Higher { "higher" } else { "lower" },
                    "values": values,
                    "rounds": rounds,
                    "ratios": ratio_map,
                })
            })
            .collect();
        let notes: Vec<Value> = self
            .footnotes
            .iter()
            .map(|(n, what, msg)| json!({"n": n, "what": what, "error": msg}))
            .collect();
        json!({ "rows": rows, "failures": notes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(sys: System, place: Placement, gbps: f64) -> Record {
        let m = Metrics {
            gbps: Some(gbps),
            ..Default::default()
        };
        Record::new(sys, place, Test::Tcp1, 1, Ok(m), 1.0)
    }

    #[test]
    fn ratios_errors_and_blanks() {
        let recs = vec![
            tcp(System::Cloudrack, Placement::Cross, 2.0),
            tcp(System::Ovs, Placement::Cross, 1.0),
            tcp(System::Kernel, Placement::Cross, 8.0),
            Record::new(
                System::Cloudrack,
                Placement::Same,
                Test::Tcp1,
                1,
                Err("switch died".into()),
                1.0,
            ),
            tcp(System::Bridge, Placement::Same, 20.0),
            tcp(System::Ovs, Placement::Same, 3.0),
            tcp(System::Ovs, Placement::Same, 1.0),
            Record::new(System::Ovs, Placement::Same, Test::Tcp1, 3, Err("flaky".into()), 1.0),
        ];
        let t = Table::build(&recs, &System::ALL);
        let text = t.render();
        let line = text
            .lines()
            .find(|l| l.starts_with("TCP 1 stream") && l.contains("cross-host"))
            .unwrap();
        assert!(line.contains("2.00") && line.contains("0.25"), "{line}");
        assert!(text.contains("ERR[1]"), "{text}");
        assert!(text.contains("[1] cloudrack same-host tcp-1: switch died"));
        let j = t.to_json();
        let row = &j["rows"][0];
        assert_eq!(row["values"]["ovs"], 1.0);
        assert_eq!(row["ratios"]["cloudrack/ovs"], 2.0);
        assert!(row["values"]["bridge"].is_null());
        // Two good rounds of three: their median, with a note about the failed one.
        let same = text
            .lines()
            .find(|l| l.starts_with("TCP 1 stream") && l.contains("same-host"))
            .unwrap();
        assert!(same.contains("2.00~ [2]"), "{same}");
        assert!(text.contains("[2] ovs same-host tcp-1: flaky"), "{text}");
    }
}
