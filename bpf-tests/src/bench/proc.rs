//! Process and CPU measurements: wall time and peak resident memory of a command (from
//! `wait4`'s resource usage), and the machine's kernel CPU time from `/proc/stat`.

use std::{
    io,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// How one run of a command went.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunUsage {
    /// From spawn to exit.
    pub wall: Duration,
    /// Peak resident set size (`ru_maxrss`), KiB.
    pub max_rss_kib: u64,
}

/// The first argument of `chaos-bench` that makes it run the rest of its arguments as a
/// command and print that command's [`RunUsage`] (see [`run_measured`]).
pub const RUSAGE_ARG: &str = "--rusage-of";

/// Runs `cmd` (stdin and stdout to /dev/null) and reports its wall time and peak resident
/// memory. Fails if it cannot start or exits unsuccessfully, with its standard error.
///
/// The command is started by a fresh `chaos-bench` process ([`rusage_main`], through
/// [`RUSAGE_ARG`]): a child's `ru_maxrss` includes the memory of the process it was forked from
/// (exec records the old address space's peak), so a command forked from the bench itself would
/// report the bench's peak. Only callable from the `chaos-bench` binary.
pub fn run_measured(cmd: &Command) -> io::Result<RunUsage> {
    let mut helper = Command::new(std::env::current_exe()?);
    helper
        .arg(RUSAGE_ARG)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => helper.env(k, v),
            None => helper.env_remove(k),
        };
    }
    let out = helper.stdin(Stdio::null()).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<u64> = text
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    match (out.status.success(), fields.as_slice()) {
        (true, [wall_ns, rss]) => Ok(RunUsage {
            wall: Duration::from_nanos(*wall_ns),
            max_rss_kib: *rss,
        }),
        _ => Err(io::Error::other(format!(
            "{} failed ({}): {}",
            crate::cmd::describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// The `chaos-bench --rusage-of PROGRAM ARGS...` mode: runs the command with stdout to
/// /dev/null and stderr inherited, then prints `<wall ns> <ru_maxrss KiB>`; exits 1 (printing
/// nothing on stdout) if the command fails. Call it first thing in `main`, while this process is
/// still small.
pub fn rusage_main(argv: &[std::ffi::OsString]) -> std::process::ExitCode {
    use std::process::ExitCode;
    let Some((program, args)) = argv.split_first() else {
        eprintln!("{RUSAGE_ARG} needs a command");
        return ExitCode::FAILURE;
    };
    let start = Instant::now();
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot run {}: {e}", program.to_string_lossy());
            return ExitCode::FAILURE;
        }
    };
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zero is a valid rusage; wait4 fills it and `status` for our own child, which
    // `child` never waits for afterwards (dropping a std Child does not wait).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: see above.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            eprintln!("wait4: {e}");
            return ExitCode::FAILURE;
        }
    }
    let wall = start.elapsed();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        eprintln!(
            "{} ended with wait status {status:#x}",
            program.to_string_lossy()
        );
        return ExitCode::FAILURE;
    }
    println!("{} {}", wall.as_nanos(), usage.ru_maxrss);
    ExitCode::SUCCESS
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

/// The calling thread's allowed CPUs.
fn affinity() -> io::Result<libc::cpu_set_t> {
    // SAFETY: zero is a valid cpu_set_t; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a cpu_set_t of the size given; 0 is the calling thread.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(set)
}

/// Restricts the calling thread to `set`.
fn set_affinity(set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: `set` is a cpu_set_t of the size given; 0 is the calling thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A CPU set of `cpus` (each below `CPU_SETSIZE`).
fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: zero is a valid cpu_set_t; CPU_SET writes within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: the caller keeps `cpu` below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set
}

/// The CPUs the calling thread may run on.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    let set = affinity()?;
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// The calling thread pinned to one CPU until dropped, when its former CPUs are restored.
/// Threads it spawns meanwhile inherit the pin.
pub struct Pinned {
    before: libc::cpu_set_t,
}

impl Pinned {
    /// Pins the calling thread to `cpu` (one of [`allowed_cpus`]).
    pub fn to(cpu: usize) -> io::Result<Pinned> {
        let before = affinity()?;
        set_affinity(&cpu_set(&[cpu]))?;
        Ok(Pinned { before })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = set_affinity(&self.before);
    }
}

/// Measures the CPU time everything else on the machine uses, by what it takes away from
/// busy loops of the lowest priority (`SCHED_IDLE`), one pinned to each CPU: they run only when
/// nothing else wants the CPU, so their lost iterations count every context alike (processes,
/// interrupts, softirqs, timers). `/proc/stat` cannot do this on a tick-accounting kernel, where
/// softirq work done between ticks from idle is never sampled.
pub struct CpuThief {
    stop: Arc<AtomicBool>,
    spins: Vec<Arc<AtomicU64>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuThief {
    /// Starts one idle-priority busy loop per CPU this process may run on.
    pub fn start() -> io::Result<CpuThief> {
        let cpus = allowed_cpus()?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut thief = CpuThief {
            stop: stop.clone(),
            spins: Vec::new(),
            threads: Vec::new(),
        };
        for cpu in cpus {
            let count = Arc::new(AtomicU64::new(0));
            let (stop, c) = (stop.clone(), count.clone());
            let (tx, rx) = std::sync::mpsc::channel();
            let thread = std::thread::Builder::new()
                .name(format!("cpu-thief-{cpu}"))
                .spawn(move || {
                    let _ = tx.send(Self::demote(cpu));
                    while !stop.load(Ordering::Relaxed) {
                        for i in 0..1000u32 {
                            std::hint::black_box(i);
                        }
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                })?;
            thief.spins.push(count);
            thief.threads.push(thread);
            rx.recv().map_err(io::Error::other)??;
        }
        Ok(thief)
    }

    /// Pins the calling thread to `cpu` and gives it the idle scheduling policy.
    fn demote(cpu: usize) -> io::Result<()> {
        set_affinity(&cpu_set(&[cpu]))?;
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: 0 is the calling thread; `param` is valid for SCHED_IDLE.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The loops' iterations so far.
    pub fn spins(&self) -> u64 {
        self.spins.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The number of CPUs watched.
    pub fn cpus(&self) -> usize {
        self.spins.len()
    }

    /// Iterations per second (all loops together) over `window`, for calibration on an idle
    /// machine.
    pub fn rate(&self, window: Duration) -> f64 {
        let (start, before) = (Instant::now(), self.spins());
        std::thread::sleep(window);
        (self.spins() - before) as f64 / start.elapsed().as_secs_f64()
    }

    /// Runs `f` and returns how long it took and how many iterations the loops made meanwhile,
    /// with `f`'s result.
    pub fn window<T>(&self, f: impl FnOnce() -> T) -> (Window, T) {
        let (start, before) = (Instant::now(), self.spins());
        let out = f();
        let w = Window {
            secs: start.elapsed().as_secs_f64(),
            spins: self.spins() - before,
            cpus: self.cpus(),
        };
        (w, out)
    }
}

/// What the busy loops of a [`CpuThief`] did during a window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    /// Its length.
    pub secs: f64,
    /// Iterations of all loops together.
    pub spins: u64,
    /// CPUs watched.
    pub cpus: usize,
}

impl Window {
    /// CPU seconds used by everything else during the window, given the loops' idle `rate`
    /// (iterations per second of all loops together, see [`CpuThief::rate`]).
    pub fn used(&self, rate: f64) -> f64 {
        let cpus = self.cpus as f64;
        (self.secs * cpus - self.spins as f64 / rate * cpus).max(0.0)
    }
}

impl Drop for CpuThief {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
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
