//! Network fault plans: interfaces found in their namespace (or from the routes to `--dst`),
//! selectors parsed, cgroups and sockets resolved, the management-path guards applied.

use std::{net::IpAddr, process::Command, time::Duration};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{
    CgroupTarget, Chance, Plan, PlannedFault, check_percent, fault_duration, parse_span,
    process_cgroup, resolve_cgroup,
};
use crate::{
    error::{Error, Result},
    netns::{self, NetNs},
    spec::{Direction, Distribution, FaultSpec, NetAction, NetSpec, Proto},
};

/// The longest delay: the fq qdisc drops packets scheduled further ahead than its 10 s horizon.
pub const MAX_LATENCY: Duration = Duration::from_secs(10);

/// Ports the guard keeps out of every network fault unless `force` is set: the management path.
/// The ports chaos's own processes listen on ([`crate::guard::listener_ports`]) are kept too.
pub const GUARDED_PORTS: &[u16] = &[22];

/// An interface in a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Namespace; `None` is the controller's own.
    pub netns: Option<NetNs>,
    /// Interface name.
    pub name: String,
    /// Interface index inside `netns`.
    pub ifindex: u32,
}

/// A network fault, resolved.
#[derive(Clone, Debug)]
pub struct NetPlan {
    /// The action.
    pub action: NetAction,
    /// Where (one or more interfaces, all in one namespace).
    pub interfaces: Vec<Interface>,
    /// Which way.
    pub direction: Direction,
    /// Which packets.
    pub filter: NetFilter,
    /// What happens to them.
    pub effect: Effect,
    /// cgroups whose inbound packets the cgroup ingress hook judges, for inbound faults selected
    /// by cgroup or process (TC ingress runs before a packet has a socket). Empty: inbound
    /// packets, if any, are judged on TC ingress.
    pub socket_hooks: Vec<CgroupTarget>,
}

/// What a network fault does to the packets it selects.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Drop them.
    Drop(Chance),
    /// Flip a bit.
    Corrupt(Chance),
    /// Send twice.
    Duplicate(Chance),
    /// Delay.
    Delay {
        /// Mean added delay.
        latency: Duration,
        /// Variation.
        jitter: Duration,
        /// Shape of the variation.
        distribution: Distribution,
    },
    /// Pace.
    Rate {
        /// Bytes per second.
        bytes_per_s: u64,
    },
    /// Let `percent` through at once, delay the rest.
    Reorder {
        /// Share sent at once.
        percent: f64,
        /// Delay of the others.
        latency: Duration,
    },
}

/// A port range, inclusive.
pub type PortRange = (u16, u16);

/// Which packets a network fault selects. Empty fields select everything.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetFilter {
    /// Transport protocol.
    pub proto: Option<Proto>,
    /// Destination ports.
    pub dport: Option<PortRange>,
    /// Source ports.
    pub sport: Option<PortRange>,
    /// Destination prefixes (any of them).
    pub dst: Vec<IpNet>,
    /// Source prefixes (any of them).
    pub src: Vec<IpNet>,
    /// Prefixes never touched, as source or destination.
    pub exclude_nets: Vec<IpNet>,
    /// Ports never touched, as source or destination port.
    pub exclude_ports: Vec<u16>,
    /// cgroups v2 whose sockets (and their sub-cgroups' sockets) are selected; any of them.
    pub cgroups: Vec<CgroupTarget>,
    /// The sockets of a process (`--pid`), by cookie.
    pub sockets: Option<PidSockets>,
}

/// The sockets a process held when the fault was planned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidSockets {
    /// The process.
    pub pid: u32,
    /// Its sockets' cookies.
    pub cookies: Vec<u64>,
}

impl NetFilter {
    /// Whether nothing narrows the selection down (every packet on the interface).
    pub fn selects_everything(&self) -> bool {
        self.proto.is_none()
            && self.dport.is_none()
            && self.sport.is_none()
            && self.dst.is_empty()
            && self.src.is_empty()
            && self.cgroups.is_empty()
            && self.sockets.is_none()
    }
}

