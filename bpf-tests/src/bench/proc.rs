//! Process and CPU measurements: wall time and peak resident memory of a command (from
//! `wait4`'s resource usage), and the machine's kernel CPU time from `/proc/stat`.

use std::{
    io,
    process::Command,
    time::{Duration, Instant},
};

/// How one run of a command went.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunUsage {
    /// From spawn to exit.
    pub wall: Duration,
    /// Peak resident set size (`ru_maxrss`), KiB.
    pub max_rss_kib: u64,
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
}

/// Runs `cmd` (stdin, stdout and stderr to /dev/null) and reports its wall time and peak
/// resident memory. Fails if it cannot start or exits unsuccessfully.
pub fn run_measured(cmd: &mut Command) -> io::Result<RunUsage> {
    use std::process::Stdio;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot run {}: {e}", crate::cmd::describe(cmd)),
        )
    })?;
    let stderr = child.stderr.take();
    // Read stderr on a thread so that a chatty child cannot block on a full pipe.
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = io::Read::read_to_string(&mut e, &mut s);
        }
        s
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zero is a valid rusage; wait4 fills it and `status` for our own child, which
    // `child` never waits for afterwards (dropping a std Child does not wait).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = loop {
        // SAFETY: see above.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    let wall = start.elapsed();
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let errors = reader.join().unwrap_or_default();
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    if code != Some(0) {
        return Err(io::Error::other(format!(
            "{} exited with {code:?}: {}",
            crate::cmd::describe(cmd),
            errors.trim()
        )));
    }
    Ok(RunUsage {
        wall,
        max_rss_kib: usage.ru_maxrss as u64,
        code,
    })
}

/// Kernel CPU time of the whole machine (every CPU), from the `cpu` line of `/proc/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCpu {
    /// `system` ticks.
    pub system: u64,
    /// `irq` ticks.
    pub irq: u64,
    /// `softirq` ticks.
    pub softirq: u64,
}

impl KernelCpu {
    /// Reads `/proc/stat`.
    pub fn now() -> io::Result<KernelCpu> {
        parse_stat(&std::fs::read_to_string("/proc/stat")?)
            .ok_or_else(|| io::Error::other("no cpu line in /proc/stat"))
    }

    /// Seconds of system + irq + softirq time from `earlier` to `self`.
    pub fn seconds_since(&self, earlier: &KernelCpu) -> f64 {
        let ticks = (self.system + self.irq + self.softirq)
            .saturating_sub(earlier.system + earlier.irq + earlier.softirq);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        ticks as f64 / hz
    }
}

/// The aggregate `cpu  user nice system idle iowait irq softirq ...` line.
fn parse_stat(text: &str) -> Option<KernelCpu> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    Some(KernelCpu {
        system: *f.get(2)?,
        irq: *f.get(5)?,
        softirq: *f.get(6)?,
    })
}

/// This process's resident set size now (`VmRSS`), KiB.
pub fn self_rss_kib() -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/self/status")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS in /proc/self/status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_cpu_line() {
        let text = "cpu  10 1 20 300 4 5 6 0 0 0\ncpu0 5 0 10 150 2 2 3 0 0 0\n";
        assert_eq!(
            parse_stat(text),
            Some(KernelCpu {
                system: 20,
                irq: 5,
                softirq: 6
            })
        );
        assert_eq!(parse_stat("intr 1\n"), None);
    }
}
