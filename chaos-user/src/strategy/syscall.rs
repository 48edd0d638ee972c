//! Syscall strategies, best first for each action (issue 5's a-e): errors through kprobe +
//! `bpf_override_return` on the syscall entry points, else BPF LSM hooks, else cgroup
//! socket-address hooks; signals from the `sys_enter` raw tracepoint; anything under `chaos
//! exec` through seccomp user notification.

use serde::{Deserialize, Serialize};
use syscalls::Sysno;

use crate::{
    error::{Error, Result},
    plan::{FD_SYSCALLS, SyscallEffect, SyscallPlan, SyscallTarget},
    probe::{Feature, Report},
};

/// How a syscall fault is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyscallStrategy {
    /// A kprobe on each `__x64_sys_*` entry point overrides its return value (needs function
    /// error injection).
    KprobeOverride,
    /// BPF LSM programs on the security hooks the calls pass (needs `bpf` among the LSMs).
    BpfLsm,
    /// A raw tracepoint on `sys_enter` sends the signal (`bpf_send_signal`).
    TracepointSignal,
    /// A raw tracepoint on `sys_enter` stops the calling process (SIGSTOP) and a keeper process
    /// continues it after the latency: the whole process freezes, not just the call.
    TracepointFreeze,
    /// cgroup socket-address hooks refuse connect / bind with `bpf_set_retval`.
    CgroupSockAddr,
    /// seccomp user notification: `chaos exec` decides every call of the command it started.
    SeccompNotify,
}

impl SyscallStrategy {
    /// Every strategy, for parsing.
    const ALL: [SyscallStrategy; 6] = [
        SyscallStrategy::KprobeOverride,
        SyscallStrategy::BpfLsm,
        SyscallStrategy::TracepointFreeze,
        SyscallStrategy::TracepointSignal,
        SyscallStrategy::CgroupSockAddr,
        SyscallStrategy::SeccompNotify,
    ];

    /// Name as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            SyscallStrategy::KprobeOverride => "kprobe-override",
            SyscallStrategy::BpfLsm => "bpf-lsm",
            SyscallStrategy::TracepointSignal => "tracepoint-signal",
            SyscallStrategy::TracepointFreeze => "tracepoint-freeze",
            SyscallStrategy::CgroupSockAddr => "cgroup-sock-addr",
            SyscallStrategy::SeccompNotify => "seccomp-notify",
        }
    }

    /// Human description.
    pub fn describe(self) -> String {
        match self {
            SyscallStrategy::KprobeOverride => {
                "kprobe on __x64_sys_* + bpf_override_return, rules in maps"
            }
            SyscallStrategy::BpfLsm => "BPF LSM hooks returning -errno, rules in maps",
            SyscallStrategy::TracepointSignal => {
                "raw tracepoint sys_enter + bpf_send_signal, rules in maps"
            }
            SyscallStrategy::TracepointFreeze => {
                "raw tracepoint sys_enter stops the caller, a keeper continues it after the \
                 latency (the whole process freezes)"
            }
            SyscallStrategy::CgroupSockAddr => {
                "cgroup connect/bind/UDP sendmsg/sockopt hooks + bpf_set_retval, rules in maps"
            }
            SyscallStrategy::SeccompNotify => "seccomp user notification (chaos exec)",
        }
        .to_owned()
    }

    /// Parses [`SyscallStrategy::as_str`]'s names.
    pub fn parse(s: &str) -> Option<SyscallStrategy> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl std::fmt::Display for SyscallStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Picks the strategy for syscall fault `plan`, or says which strategies could serve it and