/// Parses a rate in tc's units (`bit`, `kbit`, `mbit`, `gbit`, `kibit`..., `bps` = bytes/s,
/// `kbps`, `mbps`, `gbps`; a bare number is bits per second) into bytes per second.
pub fn parse_rate(field: &'static str, text: &str) -> Result<u64> {
    let fix = "write it as a number with a unit, e.g. 1mbit, 500kbit or 10mbps (bytes/s)";
    let t = text.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| Error::invalid(field, format!("{text:?} is not a rate"), fix))?;
    let bits_per_unit = match unit.trim() {
        "" | "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "tbit" => 1e12,
        "kibit" => 1024.0,
        "mibit" => 1024.0 * 1024.0,
        "gibit" => 1024.0 * 1024.0 * 1024.0,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        other => {
            return Err(Error::invalid(
                field,
                format!("unknown unit {other:?} in {text:?}"),
                fix,
            ));
        }
    };
    // Checked before rounding: 4bit is half a byte per second, below the 8bit minimum.
    let exact = value * bits_per_unit / 8.0;
    let bytes = exact.round();
    if !(1.0..=1e13).contains(&exact) {
        return Err(Error::invalid(
            field,
            format!("{text} is outside 8bit..80tbit"),
            fix,
        ));
    }
    Ok(bytes as u64)
}

/// Parses a port or an inclusive range `A-B`.
pub fn parse_ports(field: &'static str, text: &str) -> Result<PortRange> {
    let fix = "give a port 1-65535 or a range such as 8000-8100";
    let port = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| Error::invalid(field, format!("{s:?} is not a port 1-65535"), fix))
    };
    let (lo, hi) = match text.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(text)?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(Error::invalid(
            field,
            format!("range {text} runs backwards"),
            fix,
        ));
    }
    Ok((lo, hi))
}

/// Parses a prefix (`10.0.0.0/8`, `fd00::/64`) or an address (a /32 or /128).
pub fn parse_net(field: &'static str, text: &str) -> Result<IpNet> {
    let t = text.trim();
    t.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            Error::invalid(
                field,
                format!("{text:?} is neither an address nor a CIDR prefix"),
                "write e.g. 10.0.0.0/8, 192.168.1.7 or fd00::/64",
            )
        })
}

/// Resolves `interface` in the namespace `ns` (or the caller's).
pub fn resolve_interface(ns: Option<&NetNs>, interface: &str) -> Result<Interface> {
    if interface.is_empty() || interface.len() > 15 || interface.contains('/') {
        return Err(Error::invalid(
            "interface",
            format!("{interface:?} is not an interface name"),
            "give a name from `ip link` (at most 15 characters)",
        ));
    }
    let name = interface.to_owned();
    let ifindex = netns::run_in(ns, move || Ok(netns::ifindex(&name)))?;
    let ifindex = ifindex.ok_or_else(|| {
        Error::invalid(
            "interface",
            format!("no interface {interface} in {}", where_(ns)),
            match ns {
                Some(n) => format!(
                    "list them with `nsenter --net={} ip link`",
                    n.path.display()
                ),
                None => {
                    "list them with `ip link`, or add --netns for an interface in another namespace"
                        .to_owned()
                }
            },
        )
    })?;
    Ok(Interface {
        netns: ns.cloned(),
        name: interface.to_owned(),
        ifindex,
    })
}

fn where_(ns: Option<&NetNs>) -> String {
    ns.map_or_else(
        || "this network namespace".to_owned(),
        |ns| format!("network namespace {}", ns.path.display()),
    )
}

