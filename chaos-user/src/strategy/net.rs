//! Network strategies: how the TC program is attached and what shapes delayed traffic.

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    plan::{Effect, NetPlan},
    probe::{Feature, Report},
    spec::Direction,
};

/// How a TC program is attached.
///
/// A clsact filter attaches in about 1.5 ms; a TCX link waits for an RCU grace period (the
/// kernel's `tcx_entry_sync`: tens of ms on a 2-core host), and a fault must bite within
/// milliseconds of the call. Per packet it is the other way round: the clsact path
/// (`tc_run`, `tcf_classify`, `cls_bpf_classify`) costs about twice what the TCX path costs.
/// Where the kernel has both, a fault therefore arms through a clsact filter and its
/// attachment is then handed over to a TCX link ([`Attach::ClsactThenTcx`]). Both run the
/// program at the same point: the kernel runs the TCX programs first and the clsact filters
/// only when every TCX program says "next", as it would run a TCX link appended after them.
/// `CHAOS_TC_ATTACH=tcx` or `=clsact` keeps to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// A TCX link (6.6+).
    Tcx,
    /// A filter on a clsact qdisc.
    Clsact,
    /// A filter on a clsact qdisc, for the fault to bite at once, handed over to a TCX link
    /// once it does (the link is attached, the program copy on it takes over judging, then the
    /// filter is removed): clsact's arming latency with TCX's per-packet cost.
    ClsactThenTcx,
}

/// What shapes delayed or paced traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shaping {
    /// Nothing: the program drops, corrupts or duplicates by itself.
    None,
    /// Earliest-departure timestamps set by the program, enforced by an fq root qdisc.
    Fq,
    /// netem qdisc bands the program steers packets into (through an ifb for ingress).
    Netem,
}

/// How a fault is made: printed and stored as e.g. `tcx-bpf`, `clsact-bpf+fq`, `tcx-bpf+netem`,
/// `tcx-bpf+cgroup-skb`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct NetStrategy {
    /// How the TC program is attached.
    pub attach: Attach,
    /// What shapes the traffic.
    pub shaping: Shaping,
    /// Inbound packets selected by cgroup or process are judged by a `cgroup_skb/ingress`
    /// program on the cgroup (TC ingress runs before the packet has a socket).
    pub cgroup_ingress: bool,
}

impl NetStrategy {
    /// Human description, as in `chaos probe` and reports.
    pub fn describe(self) -> String {
        let attach = match self.attach {
            Attach::Tcx => "tc bpf (tcx link)",
            Attach::Clsact => "tc bpf (clsact filter)",
            Attach::ClsactThenTcx => "tc bpf (clsact filter, then tcx link)",
        };
        let shaping = match self.shaping {
            Shaping::None => "",
            Shaping::Fq => " + fq departure times",
            Shaping::Netem => " + netem bands",
        };
        let cgroup = if self.cgroup_ingress {
            " + cgroup_skb ingress (inbound by socket)"
        } else {
            ""
        };
        format!("{attach}{shaping}{cgroup}, rules in maps")
    }
}

impl std::fmt::Display for NetStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.attach {
            Attach::Tcx => "tcx-bpf",
            Attach::Clsact => "clsact-bpf",
            Attach::ClsactThenTcx => "clsact-tcx-bpf",
        })?;
        f.write_str(match self.shaping {
            Shaping::None => "",
            Shaping::Fq => "+fq",
            Shaping::Netem => "+netem",
        })?;
        f.write_str(if self.cgroup_ingress {
            "+cgroup-skb"
        } else {
            ""
        })
    }
}

