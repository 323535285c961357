//! CPU time from /proc: per process (utime + stime of every thread, from /proc/PID/stat) and
//! machine-wide (the `cpu` line of /proc/stat: softirq, and everything that is not idle).

use serde::Serialize;
use std::time::Instant;

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of process `pid` (all its threads, live and exited), in seconds.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat(&stat).map(|ticks| ticks as f64 / clock_ticks_per_second())
}

/// utime + stime in clock ticks from the text of /proc/PID/stat. The command name (field 2) is
/// in parentheses and may contain spaces, so fields are counted after the last ')'.
fn parse_proc_stat(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Machine-wide CPU time (all CPUs, seconds) from /proc/stat.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineCpu {
    pub softirq: f64,
    pub busy: f64,
}

pub fn machine_cpu() -> MachineCpu {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    parse_machine(&text).unwrap_or_default()
}

fn parse_machine(text: &str) -> Option<MachineCpu> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice (already in user)]
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    let hz = clock_ticks_per_second();
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    Some(MachineCpu {
        softirq: get(6) as f64 / hz,
        busy: busy as f64 / hz,
    })
}

/// Where a system's datapath spends its CPU.
#[derive(Debug, Clone)]
pub enum DatapathCpu {
    /// User-space switch processes (their utime + stime).
    Processes { what: String, pids: Vec<u32> },
    /// The kernel forwards in softirq context: machine-wide softirq time. This also counts the
    /// VMs' own network stacks receiving (and any other softirq work on the machine).
    Softirq,
}

impl DatapathCpu {
    pub fn describe(&self) -> String {
        match self {
            DatapathCpu::Processes { what, pids } => {
                format!("utime+stime of {what} (pids {pids:?}) from /proc/PID/stat")
            }
            DatapathCpu::Softirq => {
                "machine-wide softirq time from /proc/stat (includes the VMs' receive path)".to_string()
            }
        }
    }

    fn seconds(&self) -> Option<f64> {
        match self {
            DatapathCpu::Processes { pids, .. } => pids.iter().map(|p| process_cpu_seconds(*p)).sum::<Option<f64>>(),
            DatapathCpu::Softirq => Some(machine_cpu().softirq),
        }
    }
}

/// A reading taken before a measurement.
#[derive(Debug, Clone)]
pub struct CpuMark {
    at: Instant,
    datapath: Option<f64>,
    machine: MachineCpu,
}

/// CPU used between two readings, in seconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuUsage {
    pub wall_s: f64,
    /// The datapath's CPU time (see [`DatapathCpu`]); `None` if a process vanished.
    pub datapath_s: Option<f64>,
    /// Machine-wide softirq time.
    pub softirq_s: f64,
    /// Machine-wide non-idle time (every process, the iperf3 ends included, plus irq/softirq).
    pub machine_busy_s: f64,
}

impl CpuMark {
    pub fn take(dp: &DatapathCpu) -> CpuMark {
        CpuMark {
            at: Instant::now(),
            datapath: dp.seconds(),
            machine: machine_cpu(),
        }
    }

    pub fn usage_since(&self, dp: &DatapathCpu) -> CpuUsage {
        let now = CpuMark::take(dp);
        CpuUsage {
            wall_s: now.at.duration_since(self.at).as_secs_f64(),
            datapath_s: match (self.datapath, now.datapath) {
                (Some(a), Some(b)) if b >= a => Some(b - a),
                _ => None,
            },
            softirq_s: (now.machine.softirq - self.machine.softirq).max(0.0),
            machine_busy_s: (now.machine.busy - self.machine.busy).max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_with_spaces_in_the_name() {
        let s = "1234 (ovs vswitchd) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 9 0 100 2000 30";
        assert_eq!(parse_proc_stat(s), Some(325));
        assert_eq!(parse_proc_stat("garbage"), None);
    }

    #[test]
    fn machine_line() {
        let hz = clock_ticks_per_second();
        let m = parse_machine("cpu  100 0 50 1000 5 1 20 2 0 0\ncpu0 1 2 3\n").unwrap();
        assert!((m.softirq - 20.0 / hz).abs() < 1e-9);
        assert!((m.busy - 173.0 / hz).abs() < 1e-9);
    }

    #[test]
    fn own_process_has_cpu_time() {
        assert!(process_cpu_seconds(std::process::id()).is_some());
    }
}
