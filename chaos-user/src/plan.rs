//! Validated plans: a [`FaultSpec`] checked field by field and resolved against the system
//! (durations parsed, namespaces and interfaces looked up). A plan is what strategies and
//! backends consume; a spec that does not become a plan arms nothing.

use std::time::Duration;

use chaos_common::percent_to_threshold;

use crate::{
    error::{Error, Result},
    netns::{self, NetNs},
    spec::{Direction, FaultSpec, NetFault, NetLoss},
};

/// The longest fault accepted.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// A fault ready to arm.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The spec it came from.
    pub spec: FaultSpec,
    /// How long the fault lasts once armed.
    pub duration: Duration,
    /// What to do, resolved.
    pub fault: PlannedFault,
}

/// The resolved fault.
#[derive(Clone, Debug)]
pub enum PlannedFault {
    /// Drop packets on an interface.
    NetLoss(NetLossPlan),
}

/// An interface in a namespace.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Interface {
    /// Namespace; `None` is the controller's own.
    pub netns: Option<NetNs>,
    /// Interface name.
    pub name: String,
    /// Interface index inside `netns`.
    pub ifindex: u32,
}

/// `net loss`, resolved.
#[derive(Clone, Debug)]
pub struct NetLossPlan {
    /// Where.
    pub interface: Interface,
    /// Which way.
    pub direction: Direction,
    /// Share of packets, 0-100.
    pub percent: f64,
    /// Probability threshold for the kernel (see `chaos_common::PROBABILITY_ONE`).
    pub threshold: u64,
}

/// Parses a duration such as `30s`, `500ms`, `5m` or `1h 30m` for field `field`.
pub fn parse_duration(field: &'static str, text: &str) -> Result<Duration> {
    let fix = "write it as a number with a unit, e.g. 30s, 500ms, 5m or 1h";
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| Error::invalid(field, format!("{text:?} is not a duration ({e})"), fix))?;
    if d.is_zero() {
        return Err(Error::invalid(field, "a fault cannot last 0s", fix));
    }
    if d > MAX_DURATION {
        return Err(Error::invalid(
            field,
            format!("{text} is longer than the 7-day maximum"),
            "split the drill or give a shorter duration",
        ));
    }
    Ok(d)
}

/// Checks a percentage for field `field`.
pub fn check_percent(field: &'static str, percent: f64) -> Result<f64> {
    if !(0.0..=100.0).contains(&percent) {
        return Err(Error::invalid(
            field,
            format!("{percent} is outside 0-100"),
            "give a percentage between 0 and 100, e.g. --percent 30",
        ));
    }
    Ok(percent)
}

/// Resolves `interface` inside `netns` (a name under /run/netns or a path), or in the caller's
/// namespace.
pub fn resolve_interface(netns: Option<&str>, interface: &str) -> Result<Interface> {
    if interface.is_empty() || interface.len() > 15 || interface.contains('/') {
        return Err(Error::invalid(
            "interface",
            format!("{interface:?} is not an interface name"),
            "give a name from `ip link` (at most 15 characters)",
        ));
    }
    let ns = netns.map(|n| NetNs::resolve(n, "netns")).transpose()?;
    let name = interface.to_owned();
    let ifindex = netns::run_in(ns.as_ref(), move || Ok(netns::ifindex(&name)))?;
    let where_ = ns.as_ref().map_or_else(
        || "this network namespace".to_owned(),
        |ns| format!("network namespace {}", ns.path.display()),
    );
    let ifindex = ifindex.ok_or_else(|| {
        Error::invalid(
            "interface",
            format!("no interface {interface} in {where_}"),
            match netns {
                Some(n) => format!("list them with `ip -n {n} link`"),
                None => {
                    "list them with `ip link`, or add --netns for an interface in another namespace"
                        .to_owned()
                }
            },
        )
    })?;
    Ok(Interface {
        netns: ns,
        name: interface.to_owned(),
        ifindex,
    })
}

/// Validates `spec` into a plan.
pub fn plan(spec: &FaultSpec) -> Result<Plan> {
    match spec {
        FaultSpec::Net(NetFault::Loss(NetLoss {
            percent,
            interface,
            netns,
            direction,
            duration,
        })) => {
            let percent = check_percent("percent", *percent)?;
            let duration = parse_duration("duration", duration)?;
            let interface = resolve_interface(netns.as_deref(), interface)?;
            Ok(Plan {
                spec: spec.clone(),
                duration,
                fault: PlannedFault::NetLoss(NetLossPlan {
                    interface,
                    direction: *direction,
                    percent,
                    threshold: percent_to_threshold(percent),
                }),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("duration", "30s").unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            parse_duration("duration", "1m 30s").unwrap(),
            Duration::from_secs(90)
        );
        for bad in ["", "abc", "10", "0s", "-5s", "8d"] {
            let err = parse_duration("duration", bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid duration:"), "{bad}: {err}");
        }
    }

    #[test]
    fn percents() {
        assert!(check_percent("percent", 0.0).is_ok());
        assert!(check_percent("percent", 100.0).is_ok());
        for bad in [-1.0, 100.5, f64::NAN, f64::INFINITY] {
            let err = check_percent("percent", bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid percent:"), "{err}");
        }
    }

    #[test]
    fn unknown_interface_is_named() {
        let err = resolve_interface(None, "nosuchif0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no interface nosuchif0"), "{err}");
        let err = resolve_interface(None, "this-name-is-too-long")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid interface:"), "{err}");
    }

    #[test]
    fn unknown_netns_is_named() {
        let err = resolve_interface(Some("no-such-ns-xyz"), "lo")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid netns:"), "{err}");
    }
}
