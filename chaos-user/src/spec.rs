//! Fault specs: what a user asks for, exactly as the CLI flags, the HTTP API and the library take
//! it (serde). Nothing here is checked beyond its shape; [`crate::plan`] validates.

use serde::{Deserialize, Serialize};

/// One fault, tagged by `kind`, e.g.
/// `{"kind": "net", "action": "loss", "percent": 30, "interface": "veth0", "duration": "60s"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FaultSpec {
    /// A network fault.
    Net(NetFault),
}

/// Network faults, tagged by `action`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum NetFault {
    /// Drop a share of the packets.
    Loss(NetLoss),
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

/// `net loss`: drop `percent` % of the packets through `interface`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetLoss {
    /// Share of packets to drop, 0-100.
    pub percent: f64,
    /// Interface name, in `netns` when given.
    pub interface: String,
    /// Network namespace: a name under /run/netns or a path such as /proc/PID/ns/net.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// Which packets: egress (default), ingress or both.
    #[serde(default)]
    pub direction: Direction,
    /// How long the fault lasts, e.g. "30s", "5m", "1h 30m".
    pub duration: String,
}

impl FaultSpec {
    /// Short name of the fault kind and action, e.g. `net loss`.
    pub fn name(&self) -> &'static str {
        match self {
            FaultSpec::Net(NetFault::Loss(_)) => "net loss",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let json =
            r#"{"kind":"net","action":"loss","percent":30,"interface":"veth0","duration":"60s"}"#;
        let spec: FaultSpec = serde_json::from_str(json).unwrap();
        let FaultSpec::Net(NetFault::Loss(loss)) = &spec;
        assert_eq!(loss.percent, 30.0);
        assert_eq!(loss.direction, Direction::Egress);
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
}