/// what this kernel (or this build) lacks.
pub fn choose(plan: &SyscallPlan, probe: &Report) -> Result<SyscallStrategy> {
    let unsupported = |why: String| Error::Unsupported {
        what: format!("syscall {}", plan.action.as_str()),
        why,
    };
    if plan.target == SyscallTarget::Exec {
        if matches!(plan.effect, SyscallEffect::Signal { .. }) {
            return Err(unsupported(
                "chaos exec makes calls fail or wait; for kill or stop use chaos inject syscall \
                 with --pid"
                    .into(),
            ));
        }
        probe
            .require(Feature::SeccompUserNotif)
            .map_err(unsupported)?;
        return Ok(SyscallStrategy::SeccompNotify);
    }
    let follow = matches!(
        plan.target,
        SyscallTarget::Pid {
            follow_children: true,
            ..
        }
    );
    let bpf = |needs: &[Feature]| -> std::result::Result<(), String> {
        for f in [Feature::Bpffs, Feature::RawTracepoint]
            .iter()
            .chain(needs)
            .chain(if follow {
                &[Feature::Tracepoint][..]
            } else {
                &[]
            })
        {
            probe.require(*f)?;
        }
        Ok(())
    };
    match plan.effect {
        SyscallEffect::Signal { .. } => {
            bpf(&[Feature::HelperSendSignal]).map_err(unsupported)?;
            Ok(SyscallStrategy::TracepointSignal)
        }
        SyscallEffect::Fail { .. } => {
            let path = plan.path_prefix.is_some();
            let path_btf = || {
                if path {
                    probe.require(Feature::Btf)
                } else {
                    Ok(())
                }
            };
            // /proc/sys holds a directory per network namespace: a path there is matched by
            // sysctl name, through the cgroup hook, not by the directory's inode.
            let not_sysctl = || match sysctl_subtree(plan) {
                Some(_) => Err(
                    "files under /proc/sys differ per network namespace; they are matched by \
                     name through the cgroup sysctl hook"
                        .to_owned(),
                ),
                None => Ok(()),
            };
            let kprobe = bpf(&[Feature::KprobeOverride])
                .and_then(|()| not_sysctl())
                .and_then(|()| kprobe_path(plan))
                .and_then(|()| path_btf());
            if kprobe.is_ok() {
                return Ok(SyscallStrategy::KprobeOverride);
            }
            let lsm = bpf(&[Feature::Lsm])
                .and_then(|()| not_sysctl())
                .and_then(|()| lsm_calls(plan))
                .and_then(|()| path_btf());
            if lsm.is_ok() {
                return Ok(SyscallStrategy::BpfLsm);
            }
            let cgroup = match (path, sysctl_subtree(plan)) {
                (true, Some(_)) => cgroup_sysctl(plan),
                (true, None) => Err(
                    "they do not see files, so no --path-prefix (but read/write under /proc/sys: \
                     the sysctl hook)"
                        .to_owned(),
                ),
                (false, _) => cgroup_sock_addr(plan, probe),
            };
            if cgroup.is_ok() {
                return Ok(SyscallStrategy::CgroupSockAddr);
            }
            Err(unsupported(format!(
                "kprobe + bpf_override_return (any call; needs function error injection): {}; \
                 BPF LSM hooks: {}; cgroup hooks: {}; chaos exec (seccomp) works on any kernel",
                kprobe.unwrap_err(),
                lsm.unwrap_err(),
                cgroup.unwrap_err()
            )))
        }
        SyscallEffect::Delay { .. } => {
            if plan.path_prefix.is_some() {
                return Err(unsupported(
                    "a running process's calls are delayed from sys_enter, which does not see \
                     files: no --path-prefix (chaos exec delays by path)"
                        .into(),
                ));
            }
            bpf(&[Feature::HelperSendSignal]).map_err(unsupported)?;
            Ok(SyscallStrategy::TracepointFreeze)
        }
    }
}

/// The calls the BPF LSM programs serve: the hook each passes, and whether that hook sees the
/// file (so a path prefix can select it).
pub const LSM_CALLS: &[(Sysno, &str, bool)] = &[
    (Sysno::open, "file_open", true),
    (Sysno::openat, "file_open", true),
    (Sysno::openat2, "file_open", true),
    (Sysno::creat, "file_open", true),
    (Sysno::read, "file_permission", true),
    (Sysno::write, "file_permission", true),
    (Sysno::pread64, "file_permission", true),
    (Sysno::pwrite64, "file_permission", true),
    (Sysno::readv, "file_permission", true),
    (Sysno::writev, "file_permission", true),
    (Sysno::preadv, "file_permission", true),
    (Sysno::pwritev, "file_permission", true),
    (Sysno::preadv2, "file_permission", true),
    (Sysno::pwritev2, "file_permission", true),
    // vfs_fallocate checks security_file_permission(file, MAY_WRITE) too.
    (Sysno::fallocate, "file_permission", true),
    (Sysno::mmap, "mmap_file", true),
    (Sysno::unlink, "inode_unlink", true),
    (Sysno::unlinkat, "inode_unlink", true),
    (Sysno::mkdir, "inode_mkdir", true),
    (Sysno::mkdirat, "inode_mkdir", true),
    (Sysno::socket, "socket_create", false),
    (Sysno::connect, "socket_connect", false),
    (Sysno::bind, "socket_bind", false),
    (Sysno::sendto, "socket_sendmsg", false),
    (Sysno::sendmsg, "socket_sendmsg", false),
    (Sysno::sendmmsg, "socket_sendmsg", false),
    (Sysno::recvfrom, "socket_recvmsg", false),
    (Sysno::recvmsg, "socket_recvmsg", false),
    (Sysno::recvmmsg, "socket_recvmsg", false),
    (Sysno::fork, "task_alloc", false),
    (Sysno::vfork, "task_alloc", false),
    (Sysno::clone, "task_alloc", false),
    (Sysno::clone3, "task_alloc", false),
];

