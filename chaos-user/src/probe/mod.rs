//! What the running kernel allows, found by loading and attaching tiny programs and reading the
//! system, never by trusting config text (a kernel can list `bpf` among its LSMs and still refuse
//! LSM programs).
//!
//! Everything the probe attaches lives on a scratch network namespace's `lo` or in an empty
//! scratch cgroup, and is gone when the probe returns.

mod cache;
mod programs;
mod sys;
mod system;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use self::{
    cache::{cached, store},
    programs::sweep_stale,
    sys::errno_name,
};

/// One thing the probe checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// `bpf()` works at all for this process.
    BpfSyscall,
    /// `sched_cls` programs attached through a clsact qdisc (netlink).
    TcClsact,
    /// `sched_cls` programs attached through TCX links (6.6+).
    Tcx,
    /// `cgroup_skb` programs on a cgroup v2.
    CgroupSkb,
    /// `cgroup_sock_addr` programs (connect4) on a cgroup v2.
    CgroupSockAddr,
    /// `cgroup_sockopt` programs (getsockopt) on a cgroup v2.
    CgroupSockopt,
    /// `sock_ops` programs on a cgroup v2.
    SockOps,
    /// Tracepoint programs attached through perf events.
    Tracepoint,
    /// Raw tracepoint programs.
    RawTracepoint,
    /// BPF LSM programs.
    Lsm,
    /// fentry programs.
    Fentry,
    /// fmod_ret programs (on an LSM hook, which is always modifiable).
    FmodRet,
    /// kprobes through the perf kprobe PMU.
    Kprobe,
    /// kprobe programs calling `bpf_override_return`.
    KprobeOverride,
    /// fmod_ret on `should_fail_bio` (function error injection for block I/O).
    ErrorInjectionBio,
    /// fmod_ret on a syscall entry (`__x64_sys_fsync`).
    ErrorInjectionSyscall,
    /// `bpf_set_retval` from cgroup_sockopt programs.
    HelperSetRetval,
    /// `bpf_skb_cgroup_id` from TC programs.
    HelperSkbCgroupId,
    /// `bpf_send_signal` from tracepoint programs.
    HelperSendSignal,
    /// `bpf_ktime_get_boot_ns` from TC programs (the in-kernel deadline clock).
    HelperKtimeBootNs,
    /// `bpf_clone_redirect` from TC programs (duplicate).
    HelperCloneRedirect,
    /// Kernel BTF at /sys/kernel/btf/vmlinux.
    Btf,
    /// The BPF filesystem at /sys/fs/bpf.
    Bpffs,
    /// tracefs (tracepoint ids).
    Tracefs,
    /// A cgroup v2 hierarchy.
    CgroupV2,
    /// The cgroup v2 `io` controller (io.max).
    CgroupV2Io,
    /// The cgroup v1 `blkio` controller with throttling files.
    CgroupV1Blkio,
    /// The `fq` qdisc.
    QdiscFq,
    /// The `netem` qdisc.
    QdiscNetem,
    /// seccomp user notification.
    SeccompUserNotif,
}

impl Feature {
    /// Every feature, in report order.
    pub const ALL: &[Feature] = &[
        Feature::BpfSyscall,
        Feature::TcClsact,
        Feature::Tcx,
        Feature::CgroupSkb,
        Feature::CgroupSockAddr,
        Feature::CgroupSockopt,
        Feature::SockOps,
        Feature::Tracepoint,
        Feature::RawTracepoint,
        Feature::Lsm,
        Feature::Fentry,
        Feature::FmodRet,
        Feature::Kprobe,
        Feature::KprobeOverride,
        Feature::ErrorInjectionBio,
        Feature::ErrorInjectionSyscall,
        Feature::HelperSetRetval,
        Feature::HelperSkbCgroupId,
        Feature::HelperSendSignal,
        Feature::HelperKtimeBootNs,
        Feature::HelperCloneRedirect,
        Feature::Btf,
        Feature::Bpffs,
        Feature::Tracefs,
        Feature::CgroupV2,
        Feature::CgroupV2Io,
        Feature::CgroupV1Blkio,
        Feature::QdiscFq,
        Feature::QdiscNetem,
        Feature::SeccompUserNotif,
    ];

