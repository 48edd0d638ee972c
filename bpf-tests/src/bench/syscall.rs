//! Syscall fault rows: what an armed syscall fault costs the calls of processes it does not
//! target, beside what a seccomp filter and `strace --inject` cost the same calls.
//!
//! Natively, where raw tracepoints and `bpf_send_signal` work (the `tracepoint-signal`
//! strategy):
//! * `syscall.nonmatching_added_ns[.openat|.other_call]`: nanoseconds added to each call of a
//!   process that is not the target while a `kill` fault is armed for another process (a
//!   sleeping `sleep 3600` that never makes the calls). `getpid` on the rule's own syscall (the
//!   program judges the call and finds no rule for this process), `.openat` the same for
//!   `openat` + `close` of a file, `.other_call` `getpid` while the rule names only `fsync`
//!   (the program's one array lookup on every call of the machine). Against no fault armed.
//! * `syscall.seccomp_filter_added_ns`: the same `getpid` loop under a seccomp filter that
//!   refuses one unused syscall and allows the rest.
//! * `syscall.strace_inject_added_ns`: the same loop under `strace -f -e inject=getpid:...`,
//!   which stops the process on every call.
//! * `syscall.strace_over_chaos`: the two added costs side by side, strace's over ours.
//!
//! Every loop runs in a process of its own, a fresh `chaos-bench` started with [`LOOP_ARG`]
//! ([`loop_main`]): the seccomp filter cannot be removed from a process, and strace needs an
//! executable to start. The loop times its own calls, so process start-up is not counted, and
//! runs pinned to one CPU (strace with it: its best case). Trials interleave: per round no
//! fault, armed, seccomp, strace.

use std::{
    ffi::{CString, OsString},
    io::Read as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use chaos_common::syscall::PROG_SYS_ENTER;
use chaos_user::{
    FaultSpec, Injector,
    probe::Feature,
    spec::{SyscallAction, SyscallSpec},
    strategy::{Strategy, SyscallStrategy},
};
use libbpf_rs::query::{LinkInfoIter, LinkTypeInfo};

use super::{
    Bench, Faults, Goal, Place, Row,
    bpf::{RunStats, RunTotals, prog_info},
    stats::{Spread, median},
};
use crate::{ChildProcess, world::unique_name};

/// The first argument of `chaos-bench` that makes it run one timed syscall loop (see
/// [`loop_main`]) instead of the bench.
pub const LOOP_ARG: &str = "--syscall-loop";
/// How long each fault lasts if the bench dies without recovering it: the kernel ends it then.
const FAULT_DURATION: &str = "10m";
/// The syscall strace injects into: every call of it stops the traced process.
const STRACE_CALL: &str = "getpid";
/// `strace`'s `when=` takes at most 65535: the loops under strace stay below it, so strace
/// stops on every call and injects into none of them (as our rule judges every call and acts
/// on none of the loop's).
const STRACE_WHEN: u32 = 65_535;
/// How many timed chunks a loop splits its calls into; it reports the median chunk.
const CHUNKS: u64 = 10;
/// Longest a loop process may take.
const LOOP_TIMEOUT: Duration = Duration::from_secs(120);
/// The syscall the seccomp filter refuses: one no process calls (`afs_syscall`, never
/// implemented), so every call the loops make passes through the filter.
const SECCOMP_REFUSED_NR: u32 = libc::SYS_afs_syscall as u32;

/// The family's entry point (natively only: the figures are per call on the host's CPUs; a
/// VM under TCG would say little).
pub fn run(b: &mut Bench) {
    if b.config().place == Place::Native {
        b.section("syscall.nonmatching", nonmatching);
    }
}

// ---------------------------------------------------------------------------------------------
// The loop, in a process of its own
// ---------------------------------------------------------------------------------------------

/// What a loop calls.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Work {
    /// `syscall(SYS_getpid)` (not glibc's `getpid`, which some versions cached).
    Getpid,
    /// `openat(AT_FDCWD, path, O_RDONLY)` then `close`.
    Openat(PathBuf),
}

