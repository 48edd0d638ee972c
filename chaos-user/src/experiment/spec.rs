//! The experiment spec's types (serde), field for field as `docs/experiments.md` shows them.
//! Durations, sizes and comparisons stay the text the user wrote (so a spec round-trips exactly);
//! [`ExperimentSpec::validate`](super::ExperimentSpec::validate) parses them. Every struct refuses
//! unknown fields.

use serde::{Deserialize, Serialize};

use crate::spec::FaultSpec;

/// The value of [`ExperimentSpec::schema`] this build reads.
pub const EXPERIMENT_SCHEMA: &str = "chaos.experiment/v1";

/// The value of `schema` in the `report.json` the runner writes.
pub const REPORT_SCHEMA: &str = "chaos.report/v1";

/// How long traffic runs and is measured before the first fault, when `baseline` is not given.
pub const DEFAULT_BASELINE: &str = "10s";

/// One drill: target, admission, traffic, faults, expectations, recovery and abort rules.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// `chaos.experiment/v1` (the only version so far); optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Short name: letters, digits, `-`, `_`, `.`; it names the report.
    pub name: String,
    /// What the drill checks, in a sentence or two, shown in the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What the drill is aimed at; faults that name no target of their own inherit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// Checks that run for the whole drill, referred to by name by `admission`, `expect`,
    /// `recovery` and `abort`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<Probe>,
    /// What must hold before anything is injected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<Admission>,
    /// Load that runs from the baseline until recovery is verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<Traffic>,
    /// How long traffic runs before the first fault (the baseline), e.g. `10s`; default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// Length of the fault phase, from the inject phase's start (offset 0), e.g. `2m`; every
    /// fault window must end within it.
    pub duration: String,
    /// The faults, each with its window.
    pub faults: Vec<FaultStep>,
    /// What must happen while the faults are on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect: Vec<Expectation>,
    /// How fast the steady state must come back once the faults end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
    /// Blast-radius limits: when one trips, the drill stops and everything is recovered at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abort: Vec<AbortRule>,
}

/// The drill's target: exactly one of its fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// A process (all its threads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// A cgroup, as `--cgroup` takes it (v2 path, or the blkio hierarchy's for block faults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Processes named this (`comm`, at most 15 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// A container, by id (12 to 64 hex digits): its cgroup and its network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// A service address `HOST:PORT`: network faults without `dst` select it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// A named check, run every `interval` for the whole drill: exactly one of `tcp`, `http`,
/// `command` and `prometheus`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// Its name, unique among the probes.
    pub name: String,
    /// Holds when a TCP connection to `HOST:PORT` is accepted within `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// Holds when an HTTP request gets the expected status within the latency limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// Holds when a command exits with the expected code within `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandProbe>,
    /// Holds when a Prometheus query's value meets a threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusProbe>,
    /// Time between two checks, e.g. `1s` (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// How long one check may take before it counts as failed, e.g. `1s` (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// HTTP methods the probes and the HTTP load use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET.
    #[default]
    Get,
    /// HEAD.
    Head,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
}

/// An HTTP check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    /// `http://HOST[:PORT]/PATH` (plain HTTP/1.1).
    pub url: String,
    /// Method (default GET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
    /// Status that counts as up (default: any 2xx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Slower answers count as down, e.g. `500ms` (default: only the probe's `timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency: Option<String>,
}

/// A command check: the command is run directly (no shell; write `[sh, -c, "..."]` for one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandProbe {
    /// The program and its arguments.
    pub run: Vec<String>,
    /// Exit code that counts as up (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// A Prometheus check: an instant query whose first sample is compared with `threshold`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusProbe {
    /// The server, `http://HOST:PORT` (the query goes to `/api/v1/query`).
    pub url: String,
    /// The PromQL query, e.g. `pg_replication_lag_seconds`.
    pub query: String,
    /// When the probe holds, e.g. `"< 5"` (operators `<`, `<=`, `>`, `>=`, `==`, `!=`).
    pub threshold: String,
}

/// What must hold before anything is injected. Every fault is also planned and given a strategy
/// on the running kernel (as `chaos inject --dry-run` does) before the drill starts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admission {
    /// The target must exist (a live process, a cgroup with processes, a running container, an
    /// address that accepts TCP connections); default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_alive: Option<bool>,
    /// No fault may be armed on the target and no other drill may hold it; default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive: Option<bool>,
    /// Lowest kernel release, e.g. `"6.1"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<String>,
    /// What to do with a fault this kernel cannot make: `fail` the admission (default) or
    /// `skip` the fault and say why in the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<Unsupported>,
    /// Filesystems that must have free space.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub free_disk: Vec<FreeDisk>,
    /// The probes that make up the steady state (default: all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_state: Option<Vec<String>>,
    /// How long the steady state must hold without a failed check, e.g. `10s` (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_for: Option<String>,
    /// How long to wait for the steady state before refusing the drill (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// What to do with a fault the running kernel cannot make.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unsupported {
    /// Refuse the drill (nothing is injected).
    #[default]
    Fail,
    /// Run the drill without that fault; the report lists it as skipped with the reason, and
    /// expectations tied to it as not measured.
    Skip,
}

/// A free-space requirement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreeDisk {
    /// A path on the filesystem.
    pub path: String,
    /// At least this much free, as a size (`2G`) or a share of the filesystem (`10%`).
    pub min: String,
}

/// A load generator: exactly one of `tcp`, `http`, `file` and `command`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// Its name, unique among the generators.
    pub name: String,
    /// Connect (and optionally send and read a reply) in a loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpLoad>,
    /// HTTP requests in a loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpLoad>,
    /// Block writes (with fsync) in a loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileLoad>,
    /// The user's own command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandLoad>,
    /// Operations per second over all workers (default: as fast as they go). Not for a
    /// command that runs once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Workers, each with one operation in flight (default 1). Not for a command that runs once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// An operation slower than this counts as an error, e.g. `2s` (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Run the generator's workers in this cgroup (made if missing, removed after), so that
    /// faults aimed at it reach them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

