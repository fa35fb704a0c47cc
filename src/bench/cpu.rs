//! The machine's CPU time over a scenario, from `/proc/stat`: what a commit costs everything on
//! the machine (client, catalog, PostgreSQL, the kernel's share), whatever the rate.
//!
//! On two shared virtual cores throughput moves by a third from run to run, mostly because the
//! hypervisor takes the cores away (steal time) or the disk stalls; neither adds CPU time to the
//! work done, so CPU milliseconds per commit compare builds and catalogs more steadily than
//! commits per second. Steal is reported beside it, as a share of the scenario's wall time, to
//! show how disturbed a run was. Linux only; elsewhere both are absent.

use std::time::Instant;

/// Clock ticks per second of `/proc` times.
pub(crate) fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

/// A reading of the machine's CPU counters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    /// Ticks spent running anything: user, nice, system, irq, softirq (all cores).
    busy: u64,
    /// Ticks the hypervisor ran something else while a core had work.
    steal: u64,
    /// The cores the counters cover (the `cpuN` lines).
    cores: usize,
    at: Instant,
}

/// The machine's CPU use between two samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuUse {
    pub(crate) busy_seconds: f64,
    /// Steal as a share of the wall time of all cores, in percent.
    pub(crate) steal_percent: f64,
}

impl CpuSample {
    pub(crate) fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        // "cpu  user nice system idle iowait irq softirq steal guest guest_nice"
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let field = |n: usize| fields.get(n).copied().unwrap_or(0);
        let cores = stat
            .lines()
            .filter(|line| {
                line.strip_prefix("cpu")
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
            .count();
        Some(Self {
            busy: field(0) + field(1) + field(2) + field(5) + field(6),
            steal: field(7),
            cores: cores.max(1),
            at: Instant::now(),
        })
    }

    /// Use from this sample to `later`.
    pub(crate) fn until(&self, later: &Self) -> CpuUse {
        let ticks = ticks_per_second();
        let wall = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let cores = self.cores as f64;
        CpuUse {
            busy_seconds: later.busy.saturating_sub(self.busy) as f64 / ticks,
            steal_percent: later.steal.saturating_sub(self.steal) as f64 / ticks / (wall * cores)
                * 100.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_loop_shows_as_busy_time() {
        let Some(before) = CpuSample::now() else {
            return; // not Linux: nothing to read
        };
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed().as_millis() < 300 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let used = before.until(&CpuSample::now().unwrap());
        // 0.3 s of one core, counted in 10 ms ticks: at least 0.2 s whatever else runs.
        assert!(used.busy_seconds >= 0.2, "{used:?}");
        assert!((0.0..=100.0).contains(&used.steal_percent), "{used:?}");
    }
}
