//! Syscall strategies, best first for each action (issue 5's a-e): errors through kprobe +
//! `bpf_override_return` on the syscall entry points; signals from the `sys_enter` raw
//! tracepoint; anything under `chaos exec` through seccomp user notification.

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    plan::{SyscallEffect, SyscallPlan, SyscallTarget},
    probe::{Feature, Report},
};

/// How a syscall fault is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyscallStrategy {
    /// A kprobe on each `__x64_sys_*` entry point overrides its return value (needs function
    /// error injection).
    KprobeOverride,
    /// A raw tracepoint on `sys_enter` sends the signal (`bpf_send_signal`).
    TracepointSignal,
    /// cgroup socket-address hooks refuse connect / bind with `bpf_set_retval`.
    CgroupSockAddr,
    /// seccomp user notification: `chaos exec` decides every call of the command it started.
    SeccompNotify,
}

impl SyscallStrategy {
    /// Every strategy, for parsing.
    const ALL: [SyscallStrategy; 4] = [
        SyscallStrategy::KprobeOverride,
        SyscallStrategy::TracepointSignal,
        SyscallStrategy::CgroupSockAddr,
        SyscallStrategy::SeccompNotify,
    ];

    /// Name as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            SyscallStrategy::KprobeOverride => "kprobe-override",
            SyscallStrategy::TracepointSignal => "tracepoint-signal",
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
            SyscallStrategy::TracepointSignal => {
                "raw tracepoint sys_enter + bpf_send_signal, rules in maps"
            }
            SyscallStrategy::CgroupSockAddr => {
                "cgroup connect/bind hooks + bpf_set_retval, rules in maps"
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
            if plan.path_prefix.is_some() {
                return Err(unsupported(
                    "a path prefix is judged by chaos exec (seccomp) in this build; the kernel \
                     strategies select by process, cgroup or name"
                        .into(),
                ));
            }
            let kprobe = bpf(&[Feature::KprobeOverride]);
            if kprobe.is_ok() {
                return Ok(SyscallStrategy::KprobeOverride);
            }
            let cgroup = cgroup_sock_addr(plan, probe);
            if cgroup.is_ok() {
                return Ok(SyscallStrategy::CgroupSockAddr);
            }
            Err(unsupported(format!(
                "kprobe + bpf_override_return needs function error injection ({}); cgroup \
                 hooks: {}; BPF LSM is not built yet; chaos exec (seccomp) works on any kernel",
                kprobe.unwrap_err(),
                cgroup.unwrap_err()
            )))
        }
        SyscallEffect::Delay { .. } => Err(unsupported(
            "delaying a running process's calls (stop + timed continue) is not built yet; chaos \
             exec (seccomp) delays the calls of a command it starts"
                .into(),
        )),
    }
}

/// The socket calls the cgroup socket-address hooks serve, with their programs.
pub const SOCK_ADDR_CALLS: &[(&str, &[&str])] = &[
    (
        "connect",
        &[
            chaos_common::syscall::PROG_SYS_CONNECT4,
            chaos_common::syscall::PROG_SYS_CONNECT6,
        ],
    ),
    (
        "bind",
        &[
            chaos_common::syscall::PROG_SYS_BIND4,
            chaos_common::syscall::PROG_SYS_BIND6,
        ],
    ),
];

/// Whether the cgroup socket-address hooks can serve `plan`, or why not.
fn cgroup_sock_addr(plan: &SyscallPlan, probe: &Report) -> std::result::Result<(), String> {
    if let Some(c) = plan
        .syscalls
        .iter()
        .find(|c| !SOCK_ADDR_CALLS.iter().any(|(n, _)| *n == c.name))
    {
        return Err(format!("they serve connect and bind, not {}", c.name));
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
        let fail = plan(SyscallEffect::Fail { errno: 5 }, pid);
        assert_eq!(
            choose(&fail, &with(&[Feature::KprobeOverride])).unwrap(),
            SyscallStrategy::KprobeOverride
        );
        let err = choose(&fail, &with(&[])).unwrap_err().to_string();
        assert!(
            err.contains("function error injection") && err.contains("chaos exec"),
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
}
