//! `chaos exec`: start a command under a syscall fault made with seccomp user notification.
//!
//! The child sets `PR_SET_NO_NEW_PRIVS`, installs the filter of [`crate::seccomp::filter`] with
//! `SECCOMP_FILTER_FLAG_NEW_LISTENER`, publishes the listener's fd number in a shared page and
//! spins (no syscall, so no planned call can deadlock the hand-over) until the parent has taken
//! the listener with `pidfd_getfd` (5.6+); then it runs the command. The parent supervises
//! ([`crate::seccomp::notify`]) until the command exits, forwards SIGINT, SIGTERM, SIGHUP and
//! SIGQUIT sent to chaos by a process (`kill`; a terminal's Ctrl-C already reaches the whole
//! foreground process group), and returns the command's exit status with the counters.
//!
//! The command's children inherit the filter, so they are supervised too while the command runs.
//! Because of `no_new_privs`, set-uid programs started under the fault do not gain privileges.
//! After `duration` every call runs untouched: a seccomp filter cannot be removed from a running
//! process.
//!
//! **If chaos itself dies** (SIGKILL, a crash) while the command runs, or exits while some
//! descendant of the command outlives it, the listener closes and the kernel fails every planned
//! call of those processes with `ENOSYS` from then on; the other calls are unaffected. Stop the
//! command through chaos (SIGTERM or SIGINT to chaos) to avoid that.
//!
//! Signals: while [`exec`] runs, the calling thread blocks SIGINT, SIGTERM, SIGHUP, SIGQUIT and
//! SIGCHLD and reads them from a `signalfd`; the mask is restored before it returns. Library users
//! with other threads should block those signals in them too.

use std::{
    ffi::{CString, OsStr},
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
    sync::atomic::{AtomicI32, Ordering},
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    sys::{
        signal::{SigSet, SigmaskHow, Signal, kill, pthread_sigmask},
        signalfd::{SfdFlags, SignalFd},
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};
use serde::Serialize;

use crate::{
    error::{Error, IoContext, Result},
    injector::Counters,
    plan::{Plan, PlannedFault, SyscallEffect, SyscallPlan, SyscallTarget, errno_name},
    seccomp::{
        filter,
        notify::{self, Listener, Supervisor},
    },
};

/// The strategy name `chaos exec` reports.
pub const STRATEGY: &str = "seccomp-notify";

/// How the command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Exit {
    /// The shell's view: the code, or 128 + the signal.
    pub fn shell_code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// What `chaos exec` reports when the command has ended.
#[derive(Clone, Debug, Serialize)]
pub struct ExecReport {
    /// Always [`STRATEGY`].
    pub strategy: &'static str,
    /// The supervised calls, by name.
    pub syscalls: Vec<&'static str>,
    /// How the command ended.
    pub exit: Exit,
    /// Calls seen, matched (before the deadline, under the path prefix) and acted on.
    pub counters: Counters,
    /// How long the command ran, in milliseconds.
    pub elapsed_ms: u64,
}

/// The page parent and child share during the hand-over of the listener.
#[repr(C)]
struct Handoff {
    /// 0 while pending, [`READY`] once `value` is the listener's fd, or the failed step.
    state: AtomicI32,
    /// The fd, or the errno of the failed step.
    value: AtomicI32,
    /// Set by the parent once it holds the listener.
    ack: AtomicI32,
    /// The errno of `execv`, if it failed.
    exec_errno: AtomicI32,
}

const READY: i32 = 1;
const FAILED_NO_NEW_PRIVS: i32 = 2;
const FAILED_SECCOMP: i32 = 3;

/// An anonymous shared mapping holding one [`Handoff`], unmapped on drop.
struct SharedPage(*mut Handoff);

impl SharedPage {
    fn new() -> Result<SharedPage> {
        // SAFETY: a fresh anonymous mapping; the kernel zeroes it, and all-zero atomics are valid.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size_of::<Handoff>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::io(
                "mapping the hand-over page",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(SharedPage(p.cast()))
    }

    fn get(&self) -> &Handoff {
        // SAFETY: mapped and initialised (zeroed) until drop; only atomics are accessed.
        unsafe { &*self.0 }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer borrowed.
        unsafe { libc::munmap(self.0.cast(), size_of::<Handoff>()) };
    }
}

/// Blocks signals in the calling thread and restores the previous mask on drop.
struct MaskGuard(SigSet);

impl MaskGuard {
    fn block(set: &SigSet) -> Result<MaskGuard> {
        let mut old = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(set), Some(&mut old))
            .ctx(|| "blocking signals")?;
        Ok(MaskGuard(old))
    }
}