    /// The row's group and label, as printed.
    pub fn label(self) -> (&'static str, &'static str) {
        match self {
            Feature::BpfSyscall => ("program", "bpf() syscall"),
            Feature::TcClsact => ("program", "tc sched_cls (clsact)"),
            Feature::Tcx => ("program", "tc sched_cls (tcx link)"),
            Feature::CgroupSkb => ("program", "cgroup_skb"),
            Feature::CgroupSockAddr => ("program", "cgroup_sock_addr"),
            Feature::CgroupSockopt => ("program", "cgroup_sockopt"),
            Feature::SockOps => ("program", "sock_ops"),
            Feature::Tracepoint => ("program", "tracepoint"),
            Feature::RawTracepoint => ("program", "raw_tp"),
            Feature::Lsm => ("program", "lsm"),
            Feature::Fentry => ("program", "fentry"),
            Feature::FmodRet => ("program", "fmod_ret"),
            Feature::Kprobe => ("program", "kprobe"),
            Feature::KprobeOverride => ("program", "kprobe + bpf_override_return"),
            Feature::ErrorInjectionBio => ("error injection", "should_fail_bio"),
            Feature::ErrorInjectionSyscall => ("error injection", "syscalls (__x64_sys_fsync)"),
            Feature::HelperSetRetval => ("helper", "bpf_set_retval"),
            Feature::HelperSkbCgroupId => ("helper", "bpf_skb_cgroup_id"),
            Feature::HelperSendSignal => ("helper", "bpf_send_signal"),
            Feature::HelperKtimeBootNs => ("helper", "bpf_ktime_get_boot_ns"),
            Feature::HelperCloneRedirect => ("helper", "bpf_clone_redirect"),
            Feature::Btf => ("system", "BTF (/sys/kernel/btf/vmlinux)"),
            Feature::Bpffs => ("system", "bpffs (/sys/fs/bpf)"),
            Feature::Tracefs => ("system", "tracefs"),
            Feature::CgroupV2 => ("system", "cgroup v2"),
            Feature::CgroupV2Io => ("system", "cgroup v2 io controller"),
            Feature::CgroupV1Blkio => ("system", "cgroup v1 blkio throttling"),
            Feature::QdiscFq => ("system", "qdisc fq"),
            Feature::QdiscNetem => ("system", "qdisc netem"),
            Feature::SeccompUserNotif => ("system", "seccomp user notification"),
        }
    }
}

/// The answer for one feature.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// Which feature.
    pub feature: Feature,
    /// Whether the kernel allows it.
    pub ok: bool,
    /// How it was found (when yes) or why not (when no).
    pub detail: String,
}

/// Everything the probe found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// `uname -r`.
    pub kernel: String,
    /// One row per [`Feature`], in [`Feature::ALL`] order.
    pub rows: Vec<Row>,
    /// How long probing took.
    #[serde(with = "millis")]
    pub elapsed: Duration,
}

mod millis {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<std::time::Duration, D::Error> {
        let ms = <f64 as serde::Deserialize>::deserialize(d)?;
        Ok(std::time::Duration::from_secs_f64(ms.max(0.0) / 1000.0))
    }
}

impl Report {
    /// A report in which every feature is "not probed": nothing can be armed with it.
    pub fn unprobed() -> Report {
        Report {
            kernel: String::new(),
            rows: Feature::ALL
                .iter()
                .map(|&feature| Row {
                    feature,
                    ok: false,
                    detail: "not probed".into(),
                })
                .collect(),
            elapsed: Duration::ZERO,
        }
    }

    /// The row for `feature`.
    pub fn row(&self, feature: Feature) -> &Row {
        self.rows
            .iter()
            .find(|r| r.feature == feature)
            .expect("the probe answers every feature")
    }

    /// Whether `feature` is available.
    pub fn has(&self, feature: Feature) -> bool {
        self.row(feature).ok
    }

    /// `Ok(())` when `feature` is available, else `Err(why not)`, for skip decisions.
    pub fn require(&self, feature: Feature) -> Result<(), String> {
        let row = self.row(feature);
        if row.ok {
            Ok(())
        } else {
            Err(format!("{} unavailable: {}", feature.label().1, row.detail))
        }
    }
}

/// Collects rows while probing.
#[derive(Default)]
pub(crate) struct Rows(Vec<Row>);

impl Rows {
    pub(crate) fn yes(&mut self, feature: Feature, detail: impl Into<String>) {
        self.set(feature, true, detail);
    }

    pub(crate) fn no(&mut self, feature: Feature, detail: impl Into<String>) {
        self.set(feature, false, detail);
    }

    pub(crate) fn set(&mut self, feature: Feature, ok: bool, detail: impl Into<String>) {
        self.0.retain(|r| r.feature != feature);
        self.0.push(Row {
            feature,
            ok,
            detail: detail.into(),
        });
    }

    pub(crate) fn has(&self, feature: Feature) -> bool {
        self.0.iter().any(|r| r.feature == feature && r.ok)
    }

    pub(crate) fn detail(&self, feature: Feature) -> String {
        self.0
            .iter()
            .find(|r| r.feature == feature)
            .map(|r| r.detail.clone())
            .unwrap_or_default()
    }
}

/// Probes the running kernel. Needs root; mounts bpffs and tracefs where they are missing.
pub fn run() -> Report {
    let start = Instant::now();
    let mut rows = Rows::default();
    // Parsed once: the BTF row and every BTF-targeted program share it.
    let btf = aya::Btf::from_sys_fs().map_err(|e| e.to_string());
    system::probe(&mut rows, &btf);
    programs::probe(&mut rows, &btf);
    let mut ordered = Vec::with_capacity(Feature::ALL.len());
    for &feature in Feature::ALL {
        let row = rows.0.iter().find(|r| r.feature == feature).cloned();
        ordered.push(row.unwrap_or(Row {
            feature,
            ok: false,
            detail: "not probed".into(),
        }));
    }
    Report {
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into()),
        rows: ordered,
        elapsed: start.elapsed(),
    }
}
