//! Syscall fault plans: syscall names and errnos checked against the x86_64 tables, the target
//! resolved (a live process, a cgroup, or a command name), counters and guards applied.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};
use syscalls::{Errno, Sysno};

use super::{
    CgroupTarget, Chance, Plan, PlannedFault, check_percent, fault_duration, parse_span,
    resolve_cgroup,
};
use crate::{
    error::{Error, Result},
    spec::{FaultSpec, SyscallAction, SyscallSpec},
};

/// The longest syscall delay: past a minute, a delay is a hang; `stop` says so honestly.
pub const MAX_SYSCALL_LATENCY: Duration = Duration::from_secs(60);

/// Longest `comm` the kernel keeps (TASK_COMM_LEN - 1).
pub const MAX_COMM_LEN: usize = 15;

/// Longest `path_prefix`, in bytes.
pub const MAX_PATH_PREFIX: usize = 128;

/// Calls whose first argument is a file descriptor (a kernel path filter can find the file
/// through it).
pub const FD_SYSCALLS: &[Sysno] = &[
    Sysno::read,
    Sysno::write,
    Sysno::pread64,
    Sysno::pwrite64,
    Sysno::readv,
    Sysno::writev,
    Sysno::preadv,
    Sysno::pwritev,
    Sysno::preadv2,
    Sysno::pwritev2,
    Sysno::fsync,
    Sysno::fdatasync,
    Sysno::sync_file_range,
    Sysno::ftruncate,
    Sysno::fallocate,
];

/// Calls that name a file. With [`FD_SYSCALLS`], the ones a path prefix can select.
pub const PATH_SYSCALLS: &[Sysno] = &[
    Sysno::open,
    Sysno::openat,
    Sysno::openat2,
    Sysno::creat,
    Sysno::truncate,
    Sysno::unlink,
    Sysno::unlinkat,
    Sysno::rename,
    Sysno::renameat,
    Sysno::renameat2,
    Sysno::mkdir,
    Sysno::mkdirat,
    Sysno::rmdir,
];

/// One system call, by name and x86_64 number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Syscall {
    /// Its name, as in `man 2`.
    pub name: &'static str,
    /// Its x86_64 number.
    pub nr: u32,
}

impl Syscall {
    /// The call `s`.
    pub fn of(s: Sysno) -> Syscall {
        Syscall {
            name: s.name(),
            nr: s.id() as u32,
        }
    }

    /// Whether a path prefix can select this call.
    pub fn is_file_call(self) -> bool {
        FD_SYSCALLS
            .iter()
            .chain(PATH_SYSCALLS)
            .any(|f| f.id() as u32 == self.nr)
    }
}

/// What a selected call suffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyscallEffect {
    /// Return `-errno` without running the call.
    Fail {
        /// The error number (positive).
        errno: i32,
    },
    /// Run the call this late.
    Delay {
        /// How late.
        latency: Duration,
    },
    /// Send this signal to the caller at the call.
    Signal {
        /// The signal number.
        signal: i32,
    },
}

/// Whose calls a syscall fault selects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyscallTarget {
    /// A process (every thread), and with `follow_children` the processes it starts later.
    Pid {
        /// The process.
        pid: u32,
        /// Follow its children (and theirs) from now on.
        follow_children: bool,
    },
    /// The processes of a cgroup v2 and of those below it.
    Cgroup(CgroupTarget),
    /// Processes by name (`comm`).
    Comm(String),
    /// The command `chaos exec` starts (and its children).
    Exec,
}

/// A syscall fault, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct SyscallPlan {
    /// The action asked for.
    pub action: SyscallAction,
    /// The calls, deduplicated, in the order given.
    pub syscalls: Vec<Syscall>,
    /// What the selected calls suffer.
    pub effect: SyscallEffect,
    /// How often (no correlation).
    pub chance: Chance,
    /// Only calls on files under this absolute directory.
    pub path_prefix: Option<PathBuf>,
    /// Selected calls let through before any is acted on.
    pub after: u64,
    /// Act on every Nth selected call after those (1: every one).
    pub every: u64,
    /// Act at most this many times.
    pub max_count: Option<u64>,
    /// Whose calls.
    pub target: SyscallTarget,
    /// With a `--pid` target, the process's own cgroup v2 (not the root one): where cgroup
    /// hooks go for it.
    pub process_cgroup: Option<CgroupTarget>,
}