impl Drop for MaskGuard {
    fn drop(&mut self) {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}

/// The forked child, held by a pidfd so that signals never reach a reused pid.
struct ChildProc {
    pid: Pid,
    pidfd: OwnedFd,
    reaped: bool,
}

impl ChildProc {
    /// Takes hold of the freshly forked (not yet reaped) child `pid`; on failure kills and reaps
    /// it, which is safe while it cannot have been reaped.
    fn new(pid: Pid) -> Result<ChildProc> {
        // SAFETY: integer arguments only.
        let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
        if ret < 0 {
            let e = std::io::Error::last_os_error();
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(Error::io("pidfd_open (needs Linux 5.3)", e));
        }
        Ok(ChildProc {
            pid,
            // SAFETY: the kernel just gave us this fd; nothing else owns it.
            pidfd: unsafe { OwnedFd::from_raw_fd(ret as i32) },
            reaped: false,
        })
    }

    /// Sends `sig` (`pidfd_send_signal`; a child that already ended is not an error).
    fn signal(&self, sig: Signal) {
        // SAFETY: integer arguments and a null siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }

    /// Reaps the child if it has ended.
    fn try_wait(&mut self) -> Result<Option<Exit>> {
        if self.reaped {
            return Ok(None);
        }
        let exit = exit_of(waitpid(self.pid, Some(WaitPidFlag::WNOHANG)).ctx(|| "waitpid")?);
        self.reaped = exit.is_some();
        Ok(exit)
    }

    /// Kills and reaps the child, unless that was done.
    fn kill_and_reap(&mut self) {
        if !self.reaped {
            self.signal(Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
            self.reaped = true;
        }
    }
}

/// The signals forwarded to the command.
const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// Finds `program` as `execvp` would: a name with a slash as is, else the first executable
/// file of that name in `$PATH`.
fn resolve_program(program: &str) -> Result<PathBuf> {
    let is_exec = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        })
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        if !is_exec(&p) {
            return Err(Error::invalid(
                "command",
                format!("{program} is not an executable file"),
                "give the path of a program to run after --",
            ));
        }
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_exec(p))
        .ok_or_else(|| {
            Error::invalid(
                "command",
                format!("{program:?} not found in PATH"),
                "give the program's full path, or install it",
            )
        })
}

fn cstring(field: &'static str, s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        Error::invalid(
            field,
            format!("{s:?} contains a NUL byte"),
            "remove the NUL byte",
        )
    })
}

/// Checks that `plan` is a syscall fault `chaos exec` can serve, and returns it.
fn exec_plan(plan: &Plan) -> Result<&SyscallPlan> {
    let PlannedFault::Syscall(p) = &plan.fault else {
        return Err(Error::invalid(
            "kind",
            "chaos exec makes syscall faults only",
            "use chaos exec ... syscall fail|delay",
        ));
    };
    if p.target != SyscallTarget::Exec {
        return Err(Error::invalid(
            "pid",
            "chaos exec targets the command it starts",
            "drop --pid, --cgroup, --comm and --follow-children",
        ));
    }
    if let SyscallEffect::Signal { .. } = p.effect {
        return Err(Error::Unsupported {
            what: format!("make syscall {} under chaos exec", p.action.as_str()),
            why: "the seccomp strategy serves fail and delay only".into(),
        });
    }
    Ok(p)
}

