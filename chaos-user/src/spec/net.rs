//! Network fault specs.

use serde::{Deserialize, Serialize};

/// Network fault actions. (`Default` is `loss`, for building specs in code; a spec without an
/// action does not parse.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetAction {
    /// Drop `percent` % of the packets (with `correlation`, in bursts).
    #[default]
    Loss,
    /// Drop every selected packet, both directions by default.
    Partition,
    /// Delay packets by `latency` (+- `jitter`, shaped by `distribution`).
    Delay,
    /// Limit the selected traffic to `rate`.
    Rate,
    /// Flip a random bit in `percent` % of the packets.
    Corrupt,
    /// Send `percent` % of the packets twice.
    Duplicate,
    /// Send `percent` % of the packets at once and delay the rest by `latency`, so they overtake.
    Reorder,
}

impl NetAction {
    /// Every action, in the order the docs list them.
    pub const ALL: [NetAction; 7] = [
        NetAction::Loss,
        NetAction::Partition,
        NetAction::Delay,
        NetAction::Rate,
        NetAction::Corrupt,
        NetAction::Duplicate,
        NetAction::Reorder,
    ];

    /// Lowercase name, as in specs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            NetAction::Loss => "loss",
            NetAction::Partition => "partition",
            NetAction::Delay => "delay",
            NetAction::Rate => "rate",
            NetAction::Corrupt => "corrupt",
            NetAction::Duplicate => "duplicate",
            NetAction::Reorder => "reorder",
        }
    }
}

/// Which way packets travel through the interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Packets leaving the interface.
    #[default]
    Egress,
    /// Packets entering the interface.
    Ingress,
    /// Both ways.
    Both,
}

impl Direction {
    /// The single directions this one covers.
    pub fn parts(self) -> &'static [Direction] {
        match self {
            Direction::Egress => &[Direction::Egress],
            Direction::Ingress => &[Direction::Ingress],
            Direction::Both => &[Direction::Egress, Direction::Ingress],
        }
    }

    /// Lowercase name, as in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
            Direction::Both => "both",
        }
    }
}

/// Transport protocols a rule can select.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP and ICMPv6.
    Icmp,
}

/// Jitter distributions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Uniform in `[latency - jitter, latency + jitter]`.
    #[default]
    Uniform,
    /// Normal, sigma = jitter.
    Normal,
    /// Pareto (heavy tail), scaled to sigma = jitter.
    Pareto,
    /// netem's mix: a quarter normal, three quarters pareto.
    Paretonormal,
}

/// A network fault: the action, its parameters and the traffic it selects. Parameters an action
/// does not use must be absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSpec {
    /// What happens to the selected packets.
    pub action: NetAction,
    /// Share of packets, 0-100 (loss, corrupt, duplicate, reorder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// How much each decision follows the previous one, 0-100 (loss, corrupt, duplicate):
    /// higher means longer bursts at the same average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<f64>,
    /// Added delay, e.g. `100ms` (delay, reorder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
    /// Delay variation, e.g. `20ms` (delay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<String>,
    /// Shape of the jitter (delay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Distribution>,
    /// Rate limit, e.g. `1mbit`, `500kbit`, `10mbps` (rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,

    /// Interface; default: the interfaces that route to `dst`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Network namespace: a name under /run/netns or a path such as /proc/PID/ns/net.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// Act inside this process's network namespace (as a pod sidecar would).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_pid: Option<u32>,
    /// Which packets: egress (default; both for partition), ingress or both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Destination prefixes (CIDR or address), IPv4 or IPv6.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst: Vec<String>,
    /// Source prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub src: Vec<String>,
    /// Destination port or range `A-B`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<String>,
    /// Source port or range `A-B`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<String>,
    /// Transport protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    /// cgroups v2 whose sockets (theirs and their sub-cgroups') the fault selects: paths under
    /// the cgroup v2 mount, or absolute.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroup: Vec<String>,
    /// Only the sockets this process holds when the fault is armed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Prefixes or ports never touched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Override the safety guards (port 22 kept, no unfiltered 100% on the default route).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// How long the fault lasts, e.g. "30s", "5m", "1h 30m". Without one, [`crate::plan::DEFAULT_DURATION`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::FaultSpec;

    #[test]
    fn json_round_trip() {
        let json =
            r#"{"kind":"net","action":"loss","percent":30,"interface":"veth0","duration":"60s"}"#;
        let spec: FaultSpec = serde_json::from_str(json).unwrap();
        let FaultSpec::Net(net) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(net.percent, Some(30.0));
        assert_eq!(net.action, NetAction::Loss);
        assert_eq!(net.direction, None);
        let back: FaultSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn unknown_field_is_named() {
        let json = r#"{"kind":"net","action":"loss","percent":30,"interface":"veth0","duration":"1s","prcent":3}"#;
        let err = serde_json::from_str::<FaultSpec>(json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("prcent"), "{err}");
    }

    #[test]
    fn selectors_parse() {
        let json = r#"{"kind":"net","action":"partition","dst":["10.0.0.0/8","fd00::/8"],
            "dport":"5432","proto":"tcp","exclude":["22"],"duration":"1m"}"#;
        let Ok(FaultSpec::Net(net)) = serde_json::from_str::<FaultSpec>(json) else {
            panic!("not a net spec")
        };
        assert_eq!(net.dst.len(), 2);
        assert_eq!(net.proto, Some(Proto::Tcp));
    }
}