impl SyscallPlan {
    /// A fault failing `calls` with `errno` (at `chance`) on files under `prefix`, for `target`:
    /// the file-call form of block I/O and disk faults.
    pub fn fail_under(
        calls: &[Sysno],
        errno: i32,
        chance: Chance,
        prefix: PathBuf,
        target: SyscallTarget,
    ) -> SyscallPlan {
        SyscallPlan {
            action: SyscallAction::Fail,
            syscalls: calls.iter().map(|c| Syscall::of(*c)).collect(),
            effect: SyscallEffect::Fail { errno },
            chance,
            path_prefix: Some(prefix),
            after: 0,
            every: 1,
            max_count: None,
            process_cgroup: match &target {
                SyscallTarget::Pid { pid, .. } => super::cgroup_of(*pid),
                _ => None,
            },
            target,
        }
    }
}

/// Looks up a syscall by name or x86_64 number.
pub fn parse_syscall(text: &str) -> Result<Syscall> {
    let t = text.trim();
    let by_name = t.parse::<Sysno>().ok();
    let by_number = t.parse::<u32>().ok().and_then(|n| Sysno::new(n as usize));
    by_name.or(by_number).map(Syscall::of).ok_or_else(|| {
        Error::invalid(
            "syscall",
            format!("{t:?} is not an x86_64 system call"),
            "use the name from man 2, e.g. openat, read, write, fsync, connect",
        )
    })
}

/// Looks up an errno by name (`EIO`, `eio`) or number (`5`).
pub fn parse_errno(text: &str) -> Result<i32> {
    let t = text.trim();
    let bad = || {
        Error::invalid(
            "errno",
            format!("{t:?} is not an errno"),
            "give a name such as EIO, ENOSPC, ECONNREFUSED, or its number (1-133)",
        )
    };
    if let Ok(n) = t.parse::<i32>() {
        return Errno::new(n).name().map(|_| n).ok_or_else(bad);
    }
    let upper = t.to_ascii_uppercase();
    (1..4096)
        .find(|n| Errno::new(*n).name() == Some(upper.as_str()))
        .ok_or_else(bad)
}

/// The name of errno `n` (e.g. `EIO`), or its number.
pub fn errno_name(n: i32) -> String {
    Errno::new(n)
        .name()
        .map_or_else(|| n.to_string(), str::to_owned)
}

/// Looks up a signal by name (`SIGKILL`, `KILL`, `kill`) or number.
pub fn parse_signal(text: &str) -> Result<i32> {
    let t = text.trim();
    let bad = || {
        Error::invalid(
            "signal",
            format!("{t:?} is not a signal"),
            "give a name such as SIGKILL, SIGTERM, SIGABRT, SIGSEGV, or its number",
        )
    };
    if let Ok(n) = t.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map(|s| s as i32)
            .map_err(|_| bad());
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| bad())
}

fn unused<T>(value: &Option<T>, field: &'static str, action: SyscallAction) -> Result<()> {
    if value.is_some() {
        return Err(Error::invalid(
            field,
            format!("syscall {} does not use --{field}", action.as_str()),
            format!("drop --{field}"),
        ));
    }
    Ok(())
}

fn effect(s: &SyscallSpec) -> Result<SyscallEffect> {
    let a = s.action;
    match a {
        SyscallAction::Fail => {
            unused(&s.latency, "latency", a)?;
            unused(&s.signal, "signal", a)?;
            let errno = s.errno.as_deref().ok_or_else(|| {
                Error::invalid(
                    "errno",
                    "syscall fail needs --errno",
                    "add --errno EIO (or another name or number)",
                )
            })?;
            Ok(SyscallEffect::Fail {
                errno: parse_errno(errno)?,
            })
        }
        SyscallAction::Delay => {
            unused(&s.errno, "errno", a)?;
            unused(&s.signal, "signal", a)?;
            let text = s.latency.as_deref().ok_or_else(|| {
                Error::invalid(
                    "latency",
                    "syscall delay needs --latency",
                    "add --latency 200ms",
                )
            })?;
            let latency = parse_span("latency", text)?;
            if latency.is_zero() || latency > MAX_SYSCALL_LATENCY {
                return Err(Error::invalid(
                    "latency",
                    format!("{text} is not between 1us and 60s"),
                    "give a delay such as 200ms; for a hang use syscall stop",
                ));
            }
            Ok(SyscallEffect::Delay { latency })
        }
        SyscallAction::Kill => {
            unused(&s.errno, "errno", a)?;
            unused(&s.latency, "latency", a)?;
            let signal = s
                .signal
                .as_deref()
                .map_or(Ok(libc::SIGKILL), parse_signal)?;
            Ok(SyscallEffect::Signal { signal })
        }
        SyscallAction::Stop => {
            unused(&s.errno, "errno", a)?;
            unused(&s.latency, "latency", a)?;
            unused(&s.signal, "signal", a)?;
            Ok(SyscallEffect::Signal {
                signal: libc::SIGSTOP,
            })
        }
    }
}

