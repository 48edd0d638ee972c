//! Block I/O and disk strategies: errors in the block layer through a kprobe with
//! `bpf_override_return` on `should_fail_bio` (function error injection), else file calls failed
//! by the syscall strategies (BPF LSM `file_permission`, kprobes on the calls); throttles through
//! cgroup v2 `io.max` or v1 `blkio.throttle.*`; disk fill through `fallocate`.

use serde::{Deserialize, Serialize};

use super::{SyscallStrategy, syscall};
use crate::{
    error::{Error, Result},
    plan::{DiskPlan, IoEffect, IoPlan, SyscallPlan},
    probe::{Feature, Report},
};

/// How a block I/O or disk fault is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoStrategy {
    /// A kprobe on `should_fail_bio` overrides its return: the bio completes with EIO.
    BioKprobe,
    /// Limits in the target cgroup's v2 `io.max`.
    CgroupIoMax,
    /// Limits in the target cgroup's v1 `blkio.throttle.*_device` files.
    CgroupBlkio,
    /// Files of ours allocated with `fallocate` (written where it is unsupported).
    Fallocate,
}

impl IoStrategy {
    const ALL: [IoStrategy; 4] = [
        IoStrategy::BioKprobe,
        IoStrategy::CgroupIoMax,
        IoStrategy::CgroupBlkio,
        IoStrategy::Fallocate,
    ];

    /// Name as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            IoStrategy::BioKprobe => "bio-kprobe-override",
            IoStrategy::CgroupIoMax => "cgroup-io-max",
            IoStrategy::CgroupBlkio => "cgroup-blkio-throttle",
            IoStrategy::Fallocate => "fallocate",
        }
    }

    /// Human description.
    pub fn describe(self) -> String {
        match self {
            IoStrategy::BioKprobe => {
                "kprobe on should_fail_bio + bpf_override_return, rules in maps"
            }
            IoStrategy::CgroupIoMax => "cgroup v2 io.max on the target's cgroup",
            IoStrategy::CgroupBlkio => "cgroup v1 blkio.throttle on the target's cgroup",
            IoStrategy::Fallocate => "fallocate'd files of ours, removed on recovery",
        }
        .to_owned()
    }

    /// Parses [`IoStrategy::as_str`]'s names.
    pub fn parse(s: &str) -> Option<IoStrategy> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl std::fmt::Display for IoStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What serves an I/O fault: a block-I/O strategy, or (file calls) a syscall one.
#[derive(Clone, Debug, PartialEq)]
pub enum IoChoice {
    /// Made by an I/O strategy.
    Io(IoStrategy),
    /// Made as this syscall fault, by this syscall strategy.
    Files(Box<SyscallPlan>, SyscallStrategy),
}

/// Picks how to make I/O fault `plan`, or says why nothing here can.
pub fn choose_io(plan: &IoPlan, probe: &Report) -> Result<IoChoice> {
    let unsupported = |why: String| Error::Unsupported {
        what: format!("io {}", plan.action.as_str()),
        why,
    };
    match &plan.effect {
        IoEffect::Throttle { target, .. } => {
            let (feature, strategy) = if target.cgroup.v2 {
                (Feature::CgroupV2Io, IoStrategy::CgroupIoMax)
            } else {
                (Feature::CgroupV1Blkio, IoStrategy::CgroupBlkio)
            };
            probe.require(feature).map_err(unsupported)?;
            Ok(IoChoice::Io(strategy))
        }
        IoEffect::Fail {
            bio,
            files,
            no_files,
        } => {
            let mut why = Vec::new();
            if bio.is_some() {
                let kernel = [
                    Feature::Bpffs,
                    Feature::KprobeOverride,
                    Feature::ErrorInjectionBio,
                    Feature::Btf,
                ]
                .iter()
                .try_for_each(|f| probe.require(*f));
                match kernel {
                    Ok(()) => return Ok(IoChoice::Io(IoStrategy::BioKprobe)),
                    Err(e) => why.push(format!("block layer (should_fail_bio): {e}")),
                }
            }
            match files {
                Some(f) => match file_choice(f, probe) {
                    Ok(choice) => return Ok(choice),
                    Err(e) => why.push(format!("file calls: {e}")),
                },
                None => why.extend(no_files.iter().map(|w| format!("file calls: {w}"))),
            }
            Err(unsupported(why.join("; ")))
        }
    }
}