impl From<NetStrategy> for String {
    fn from(s: NetStrategy) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for NetStrategy {
    type Error = String;

    fn try_from(s: String) -> Result<NetStrategy, String> {
        let unknown = || format!("unknown strategy {s}");
        let mut parts = s.split('+');
        let mut strategy = NetStrategy {
            attach: match parts.next() {
                Some("tcx-bpf") => Attach::Tcx,
                Some("clsact-bpf") => Attach::Clsact,
                Some("clsact-tcx-bpf") => Attach::ClsactThenTcx,
                _ => return Err(unknown()),
            },
            shaping: Shaping::None,
            cgroup_ingress: false,
        };
        for part in parts {
            match part {
                "fq" if strategy.shaping == Shaping::None => strategy.shaping = Shaping::Fq,
                "netem" if strategy.shaping == Shaping::None => strategy.shaping = Shaping::Netem,
                "cgroup-skb" if !strategy.cgroup_ingress => strategy.cgroup_ingress = true,
                _ => return Err(unknown()),
            }
        }
        Ok(strategy)
    }
}

/// Picks the strategy for network fault `net`, best first, or explains why none can serve it.
pub fn choose(net: &NetPlan, probe: &Report) -> Result<NetStrategy> {
    let unsupported = |why: String| Error::Unsupported {
        what: format!("net {}", net.action.as_str()),
        why,
    };
    let attach = tc_attach(probe).map_err(unsupported)?;
    let cgroup_ingress = !net.socket_hooks.is_empty();
    if cgroup_ingress {
        probe.require(Feature::CgroupSkb).map_err(unsupported)?;
    }
    let ingress = net.direction != Direction::Egress;
    let timed = matches!(
        net.effect,
        Effect::Delay { .. } | Effect::Rate { .. } | Effect::Reorder { .. }
    );
    match std::env::var(SHAPING_ENV).as_deref() {
        Ok("netem") if timed => {
            probe.require(Feature::QdiscNetem).map_err(unsupported)?;
            if ingress {
                ingress_ifb(probe).map_err(unsupported)?;
            }
            return Ok(NetStrategy {
                attach,
                shaping: Shaping::Netem,
                cgroup_ingress,
            });
        }
        Ok("fq") if timed => {
            if ingress || matches!(net.effect, Effect::Reorder { .. }) {
                return Err(unsupported(format!(
                    "{SHAPING_ENV}=fq: fq shapes egress delay and rate only"
                )));
            }
            probe.require(Feature::QdiscFq).map_err(unsupported)?;
            return Ok(NetStrategy {
                attach,
                shaping: Shaping::Fq,
                cgroup_ingress,
            });
        }
        Ok(other) if !other.is_empty() && other != "fq" && other != "netem" => {
            return Err(unsupported(format!(
                "{SHAPING_ENV}={other} is neither fq nor netem"
            )));
        }
        _ => {}
    }
    let shaping = match &net.effect {
        Effect::Drop(_) | Effect::Corrupt(_) => Shaping::None,
        Effect::Duplicate(_) => {
            probe
                .require(Feature::HelperCloneRedirect)
                .map_err(unsupported)?;
            Shaping::None
        }
        Effect::Delay { .. } | Effect::Rate { .. } if !ingress && probe.has(Feature::QdiscFq) => {
            Shaping::Fq
        }
        Effect::Delay { .. } | Effect::Rate { .. } | Effect::Reorder { .. } => {
            if !probe.has(Feature::QdiscNetem) {
                let fq = if ingress || matches!(net.effect, Effect::Reorder { .. }) {
                    String::new()
                } else {
                    format!("fq ({}) and ", probe.row(Feature::QdiscFq).detail)
                };
                return Err(unsupported(format!(
                    "it needs {fq}netem ({}){}",
                    probe.row(Feature::QdiscNetem).detail,
                    if ingress {
                        " for ingress (through an ifb)"
                    } else {
                        ""
                    }
                )));
            }
            if ingress {
                ingress_ifb(probe).map_err(unsupported)?;
            }
            Shaping::Netem
        }
    };
    Ok(NetStrategy {
        attach,
        shaping,
        cgroup_ingress,
    })
}

/// Ingress shaping redirects packets from TC ingress to an ifb. Measured: on Debian 6.1 every
/// redirected packet was lost, on 6.12 they were delayed as asked; older kernels are refused
/// rather than turning a delay into a partition.
pub const INGRESS_IFB_MIN_KERNEL: (u32, u32) = (6, 6);

fn ingress_ifb(probe: &Report) -> Result<(), String> {
    let mut parts = probe
        .kernel
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if version < INGRESS_IFB_MIN_KERNEL {
        return Err(format!(
            "ingress shaping through an ifb needs Linux {}.{}+ (this is {}: redirected packets \
             are dropped); shape the peer's egress instead",
            INGRESS_IFB_MIN_KERNEL.0, INGRESS_IFB_MIN_KERNEL.1, probe.kernel
        ));
    }
    Ok(())
}

/// Environment variable that forces the shaping of delay, rate and reorder (`fq` or `netem`), so
/// tests can measure both on one kernel.
pub const SHAPING_ENV: &str = "CHAOS_NET_SHAPING";

/// Environment variable that forces the TC attach mode (`tcx`, `clsact` or `clsact-tcx`, the
/// handover): for tests that exercise each path, and for hosts where one suits better (a TCX
/// link from the start where tooling deletes clsact qdiscs it does not know).
pub const TC_ATTACH_ENV: &str = "CHAOS_TC_ATTACH";

fn tc_attach(probe: &Report) -> Result<Attach, String> {
    probe.require(Feature::Bpffs)?;
    probe.require(Feature::HelperKtimeBootNs)?;
    match std::env::var(TC_ATTACH_ENV).as_deref() {
        Ok("tcx") => return probe.require(Feature::Tcx).map(|()| Attach::Tcx),
        Ok("clsact") => return probe.require(Feature::TcClsact).map(|()| Attach::Clsact),
        Ok("clsact-tcx") => {
            probe.require(Feature::TcClsact)?;
            return probe.require(Feature::Tcx).map(|()| Attach::ClsactThenTcx);
        }
        Ok(other) if !other.is_empty() => {
            return Err(format!(
                "{TC_ATTACH_ENV}={other} is none of tcx, clsact and clsact-tcx"
            ));
        }
        _ => {}
    }
    if probe.has(Feature::TcClsact) && probe.has(Feature::Tcx) {
        Ok(Attach::ClsactThenTcx)
    } else if probe.has(Feature::TcClsact) {
        Ok(Attach::Clsact)
    } else if probe.has(Feature::Tcx) {
        Ok(Attach::Tcx)
    } else {
        Err(format!(
            "neither tcx ({}) nor clsact ({}) attach works",
            probe.row(Feature::Tcx).detail,
            probe.row(Feature::TcClsact).detail
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        plan::{Chance, Interface},
        spec,
    };

    use crate::strategy::tests::report;

    fn net_plan(effect: Effect, direction: Direction) -> NetPlan {
        NetPlan {
            action: spec::NetAction::Loss,
            interfaces: vec![Interface {
                netns: None,
                name: "veth0".into(),
                ifindex: 7,
            }],
            direction,
            filter: Default::default(),
            effect,
            socket_hooks: vec![],
        }
    }

    fn loss_plan() -> NetPlan {
        net_plan(Effect::Drop(Chance::new(10.0, 0.0)), Direction::Egress)
    }

    const BASE: [Feature; 2] = [Feature::Bpffs, Feature::HelperKtimeBootNs];

    fn s(attach: Attach, shaping: Shaping) -> NetStrategy {
        NetStrategy {
            attach,
            shaping,
            cgroup_ingress: false,
        }
    }

    #[test]
    fn prefers_clsact_then_tcx() {
        let plan = loss_plan();
        let all = [BASE[0], BASE[1], Feature::Tcx, Feature::TcClsact];
        assert_eq!(
            choose(&plan, &report(&all)).unwrap(),
            s(Attach::ClsactThenTcx, Shaping::None)
        );
        let old = [BASE[0], BASE[1], Feature::TcClsact];
        assert_eq!(
            choose(&plan, &report(&old)).unwrap(),
            s(Attach::Clsact, Shaping::None)
        );
        let tcx_only = [BASE[0], BASE[1], Feature::Tcx];
        assert_eq!(
            choose(&plan, &report(&tcx_only)).unwrap(),
            s(Attach::Tcx, Shaping::None)
        );
    }

    #[test]
    fn explains_what_is_missing() {
        let err = choose(&loss_plan(), &report(&BASE))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot net loss"), "{err}");
        assert!(err.contains("Tcx") && err.contains("TcClsact"), "{err}");
        let err = choose(&loss_plan(), &report(&[Feature::Tcx]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bpffs"), "{err}");
    }

    #[test]
    fn delay_prefers_fq_then_netem_and_says_why_not() {
        let delay = Effect::Delay {
            latency: std::time::Duration::from_millis(10),
            jitter: Default::default(),
            distribution: Default::default(),
        };
        let tc = [BASE[0], BASE[1], Feature::Tcx];
        let with = |extra: &[Feature]| report(&[&tc[..], extra].concat());
        let egress = net_plan(delay.clone(), Direction::Egress);
        let both = [Feature::QdiscFq, Feature::QdiscNetem];
        assert_eq!(choose(&egress, &with(&both)).unwrap().shaping, Shaping::Fq);
        assert_eq!(
            choose(&egress, &with(&both[1..])).unwrap().shaping,
            Shaping::Netem
        );
        let ingress = net_plan(delay, Direction::Ingress);
        let mut new_kernel = with(&both);
        new_kernel.kernel = "6.12.117+deb12-amd64".into();
        assert_eq!(
            choose(&ingress, &new_kernel).unwrap().shaping,
            Shaping::Netem
        );
        let mut old_kernel = with(&both);
        old_kernel.kernel = "6.1.0-56-amd64".into();
        let err = choose(&ingress, &old_kernel).unwrap_err().to_string();
        assert!(
            err.contains("needs Linux 6.6+") && err.contains("6.1.0-56"),
            "{err}"
        );
        let err = choose(&egress, &with(&[])).unwrap_err().to_string();
        assert!(err.contains("fq") && err.contains("netem"), "{err}");
    }

    #[test]
    fn strategy_names_round_trip() {
        for st in [
            s(Attach::Tcx, Shaping::None),
            s(Attach::Clsact, Shaping::Fq),
            s(Attach::Tcx, Shaping::Netem),
            s(Attach::ClsactThenTcx, Shaping::Fq),
            NetStrategy {
                cgroup_ingress: true,
                ..s(Attach::Clsact, Shaping::None)
            },
        ] {
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(
                serde_json::from_str::<NetStrategy>(&json).unwrap(),
                st,
                "{json}"
            );
        }
        assert_eq!(s(Attach::Tcx, Shaping::None).to_string(), "tcx-bpf");
        assert_eq!(
            s(Attach::ClsactThenTcx, Shaping::Fq).to_string(),
            "clsact-tcx-bpf+fq"
        );
        for bad in [
            "tcx-bpf+fq+fq",
            "tcx-bpf+netem+fq",
            "fq",
            "tcx-bpf+cgroup-skb+cgroup-skb",
        ] {
            assert!(NetStrategy::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }
}
