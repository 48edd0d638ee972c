//! `report.json`: the schema `chaos.report/v1`, field for field as `docs/experiments.md` documents
//! it. Fields may be added within v1, never renamed, removed or given another meaning. Times are
//! ms since `started_unix_ms` (`*_ms`, `t_ms`) unless named `*_unix_ms`.

use serde::{Deserialize, Serialize};

use super::{
    ExperimentSpec,
    stats::{Latency, Second},
};
use crate::{FaultSpec, injector::Counters};

/// The whole report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// `chaos.report/v1`.
    pub schema: String,
    /// The chaos that ran the drill.
    pub chaos_version: String,
    /// The drill.
    pub experiment: ExperimentInfo,
    /// Where it ran.
    pub host: Host,
    /// How it ended.
    pub verdict: Verdict,
    /// For `failed`, `aborted`, `refused`: the first cause, in one line.
    pub reason: Option<String>,
    /// When it started, ms since the epoch.
    pub started_unix_ms: u64,
    /// When it ended, ms since the epoch.
    pub ended_unix_ms: u64,
    /// When offset 0 of the fault phase was (`t_ms`); null if refused.
    pub fault_phase_ms: Option<u64>,
    /// Each phase run.
    pub phases: Vec<PhaseRecord>,
    /// Each admission check.
    pub admission: Vec<AdmissionCheck>,
    /// One per spec fault, in spec order.
    pub faults: Vec<FaultReport>,
    /// One per traffic generator.
    pub traffic: Vec<TrafficReport>,
    /// One per probe.
    pub probes: Vec<ProbeReport>,
    /// One per metric of each expectation, `expect` then `recovery.expect`.
    pub expectations: Vec<ExpectationReport>,
    /// Recovery and its verification.
    pub recovery: RecoveryReport,
    /// The abort, if one stopped the drill.
    pub abort: Option<AbortReport>,
    /// Traces of the drill found after recovery; must be empty.
    pub leftovers: Vec<String>,
}

/// The drill as the spec gave it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExperimentInfo {
    /// Its name.
    pub name: String,
    /// What it checks.
    pub description: Option<String>,
    /// The spec's file.
    pub source: Option<String>,
    /// The spec as read, normalised.
    pub spec: ExperimentSpec,
}

/// Where the drill ran.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Host {
    /// `uname -n`.
    pub hostname: String,
    /// `uname -r`.
    pub kernel: String,
}

/// How a drill ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every expectation and the recovery held.
    Passed,
    /// One did not.
    Failed,
    /// An abort rule, a signal or an error stopped the drill.
    Aborted,
    /// Admission failed; nothing was injected.
    Refused,
}

impl Verdict {
    /// `chaos run`'s exit code: 0 passed, 1 failed, 2 refused, 3 aborted.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Passed => 0,
            Verdict::Failed => 1,
            Verdict::Refused => 2,
            Verdict::Aborted => 3,
        }
    }

    /// Its name, as in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::Aborted => "aborted",
            Verdict::Refused => "refused",
        }
    }
}

/// A phase of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseName {
    /// Privileges, dry runs, target, disk, steady state.
    Admission,
    /// Traffic starts; the baseline is measured.
    Traffic,
    /// Faults armed at their windows' starts.
    Inject,
    /// Alongside inject: counters, probes, traffic, abort rules.
    Measure,
    /// Every fault recovered and checked gone.
    Recover,
    /// The steady state must come back.
    Verify,
    /// The report is written.
    Report,
}

/// How a phase ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It did what it should.
    Ok,
    /// It did not (admission refused, recovery not verified...).
    Failed,
    /// An abort cut it short.
    Aborted,
    /// It did not run.
    Skipped,
}

/// One phase run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PhaseRecord {
    /// Which.
    pub name: PhaseName,
    /// Start, ms.
    pub start_ms: u64,
    /// End, ms.
    pub end_ms: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// What happened, in one line.
    pub detail: Option<String>,
}

/// One admission check.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdmissionCheck {
    /// What was checked (`min kernel`, `free disk /var/lib/postgresql`, `fault eio: strategy`).
    pub check: String,
    /// Whether it held.
    pub ok: bool,
    /// What was found.
    pub detail: Option<String>,
}

/// A fault's state at the end of the drill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultStatus {
    /// Armed, ended and recovered.
    Recovered,
    /// This kernel cannot make it and `admission.unsupported` is `skip`.
    Skipped,
    /// The drill was aborted before its window.
    NotStarted,
    /// Arming it failed.
    Failed,
}

/// How a fault ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndedBy {
    /// Its in-kernel deadline.
    Deadline,
    /// Recovery at the end of the fault phase.
    Recovery,
    /// An abort.
    Abort,
}

/// A span of the drill, ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowMs {
    /// Start, ms.
    pub start_ms: u64,
    /// End, ms.
    pub end_ms: u64,
}

/// One second of a fault's counters (counts in that second).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSecond {
    /// The second's start, ms.
    pub t_ms: u64,
    /// Packets or calls examined.
    pub seen: u64,
    /// Those of its target.
    pub matched: u64,
    /// Those acted on.
    pub acted: u64,
}

/// A latency histogram: `counts[i]` operations took at most `bounds[i]` µs (and more than the
/// bound before).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// Upper bounds, µs.
    pub bounds: Vec<u64>,
    /// Counts per bucket.
    pub counts: Vec<u64>,
}

