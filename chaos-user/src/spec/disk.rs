//! Disk fault specs: fill a filesystem, for real or virtually.

use serde::{Deserialize, Serialize};

/// What happens to the filesystem.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskAction {
    /// Take free space, leaving the amount asked.
    #[default]
    Fill,
}

impl DiskAction {
    /// Every action.
    pub const ALL: [DiskAction; 1] = [DiskAction::Fill];

    /// Lowercase name, as in specs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskAction::Fill => "fill",
        }
    }
}

/// A disk fault, e.g. `{"kind": "disk", "action": "fill", "path": "/data/clog", "percent": 95,
/// "duration": "5m"}`. Exactly one of `percent`, `bytes` and `free`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// What happens.
    pub action: DiskAction,
    /// A directory on the filesystem to fill; the fill files go here.
    #[serde(default)]
    pub path: String,
    /// Fill until the filesystem is this full, as `df` shows it (0-100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Take this much space, e.g. `10G`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
    /// Leave this much space free to unprivileged users, e.g. `100M`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free: Option<String>,
    /// Take no space: writes under `path` by the target fail with ENOSPC (a syscall fault).
    #[serde(
        default,
        rename = "virtual",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub virtual_fill: bool,
    /// `virtual`: this process is the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// `virtual`: the processes of this cgroup v2 are the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Override the guards (`/`, `/boot`, the filesystem chaos itself needs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// How long the fault lasts, e.g. "30s", "5m". Without one, [`crate::plan::DEFAULT_DURATION`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

#[cfg(test)]
mod tests {
    use crate::spec::FaultSpec;

    #[test]
    fn json_round_trip() {
        let json = r#"{"kind":"disk","action":"fill","path":"/data","free":"100M",
            "virtual":true,"pid":42,"duration":"1m"}"#;
        let spec: FaultSpec = serde_json::from_str(json).unwrap();
        let FaultSpec::Disk(s) = &spec else {
            panic!("{spec:?}")
        };
        assert!(s.virtual_fill);
        assert_eq!(spec.name(), "disk fill");
        let back: FaultSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
    }
}