fn target(s: &SyscallSpec) -> Result<SyscallTarget> {
    let given = [s.pid.is_some(), s.cgroup.is_some(), s.comm.is_some()]
        .iter()
        .filter(|g| **g)
        .count();
    if given != 1 {
        return Err(Error::invalid(
            "pid",
            if given == 0 {
                "no target"
            } else {
                "more than one target"
            },
            "give exactly one of --pid PID, --cgroup PATH or --comm NAME (or use chaos exec)",
        ));
    }
    if s.follow_children && s.pid.is_none() {
        return Err(Error::invalid(
            "follow-children",
            "--follow-children goes with --pid",
            "add --pid PID, or drop --follow-children",
        ));
    }
    if let Some(pid) = s.pid {
        super::check_pid(pid, s.force)?;
        return Ok(SyscallTarget::Pid {
            pid,
            follow_children: s.follow_children,
        });
    }
    if let Some(c) = &s.cgroup {
        return Ok(SyscallTarget::Cgroup(resolve_cgroup(c, s.force)?));
    }
    let comm = s.comm.clone().unwrap_or_default();
    if comm.is_empty() || comm.len() > MAX_COMM_LEN || comm.contains('\0') {
        return Err(Error::invalid(
            "comm",
            format!("{comm:?} is not a process name"),
            "give the name as in /proc/PID/comm (1 to 15 bytes)",
        ));
    }
    Ok(SyscallTarget::Comm(comm))
}

/// Validates `s` (the whole of `spec`) into a plan; `exec`: for `chaos exec`, whose command is
/// the target (no --pid, --cgroup or --comm then).
fn plan_with(spec: &FaultSpec, s: &SyscallSpec, exec: bool) -> Result<Plan> {
    let duration = fault_duration(s.duration.as_deref())?;
    if s.syscall.is_empty() {
        return Err(Error::invalid(
            "syscall",
            "no system call named",
            "add --syscall, e.g. --syscall openat,fsync",
        ));
    }
    let mut syscalls: Vec<Syscall> = Vec::new();
    for name in s.syscall.iter().flat_map(|n| n.split(',')) {
        let call = parse_syscall(name)?;
        if !syscalls.contains(&call) {
            syscalls.push(call);
        }
    }
    let effect = effect(s)?;
    let percent = check_percent("percent", s.percent.unwrap_or(100.0))?;
    let path_prefix = match &s.path_prefix {
        None => None,
        Some(p) => {
            let path = PathBuf::from(p);
            if !path.is_absolute() || p.len() > MAX_PATH_PREFIX || p.contains('\0') {
                return Err(Error::invalid(
                    "path-prefix",
                    format!("{p:?} is not an absolute path of at most {MAX_PATH_PREFIX} bytes"),
                    "give a directory such as /var/lib/postgresql",
                ));
            }
            if let Some(c) = syscalls.iter().find(|c| !c.is_file_call()) {
                return Err(Error::invalid(
                    "path-prefix",
                    format!("{} does not act on a file", c.name),
                    "use --path-prefix with file calls only (openat, read, write, fsync...)",
                ));
            }
            Some(path)
        }
    };
    if s.every == Some(0) || s.max_count == Some(0) {
        return Err(Error::invalid(
            if s.every == Some(0) {
                "every"
            } else {
                "max-count"
            },
            "0 is not a count here",
            "give 1 or more",
        ));
    }
    let target = if exec {
        if s.pid.is_some() || s.cgroup.is_some() || s.comm.is_some() || s.follow_children {
            return Err(Error::invalid(
                "pid",
                "chaos exec targets the command it starts",
                "drop --pid, --cgroup, --comm and --follow-children",
            ));
        }
        SyscallTarget::Exec
    } else {
        target(s)?
    };
    Ok(Plan {
        spec: spec.clone(),
        duration,
        fault: PlannedFault::Syscall(SyscallPlan {
            action: s.action,
            syscalls,
            effect,
            chance: Chance::new(percent, 0.0),
            path_prefix,
            after: s.after.unwrap_or(0),
            every: s.every.unwrap_or(1),
            max_count: s.max_count,
            process_cgroup: match &target {
                SyscallTarget::Pid { pid, .. } => super::cgroup_of(*pid),
                _ => None,
            },
            target,
        }),
    })
}