/// The LSM hook call `nr` passes, and whether it sees the file.
pub fn lsm_hook(nr: u32) -> Option<(&'static str, bool)> {
    LSM_CALLS
        .iter()
        .find(|(s, _, _)| s.id() as u32 == nr)
        .map(|&(_, hook, file)| (hook, file))
}

/// Whether the kprobe's path filter can serve `plan`'s calls, or why not.
fn kprobe_path(plan: &SyscallPlan) -> std::result::Result<(), String> {
    if plan.path_prefix.is_none() {
        return Ok(());
    }
    match plan
        .syscalls
        .iter()
        .find(|c| !FD_SYSCALLS.iter().any(|s| s.id() as u32 == c.nr))
    {
        Some(c) => Err(format!(
            "its path filter reads a descriptor argument, and {} has none",
            c.name
        )),
        None => Ok(()),
    }
}

/// Whether the LSM hooks serve all of `plan`'s calls (and see their files, for a path prefix),
/// or why not.
fn lsm_calls(plan: &SyscallPlan) -> std::result::Result<(), String> {
    for c in &plan.syscalls {
        match lsm_hook(c.nr) {
            None => return Err(format!("no hook is passed by {} alone", c.name)),
            Some((hook, false)) if plan.path_prefix.is_some() => {
                return Err(format!("{hook} (for {}) does not see a file", c.name));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The socket calls the cgroup socket hooks serve, with their programs. The UDP sendmsg hook
/// serves sendto, sendmsg and sendmmsg alike (it cannot tell them apart); receiving has no
/// hook that may refuse.
pub const SOCK_ADDR_CALLS: &[(&str, &[&str])] = {
    use chaos_common::syscall::*;
    &[
        ("connect", &[PROG_SYS_CONNECT4, PROG_SYS_CONNECT6]),
        ("bind", &[PROG_SYS_BIND4, PROG_SYS_BIND6]),
        ("sendto", &[PROG_SYS_SENDMSG4, PROG_SYS_SENDMSG6]),
        ("sendmsg", &[PROG_SYS_SENDMSG4, PROG_SYS_SENDMSG6]),
        ("sendmmsg", &[PROG_SYS_SENDMSG4, PROG_SYS_SENDMSG6]),
        ("setsockopt", &[PROG_SYS_SETSOCKOPT]),
        ("getsockopt", &[PROG_SYS_GETSOCKOPT]),
    ]
};

/// Calls the cgroup send hook judges as one (the kernel program uses sendmsg's number).
pub const UDP_SEND_CALLS: &[Sysno] = &[Sysno::sendto, Sysno::sendmsg, Sysno::sendmmsg];

/// The sysctl subtree a path prefix under /proc/sys names (`net/ipv4` for
/// `/proc/sys/net/ipv4`; empty for /proc/sys itself).
pub fn sysctl_subtree(plan: &SyscallPlan) -> Option<String> {
    let rest = plan.path_prefix.as_ref()?.strip_prefix("/proc/sys").ok()?;
    Some(rest.to_string_lossy().trim_matches('/').to_owned())
}

/// Whether the cgroup sysctl hook can serve `plan` (read / write under /proc/sys), or why not.
fn cgroup_sysctl(plan: &SyscallPlan) -> std::result::Result<(), String> {
    if let Some(c) = plan
        .syscalls
        .iter()
        .find(|c| c.name != "read" && c.name != "write")
    {
        return Err(format!(
            "under /proc/sys the sysctl hook serves read and write, not {}",
            c.name
        ));
    }
    let name = sysctl_subtree(plan).unwrap_or_default();
    if name.len() >= chaos_common::syscall::SYSCTL_NAME_LEN {
        return Err(format!(
            "the sysctl subtree {name} is longer than {} bytes",
            chaos_common::syscall::SYSCTL_NAME_LEN - 1
        ));
    }
    match &plan.target {
        SyscallTarget::Cgroup(_) => Ok(()),
        SyscallTarget::Pid { .. } if plan.process_cgroup.is_some() => Ok(()),
        _ => {
            Err("the sysctl hook needs a --cgroup target or a --pid outside the root cgroup".into())
        }
    }
}

/// Whether the cgroup socket-address hooks can serve `plan`, or why not.
fn cgroup_sock_addr(plan: &SyscallPlan, probe: &Report) -> std::result::Result<(), String> {
    if let Some(c) = plan
        .syscalls
        .iter()
        .find(|c| !SOCK_ADDR_CALLS.iter().any(|(n, _)| *n == c.name))
    {
        let served: Vec<&str> = SOCK_ADDR_CALLS.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "they serve {} (sends over UDP only), not {}",
            served.join(", "),
            c.name
        ));
    }
    match &plan.target {
        SyscallTarget::Cgroup(_) => {}
        SyscallTarget::Pid { .. } if plan.process_cgroup.is_some() => {}
        SyscallTarget::Pid { pid, .. } => {
            return Err(format!(
                "process {pid} is in the root cgroup, and the hooks go on its cgroup"
            ));
        }
        _ => return Err("they need a --cgroup or --pid target".into()),
    }
    probe.require(Feature::CgroupSockAddr)?;
    if plan
        .syscalls
        .iter()
        .any(|c| c.name == "setsockopt" || c.name == "getsockopt")
    {
        probe.require(Feature::CgroupSockopt)?;
    }
    probe.require(Feature::HelperSetRetval)?;
    probe.require(Feature::Bpffs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{plan::Chance, spec::SyscallAction, strategy::tests::report};

    fn plan(effect: SyscallEffect, target: SyscallTarget) -> SyscallPlan {
        SyscallPlan {
            action: SyscallAction::Fail,
            syscalls: vec![],
            effect,
            chance: Chance::always(),
            path_prefix: None,
            after: 0,
            every: 1,
            max_count: None,
            target,
            process_cgroup: None,
        }
    }

    #[test]
    fn picks_per_action_and_says_why_not() {
        let pid = SyscallTarget::Pid {
            pid: 1,
            follow_children: false,
        };
        let base = [Feature::Bpffs, Feature::RawTracepoint];
        let kill = plan(SyscallEffect::Signal { signal: 9 }, pid.clone());
        let with = |extra: &[Feature]| report(&[&base[..], extra].concat());
        assert_eq!(
            choose(&kill, &with(&[Feature::HelperSendSignal])).unwrap(),
            SyscallStrategy::TracepointSignal
        );
        let delay = plan(
            SyscallEffect::Delay {
                latency: std::time::Duration::from_millis(200),
            },
            pid.clone(),
        );
        assert_eq!(
            choose(&delay, &with(&[Feature::HelperSendSignal])).unwrap(),
            SyscallStrategy::TracepointFreeze
        );
        let fail = plan(SyscallEffect::Fail { errno: 5 }, pid);
        assert_eq!(
            choose(&fail, &with(&[Feature::KprobeOverride])).unwrap(),
            SyscallStrategy::KprobeOverride
        );
        let err = choose(&fail, &with(&[])).unwrap_err().to_string();
        assert!(
            err.contains("function error injection")
                && err.contains("BPF LSM")
                && err.contains("chaos exec"),
            "{err}"
        );
        let exec = plan(SyscallEffect::Fail { errno: 5 }, SyscallTarget::Exec);
        assert_eq!(
            choose(&exec, &report(&[Feature::SeccompUserNotif])).unwrap(),
            SyscallStrategy::SeccompNotify
        );
        for s in SyscallStrategy::ALL {
            assert_eq!(SyscallStrategy::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn lsm_serves_what_kprobes_cannot_see() {
        let call = |s: Sysno| crate::plan::Syscall {
            name: s.name(),
            nr: s.id() as u32,
        };
        let cgroup_fail = |calls: &[Sysno], path: bool| {
            let mut p = plan(
                SyscallEffect::Fail { errno: 5 },
                SyscallTarget::Pid {
                    pid: 1,
                    follow_children: false,
                },
            );
            p.syscalls = calls.iter().map(|s| call(*s)).collect();
            p.path_prefix = path.then(|| "/data".into());
            p
        };
        let base = [Feature::Bpffs, Feature::RawTracepoint, Feature::Btf];
        let with = |extra: &[Feature]| report(&[&base[..], extra].concat());
        let both = with(&[Feature::KprobeOverride, Feature::Lsm]);
        // A descriptor call under a path: the kprobe reads the file from the descriptor.
        let fsync = cgroup_fail(&[Sysno::fsync], true);
        assert_eq!(
            choose(&fsync, &both).unwrap(),
            SyscallStrategy::KprobeOverride
        );
        // openat under a path has no descriptor yet: file_open sees the file.
        let open = cgroup_fail(&[Sysno::openat, Sysno::read], true);
        assert_eq!(choose(&open, &both).unwrap(), SyscallStrategy::BpfLsm);
        // Without error injection, LSM serves the calls with hooks; fsync passes none.
        let lsm = with(&[Feature::Lsm]);
        assert_eq!(
            choose(&cgroup_fail(&[Sysno::write], false), &lsm).unwrap(),
            SyscallStrategy::BpfLsm
        );
        let err = choose(&fsync, &lsm).unwrap_err().to_string();
        assert!(err.contains("no hook is passed by fsync"), "{err}");
        // Socket hooks do not see files.
        let err = choose(&cgroup_fail(&[Sysno::connect], true), &lsm)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not see a file"), "{err}");
    }
}
