//! Where the CPU went during a run: the time each process of interest used (from
//! `/proc/PID/stat`) and how busy the whole machine was (from `/proc/stat`).
//!
//! On a small shared machine the load generator, the service under test, RabbitMQ
//! and Redis compete for the same cores, so a throughput figure means little
//! without this split. "other" is the machine's busy time not accounted for by the
//! listed processes: the kernel's softirq work for loopback traffic, and whatever
//! else runs on the machine (another engineer's build).

use std::time::Instant;

use serde::Serialize;

/// `USER_HZ`: the unit of the tick counts in `/proc` (100 on every Linux
/// architecture a server runs on; it is part of the user-space ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// One process's share of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessCpu {
    /// What it is (`ingest`, `rabbitmq`, `loadgen`…).
    pub name: String,
    /// CPU used, in percent of one core (200 = two cores flat out).
    pub percent: f64,
}

/// The CPU split of a run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CpuSplit {
    /// Length of the measured interval, seconds.
    pub seconds: f64,
    /// Cores on the machine.
    pub cores: usize,
    /// The whole machine's busy time, percent of one core (at most `cores` × 100).
    pub machine_percent: f64,
    /// Each listed process.
    pub processes: Vec<ProcessCpu>,
}

impl CpuSplit {
    /// Busy time not explained by the listed processes, percent of one core.
    pub fn other_percent(&self) -> f64 {
        let listed: f64 = self.processes.iter().map(|p| p.percent).sum();
        (self.machine_percent - listed).max(0.0)
    }

    /// The share of `name`, if it was listed.
    pub fn of(&self, name: &str) -> Option<f64> {
        self.processes
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.percent)
    }

    /// CPU time per message at `rate` messages per second, in µs, of the processes
    /// named `name` or `name-…` (`worker` covers `worker-2`), 0 when none is listed.
    pub fn micros(&self, name: &str, rate: f64) -> f64 {
        let percent: f64 = self
            .processes
            .iter()
            .filter(|p| {
                p.name == name
                    || p.name
                        .strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('-'))
            })
            .map(|p| p.percent)
            .sum();
        percent / 100.0 * 1e6 / rate.max(1e-9)
    }

    /// CPU time per message at `rate` messages per second:
    /// `ingest 62 + loadgen 43 + rabbitmq 80 + redis 12 = 197 µs (other 20 µs)`.
    /// Processes under 1 µs are left out.
    pub fn per_message(&self, rate: f64) -> String {
        let micros = |percent: f64| percent / 100.0 * 1e6 / rate.max(1e-9);
        let listed: Vec<(String, f64)> = self
            .processes
            .iter()
            .map(|p| (p.name.clone(), micros(p.percent)))
            .filter(|(_, us)| *us >= 1.0)
            .collect();
        let total: f64 = listed.iter().map(|(_, us)| us).sum();
        let parts: Vec<String> = listed
            .iter()
            .map(|(name, us)| format!("{name} {us:.0}"))
            .collect();
        format!(
            "{} = {total:.0} µs (other {:.0} µs)",
            parts.join(" + "),
            micros(self.other_percent())
        )
    }

    /// `ingest 95%, rabbitmq 80%, … other 5% (machine 190% of 200%)`.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .processes
            .iter()
            .map(|p| format!("{} {:.0}%", p.name, p.percent))
            .collect();
        parts.push(format!("other {:.0}%", self.other_percent()));
        format!(
            "{} (machine {:.0}% of {}%)",
            parts.join(", "),
            self.machine_percent,
            self.cores * 100
        )
    }
}

/// Measures CPU use between `start` and `finish`.
pub struct CpuMeter {
    started: Instant,
    machine: Option<(u64, u64)>,
    processes: Vec<(String, u32, Option<u64>)>,
}

impl CpuMeter {
    /// Starts measuring `processes` (name, pid), RabbitMQ and Redis
    /// ([`infrastructure`]) and the machine.
    pub fn start(processes: &[(String, u32)]) -> Self {
        Self {
            started: Instant::now(),
            machine: machine_ticks(),
            processes: processes
                .iter()
                .cloned()
                .chain(infrastructure())
                .map(|(name, pid)| (name, pid, process_ticks(pid)))
                .collect(),
        }
    }

    /// The split since `start`. A process that vanished counts as 0.
    pub fn finish(&self) -> CpuSplit {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        let percent = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / seconds * 100.0;
        let machine_percent = match (self.machine, machine_ticks()) {
            (Some((busy0, _)), Some((busy1, _))) => percent(busy1.saturating_sub(busy0)),
            _ => 0.0,
        };
        let processes = self
            .processes
            .iter()
            .map(|(name, pid, before)| {
                let used = match (before, process_ticks(*pid)) {
                    (Some(b), Some(a)) => a.saturating_sub(*b),
                    _ => 0,
                };
                ProcessCpu {
                    name: name.clone(),
                    percent: percent(used),
                }
            })
            .collect();
        CpuSplit {
            seconds,
            cores: cores(),
            machine_percent,
            processes,
        }
    }
}

/// Cores available to this process.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// User + system ticks of `pid` (all its threads).
pub fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); `rest` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// (busy, total) ticks of the whole machine.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// The pid of the first process whose command name is `comm`.
pub fn find_process(comm: &str) -> Option<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.into_iter().find(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm)
    })
}

/// RabbitMQ's and Redis's processes on this machine, as far as they are visible.
fn infrastructure() -> Vec<(String, u32)> {
    [("rabbitmq", "beam.smp"), ("redis", "redis-server")]
        .into_iter()
        .filter_map(|(name, comm)| Some((name.to_owned(), find_process(comm)?)))
        .collect()
}

/// This process, under `name`.
pub fn this_process(name: &str) -> (String, u32) {
    (name.to_owned(), std::process::id())
}

/// Peak resident set size (`VmHWM`) of `pid`, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