impl Work {
    /// The loop's argument: `getpid` or `openat:PATH`.
    fn arg(&self) -> OsString {
        match self {
            Work::Getpid => "getpid".into(),
            Work::Openat(p) => {
                let mut s = OsString::from("openat:");
                s.push(p);
                s
            }
        }
    }

    fn parse(arg: &str) -> Option<Work> {
        match arg {
            "getpid" => Some(Work::Getpid),
            _ => arg
                .strip_prefix("openat:")
                .map(|p| Work::Openat(PathBuf::from(p))),
        }
    }
}

/// The classic-BPF program the seccomp trials install: x86_64 calls of
/// [`SECCOMP_REFUSED_NR`] fail with `EPERM`, every other call runs.
fn seccomp_program() -> Vec<libc::sock_filter> {
    // linux/bpf_common.h
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    // linux/audit.h: EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    // struct seccomp_data: nr at 0, arch at 4.
    const OFFSET_NR: u32 = 0;
    const OFFSET_ARCH: u32 = 4;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    vec![
        op(LD_W_ABS, 0, 0, OFFSET_ARCH),
        op(JEQ_K, 0, 3, AUDIT_ARCH_X86_64), // another ABI -> allow
        op(LD_W_ABS, 0, 0, OFFSET_NR),
        op(JEQ_K, 0, 1, SECCOMP_REFUSED_NR),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Installs [`seccomp_program`] on the calling process (after `no_new_privs`, as an
/// unprivileged program would).
fn install_seccomp() -> std::io::Result<()> {
    let filter = seccomp_program();
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `prog` points to `filter`, which outlives the call; the kernel copies it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes `n` calls of `work`.
fn calls(work: &Work, path: Option<&CString>, n: u64) -> std::io::Result<()> {
    match (work, path) {
        (Work::Getpid, _) => {
            for _ in 0..n {
                // SAFETY: getpid has no arguments.
                std::hint::black_box(unsafe { libc::syscall(libc::SYS_getpid) });
            }
        }
        (Work::Openat(_), Some(path)) => {
            for _ in 0..n {
                // SAFETY: `path` is NUL-terminated; the descriptor is closed at once.
                let fd = unsafe {
                    libc::openat(
                        libc::AT_FDCWD,
                        path.as_ptr(),
                        libc::O_RDONLY | libc::O_CLOEXEC,
                    )
                };
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: our own descriptor.
                unsafe { libc::close(fd) };
            }
        }
        (Work::Openat(_), None) => return Err(std::io::Error::other("openat without a path")),
    }
    Ok(())
}

/// The `chaos-bench --syscall-loop getpid|openat:PATH CALLS [seccomp]` mode: (with `seccomp`,
/// installs [`seccomp_program`] first), makes CALLS / 10 calls to warm up, then CALLS calls in
/// 10 timed chunks, and prints the median chunk's nanoseconds per call. Dies with its parent
/// (`PR_SET_PDEATHSIG`), so a loop started by a bench or an strace that is killed ends too.
pub fn loop_main(argv: &[OsString]) -> ExitCode {
    match run_loop(argv) {
        Ok(ns) => {
            println!("{ns}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{LOOP_ARG}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_loop(argv: &[OsString]) -> Result<f64> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
        bail!("PR_SET_PDEATHSIG: {}", std::io::Error::last_os_error());
    }
    // SAFETY: no arguments.
    if unsafe { libc::getppid() } == 1 {
        bail!("the parent is gone");
    }
    let args: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let (work, n, seccomp) = match args.as_slice() {
        [w, n] => (w, n, false),
        [w, n, s] if s == "seccomp" => (w, n, true),
        _ => bail!("usage: {LOOP_ARG} getpid|openat:PATH CALLS [seccomp]"),
    };
    let work = Work::parse(work).with_context(|| format!("unknown loop {work:?}"))?;
    let n: u64 = n.parse().context("CALLS")?;
    ensure!(n >= CHUNKS, "CALLS must be at least {CHUNKS}");
    let path = match &work {
        Work::Openat(p) => Some(CString::new(p.as_os_str().as_encoded_bytes())?),
        Work::Getpid => None,
    };
    if seccomp {
        install_seccomp().context("installing the seccomp filter")?;
    }
    let chunk = n / CHUNKS;
    calls(&work, path.as_ref(), chunk)?;
    let mut per_call = Vec::with_capacity(CHUNKS as usize);
    for _ in 0..CHUNKS {
        let start = Instant::now();
        calls(&work, path.as_ref(), chunk)?;
        per_call.push(start.elapsed().as_nanos() as f64 / chunk as f64);
    }
    Ok(median(&per_call))
}

// ---------------------------------------------------------------------------------------------
// The bench side
// ---------------------------------------------------------------------------------------------

/// How a loop process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Under<'a> {
    /// As is.
    Nothing,
    /// With [`seccomp_program`] installed.
    Seccomp,
    /// Under this `strace` binary, injecting into [`STRACE_CALL`].
    Strace(&'a Path),
}

/// Runs one loop process and returns its nanoseconds per call. The process is killed and
/// reaped if anything goes wrong (the [`ChildProcess`] guard); one under strace dies with
/// strace.
fn timed_loop(work: &Work, n: u64, under: Under) -> Result<f64> {
    let exe = std::env::current_exe().context("finding chaos-bench itself")?;
    let mut cmd = match under {
        Under::Strace(strace) => {
            let mut c = Command::new(strace);
            c.args(["-f", "-qq", "-o", "/dev/null", "-e"])
                .arg(format!("trace={STRACE_CALL}"))
                .arg("-e")
                .arg(format!("inject={STRACE_CALL}:error=EIO:when={STRACE_WHEN}"))
                .arg("--")
                .arg(&exe);
            c
        }
        _ => Command::new(&exe),
    };
    cmd.arg(LOOP_ARG).arg(work.arg()).arg(n.to_string());
    if under == Under::Seccomp {
        cmd.arg("seccomp");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = crate::cmd::describe(&cmd);
    // One CPU for the loop, and under strace for strace and the loop together: strace's best
    // case (each stop is a switch on one CPU; split across CPUs, every stop waits for a
    // cross-CPU wake-up, which made it 2-15 times slower on this shared machine).
    let cpu = loop_cpu()?;
    // SAFETY: between fork and exec only sched_setaffinity on a set prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &cpu) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = ChildProcess::spawn(cmd)?;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        ensure!(
            start.elapsed() < LOOP_TIMEOUT,
            "`{what}` still running after {LOOP_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut o) = child.child_mut().stdout.take() {
        o.read_to_string(&mut out)?;
    }
    if let Some(mut e) = child.child_mut().stderr.take() {
        e.read_to_string(&mut err)?;
    }
    ensure!(
        status.success(),
        "`{what}` failed ({status}): {}",
        err.trim()
    );
    out.lines()
        .last()
        .and_then(|l| l.trim().parse::<f64>().ok())
        .with_context(|| format!("`{what}` printed no figure: {out:?} {}", err.trim()))
}

/// The CPU set every loop process runs on: the highest-numbered CPU this process may use.
fn loop_cpu() -> std::io::Result<libc::cpu_set_t> {
    // SAFETY: zero is a valid cpu_set_t; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a cpu_set_t of the size given.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    let cpu = (0..libc::CPU_SETSIZE as usize)
        .rev()
        // SAFETY: `cpu` is below CPU_SETSIZE.
        .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .ok_or_else(|| std::io::Error::other("no CPU in this process's affinity"))?;
    // SAFETY: zero is a valid cpu_set_t; CPU_SET writes within it.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut one) };
    Ok(one)
}

/// `strace` on `PATH`, or why not.
fn find_strace() -> std::result::Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("strace"))
        .find(|p| p.is_file())
        .ok_or_else(|| "strace is not installed (not on PATH)".to_owned())
}

/// A temporary directory with one small file the `openat` loop opens; removed on drop.
struct TempFile {
    dir: PathBuf,
    file: PathBuf,
}

impl TempFile {
    fn new() -> Result<TempFile> {
        let dir = std::env::temp_dir().join(unique_name());
        std::fs::create_dir(&dir).with_context(|| format!("making {}", dir.display()))?;
        let me = TempFile {
            file: dir.join("opened"),
            dir,
        };
        std::fs::write(&me.file, b"x")?;
        Ok(me)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the fault's target: a `sleep 3600` that is asleep in `clock_nanosleep` (its start-up
/// calls, `openat` among them, are behind it), so it makes none of the calls the rules name.
fn sleeping_target() -> Result<ChildProcess> {
    let mut cmd = Command::new("sleep");
    cmd.arg("3600").stdin(Stdio::null()).stdout(Stdio::null());
    // SAFETY: one async-signal-safe syscall between fork and exec. It ends the sleep even if
    // the bench is killed outright (no guard runs then).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = ChildProcess::spawn(cmd)?;
    let pid = child.pid();
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        let nr = text.split_whitespace().next().and_then(|f| f.parse().ok());
        if nr == Some(libc::SYS_clock_nanosleep) || nr == Some(libc::SYS_nanosleep) {
            return Ok(child);
        }
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "sleep {pid} is not asleep after 10 s (/proc/{pid}/syscall: {:?})",
            text.trim()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A `kill` fault on `calls` of process `pid`.
fn kill_on(pid: u32, calls: &[&str]) -> FaultSpec {
    FaultSpec::Syscall(SyscallSpec {
        action: SyscallAction::Kill,
        syscall: calls.iter().map(|c| (*c).to_owned()).collect(),
        pid: Some(pid),
        duration: Some(FAULT_DURATION.to_owned()),
        ..SyscallSpec::default()
    })
}

/// The ids of our `sys_enter` program that raw tracepoint links run (through libbpf, not the
/// injector): empty when no syscall fault of the tracepoint kind is armed.
fn sys_enter_programs() -> Vec<u32> {
    // The kernel keeps at most 15 bytes of a program's name.
    let name = &PROG_SYS_ENTER[..PROG_SYS_ENTER.len().min(15)];
    let mut ids: Vec<u32> = LinkInfoIter::default()
        .filter(|l| matches!(l.info, LinkTypeInfo::RawTracepoint(_)))
        .map(|l| l.prog_id)
        .filter(|&id| prog_info(id).is_ok_and(|p| p.name == name))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// One round's figures, ns per call.
#[derive(Clone, Copy, Debug, Default)]
struct Round {
    base_getpid: f64,
    base_openat: f64,
    armed_getpid: f64,
    armed_openat: f64,
    other_getpid: f64,
    /// Our program's own ns per run, and the loop's share of its runs, with the rule on
    /// getpid / on fsync.
    prog_getpid: f64,
    share_getpid: f64,
    prog_other: f64,
    share_other: f64,
    seccomp_getpid: f64,
    /// NaN when strace could not run.
    strace_getpid: f64,
}

/// What the trials under one armed fault gave.
struct ArmedTrials<T> {
    /// The trials' own result.
    out: T,
    /// Our `sys_enter` program's own time per run over one more `getpid` loop.
    prog_ns: f64,
    /// The share of those runs that were the loop's calls (the program runs on every syscall of
    /// the machine).
    loop_share: f64,
    /// Calls the rule saw while armed.
    seen: u64,
}

/// Arms `spec` (checking it is made by the `sys_enter` tracepoint), runs `f`, then one more
/// `getpid` loop of `n` calls with BPF run-time statistics on (for the program's own time),
/// checks the rule matched no call, and recovers it.
fn with_fault<T>(
    inj: &Injector,
    spec: &FaultSpec,
    n: u64,
    f: impl FnOnce() -> Result<T>,
) -> Result<ArmedTrials<T>> {
    let mut faults = Faults::new(inj);
    let armed = faults.arm(spec)?;
    ensure!(
        armed.strategy == Strategy::Syscall(SyscallStrategy::TracepointSignal),
        "the fault was armed as {}, not tracepoint-signal",
        armed.strategy
    );
    let progs = sys_enter_programs();
    ensure!(
        !progs.is_empty(),
        "no raw tracepoint link of {PROG_SYS_ENTER} while the fault is armed"
    );
    let out = f()?;
    let (prog_ns, runs) = {
        let _stats = RunStats::enable()?;
        let before = RunTotals::read(&progs)?;
        timed_loop(&Work::Getpid, n, Under::Nothing)?;
        let after = RunTotals::read(&progs)?;
        (
            after.ns_per_run_since(&before).unwrap_or(f64::NAN),
            after.runs.saturating_sub(before.runs),
        )
    };
    let counters = inj
        .status(&armed.id)?
        .counters
        .context("no counters for the syscall fault")?;
    ensure!(
        counters.matched == 0,
        "the rule matched {} calls: its target made a call it names",
        counters.matched
    );
    faults.recover_all()?;
    // The loop makes a warm-up chunk more than `n`.
    let calls = (n + n / CHUNKS) as f64;
    Ok(ArmedTrials {
        out,
        prog_ns,
        loop_share: (calls / runs.max(1) as f64).min(1.0),
        seen: counters.seen,
    })
}

fn nonmatching(b: &mut Bench) -> Result<()> {
    let (rounds, getpid_n, openat_n, strace_n) = b.config().pick(
        (5, 200_000u64, 50_000u64, 5_000u64),
        (20, 1_000_000, 200_000, 20_000),
    );
    // The loop's warm-up chunk counts too.
    debug_assert!(strace_n + strace_n / CHUNKS < u64::from(STRACE_WHEN));
    let inj = Injector::new().context("starting the injector (root, bpffs, the eBPF object)")?;
    for f in [Feature::RawTracepoint, Feature::HelperSendSignal] {
        if let Err(why) = inj.probe().require(f) {
            println!("  skipped: the tracepoint-signal strategy needs it: {why}");
            return Ok(());
        }
    }
    let strace = find_strace();
    let mut strace_error = strace.as_ref().err().cloned();
    let file = TempFile::new()?;
    let openat = Work::Openat(file.file.clone());
    let target = sleeping_target()?;
    let pid = target.pid();
    let on_calls = kill_on(pid, &["getpid", "openat"]);
    let on_other = kill_on(pid, &["fsync"]);

    let mut all: Vec<Round> = Vec::with_capacity(rounds);
    let (mut seen_getpid, mut seen_other) = (0, 0);
    // Warm-up: page cache, the loop binary, the program's first load.
    timed_loop(&Work::Getpid, getpid_n / 4, Under::Nothing)?;
    for round in 0..rounds {
        b.check()?;
        ensure!(
            sys_enter_programs().is_empty(),
            "a raw tracepoint link of {PROG_SYS_ENTER} exists before a baseline trial (another \
             syscall fault is armed on this machine)"
        );
        let mut r = Round {
            base_getpid: timed_loop(&Work::Getpid, getpid_n, Under::Nothing)?,
            base_openat: timed_loop(&openat, openat_n, Under::Nothing)?,
            ..Round::default()
        };
        b.check()?;
        let t = with_fault(&inj, &on_calls, getpid_n, || {
            Ok((
                timed_loop(&Work::Getpid, getpid_n, Under::Nothing)?,
                timed_loop(&openat, openat_n, Under::Nothing)?,
            ))
        })?;
        (r.armed_getpid, r.armed_openat) = t.out;
        (r.prog_getpid, r.share_getpid, seen_getpid) = (t.prog_ns, t.loop_share, t.seen);
        let t = with_fault(&inj, &on_other, getpid_n, || {
            timed_loop(&Work::Getpid, getpid_n, Under::Nothing)
        })?;
        r.other_getpid = t.out;
        (r.prog_other, r.share_other, seen_other) = (t.prog_ns, t.loop_share, t.seen);
        b.check()?;
        r.seccomp_getpid = timed_loop(&Work::Getpid, getpid_n, Under::Seccomp)?;
        r.strace_getpid = match (&strace, &strace_error) {
            (Ok(path), None) => match timed_loop(&Work::Getpid, strace_n, Under::Strace(path)) {
                Ok(ns) => ns,
                Err(e) => {
                    strace_error = Some(format!("{e:#}"));
                    f64::NAN
                }
            },
            _ => f64::NAN,
        };
        ensure!(
            std::fs::metadata(format!("/proc/{pid}")).is_ok(),
            "the fault's target {pid} died"
        );
        println!(
            "  round {round}: getpid {:.1} ns bare, {:.1} armed (program {:.1}), {:.1} rule on \
             fsync (program {:.1}), {:.1} seccomp, {:.1} strace; openat+close {:.1} bare, {:.1} \
             armed",
            r.base_getpid,
            r.armed_getpid,
            r.prog_getpid,
            r.other_getpid,
            r.prog_other,
            r.seccomp_getpid,
            r.strace_getpid,
            r.base_openat,
            r.armed_openat
        );
        all.push(r);
    }
    drop(target);

    let col = |f: fn(&Round) -> f64| -> Vec<f64> { all.iter().map(f).collect() };
    let base = col(|r| r.base_getpid);
    let base_open = col(|r| r.base_openat);
    let added = |f: fn(&Round) -> f64, base: fn(&Round) -> f64| -> Vec<f64> {
        all.iter().map(|r| f(r) - base(r)).collect()
    };
    let chaos = added(|r| r.armed_getpid, |r| r.base_getpid);
    let chaos_open = added(|r| r.armed_openat, |r| r.base_openat);
    let other = added(|r| r.other_getpid, |r| r.base_getpid);
    let seccomp = added(|r| r.seccomp_getpid, |r| r.base_getpid);
    let stracing = added(|r| r.strace_getpid, |r| r.base_getpid);
    let how = format!(
        "{rounds} rounds of no fault / armed / seccomp / strace, each loop pinned to one CPU, \
         value = median of per-round (trial - the no-fault trial of its round), baseline = the \
         bare call; target: sleep {pid}, asleep, making no call"
    );

    b.row(
        Row::cost(
            "syscall.nonmatching_added_ns",
            "ns",
            median(&chaos),
            median(&base),
        )
        .goal(Goal::value_at_most(50.0))
        .spread(Spread::of(&chaos))
        .note(format!(
            "syscall(SYS_getpid) in another process, {getpid_n} calls per trial (median of \
             {CHUNKS} chunks), while `kill --syscall getpid,openat --pid <target>` is armed \
             (tracepoint-signal: raw tracepoint sys_enter); the rule saw {seen_getpid} calls \
             in the last round and matched none; {how}"
        )),
    );
    b.row(
        Row::cost(
            "syscall.nonmatching_added_ns.openat",
            "ns",
            median(&chaos_open),
            median(&base_open),
        )
        .spread(Spread::of(&chaos_open))
        .note(format!(
            "openat(O_RDONLY) + close of a file in a temporary directory, per pair, \
             {openat_n} pairs per trial, same fault (openat is on the rule, close is not); \
             {how}"
        )),
    );
    b.row(
        Row::cost(
            "syscall.nonmatching_added_ns.other_call",
            "ns",
            median(&other),
            median(&base),
        )
        .spread(Spread::of(&other))
        .note(format!(
            "syscall(SYS_getpid) while `kill --syscall fsync --pid <target>` is armed: what \
             every call of the machine pays while any syscall fault is (calls the rule saw: \
             {seen_other}); {how}"
        )),
    );
    for (suffix, prog, share, rule) in [
        (
            "",
            col(|r| r.prog_getpid),
            col(|r| r.share_getpid),
            "getpid,openat",
        ),
        (
            ".other_call",
            col(|r| r.prog_other),
            col(|r| r.share_other),
            "fsync",
        ),
    ] {
        b.row(
            Row::cost(
                &format!("syscall.prog_ns_per_call{suffix}"),
                "ns",
                median(&prog),
                median(&base),
            )
            .spread(Spread::of(&prog))
            .note(format!(
                "run_time_ns/run_cnt of our sys_enter program (BPF_ENABLE_STATS) over a \
                 {getpid_n}-call getpid loop in another process while `kill --syscall {rule} \
                 --pid <target>` is armed; it runs on every syscall of the machine, and the \
                 loop made {:.1} % of its runs (median); baseline: the bare getpid",
                100.0 * median(&share)
            )),
        );
    }
    b.row(
        Row::cost(
            "syscall.seccomp_filter_added_ns",
            "ns",
            median(&seccomp),
            median(&base),
        )
        .spread(Spread::of(&seccomp))
        .note(format!(
            "syscall(SYS_getpid) in a process with a seccomp filter (arch check, then \
             nr == afs_syscall -> ERRNO, else ALLOW; no_new_privs), {getpid_n} calls per \
             trial; the kernel's per-syscall action cache lets getpid skip the filter's \
             instructions; {how}"
        )),
    );
    if let Some(e) = strace_error {
        bail!("syscall.strace_inject_added_ns and syscall.strace_over_chaos not measured: {e}");
    }
    let strace_cmd = format!(
        "strace -f -qq -o /dev/null -e trace={STRACE_CALL} -e \
         inject={STRACE_CALL}:error=EIO:when={STRACE_WHEN}"
    );
    b.row(
        Row::cost(
            "syscall.strace_inject_added_ns",
            "ns",
            median(&stracing),
            median(&base),
        )
        .spread(Spread::of(&stracing))
        .note(format!(
            "syscall(SYS_getpid) under `{strace_cmd}` (a ptrace stop at entry and exit of every \
             call; fewer than {STRACE_WHEN} calls, so none is injected), strace and the loop on \
             one CPU (its best case), {strace_n} calls per trial; {how}"
        )),
    );
    // Ours may be below the loops' resolution: never divide by less than 1 ns (which can only
    // understate the ratio).
    let floor = 1.0;
    let (s, c) = (median(&stracing), median(&chaos));
    let ratio = s / c.max(floor);
    let ratios: Vec<f64> = stracing
        .iter()
        .zip(&chaos)
        .map(|(s, c)| s / c.max(floor))
        .collect();
    b.row(
        Row::cost("syscall.strace_over_chaos", "ns", s, c)
            .with_ratio(ratio)
            .goal(Goal::ratio_at_least(100.0))
            .spread(Spread::of(&ratios))
            .note(format!(
                "added ns per getpid: strace --inject (value) over ours for a process it does \
                 not target (baseline); ratio of the medians, ours taken as at least {floor} \
                 ns; spread of per-round ratios; seccomp filter: {:.1} ns",
                median(&seccomp)
            )),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_arguments_round_trip() {
        for w in [Work::Getpid, Work::Openat(PathBuf::from("/tmp/x y"))] {
            assert_eq!(Work::parse(&w.arg().to_string_lossy()), Some(w));
        }
        assert_eq!(Work::parse("read"), None);
    }

    #[test]
    fn seccomp_jumps_land_on_returns() {
        let p = seccomp_program();
        // Not x86_64: from instruction 1, jf 3 -> the last (allow).
        assert_eq!(1 + 1 + p[1].jf as usize, p.len() - 1);
        // The refused number: jt 0 -> errno; anything else: jf 1 -> allow.
        assert_eq!(p[4].k, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
        assert_eq!(3 + 1 + p[3].jf as usize, p.len() - 1);
        assert_eq!(p[p.len() - 1].k, libc::SECCOMP_RET_ALLOW);
    }
}