/// One second of block I/O on a device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IoSecond {
    /// The second's start, ms.
    pub t_ms: u64,
    /// Reads per second.
    pub read_iops: f64,
    /// Writes per second.
    pub write_iops: f64,
    /// Bytes read per second.
    pub read_bps: f64,
    /// Bytes written per second.
    pub write_bps: f64,
    /// Latencies of the I/O completed in that second.
    pub latency_us: Histogram,
}

/// Block I/O measured on one device while a block fault was on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IoSeries {
    /// The device, `MAJ:MIN`.
    pub device: String,
    /// Per second.
    pub series: Vec<IoSecond>,
}

/// One fault of the drill.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaultReport {
    /// From the spec.
    pub name: String,
    /// The fault as armed (with the inherited target and the window's duration).
    pub fault: FaultSpec,
    /// How it ended up.
    pub status: FaultStatus,
    /// Why skipped or failed.
    pub detail: Option<String>,
    /// Its id.
    pub id: Option<String>,
    /// How it was made.
    pub strategy: Option<String>,
    /// Planned window.
    pub window: WindowMs,
    /// When the rule went live.
    pub armed_ms: Option<u64>,
    /// When it ended.
    pub ended_ms: Option<u64>,
    /// What ended it.
    pub ended_by: Option<EndedBy>,
    /// Final counters (network and syscall faults).
    pub counters: Option<Counters>,
    /// Counters per second while on.
    pub series: Vec<CounterSecond>,
    /// Block I/O per device while on (block faults).
    pub io: Vec<IoSeries>,
    /// From `armed_ms` to the first second in which an expectation tied to this fault held.
    pub time_to_detect_ms: Option<u64>,
}

/// A traffic generator's figures over a span.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrafficFigures {
    /// Operations finished.
    pub ops: u64,
    /// Those failed.
    pub errors: u64,
    /// Percent failed.
    pub error_rate: Option<f64>,
    /// Successful operations per second.
    pub throughput: f64,
    /// Latency percentiles, ms.
    pub latency_ms: Option<Latency>,
}

/// How a command run once ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitReport {
    /// Its exit code.
    pub code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// When, ms (null while running at the end).
    pub at_ms: Option<u64>,
}

/// One traffic generator.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrafficReport {
    /// From the spec.
    pub name: String,
    /// `tcp`, `http`, `file` or `command`.
    pub kind: String,
    /// Over the baseline.
    pub baseline: Option<TrafficFigures>,
    /// Over the whole run.
    pub totals: Option<TrafficFigures>,
    /// Per second.
    pub series: Vec<Second>,
    /// A command run once: how it ended.
    pub exit: Option<ExitReport>,
    /// The last error an operation ended with.
    pub last_error: Option<String>,
}

/// One probe check, as reported.
pub use super::record::Check as ProbeCheck;

/// One probe.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbeReport {
    /// From the spec.
    pub name: String,
    /// `tcp`, `http`, `command` or `prometheus`.
    pub kind: String,
    /// Checks made.
    pub checks: u64,
    /// Those that failed.
    pub failures: u64,
    /// Every check.
    pub series: Vec<ProbeCheck>,
}

/// What an expectation is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subject {
    /// A traffic generator.
    Traffic(String),
    /// A probe.
    Probe(String),
    /// A fault's counters.
    Fault(String),
}

/// An expectation's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Judgement {
    /// It held.
    Pass,
    /// It did not.
    Fail,
    /// It could not be measured.
    Unmeasured,
}

/// One metric of one expectation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpectationReport {
    /// Where it is in the spec (`expect[1].p99`).
    pub path: String,
    /// Its label.
    pub name: String,
    /// What it is about.
    pub subject: Subject,
    /// The metric (`p99`).
    pub metric: String,
    /// The comparison as written (`<= 250ms`).
    pub comparison: String,
    /// The span measured.
    pub window: WindowMs,
    /// The value, in the comparison's unit.
    pub measured: Option<f64>,
    /// For a throughput share: the baseline's throughput.
    pub baseline: Option<f64>,
    /// The verdict.
    pub verdict: Judgement,
    /// Why unmeasured, or what was seen.
    pub detail: Option<String>,
}

/// A pass / fail / skipped verdict (recovery).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryVerdict {
    /// The steady state came back in time.
    Pass,
    /// It did not.
    Fail,
    /// Not verified (aborted or refused).
    Skipped,
}

/// Recovery and its verification.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// The deadline, from the last window's end.
    pub within_ms: u64,
    /// How long everything had to hold.
    pub hold_ms: u64,
    /// The last window's end.
    pub started_ms: Option<u64>,
    /// Start of the hold window that passed.
    pub recovered_ms: Option<u64>,
    /// From `started_ms` to `recovered_ms`.
    pub time_to_recover_ms: Option<u64>,
    /// The verdict.
    pub verdict: RecoveryVerdict,
    /// The probes checked.
    pub probes: Vec<String>,
}

/// What stopped the drill early.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AbortReport {
    /// The rule's path (`abort[0]`), or `signal`, `error`.
    pub rule: String,
    /// When, ms.
    pub at_ms: u64,
    /// What was measured.
    pub detail: String,
}
