//! Block I/O fault specs: make a block device fail, slow down or hang for a target.

use serde::{Deserialize, Serialize};

/// What the selected I/O suffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoAction {
    /// Complete the I/O with an error (EIO).
    #[default]
    Fail,
    /// Throttle the target's I/O to the device (bytes and operations per second).
    Slow,
    /// Stall the target's I/O to the device until the fault ends.
    Hang,
}

impl IoAction {
    /// Every action.
    pub const ALL: [IoAction; 3] = [IoAction::Fail, IoAction::Slow, IoAction::Hang];

    /// Lowercase name, as in specs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            IoAction::Fail => "fail",
            IoAction::Slow => "slow",
            IoAction::Hang => "hang",
        }
    }
}

/// Which block operations an `io fail` selects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoOp {
    /// Reads.
    Read,
    /// Writes (writeback included).
    Write,
    /// Cache flushes (fsync, fdatasync, journal commits).
    Flush,
    /// Discards (TRIM, fstrim, hole punching).
    Discard,
    /// All of them.
    #[default]
    Any,
}

impl IoOp {
    /// Lowercase name, as in specs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            IoOp::Read => "read",
            IoOp::Write => "write",
            IoOp::Flush => "flush",
            IoOp::Discard => "discard",
            IoOp::Any => "any",
        }
    }
}

/// A block I/O fault, e.g.
/// `{"kind": "io", "action": "slow", "device": "/dev/loop3", "write_bps": "2mb",
/// "cgroup": "db.slice", "duration": "60s"}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoSpec {
    /// What the selected I/O suffers.
    pub action: IoAction,
    /// The block device: `/dev/X`, `MAJ:MIN`, or a path on a filesystem (its device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// `fail`: the files under this directory instead of a whole device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `fail`: which operations (default any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<IoOp>,
    /// `fail`: the error, by name or number (only EIO reaches callers from a block device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    /// `fail`: share of the selected I/O that fails, 0-100 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// `fail`: only I/O that touches these 512-byte sectors, `A-B` (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sector_range: Option<String>,
    /// `slow`: read bandwidth limit, e.g. `2mb` (bytes per second; k, m, g are powers of 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_bps: Option<String>,
    /// `slow`: write bandwidth limit, e.g. `2mb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_bps: Option<String>,
    /// `slow`: read operations per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_iops: Option<u64>,
    /// `slow`: write operations per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_iops: Option<u64>,
    /// Target: this process (`slow`/`hang` move it into a cgroup of its own if it shares one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Target: the processes of this cgroup (the hierarchy that holds the io / blkio controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Override the safety guards (the host's own disks, pid 1, the root cgroup).
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
        let json = r#"{"kind":"io","action":"fail","device":"7:3","op":"write","errno":"EIO",
            "percent":30,"sector_range":"0-2047","cgroup":"db","duration":"30s"}"#;
        let spec: FaultSpec = serde_json::from_str(json).unwrap();
        let FaultSpec::Io(s) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(s.op, Some(IoOp::Write));
        assert_eq!(spec.name(), "io fail");
        let back: FaultSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
        let err = serde_json::from_str::<FaultSpec>(
            r#"{"kind":"io","action":"slow","device":"/dev/x","writebps":"1m","duration":"1s"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("writebps"), "{err}");
    }
}