/// `ip -j route ...` inside `ns`, returning the `dev` of each route.
fn route_devs(ns: Option<&NetNs>, args: &[&str]) -> Result<Vec<String>> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    netns::run_in(ns, move || {
        let out = Command::new("ip")
            .arg("-j")
            .args(&args)
            .output()
            .map_err(|e| Error::io("running ip (install iproute2)", e))?;
        if !out.status.success() {
            return Ok(Vec::new());
        }
        let routes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        Ok(routes
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["dev"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    })
}

/// The interfaces that route to each of `dsts` in `ns`.
fn interfaces_for(ns: Option<&NetNs>, dsts: &[IpNet]) -> Result<Vec<Interface>> {
    let mut names: Vec<String> = Vec::new();
    for net in dsts {
        let addr = net.addr().to_string();
        let devs = route_devs(ns, &["route", "get", &addr])?;
        if devs.is_empty() {
            return Err(Error::invalid(
                "dst",
                format!("no route to {addr} in {}", where_(ns)),
                "give --interface, or a --dst this namespace routes",
            ));
        }
        for d in devs {
            if d != "lo" && !names.contains(&d) {
                names.push(d);
            }
        }
    }
    if names.is_empty() {
        return Err(Error::invalid(
            "dst",
            "every --dst is local (routed through lo)",
            "give --interface lo explicitly if that is the intent",
        ));
    }
    names.iter().map(|n| resolve_interface(ns, n)).collect()
}

/// Where the cgroup ingress hook goes for an inbound fault selected by cgroup or process: the
/// selected cgroups that are not below another selected one (a hook covers its sub-cgroups, and
/// two hooks on one path would judge a packet twice), or the process's cgroup.
fn socket_hooks(filter: &NetFilter, force: bool) -> Result<Vec<CgroupTarget>> {
    if filter.cgroups.is_empty() {
        return match &filter.sockets {
            Some(s) => Ok(vec![process_cgroup(s.pid, force)?]),
            None => Ok(Vec::new()),
        };
    }
    let mut hooks: Vec<CgroupTarget> = Vec::new();
    for c in &filter.cgroups {
        let covered = filter
            .cgroups
            .iter()
            .any(|o| o.path != c.path && c.path.starts_with(&o.path));
        if !covered && !hooks.iter().any(|h| h.path == c.path) {
            hooks.push(c.clone());
        }
    }
    Ok(hooks)
}

/// `spec.field` must be absent for `action`.
fn unused<T>(value: &Option<T>, field: &'static str, action: NetAction) -> Result<()> {
    if value.is_some() {
        return Err(Error::invalid(
            field,
            format!("net {} does not use --{field}", action.as_str()),
            format!("remove --{field}"),
        ));
    }
    Ok(())
}

fn required<T: Clone>(value: &Option<T>, field: &'static str, action: NetAction) -> Result<T> {
    value.clone().ok_or_else(|| {
        Error::invalid(
            field,
            format!("net {} needs --{field}", action.as_str()),
            format!("add --{field}"),
        )
    })
}

fn latency(field: &'static str, text: &str) -> Result<Duration> {
    let d = parse_span(field, text)?;
    if d.is_zero() || d > MAX_LATENCY {
        return Err(Error::invalid(
            field,
            format!("{text} is outside (0, 10s]"),
            "give a delay such as 100ms (at most 10s)",
        ));
    }
    Ok(d)
}

fn effect(n: &NetSpec) -> Result<Effect> {
    let a = n.action;
    let percent = |n: &NetSpec| -> Result<f64> {
        check_percent("percent", required(&n.percent, "percent", a)?)
    };
    let chance = |n: &NetSpec| -> Result<Chance> {
        let correlation = n
            .correlation
            .map(|c| check_percent("correlation", c))
            .transpose()?;
        Ok(Chance::new(percent(n)?, correlation.unwrap_or(0.0)))
    };
    match a {
        NetAction::Loss | NetAction::Corrupt | NetAction::Duplicate => {
            unused(&n.latency, "latency", a)?;
            unused(&n.jitter, "jitter", a)?;
            unused(&n.distribution, "distribution", a)?;
            unused(&n.rate, "rate", a)?;
            let c = chance(n)?;
            Ok(match a {
                NetAction::Loss => Effect::Drop(c),
                NetAction::Corrupt => Effect::Corrupt(c),
                _ => Effect::Duplicate(c),
            })
        }
        NetAction::Partition => {
            unused(&n.percent, "percent", a)?;
            unused(&n.correlation, "correlation", a)?;
            unused(&n.latency, "latency", a)?;
            unused(&n.jitter, "jitter", a)?;
            unused(&n.distribution, "distribution", a)?;
            unused(&n.rate, "rate", a)?;
            Ok(Effect::Drop(Chance::always()))
        }
        NetAction::Delay => {
            unused(&n.percent, "percent", a)?;
            unused(&n.correlation, "correlation", a)?;
            unused(&n.rate, "rate", a)?;
            let latency = latency("latency", &required(&n.latency, "latency", a)?)?;
            let jitter = n
                .jitter
                .as_deref()
                .map(|j| parse_span("jitter", j))
                .transpose()?
                .unwrap_or_default();
            if jitter > latency {
                return Err(Error::invalid(
                    "jitter",
                    format!("{jitter:?} is larger than the latency {latency:?}"),
                    "give a jitter no larger than the latency",
                ));
            }
            Ok(Effect::Delay {
                latency,
                jitter,
                distribution: n.distribution.unwrap_or_default(),
            })
        }
        NetAction::Rate => {
            unused(&n.percent, "percent", a)?;
            unused(&n.correlation, "correlation", a)?;
            unused(&n.latency, "latency", a)?;
            unused(&n.jitter, "jitter", a)?;
            unused(&n.distribution, "distribution", a)?;
            Ok(Effect::Rate {
                bytes_per_s: parse_rate("rate", &required(&n.rate, "rate", a)?)?,
            })
        }
        NetAction::Reorder => {
            unused(&n.jitter, "jitter", a)?;
            unused(&n.distribution, "distribution", a)?;
            unused(&n.rate, "rate", a)?;
            unused(&n.correlation, "correlation", a)?;
            Ok(Effect::Reorder {
                percent: percent(n)?,
                latency: latency("latency", &required(&n.latency, "latency", a)?)?,
            })
        }
    }
}

fn filter(n: &NetSpec) -> Result<NetFilter> {
    let mut f = NetFilter {
        proto: n.proto,
        dport: n
            .dport
            .as_deref()
            .map(|p| parse_ports("dport", p))
            .transpose()?,
        sport: n
            .sport
            .as_deref()
            .map(|p| parse_ports("sport", p))
            .transpose()?,
        dst: n
            .dst
            .iter()
            .map(|d| parse_net("dst", d))
            .collect::<Result<_>>()?,
        src: n
            .src
            .iter()
            .map(|d| parse_net("src", d))
            .collect::<Result<_>>()?,
        cgroups: n
            .cgroup
            .iter()
            .map(|c| resolve_cgroup(c, n.force))
            .collect::<Result<_>>()?,
        sockets: n
            .pid
            .map(|pid| {
                crate::sockets::cookies(pid, "pid").map(|cookies| PidSockets { pid, cookies })
            })
            .transpose()?,
        ..NetFilter::default()
    };
    if (f.dport.is_some() || f.sport.is_some()) && f.proto == Some(Proto::Icmp) {
        return Err(Error::invalid(
            "proto",
            "icmp has no ports",
            "drop --dport/--sport, or use --proto tcp or udp",
        ));
    }
    for x in &n.exclude {
        match x.trim().parse::<u16>() {
            Ok(p) if p != 0 => f.exclude_ports.push(p),
            _ => f.exclude_nets.push(parse_net("exclude", x).map_err(|_| {
                Error::invalid(
                    "exclude",
                    format!("{x:?} is neither a port nor an address or prefix"),
                    "write e.g. --exclude 22 or --exclude 10.0.0.0/8",
                )
            })?),
        }
    }
    if !n.force {
        // A fault aimed at a guarded port (--dport/--sport covering it) keeps it.
        let guarded = GUARDED_PORTS
            .iter()
            .copied()
            .chain(crate::guard::listener_ports());
        for p in guarded {
            if !f.exclude_ports.contains(&p)
                && f.dport.is_none_or(|(lo, hi)| !(lo..=hi).contains(&p))
                && f.sport.is_none_or(|(lo, hi)| !(lo..=hi).contains(&p))
            {
                f.exclude_ports.push(p);
            }
        }
    }
    if f.exclude_ports.len() > 8 {
        return Err(Error::invalid(
            "exclude",
            format!("{} ports to exclude; at most 8", f.exclude_ports.len()),
            "exclude fewer ports (port 22 and chaos's own listeners count unless --force)",
        ));
    }
    Ok(f)
}

/// Validates network spec `n` (the whole of `spec`) into a plan.
pub(super) fn plan(spec: &FaultSpec, n: &NetSpec) -> Result<Plan> {
    let duration = fault_duration(n.duration.as_deref())?;
    let effect = effect(n)?;
    let filter = filter(n)?;
    let ns = match (&n.netns, n.target_pid) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "target-pid",
                "--netns and --target-pid both name a namespace",
                "give one of them",
            ));
        }
        (Some(name), None) => Some(NetNs::resolve(name, "netns")?),
        (None, Some(pid)) => Some(NetNs::resolve(
            &format!("/proc/{pid}/ns/net"),
            "target-pid",
        )?),
        (None, None) => None,
    };
    let interfaces = match &n.interface {
        Some(i) => vec![resolve_interface(ns.as_ref(), i)?],
        None if !filter.dst.is_empty() => interfaces_for(ns.as_ref(), &filter.dst)?,
        None => {
            return Err(Error::invalid(
                "interface",
                "no interface and no --dst to find one",
                "give --interface IF, or --dst CIDR to act on the interfaces that route there",
            ));
        }
    };
    let direction = n.direction.unwrap_or(match n.action {
        NetAction::Partition => Direction::Both,
        _ => Direction::Egress,
    });
    let by_socket = !filter.cgroups.is_empty() || filter.sockets.is_some();
    let socket_hooks = if by_socket && direction != Direction::Egress {
        let field = if filter.cgroups.is_empty() {
            "pid"
        } else {
            "cgroup"
        };
        if !matches!(effect, Effect::Drop(_)) {
            return Err(Error::invalid(
                field,
                format!(
                    "inbound packets selected by --{field} can only be dropped (loss, \
                     partition): the hook that knows their socket runs after every qdisc"
                ),
                "add --direction egress, or select the inbound traffic with --dport/--src",
            ));
        }
        socket_hooks(&filter, n.force)?
    } else {
        Vec::new()
    };
    // The management path: a fault on all the traffic of the default route's interface
    // reaches the host's own control traffic (SSH aside, which the port guard keeps).
    if filter.selects_everything() && !n.force {
        let defaults = route_devs(ns.as_ref(), &["route", "show", "default"])?;
        if let Some(i) = interfaces.iter().find(|i| defaults.contains(&i.name)) {
            let what = match &effect {
                Effect::Drop(c) if c.percent >= 100.0 => "dropping every packet",
                _ => "a fault on every packet",
            };
            return Err(Error::invalid(
                "interface",
                format!(
                    "{what} on {}, the default route's interface, would reach this host's \
                     management traffic",
                    i.name
                ),
                "narrow it with --dst/--dport/--proto/--cgroup/--pid, or add --force",
            ));
        }
    }
    Ok(Plan {
        spec: spec.clone(),
        duration,
        fault: PlannedFault::Net(NetPlan {
            action: n.action,
            interfaces,
            direction,
            filter,
            effect,
            socket_hooks,
        }),
    })
}

