//! Strategies: how each fault kind is made on the running kernel, chosen from the probe. Every
//! armed fault records the strategy it used. One fault family per file.

mod io;
mod net;
mod syscall;

use serde::{Deserialize, Serialize};

pub use self::{io::*, net::*, syscall::*};
use crate::{
    error::{Error, Result},
    plan::{Plan, PlannedFault, SyscallPlan},
    probe::{Feature, Report},
    spec::FaultSpec,
};

/// How a fault is made, by family; stored and printed as its family's name (e.g. `tcx-bpf+fq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Strategy {
    /// A network fault's.
    Net(NetStrategy),
    /// A syscall fault's.
    Syscall(SyscallStrategy),
    /// A block I/O or disk fault's.
    Io(IoStrategy),
}

impl Strategy {
    /// Human description, as in `chaos probe` and reports.
    pub fn describe(self) -> String {
        match self {
            Strategy::Net(s) => s.describe(),
            Strategy::Syscall(s) => s.describe(),
            Strategy::Io(s) => s.describe(),
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Strategy::Net(s) => s.fmt(f),
            Strategy::Syscall(s) => s.fmt(f),
            Strategy::Io(s) => s.fmt(f),
        }
    }
}

impl From<Strategy> for String {
    fn from(s: Strategy) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for Strategy {
    type Error = String;

    fn try_from(s: String) -> Result<Strategy, String> {
        if let Some(x) = SyscallStrategy::parse(&s) {
            return Ok(Strategy::Syscall(x));
        }
        if let Some(x) = IoStrategy::parse(&s) {
            return Ok(Strategy::Io(x));
        }
        NetStrategy::try_from(s).map(Strategy::Net)
    }
}

/// Picks the strategy for `plan`, best first, or explains why none can serve it.
pub fn choose(plan: &Plan, probe: &Report) -> Result<Strategy> {
    match &plan.fault {
        PlannedFault::Net(n) => net::choose(n, probe).map(Strategy::Net),
        PlannedFault::Syscall(s) => syscall::choose(s, probe)
            .map(Strategy::Syscall)
            .map_err(|e| match (&plan.spec, e) {
                (FaultSpec::Disk(_), e @ Error::Unsupported { .. }) => {
                    virtual_fill_unsupported(s, probe, e)
                }
                (_, e) => e,
            }),
        PlannedFault::Io(s) => io::choose_io(s, probe).map(|c| match c {
            IoChoice::Io(x) => Strategy::Io(x),
            IoChoice::Files(_, x) => Strategy::Syscall(x),
        }),
        PlannedFault::Disk(d) => Ok(Strategy::Io(io::choose_disk(d))),
    }
}

/// Why no strategy serves a virtual disk fill (a syscall fault on the target's writes), in
/// its own terms rather than a syscall fault's (`why`, the syscall fault's, when the kernel
/// lacks nothing the two strategies need).
fn virtual_fill_unsupported(plan: &SyscallPlan, probe: &Report, why: Error) -> Error {
    let lacking = |needs: &[Feature]| {
        needs
            .iter()
            .filter_map(|f| probe.require(*f).err())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let kprobe = lacking(&[
        Feature::KprobeOverride,
        Feature::RawTracepoint,
        Feature::Btf,
        Feature::Bpffs,
    ]);
    let lsm = lacking(&[
        Feature::Lsm,
        Feature::RawTracepoint,
        Feature::Btf,
        Feature::Bpffs,
    ]);
    if kprobe.is_empty() || lsm.is_empty() {
        return why;
    }
    let calls: Vec<&str> = plan.syscalls.iter().map(|c| c.name).collect();
    let dir = plan
        .path_prefix
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    Error::Unsupported {
        what: "fill a disk virtually".into(),
        why: format!(
            "the target's writes under the path fail with ENOSPC through kprobe + \
             bpf_override_return ({kprobe}) or BPF LSM ({lsm}); a command started under \
             `chaos exec syscall fail --syscall {} --errno ENOSPC --path-prefix {dir} -- CMD` \
             sees the same on any kernel",
            calls.join(","),
        ),
    }
}

/// One row of the table users read: a fault kind and what will serve it here.
#[derive(Clone, Debug, Serialize)]
pub struct KindRow {
    /// The fault kind, as on the command line.
    pub kind: &'static str,
    /// The strategy that will serve it on this kernel, if any.
    pub strategy: Option<String>,
    /// Why none can, or what the strategy relies on.
    pub note: String,
    /// Whether this build of chaos implements the kind yet.
    pub implemented: bool,
}

/// A candidate strategy for the table: its name and the features it needs.
struct Candidate {
    name: &'static str,
    needs: &'static [Feature],
}

const fn c(name: &'static str, needs: &'static [Feature]) -> Candidate {
    Candidate { name, needs }
}

/// The fault kinds of the design and their strategies, best first.
fn catalog() -> Vec<(&'static str, bool, Vec<Candidate>)> {
    use Feature as F;
    vec![
        (
            "net loss / partition",
            true,
            vec![
                c("tc bpf (tcx)", &[F::Tcx, F::HelperKtimeBootNs, F::Bpffs]),
                c(
                    "tc bpf (clsact)",
                    &[F::TcClsact, F::HelperKtimeBootNs, F::Bpffs],
                ),
            ],
        ),
        (
            "net corrupt / duplicate",
            true,
            vec![
                c("tc bpf (tcx)", &[F::Tcx, F::HelperCloneRedirect]),
                c("tc bpf (clsact)", &[F::TcClsact, F::HelperCloneRedirect]),
            ],
        ),
        (
            "net delay / jitter / rate / reorder",
            true,
            vec![
                c("tc bpf EDT + fq (egress)", &[F::TcClsact, F::QdiscFq]),
                c(
                    "tc bpf + netem bands (ifb for ingress)",
                    &[F::TcClsact, F::QdiscNetem],
                ),
            ],
        ),
        (
            "net by pid",
            true,
            vec![c(
                "tc bpf + socket cookies (inbound: cgroup_skb, drop only)",
                &[F::TcClsact, F::CgroupSkb],
            )],
        ),
        (
            "net by cgroup",
            true,
            vec![c(
                "tc bpf + cgroup ids (inbound: cgroup_skb, drop only)",
                &[F::TcClsact, F::HelperSkbCgroupId, F::CgroupSkb],
            )],
        ),
        (
            "syscall fail (any syscall)",
            true,
            vec![c(
                "kprobe + bpf_override_return",
                &[F::KprobeOverride, F::RawTracepoint],
            )],
        ),
        (
            "syscall fail (file, socket, fork hooks)",
            true,
            vec![c(
                "bpf lsm, syscall number from the saved registers",
                &[F::Lsm, F::RawTracepoint],
            )],
        ),
        (
            "syscall fail under a path",
            true,
            vec![
                c(
                    "kprobe, file from the descriptor argument",
                    &[F::KprobeOverride, F::Btf],
                ),
                c("bpf lsm, file from the hook", &[F::Lsm, F::Btf]),
            ],
        ),
        (
            "syscall fail (connect, bind)",
            true,
            vec![c(
                "cgroup connect/bind hooks + bpf_set_retval",
                &[F::CgroupSockAddr, F::HelperSetRetval],
            )],
        ),
        (
            "syscall fail / delay (chaos exec)",
            true,
            vec![c("seccomp user notification", &[F::SeccompUserNotif])],
        ),
        (
            "syscall kill / stop on call",
            true,
            vec![c(
                "raw tracepoint sys_enter + bpf_send_signal",
                &[F::RawTracepoint, F::HelperSendSignal],
            )],
        ),
        (
            "io fail (device, block layer)",
            true,
            vec![c(
                "kprobe on should_fail_bio + bpf_override_return",
                &[F::KprobeOverride, F::ErrorInjectionBio, F::Btf],
            )],
        ),
        (
            "io fail (files under a path or mount)",
            true,
            vec![
                c("kprobe on the file calls", &[F::KprobeOverride, F::Btf]),
                c("bpf lsm file_permission", &[F::Lsm, F::Btf]),
            ],
        ),
        (
            "io slow / hang",
            true,
            vec![
                c("cgroup v2 io.max", &[F::CgroupV2Io]),
                c("cgroup v1 blkio.throttle", &[F::CgroupV1Blkio]),
            ],
        ),
        (
            "disk fill",
            true,
            vec![c(
                "fallocate'd files of ours (written where unsupported)",
                &[],
            )],
        ),
        (
            "disk fill --virtual",
            true,
            vec![
                c(
                    "ENOSPC on writes under the path: kprobe + bpf_override_return",
                    &[F::KprobeOverride, F::RawTracepoint, F::Btf, F::Bpffs],
                ),
                c(
                    "ENOSPC on writes under the path: bpf lsm file_permission",
                    &[F::Lsm, F::RawTracepoint, F::Btf, F::Bpffs],
                ),
            ],
        ),
        (
            "io latency measurement",
            false,
            vec![c("block tracepoints", &[F::Tracepoint])],
        ),
    ]
}

/// The table `chaos probe` prints: each fault kind and the strategy that will serve it here.
pub fn table(probe: &Report) -> Vec<KindRow> {
    catalog()
        .into_iter()
        .map(|(kind, implemented, candidates)| {
            let mut missing = Vec::new();
            for cand in &candidates {
                let lacking: Vec<&str> = cand
                    .needs
                    .iter()
                    .filter(|f| !probe.has(**f))
                    .map(|f| f.label().1)
                    .collect();
                if lacking.is_empty() {
                    return KindRow {
                        kind,
                        strategy: Some(cand.name.to_owned()),
                        note: String::new(),
                        implemented,
                    };
                }
                missing.push(format!("{}: no {}", cand.name, lacking.join(", ")));
            }
            KindRow {
                kind,
                strategy: None,
                note: missing.join("; "),
                implemented,
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A probe report where exactly `yes` work.
    pub(crate) fn report(yes: &[Feature]) -> Report {
        let mut r = Report::unprobed();
        for row in &mut r.rows {
            if yes.contains(&row.feature) {
                row.ok = true;
                row.detail = "test".into();
            } else {
                row.detail = format!("no {:?} in this test", row.feature);
            }
        }
        r
    }

    #[test]
    fn table_names_a_strategy_or_the_lack() {
        let rows = table(&report(&[Feature::CgroupV1Blkio]));
        let io = rows.iter().find(|r| r.kind == "io slow / hang").unwrap();
        assert_eq!(io.strategy.as_deref(), Some("cgroup v1 blkio.throttle"));
        let net = rows
            .iter()
            .find(|r| r.kind == "net loss / partition")
            .unwrap();
        assert_eq!(net.strategy, None);
        assert!(net.note.contains("tc sched_cls (tcx link)"), "{}", net.note);
        let fill = rows.iter().find(|r| r.kind == "disk fill").unwrap();
        assert!(fill.strategy.is_some(), "{fill:?}");
    }

    #[test]
    fn virtual_fill_is_a_syscall_fault_or_says_what_is_missing() {
        let spec = FaultSpec::Disk(crate::spec::DiskSpec {
            path: "/".into(),
            virtual_fill: true,
            pid: Some(std::process::id()),
            // This test process is not chaos, but plans as if it were.
            force: true,
            duration: Some("10s".into()),
            ..Default::default()
        });
        let plan = crate::plan::plan(&spec).unwrap();
        let path = [Feature::RawTracepoint, Feature::Btf, Feature::Bpffs];
        // BPF LSM serves every call a virtual fill fails, fallocate included.
        assert_eq!(
            choose(&plan, &report(&[&path[..], &[Feature::Lsm]].concat())).unwrap(),
            Strategy::Syscall(SyscallStrategy::BpfLsm)
        );
        assert_eq!(
            choose(
                &plan,
                &report(&[&path[..], &[Feature::KprobeOverride]].concat())
            )
            .unwrap(),
            Strategy::Syscall(SyscallStrategy::KprobeOverride)
        );
        let e = choose(&plan, &report(&path)).unwrap_err().to_string();
        assert!(
            e.starts_with("this kernel cannot fill a disk virtually: ") && e.contains("fallocate"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
}