/// Runs `command` (program and arguments) under the syscall fault of `plan` (from
/// [`crate::plan::plan_exec`]) until it exits; the fault acts for `plan.duration` at most.
///
/// # Minimum kernel version
///
/// 5.6 (`pidfd_getfd`; seccomp user notification itself is 5.0, `CONTINUE` 5.5).
pub fn exec(plan: &Plan, command: &[String]) -> Result<ExecReport> {
    let sp = exec_plan(plan)?;
    let Some(program) = command.first() else {
        return Err(Error::invalid(
            "command",
            "no command given",
            "add -- CMD ARGS... at the end",
        ));
    };
    let path = cstring("command", resolve_program(program)?.as_os_str())?;
    let args = command
        .iter()
        .map(|a| cstring("command", OsStr::new(a)))
        .collect::<Result<Vec<_>>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let nrs: Vec<u32> = sp.syscalls.iter().map(|c| c.nr).collect();
    let mut prog = filter::build(&nrs)?;
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    let sizes = notify::notif_sizes()?;
    let page = SharedPage::new()?;

    let mut signals = SigSet::empty();
    for s in FORWARDED {
        signals.add(s);
    }
    signals.add(Signal::SIGCHLD);
    let mask = MaskGuard::block(&signals)?;
    let sigfd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .ctx(|| "creating a signalfd")?;

    let started = Instant::now();
    let supervisor = std::process::id() as libc::pid_t;
    // SAFETY: the child runs only async-signal-safe code (see `child`) on data prepared above.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::io("fork", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: in the forked child; every pointer stays valid until execv or _exit.
        unsafe {
            child(
                &fprog,
                page.get(),
                path.as_ptr(),
                argv.as_ptr(),
                &mask.0,
                supervisor,
            )
        };
    }
    let mut child = ChildProc::new(Pid::from_raw(pid))?;
    let result = supervise(sp, plan.duration, &mut child, &page, sizes, &sigfd);
    drop(sigfd);
    drop(mask);
    let (exit, counters) = match result {
        Ok(done) => done,
        Err(e) => {
            // Nothing may be left behind: the command cannot run on without its supervisor.
            child.kill_and_reap();
            return Err(e);
        }
    };
    let exec_errno = page.get().exec_errno.load(Ordering::Acquire);
    if exec_errno != 0 {
        return Err(Error::io(
            format!("running {program}"),
            std::io::Error::from_raw_os_error(exec_errno),
        ));
    }
    Ok(ExecReport {
        strategy: STRATEGY,
        syscalls: sp.syscalls.iter().map(|c| c.name).collect(),
        exit,
        counters,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// The child between `fork` and `execv`: async-signal-safe calls and atomics only, no
/// allocation. Never returns.
///
/// # Safety
///
/// Call only in a freshly forked child; the pointers must be valid (they are the parent's
/// data, copied by `fork`).
unsafe fn child(
    fprog: &libc::sock_fprog,
    handoff: &Handoff,
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    mask: &SigSet,
    supervisor: libc::pid_t,
) -> ! {
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let fail = |step: i32, e: i32| -> ! {
        handoff.value.store(e, Ordering::Relaxed);
        handoff.state.store(step, Ordering::Release);
        // SAFETY: `_exit` is async-signal-safe and ends the child without running Rust code.
        unsafe { libc::_exit(127) }
    };
    // SAFETY: restores the mask the parent had, a plain sigset we own.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, mask.as_ref(), std::ptr::null_mut()) };
    // The kernel cannot take a seccomp filter off a process: were the supervisor killed, the
    // command's planned calls would fail with ENOSYS for as long as it runs, past the fault's
    // end. So the command dies with its supervisor (as under `timeout`), and never starts if
    // the supervisor is already gone.
    // SAFETY: prctl and getppid with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0
        || unsafe { libc::getppid() } != supervisor
    {
        // SAFETY: as below.
        unsafe { libc::_exit(127) }
    }
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        fail(FAILED_NO_NEW_PRIVS, errno());
    }
    // SAFETY: `fprog` points at the program, which lives in this (copied) address space.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            fprog as *const libc::sock_fprog,
        )
    };
    if fd < 0 {
        fail(FAILED_SECCOMP, errno());
    }
    handoff.value.store(fd as i32, Ordering::Relaxed);
    handoff.state.store(READY, Ordering::Release);
    // No syscall until the parent holds the listener: any of them might be a planned one.
    while handoff.ack.load(Ordering::Acquire) == 0 {
        std::hint::spin_loop();
    }
    // SAFETY: `path` and `argv` are NUL-terminated, and `argv` ends with a null pointer.
    unsafe { libc::execv(path, argv) };
    handoff.exec_errno.store(errno(), Ordering::Release);
    // SAFETY: as above.
    unsafe { libc::_exit(127) }
}

fn exit_of(status: WaitStatus) -> Option<Exit> {
    match status {
        WaitStatus::Exited(_, code) => Some(Exit::Code(code)),
        WaitStatus::Signaled(_, sig, _) => Some(Exit::Signal(sig as i32)),
        _ => None,
    }
}