/// The syscall strategy for the file-call form; with BPF LSM, only the calls its hooks see
/// (reads, writes and fallocate: fsync and sync_file_range pass no hook) when some are left.
fn file_choice(files: &SyscallPlan, probe: &Report) -> Result<IoChoice> {
    match syscall::choose(files, probe) {
        Ok(s) => Ok(IoChoice::Files(Box::new(files.clone()), s)),
        Err(full) => {
            let mut seen = files.clone();
            seen.syscalls
                .retain(|c| syscall::lsm_hook(c.nr).is_some_and(|(_, file)| file));
            if seen.syscalls.is_empty() || seen.syscalls.len() == files.syscalls.len() {
                return Err(full);
            }
            let s = syscall::choose(&seen, probe).map_err(|_| full)?;
            Ok(IoChoice::Files(Box::new(seen), s))
        }
    }
}

/// How a disk fault is made.
pub fn choose_disk(plan: &DiskPlan) -> IoStrategy {
    match plan {
        DiskPlan::Fill(_) => IoStrategy::Fallocate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        plan::{BioFailPlan, BioTarget, BlockDevice, CgroupTarget, Chance, Syscall, SyscallEffect},
        spec::{IoAction, IoOp, SyscallAction},
        strategy::tests::report,
    };

    fn fail_plan(files: bool) -> IoPlan {
        let calls = crate::plan::file_calls(IoOp::Any)
            .into_iter()
            .map(Syscall::of)
            .collect();
        IoPlan {
            action: IoAction::Fail,
            effect: IoEffect::Fail {
                bio: Some(BioFailPlan {
                    device: BlockDevice {
                        major: 7,
                        minor: 0,
                        name: "loop0".into(),
                        disk: None,
                    },
                    op: IoOp::Any,
                    sectors: None,
                    chance: Chance::always(),
                    target: BioTarget::All,
                }),
                files: files.then(|| {
                    Box::new(SyscallPlan {
                        action: SyscallAction::Fail,
                        syscalls: calls,
                        effect: SyscallEffect::Fail { errno: 5 },
                        chance: Chance::always(),
                        path_prefix: Some("/mnt".into()),
                        after: 0,
                        every: 1,
                        max_count: None,
                        target: crate::plan::SyscallTarget::Cgroup(CgroupTarget {
                            path: "/sys/fs/cgroup/t".into(),
                            id: 42,
                        }),
                        process_cgroup: None,
                    })
                }),
                no_files: (!files).then(|| "loop0 is not mounted".to_owned()),
            },
        }
    }

    #[test]
    fn block_layer_first_then_files_then_why_not() {
        use Feature as F;
        let all = report(&[
            F::Bpffs,
            F::KprobeOverride,
            F::ErrorInjectionBio,
            F::Btf,
            F::RawTracepoint,
        ]);
        assert_eq!(
            choose_io(&fail_plan(true), &all).unwrap(),
            IoChoice::Io(IoStrategy::BioKprobe)
        );
        // BPF LSM sees reads, writes and fallocate: fsync, fdatasync and sync_file_range are left out.
        let lsm = report(&[F::Bpffs, F::Lsm, F::Btf, F::RawTracepoint]);
        let IoChoice::Files(files, s) = choose_io(&fail_plan(true), &lsm).unwrap() else {
            panic!("files expected")
        };
        assert_eq!(s, SyscallStrategy::BpfLsm);
        assert_eq!(files.syscalls.len(), 11);
        assert!(files.syscalls.iter().all(|c| c.name != "fsync"));
        let err = choose_io(&fail_plan(false), &lsm).unwrap_err().to_string();
        assert!(
            err.contains("should_fail_bio") && err.contains("not mounted"),
            "{err}"
        );
    }
}