#[cfg(test)]
mod tests {
    use chaos_common::PROBABILITY_ONE;

    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("rate", "1mbit").unwrap(), 125_000);
        assert_eq!(parse_rate("rate", "8bit").unwrap(), 1);
        assert_eq!(parse_rate("rate", "10mbps").unwrap(), 10_000_000);
        assert_eq!(parse_rate("rate", "1kibit").unwrap(), 128);
        for bad in ["", "fast", "1furlong", "0mbit", "4bit", "7bit"] {
            assert!(parse_rate("rate", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports_and_nets() {
        assert_eq!(parse_ports("dport", "80").unwrap(), (80, 80));
        assert_eq!(parse_ports("dport", "8000-8100").unwrap(), (8000, 8100));
        for bad in ["0", "65536", "9-1", "http", "1-"] {
            assert!(parse_ports("dport", bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_net("dst", "10.1.2.3/8").unwrap(),
            "10.0.0.0/8".parse::<IpNet>().unwrap()
        );
        assert_eq!(parse_net("dst", "fd00::1").unwrap().prefix_len(), 128);
        assert!(parse_net("dst", "10.0.0.0/33").is_err());
    }

    #[test]
    fn chance_keeps_the_average() {
        let c = Chance::new(30.0, 50.0);
        let p_hit_after_miss = c.threshold as f64 / PROBABILITY_ONE as f64;
        let p_hit_after_hit = c.threshold_after_hit as f64 / PROBABILITY_ONE as f64;
        // Stationary share of hits: a / (1 - h + a).
        let share = p_hit_after_miss / (1.0 - p_hit_after_hit + p_hit_after_miss);
        assert!((share - 0.30).abs() < 1e-6, "{share}");
        assert_eq!(
            Chance::new(30.0, 0.0).threshold,
            Chance::new(30.0, 0.0).threshold_after_hit
        );
    }

    fn net(action: NetAction) -> NetSpec {
        NetSpec {
            action,
            interface: Some("lo".into()),
            duration: Some("10s".into()),
            ..NetSpec::default()
        }
    }

    #[test]
    fn parameters_fit_the_action() {
        let mut s = net(NetAction::Loss);
        s.rate = Some("1mbit".into());
        s.percent = Some(5.0);
        let err = crate::plan::plan(&FaultSpec::Net(s))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid rate: net loss does not use --rate"),
            "{err}"
        );
        let err = crate::plan::plan(&FaultSpec::Net(net(NetAction::Delay)))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid latency: net delay needs --latency"),
            "{err}"
        );
        let mut s = net(NetAction::Delay);
        s.latency = Some("10ms".into());
        s.jitter = Some("20ms".into());
        let err = crate::plan::plan(&FaultSpec::Net(s))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid jitter"), "{err}");
    }

    #[test]
    fn guard_keeps_port_22() {
        // The other ports kept are listeners of "chaos" processes: in a unit test, this test
        // binary's own (other tests listen meanwhile).
        let mut s = net(NetAction::Partition);
        let f = filter(&s).unwrap();
        assert_eq!(f.exclude_ports.first(), Some(&22), "{:?}", f.exclude_ports);
        s.force = true;
        assert!(filter(&s).unwrap().exclude_ports.is_empty());
        s.force = false;
        s.dport = Some("22".into());
        assert!(
            !filter(&s).unwrap().exclude_ports.contains(&22),
            "asked for port 22 explicitly"
        );
    }

    #[test]
    fn unknown_interface_and_netns_are_named() {
        let err = resolve_interface(None, "nosuchif0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no interface nosuchif0"), "{err}");
        let err = resolve_interface(None, "this-name-is-too-long")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid interface:"), "{err}");
        let mut s = net(NetAction::Partition);
        s.netns = Some("no-such-ns-xyz".into());
        let err = crate::plan::plan(&FaultSpec::Net(s))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid netns:"), "{err}");
    }

    #[test]
    fn one_cgroup_hook_per_subtree() {
        let cg = |path: &str, id: u64| CgroupTarget {
            path: path.into(),
            id,
        };
        let filter = NetFilter {
            cgroups: vec![
                cg("/cg/a/b", 3),
                cg("/cg/a", 2),
                cg("/cg/ab", 4),
                cg("/cg/a", 2),
            ],
            ..NetFilter::default()
        };
        let hooks = socket_hooks(&filter, false).unwrap();
        // /cg/a/b is below /cg/a (one hook covers both); /cg/ab is only a name prefix.
        assert_eq!(hooks, vec![cg("/cg/a", 2), cg("/cg/ab", 4)]);
        assert!(
            socket_hooks(&NetFilter::default(), false)
                .unwrap()
                .is_empty()
        );
    }
}