impl Traffic {
    /// The generator's kind as the docs and the report name it: `tcp`, `http`, `file` or
    /// `command`; `None` if it gives none (refused by validation).
    pub fn kind(&self) -> Option<&'static str> {
        self.kinds().first().copied()
    }

    /// The kinds given (validation requires exactly one).
    pub(crate) fn kinds(&self) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        if self.tcp.is_some() {
            kinds.push("tcp");
        }
        if self.http.is_some() {
            kinds.push("http");
        }
        if self.file.is_some() {
            kinds.push("file");
        }
        if self.command.is_some() {
            kinds.push("command");
        }
        kinds
    }

    /// Whether the generator measures each operation (throughput, errors, latency): every
    /// built-in one, and a command that is repeated.
    pub fn measures_operations(&self) -> bool {
        self.command.as_ref().is_none_or(|c| c.repeat)
    }
}

/// The TCP load: each operation connects, sends `send` if given and then reads a reply (at
/// least one byte), and closes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpLoad {
    /// `HOST:PORT`.
    pub address: String,
    /// Text to send after connecting (a reply is then awaited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
}

/// The HTTP load: each operation is one request on a kept-alive connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLoad {
    /// `http://HOST[:PORT]/PATH`.
    pub url: String,
    /// Method (default GET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
    /// Request body (POST, PUT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Status that counts as success (default: any 2xx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// The file load: each operation writes `block_size` bytes at the next offset of its worker's
/// file (wrapping at `file_size`) and, with `fsync`, calls `fdatasync`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLoad {
    /// A directory; each worker writes its own file there, removed after the drill.
    pub path: String,
    /// Bytes per write, e.g. `4k` (default 4k).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<String>,
    /// Size each worker's file wraps at, e.g. `64M` (default 64M).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size: Option<String>,
    /// `fdatasync` after each write (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fsync: Option<bool>,
}

/// The user's command as load: run once for the whole drill (a benchmark), or repeated, each
/// run one operation (exit code 0 a success).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandLoad {
    /// The program and its arguments (no shell).
    pub run: Vec<String>,
    /// Run it again and again (`rate`, `concurrency`), measuring each run (default false: run
    /// once, stopped with SIGTERM when the drill ends).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeat: bool,
}

/// One fault of the drill and its window. The window starts `start` after the inject phase
/// begins, or with `after`, `start` after that fault's window ends; it lasts `duration`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultStep {
    /// Its name, unique among the faults.
    pub name: String,
    /// Offset of the window's start, e.g. `10s` (default 0s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Start counting `start` from the end of this (earlier) fault's window: faults in series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// How long the fault is on, e.g. `30s`; its in-kernel deadline.
    pub duration: String,
    /// The fault, with the fields of `chaos inject spec` (`kind`, `action`, ...), without
    /// `duration`.
    pub fault: FaultSpec,
}

/// Something that must be measured while the faults are on (or, under `recovery`, once they
/// are off): one subject (`traffic`, `probe` or `fault`) and at least one of its metrics. Each
/// metric is a comparison such as `">= 10%"`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// A label for the report (default: the expectation written out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The fault whose window is measured (default: the whole fault phase, from the first
    /// window's start to the last one's end). Not under `recovery`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub during: Option<String>,
    /// Leave this much of the window's start out of the measurement, e.g. `2s` (default 0s).
    /// Not under `recovery`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle: Option<String>,
    /// Subject: a traffic generator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<String>,
    /// Subject: a probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    /// Subject: a fault (its in-kernel counters). Not under `recovery`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// Traffic: failed operations, percent of those finished, e.g. `">= 10%"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<String>,
    /// Traffic: successful operations per second, e.g. `">= 100"`, or percent of the baseline's,
    /// e.g. `"<= 50%"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<String>,
    /// Traffic: median latency, e.g. `"<= 10ms"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50: Option<String>,
    /// Traffic: 90th percentile latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90: Option<String>,
    /// Traffic: 99th percentile latency, e.g. `">= 200ms"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99: Option<String>,
    /// Traffic: the slowest operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency: Option<String>,
    /// Probe: failed checks, percent of the checks in the window, e.g. `"> 0%"` (failed at
    /// least once) or `"== 0%"` (never failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fails: Option<String>,
    /// Fault: packets or calls it acted on (dropped, failed, ...), e.g. `">= 1"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acted: Option<String>,
}

/// How fast the steady state must come back once the faults end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recovery {
    /// The deadline, counted from the last fault's end, e.g. `30s` (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<String>,
    /// How long everything must hold to count as back, e.g. `5s` (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
    /// The probes that must hold (default: the steady state's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<Vec<String>>,
    /// Traffic and probe conditions that must hold too, measured over `hold` (no `during`,
    /// `settle` or `fault`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect: Vec<Expectation>,
}

/// A blast-radius limit: a probe down longer than `down_for`, or a traffic metric past its
/// limit for `for`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbortRule {
    /// Subject: a probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    /// Probe: abort when it has failed every check for this long, e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_for: Option<String>,
    /// Subject: a traffic generator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<String>,
    /// Traffic: abort when the error rate meets this, e.g. `"> 50%"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<String>,
    /// Traffic: abort when the throughput meets this, e.g. `"< 10%"` (of the baseline's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<String>,
    /// Traffic: abort when the 99th percentile latency meets this, e.g. `"> 5s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99: Option<String>,
    /// Traffic: for how long, in whole seconds measured one by one, e.g. `10s` (default 5s).
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
}
