//! Syscall fault specs: make chosen system calls of a target fail, wait, or bring a signal.

use serde::{Deserialize, Serialize};

/// What a selected call suffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyscallAction {
    /// Return `-errno` instead of running the call.
    #[default]
    Fail,
    /// Run the call `latency` late.
    Delay,
    /// Send `signal` (SIGKILL by default) to the caller at the call.
    Kill,
    /// Stop the caller (SIGSTOP) at the call.
    Stop,
}

impl SyscallAction {
    /// Every action.
    pub const ALL: [SyscallAction; 4] = [
        SyscallAction::Fail,
        SyscallAction::Delay,
        SyscallAction::Kill,
        SyscallAction::Stop,
    ];

    /// Lowercase name, as in specs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            SyscallAction::Fail => "fail",
            SyscallAction::Delay => "delay",
            SyscallAction::Kill => "kill",
            SyscallAction::Stop => "stop",
        }
    }
}

/// A syscall fault, e.g.
/// `{"kind": "syscall", "action": "fail", "syscall": ["fsync"], "errno": "EIO", "pid": 4242,
/// "duration": "30s"}`. Exactly one target (`pid`, `cgroup` or `comm`) is required, except under
/// `chaos exec`, whose command is the target.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyscallSpec {
    /// What the selected calls suffer.
    pub action: SyscallAction,
    /// System calls by name (x86_64), e.g. `["openat", "fsync"]`.
    #[serde(default)]
    pub syscall: Vec<String>,
    /// `fail`: the error returned, by name (`EIO`) or number (`5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    /// Share of the selected calls acted on, 0-100 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Only calls on files under this directory (file syscalls only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Let the first N selected calls through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// Act on every Nth selected call (after `after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<u64>,
    /// Act at most this many times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u64>,
    /// `delay`: how late, e.g. `200ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
    /// `kill`: the signal, by name (`SIGKILL`, `KILL`) or number (default SIGKILL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Target: this process (all its threads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// With `pid`: also the processes it starts from now on, and theirs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow_children: bool,
    /// Target: the processes of this cgroup v2 and those below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Target: processes whose name (`comm`, at most 15 bytes) is this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// Override the safety guards (pid 1, the root cgroup, chaos itself).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// How long the fault lasts, e.g. "30s", "5m". Without one, [`crate::plan::DEFAULT_DURATION`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::FaultSpec;

    #[test]
    fn json_round_trip() {
        let json = r#"{"kind":"syscall","action":"fail","syscall":["openat","fsync"],
            "errno":"EIO","percent":50,"path_prefix":"/var/lib/db","cgroup":"db.slice",
            "duration":"30s"}"#;
        let spec: FaultSpec = serde_json::from_str(json).unwrap();
        let FaultSpec::Syscall(s) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(s.syscall, ["openat", "fsync"]);
        assert_eq!(s.action, SyscallAction::Fail);
        let back: FaultSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
        let err = serde_json::from_str::<FaultSpec>(
            r#"{"kind":"syscall","action":"fail","sycall":["read"],"duration":"1s"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sycall"), "{err}");
    }
}
