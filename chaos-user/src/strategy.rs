//! Strategies: how each fault kind is made on the running kernel, chosen from the probe. Every
//! armed fault records the strategy it used.

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    plan::{Plan, PlannedFault},
    probe::{Feature, Report},
};

/// How a fault is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// TC classifier attached through a TCX link (6.6+), rules in BPF maps.
    TcxBpf,
    /// TC classifier attached as a filter of a clsact qdisc, rules in BPF maps.
    ClsactBpf,
}

impl Strategy {
    /// Human name, as in `chaos probe` and reports.
    pub fn describe(self) -> &'static str {
        match self {
            Strategy::TcxBpf => "tc bpf (tcx link), rules in maps",
            Strategy::ClsactBpf => "tc bpf (clsact filter), rules in maps",
        }
    }
}

/// Picks the strategy for `plan`, best first, or explains why none can serve it.
pub fn choose(plan: &Plan, probe: &Report) -> Result<Strategy> {
    match &plan.fault {
        PlannedFault::NetLoss(_) => tc_strategy(probe).map_err(|why| Error::Unsupported {
            what: "drop packets on TC".into(),
            why,
        }),
    }
}

/// Environment variable that forces the TC attach mode (`tcx` or `clsact`), for tests that
/// exercise the clsact path on kernels that have TCX, and for hosts whose tooling only knows tc
/// filters.
pub const TC_ATTACH_ENV: &str = "CHAOS_TC_ATTACH";

fn tc_strategy(probe: &Report) -> Result<Strategy, String> {
    probe.require(Feature::Bpffs)?;
    probe.require(Feature::HelperKtimeBootNs)?;
    match std::env::var(TC_ATTACH_ENV).as_deref() {
        Ok("tcx") => return probe.require(Feature::Tcx).map(|()| Strategy::TcxBpf),
        Ok("clsact") => {
            return probe
                .require(Feature::TcClsact)
                .map(|()| Strategy::ClsactBpf);
        }
        Ok(other) if !other.is_empty() => {
            return Err(format!("{TC_ATTACH_ENV}={other} is neither tcx nor clsact"));
        }
        _ => {}
    }
    if probe.has(Feature::Tcx) {
        Ok(Strategy::TcxBpf)
    } else if probe.has(Feature::TcClsact) {
        Ok(Strategy::ClsactBpf)
    } else {
        Err(format!(
            "neither tcx ({}) nor clsact ({}) attach works",
            probe.row(Feature::Tcx).detail,
            probe.row(Feature::TcClsact).detail
        ))
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
            false,
            vec![
                c("tc bpf (tcx)", &[F::Tcx, F::HelperCloneRedirect]),
                c("tc bpf (clsact)", &[F::TcClsact, F::HelperCloneRedirect]),
            ],
        ),
        (
            "net delay / jitter / rate / reorder",
            false,
            vec![
                c("tc bpf EDT + fq", &[F::TcClsact, F::QdiscFq]),
                c("netem qdisc", &[F::QdiscNetem]),
            ],
        ),
        (
            "net by cgroup / pid",
            false,
            vec![
                c(
                    "tc bpf + bpf_skb_cgroup_id",
                    &[F::TcClsact, F::HelperSkbCgroupId],
                ),
                c("cgroup_skb", &[F::CgroupSkb]),
            ],
        ),
        (
            "syscall fail (any syscall)",
            false,
            vec![
                c("fmod_ret on syscall entry", &[F::ErrorInjectionSyscall]),
                c("kprobe + bpf_override_return", &[F::KprobeOverride]),
            ],
        ),
        (
            "syscall fail (file, socket, fork hooks)",
            false,
            vec![
                c("bpf lsm", &[F::Lsm]),
                c("fmod_ret on security_*", &[F::FmodRet]),
            ],
        ),
        (
            "syscall fail (connect, bind, sockopt)",
            false,
            vec![c(
                "cgroup hooks + bpf_set_retval",
                &[F::CgroupSockAddr, F::CgroupSockopt, F::HelperSetRetval],
            )],
        ),
        (
            "syscall fail / delay (chaos exec)",
            false,
            vec![c("seccomp user notification", &[F::SeccompUserNotif])],
        ),
        (
            "syscall kill / stop on call",
            false,
            vec![c(
                "tracepoint + bpf_send_signal",
                &[F::Tracepoint, F::HelperSendSignal],
            )],
        ),
        (
            "io fail",
            false,
            vec![
                c("fmod_ret on should_fail_bio", &[F::ErrorInjectionBio]),
                c("bpf lsm file_permission", &[F::Lsm]),
            ],
        ),
        (
            "io slow / hang",
            false,
            vec![
                c("cgroup v2 io.max", &[F::CgroupV2Io]),
                c("cgroup v1 blkio.throttle", &[F::CgroupV1Blkio]),
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
mod tests {
    use super::*;
    use crate::{plan::Interface, spec};

    fn report(yes: &[Feature]) -> Report {
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

    fn loss_plan() -> Plan {
        let loss = spec::NetLoss {
            percent: 10.0,
            interface: "veth0".into(),
            netns: None,
            direction: spec::Direction::Egress,
            duration: "1s".into(),
        };
        Plan {
            spec: spec::FaultSpec::Net(spec::NetFault::Loss(loss)),
            duration: std::time::Duration::from_secs(1),
            fault: PlannedFault::NetLoss(crate::plan::NetLossPlan {
                interface: Interface {
                    netns: None,
                    name: "veth0".into(),
                    ifindex: 7,
                },
                direction: spec::Direction::Egress,
                percent: 10.0,
                threshold: 1,
            }),
        }
    }

    const BASE: [Feature; 2] = [Feature::Bpffs, Feature::HelperKtimeBootNs];

    #[test]
    fn prefers_tcx_then_clsact() {
        let plan = loss_plan();
        let all = [BASE[0], BASE[1], Feature::Tcx, Feature::TcClsact];
        assert_eq!(choose(&plan, &report(&all)).unwrap(), Strategy::TcxBpf);
        let old = [BASE[0], BASE[1], Feature::TcClsact];
        assert_eq!(choose(&plan, &report(&old)).unwrap(), Strategy::ClsactBpf);
    }

    #[test]
    fn explains_what_is_missing() {
        let err = choose(&loss_plan(), &report(&BASE))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot drop packets"), "{err}");
        assert!(err.contains("Tcx") && err.contains("TcClsact"), "{err}");
        let err = choose(&loss_plan(), &report(&[Feature::Tcx]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bpffs"), "{err}");
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
    }
}