/// Validates a syscall spec with its target into a plan.
pub(super) fn plan(spec: &FaultSpec, s: &SyscallSpec) -> Result<Plan> {
    plan_with(spec, s, false)
}

/// Validates the fault of a `chaos exec` (no target: the command is the target) into a plan.
pub fn plan_exec(s: &SyscallSpec) -> Result<Plan> {
    plan_with(&FaultSpec::Syscall(s.clone()), s, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(action: SyscallAction) -> SyscallSpec {
        SyscallSpec {
            action,
            syscall: vec!["openat,fsync".into()],
            errno: Some("EIO".into()),
            pid: Some(std::process::id()),
            force: true,
            duration: Some("10s".into()),
            ..SyscallSpec::default()
        }
    }

    fn err(s: &SyscallSpec) -> String {
        crate::plan::plan(&FaultSpec::Syscall(s.clone()))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse_syscall("fsync").unwrap().nr, 74);
        assert_eq!(parse_syscall("257").unwrap().name, "openat");
        assert!(parse_syscall("fsyncc").is_err());
        assert_eq!(parse_errno("EIO").unwrap(), 5);
        assert_eq!(parse_errno("enospc").unwrap(), 28);
        assert_eq!(parse_errno("5").unwrap(), 5);
        for bad in ["EFOO", "0", "-5", "99999"] {
            assert!(parse_errno(bad).is_err(), "{bad}");
        }
        assert_eq!(errno_name(111), "ECONNREFUSED");
        assert_eq!(parse_signal("KILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("6").unwrap(), libc::SIGABRT);
        assert!(parse_signal("SIGFOO").is_err());
    }

    #[test]
    fn plans_a_fail() {
        let mut s = spec(SyscallAction::Fail);
        s.path_prefix = Some("/var/lib/db".into());
        s.every = Some(2);
        let p = crate::plan::plan(&FaultSpec::Syscall(s)).unwrap();
        let PlannedFault::Syscall(p) = p.fault else {
            panic!()
        };
        let names: Vec<&str> = p.syscalls.iter().map(|c| c.name).collect();
        assert_eq!(names, ["openat", "fsync"]);
        assert_eq!(p.effect, SyscallEffect::Fail { errno: 5 });
        assert_eq!((p.after, p.every, p.max_count), (0, 2, None));
    }

    #[test]
    fn bad_input_names_the_field() {
        let mut s = spec(SyscallAction::Fail);
        s.errno = None;
        assert!(err(&s).starts_with("invalid errno:"), "{}", err(&s));
        let mut s = spec(SyscallAction::Fail);
        s.syscall = vec!["connect".into()];
        s.path_prefix = Some("/data".into());
        assert!(err(&s).starts_with("invalid path-prefix:"), "{}", err(&s));
        let mut s = spec(SyscallAction::Fail);
        s.path_prefix = Some("relative/dir".into());
        assert!(err(&s).starts_with("invalid path-prefix:"), "{}", err(&s));
        let mut s = spec(SyscallAction::Delay);
        s.errno = None;
        s.latency = Some("2m".into());
        assert!(err(&s).starts_with("invalid latency:"), "{}", err(&s));
        let mut s = spec(SyscallAction::Fail);
        s.comm = Some("postgres".into());
        assert!(err(&s).contains("more than one target"), "{}", err(&s));
        let mut s = spec(SyscallAction::Fail);
        s.pid = None;
        s.comm = Some("a-name-longer-than-15".into());
        assert!(err(&s).starts_with("invalid comm:"), "{}", err(&s));
        let mut s = spec(SyscallAction::Fail);
        s.force = false;
        s.pid = Some(1);
        assert!(err(&s).contains("init"), "{}", err(&s));
        let mut s = spec(SyscallAction::Stop);
        s.errno = None;
        s.signal = Some("SIGKILL".into());
        assert!(err(&s).starts_with("invalid signal:"), "{}", err(&s));
        let mut s = spec(SyscallAction::Fail);
        s.every = Some(0);
        assert!(err(&s).starts_with("invalid every:"), "{}", err(&s));
        let s = spec(SyscallAction::Fail);
        assert!(plan_exec(&s).is_err(), "exec takes no target");
    }
}