/// Takes the listener from the child, then answers notifications and forwards signals until the
/// child exits.
fn supervise(
    plan: &SyscallPlan,
    duration: Duration,
    child: &mut ChildProc,
    page: &SharedPage,
    sizes: libc::seccomp_notif_sizes,
    sigfd: &SignalFd,
) -> Result<(Exit, Counters)> {
    let h = page.get();
    // The child makes no syscall between installing the filter and our ack, so this wait is
    // short; it ends early if the child dies.
    while h.state.load(Ordering::Acquire) == 0 {
        if let Some(exit) = child.try_wait()? {
            return Err(Error::io(
                "starting the command",
                std::io::Error::other(format!("the child ended early ({exit:?})")),
            ));
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    let state = h.state.load(Ordering::Acquire);
    let value = h.value.load(Ordering::Relaxed);
    if state != READY {
        child.kill_and_reap();
        let e = Errno::from_raw(value);
        return Err(if state == FAILED_SECCOMP {
            Error::Unsupported {
                what: "install the seccomp filter of chaos exec".into(),
                why: format!("seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER): {e}"),
            }
        } else {
            Error::io(
                "PR_SET_NO_NEW_PRIVS",
                std::io::Error::from_raw_os_error(value),
            )
        });
    }
    let listener = take_fd(&child.pidfd, value)?;
    h.ack.store(1, Ordering::Release);
    let deadline = Instant::now() + duration;
    let mut sup = Supervisor::new(Listener::new(listener, sizes), plan, deadline)?;
    let mut listening = true;
    let exit = 'run: loop {
        let (listener_ready, signal_ready) = {
            let mut fds = [
                libc::pollfd {
                    fd: sigfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    // A negative fd is ignored by poll.
                    fd: if listening {
                        sup.listener().as_fd().as_raw_fd()
                    } else {
                        -1
                    },
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: `fds` is an array of two pollfd we own.
            if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(Error::io("poll", e));
                }
                continue;
            }
            let l = fds[1].revents;
            if l & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 && l & libc::POLLIN == 0 {
                // No process holds the filter any more; the child's exit follows.
                listening = false;
            }
            (l & libc::POLLIN != 0, fds[0].revents & libc::POLLIN != 0)
        };
        if listener_ready {
            sup.handle_one()?;
        }
        if signal_ready {
            while let Some(info) = sigfd.read_signal().ctx(|| "reading the signalfd")? {
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGCHLD {
                    if let Some(exit) = child.try_wait()? {
                        break 'run exit;
                    }
                } else if info.ssi_code <= 0 {
                    // Sent by a process (kill, sigqueue): pass it on. A terminal's signals
                    // (SI_KERNEL) have already reached the command's process group.
                    if let Ok(s) = Signal::try_from(sig) {
                        child.signal(s);
                    }
                }
            }
        }
    };
    Ok((exit, sup.finish()))
}

/// Takes fd `fd` of the process behind `pidfd` with `pidfd_getfd`.
fn take_fd(pidfd: &OwnedFd, fd: i32) -> Result<OwnedFd> {
    // SAFETY: integer arguments only.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if ret < 0 {
        return Err(Error::io(
            "taking the seccomp listener with pidfd_getfd (needs Linux 5.6)",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: the kernel just gave us this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

/// One line for `chaos exec`'s summary: `seccomp-notify openat: seen 9 matched 4 acted 4`.
pub fn summary(r: &ExecReport, plan: &SyscallPlan) -> String {
    let effect = match plan.effect {
        SyscallEffect::Fail { errno } => format!("fail {}", errno_name(errno)),
        SyscallEffect::Delay { latency } => {
            format!("delay {}", humantime::format_duration(latency))
        }
        SyscallEffect::Signal { signal } => format!("signal {signal}"),
    };
    let exit = match r.exit {
        Exit::Code(c) => format!("exited {c}"),
        Exit::Signal(s) => format!("killed by signal {s}"),
    };
    format!(
        "chaos exec: {} {} via {}: seen {} matched {} acted {}; command {exit} after {:.1}s",
        r.syscalls.join(","),
        effect,
        r.strategy,
        r.counters.seen,
        r.counters.matched,
        r.counters.acted,
        r.elapsed_ms as f64 / 1000.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{SyscallAction, SyscallSpec};

    fn spec() -> SyscallSpec {
        SyscallSpec {
            action: SyscallAction::Fail,
            syscall: vec!["openat".into()],
            errno: Some("EACCES".into()),
            duration: Some("10s".into()),
            ..SyscallSpec::default()
        }
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        let plan = crate::plan::plan_exec(&spec()).unwrap();
        let e = exec(&plan, &[]).unwrap_err().to_string();
        assert!(e.starts_with("invalid command:"), "{e}");
        let e = exec(&plan, &["chaos-no-such-program-x".into()])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid command:"), "{e}");
        let mut kill = spec();
        kill.action = SyscallAction::Kill;
        kill.errno = None;
        let plan = crate::plan::plan_exec(&kill).unwrap();
        let e = exec(&plan, &["true".into()]).unwrap_err().to_string();
        assert!(e.contains("fail and delay only"), "{e}");
    }

    #[test]
    fn finds_programs_like_execvp() {
        assert!(resolve_program("sh").unwrap().is_absolute());
        assert_eq!(
            resolve_program("/bin/sh").unwrap(),
            PathBuf::from("/bin/sh")
        );
        assert!(
            resolve_program("/proc/self/status").is_err(),
            "not executable"
        );
        assert!(resolve_program("/").is_err(), "not a file");
        assert_eq!(Exit::Signal(15).shell_code(), 143);
        assert_eq!(Exit::Code(3).shell_code(), 3);
    }
}
