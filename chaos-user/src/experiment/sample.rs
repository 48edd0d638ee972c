//! Sample reports, made up but shaped like real drills, for tests of what reads a [`Report`]
//! (the HTML page, the terminal summary) and for looking at the page without running a drill.
//!
//! [`failed`] is a 62 s drill against a replica: two traffic generators with a per-second series
//! (an error burst and a latency spike while the network is partitioned, a disk hang of several
//! seconds while fsync fails), two probes, two faults with their counters, expectations that
//! pass, fail and could not be measured, and a recovery. [`refused`] is a drill that admission
//! turned down: nothing injected, no traffic.

use super::{
    from_yaml,
    record::Check,
    report::{
        AdmissionCheck, CounterSecond, EndedBy, ExpectationReport, ExperimentInfo, FaultReport,
        FaultStatus, Host, Judgement, Outcome, PhaseName, PhaseRecord, ProbeReport, RecoveryReport,
        RecoveryVerdict, Report, Subject, TrafficFigures, TrafficReport, Verdict, WindowMs,
    },
    spec::{ExperimentSpec, REPORT_SCHEMA},
    stats::{Latency, Second},
};
use crate::injector::Counters;

/// The spec both samples are reports of.
const SPEC: &str = r#"
name: replica-partition
description: >-
  The replica is cut from its primary for 15 s while fsync fails on its data disk;
  reads must keep working and the primary's port must come back within 30 s.
target:
  address: 10.0.2.7:5432
probes:
  - name: primary-port
    tcp: 10.0.2.7:5432
  - name: replica-health
    http:
      url: http://127.0.0.1:8008/health
traffic:
  - name: reads
    http:
      url: http://127.0.0.1:8080/accounts/42
    rate: 50
  - name: wal-writes
    file:
      path: /var/lib/replica/chaos-load
baseline: 10s
duration: 30s
faults:
  - name: partition
    start: 5s
    duration: 15s
    fault:
      kind: net
      action: partition
      dst: [10.0.2.7/32]
  - name: fsync-eio
    start: 22s
    duration: 8s
    fault:
      kind: syscall
      action: fail
      syscall: [fsync]
      errno: EIO
expect:
  - during: partition
    probe: primary-port
    fails: ">= 90%"
  - during: partition
    traffic: reads
    error_rate: "<= 1%"
    p99: "<= 250ms"
  - fault: fsync-eio
    acted: ">= 1"
  - during: fsync-eio
    traffic: wal-writes
    max_latency: ">= 5s"
recovery:
  within: 30s
  hold: 10s
  expect:
    - traffic: reads
      throughput: ">= 90%"
"#;

/// The drill's spec, parsed.
fn spec() -> ExperimentSpec {
    from_yaml(SPEC).expect("the sample spec is valid")
}

/// A small deterministic noise source (xorshift), so the sample is the same on every run.
struct Noise(u64);

impl Noise {
    /// A value in `[-1, 1)`.
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 2000) as f64 / 1000.0 - 1.0
    }
}

fn phase(name: PhaseName, start_ms: u64, end_ms: u64, detail: Option<&str>) -> PhaseRecord {
    PhaseRecord {
        name,
        start_ms,
        end_ms,
        outcome: Outcome::Ok,
        detail: detail.map(str::to_owned),
    }
}

fn check(check: &str, ok: bool, detail: &str) -> AdmissionCheck {
    AdmissionCheck {
        check: check.to_owned(),
        ok,
        detail: Some(detail.to_owned()),
    }
}

fn second(t_s: u64, ops: f64, errors: f64, p50: f64, p99: f64) -> Second {
    let ops = ops.max(0.0).round() as u64;
    let errors = (errors.max(0.0).round() as u64).min(ops);
    let some = ops > 0;
    Second {
        t_ms: t_s * 1000,
        ops,
        errors,
        p50_ms: some.then_some(p50),
        p90_ms: some.then_some((p50 + p99) / 2.0),
        p99_ms: some.then_some(p99),
        max_ms: some.then_some(p99 * 1.3),
    }
}

/// `reads`: 50 requests per second; an error burst as the partition starts, then slow reads
/// (retries against the lost primary) until it ends.
fn reads_series(noise: &mut Noise) -> Vec<Second> {
    (2..62)
        .map(|t| {
            let n = noise.next();
            match t {
                17..=19 => second(t, 50.0 + 3.0 * n, 14.0 + 6.0 * n, 95.0, 1000.0),
                20..=31 => second(t, 38.0 + 4.0 * n, 1.0, 60.0 + 20.0 * n, 420.0 + 80.0 * n),
                _ => second(t, 50.0 + 2.0 * n, 0.0, 4.0 + n, 12.0 + 3.0 * n),
            }
        })
        .collect()
}

/// `wal-writes`: a write + fsync loop; fsync fails while `fsync-eio` is on, and one fsync
/// hangs for 8.5 s as the fault ends.
fn writes_series(noise: &mut Noise) -> Vec<Second> {
    (2..62)
        .map(|t| {
            let n = noise.next();
            match t {
                34..=40 => second(t, 190.0 + 10.0 * n, 185.0 + 5.0 * n, 0.4, 1.1),
                41 => second(t, 0.0, 0.0, 0.0, 0.0),
                42 => second(t, 12.0, 0.0, 2.0, 8500.0),
                _ => second(t, 210.0 + 15.0 * n, 0.0, 1.6 + 0.3 * n, 6.0 + 1.5 * n),
            }
        })
        .collect()
}

/// The figures of `series` over `[from_ms, to_ms)`, with `latency_ms` as given.
fn figures(series: &[Second], from_ms: u64, to_ms: u64, latency_ms: Latency) -> TrafficFigures {
    let span: Vec<&Second> = series
        .iter()
        .filter(|s| (from_ms..to_ms).contains(&s.t_ms))
        .collect();
    let ops: u64 = span.iter().map(|s| s.ops).sum();
    let errors: u64 = span.iter().map(|s| s.errors).sum();
    TrafficFigures {
        ops,
        errors,
        error_rate: (ops > 0).then(|| errors as f64 * 100.0 / ops as f64),
        throughput: (ops - errors) as f64 * 1000.0 / (to_ms - from_ms) as f64,
        latency_ms: Some(latency_ms),
    }
}

fn traffic(
    name: &str,
    kind: &str,
    series: Vec<Second>,
    base: Latency,
    all: Latency,
) -> TrafficReport {
    TrafficReport {
        name: name.to_owned(),
        kind: kind.to_owned(),
        baseline: Some(figures(&series, 2000, 12_000, base)),
        totals: Some(figures(&series, 2000, 62_000, all)),
        series,
        exit: None,
        last_error: None,
    }
}

/// Checks every second from 0 s to 61 s, failing in `down`.
fn probe(name: &str, kind: &str, down: std::ops::Range<u64>, why: &str) -> ProbeReport {
    let series: Vec<Check> = (0..62)
        .map(|t| {
            let ok = !down.contains(&t);
            Check {
                t_ms: t * 1000 + 250,
                ok,
                latency_ms: if ok { 1.8 } else { 1000.0 },
                value: None,
                detail: (!ok).then(|| why.to_owned()),
            }
        })
        .collect();
    ProbeReport {
        name: name.to_owned(),
        kind: kind.to_owned(),
        checks: series.len() as u64,
        failures: series.iter().filter(|c| !c.ok).count() as u64,
        series,
    }
}

/// A fault's counters per second over `[from_s, to_s)`.
fn counter_series(from_s: u64, to_s: u64, seen: u64, acted: u64) -> Vec<CounterSecond> {
    (from_s..to_s)
        .map(|t| CounterSecond {
            t_ms: t * 1000,
            seen: seen + t % 3,
            matched: acted + t % 2,
            acted: acted + t % 2,
        })
        .collect()
}

fn totals(series: &[CounterSecond]) -> Counters {
    Counters {
        seen: series.iter().map(|s| s.seen).sum(),
        matched: series.iter().map(|s| s.matched).sum(),
        acted: series.iter().map(|s| s.acted).sum(),
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one row of the expectations table, field by field"
)]
fn expectation(
    path: &str,
    name: &str,
    subject: Subject,
    metric: &str,
    comparison: &str,
    window: (u64, u64),
    measured: Option<f64>,
    verdict: Judgement,
    detail: Option<&str>,
) -> ExpectationReport {
    ExpectationReport {
        path: path.to_owned(),
        name: name.to_owned(),
        subject,
        metric: metric.to_owned(),
        comparison: comparison.to_owned(),
        window: WindowMs {
            start_ms: window.0,
            end_ms: window.1,
        },
        measured,
        baseline: None,
        verdict,
        detail: detail.map(str::to_owned),
    }
}

fn expectations() -> Vec<ExpectationReport> {
    let traffic = |n: &str| Subject::Traffic(n.to_owned());
    let mut share = expectation(
        "recovery.expect[0].throughput",
        "reads throughput >= 90%",
        traffic("reads"),
        "throughput",
        ">= 90%",
        (50_000, 60_000),
        Some(98.4),
        Judgement::Pass,
        None,
    );
    share.baseline = Some(49.8);
    vec![
        expectation(
            "expect[0].fails",
            "primary-port fails >= 90% during partition",
            Subject::Probe("primary-port".to_owned()),
            "fails",
            ">= 90%",
            (17_000, 32_000),
            Some(100.0),
            Judgement::Pass,
            None,
        ),
        expectation(
            "expect[1].error_rate",
            "reads error_rate <= 1% during partition",
            traffic("reads"),
            "error_rate",
            "<= 1%",
            (17_000, 32_000),
            Some(7.31),
            Judgement::Fail,
            Some("44 of 602 requests failed"),
        ),
        expectation(
            "expect[1].p99",
            "reads p99 <= 250ms during partition",
            traffic("reads"),
            "p99",
            "<= 250ms",
            (17_000, 32_000),
            Some(1000.0),
            Judgement::Fail,
            None,
        ),
        expectation(
            "expect[2].acted",
            "fsync-eio acted >= 1",
            Subject::Fault("fsync-eio".to_owned()),
            "acted",
            ">= 1",
            (34_000, 42_000),
            Some(1612.0),
            Judgement::Pass,
            None,
        ),
        expectation(
            "expect[3].max_latency",
            "wal-writes max_latency >= 5s during fsync-eio",
            traffic("wal-writes"),
            "max_latency",
            ">= 5s",
            (34_000, 42_000),
            None,
            Judgement::Unmeasured,
            Some("the operation still in flight at the window's end was not counted"),
        ),
        share,
    ]
}

fn faults(spec: &ExperimentSpec) -> Vec<FaultReport> {
    let partition = counter_series(17, 32, 61, 55);
    let eio = counter_series(34, 42, 203, 201);
    vec![
        FaultReport {
            name: "partition".to_owned(),
            fault: spec.faults[0].fault.clone(),
            status: FaultStatus::Recovered,
            detail: None,
            id: Some("f-1c9e2a".to_owned()),
            strategy: Some("tc egress + ingress drop (tc_partition)".to_owned()),
            window: WindowMs {
                start_ms: 17_000,
                end_ms: 32_000,
            },
            armed_ms: Some(17_012),
            ended_ms: Some(32_004),
            ended_by: Some(EndedBy::Deadline),
            counters: Some(totals(&partition)),
            series: partition,
            io: Vec::new(),
            time_to_detect_ms: Some(988),
        },
        FaultReport {
            name: "fsync-eio".to_owned(),
            fault: spec.faults[1].fault.clone(),
            status: FaultStatus::Recovered,
            detail: None,
            id: Some("f-77b0d4".to_owned()),
            strategy: Some("seccomp user notification (seccomp_errno)".to_owned()),
            window: WindowMs {
                start_ms: 34_000,
                end_ms: 42_000,
            },
            armed_ms: Some(34_020),
            ended_ms: Some(42_001),
            ended_by: Some(EndedBy::Recovery),
            counters: Some(totals(&eio)),
            series: eio,
            io: Vec::new(),
            time_to_detect_ms: Some(1980),
        },
    ]
}

fn latency(p50: f64, p90: f64, p99: f64, max: f64) -> Latency {
    Latency { p50, p90, p99, max }
}

/// A failed drill: the reads' error rate and p99 broke their limits during the partition; the
/// rest held and the replica recovered in 8 s.
pub fn failed() -> Report {
    let spec = spec();
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let reads = reads_series(&mut noise);
    let writes = writes_series(&mut noise);
    Report {
        schema: REPORT_SCHEMA.to_owned(),
        chaos_version: env!("CARGO_PKG_VERSION").to_owned(),
        experiment: ExperimentInfo {
            name: spec.name.clone(),
            description: spec.description.clone(),
            source: Some("drills/replica-partition.yaml".to_owned()),
            spec: spec.clone(),
        },
        host: Host {
            hostname: "replica-2".to_owned(),
            kernel: "6.12.0-1-amd64".to_owned(),
        },
        verdict: Verdict::Failed,
        reason: Some(
            "expect[1].error_rate: reads error_rate 7.31% during partition, wanted <= 1%"
                .to_owned(),
        ),
        started_unix_ms: 1_764_140_000_000,
        ended_unix_ms: 1_764_140_062_400,
        fault_phase_ms: Some(12_000),
        phases: vec![
            phase(PhaseName::Admission, 0, 2000, Some("6 checks held")),
            phase(PhaseName::Traffic, 2000, 12_000, Some("baseline 10 s")),
            phase(PhaseName::Inject, 12_000, 42_000, None),
            phase(PhaseName::Measure, 12_000, 42_000, None),
            phase(
                PhaseName::Recover,
                42_000,
                42_400,
                Some("2 faults recovered"),
            ),
            phase(
                PhaseName::Verify,
                42_400,
                60_000,
                Some("recovered after 8.0 s"),
            ),
            phase(PhaseName::Report, 60_000, 62_400, None),
        ],
        admission: vec![
            check(
                "privileges",
                true,
                "root (CAP_SYS_ADMIN, CAP_BPF, CAP_NET_ADMIN)",
            ),
            check("fault partition: strategy", true, "tc_partition"),
            check("fault fsync-eio: strategy", true, "seccomp_errno"),
            check("target alive", true, "10.0.2.7:5432 accepts connections"),
            check("exclusive", true, "no other drill on this target"),
            check(
                "steady state",
                true,
                "primary-port, replica-health held for 1 s",
            ),
        ],
        faults: faults(&spec),
        traffic: vec![
            traffic(
                "reads",
                "http",
                reads,
                latency(4.1, 8.2, 14.7, 21.0),
                latency(4.6, 95.0, 1000.0, 1003.0),
            ),
            traffic(
                "wal-writes",
                "file",
                writes,
                latency(1.6, 3.9, 7.4, 12.5),
                latency(1.5, 4.0, 9.8, 8512.0),
            ),
        ],
        probes: vec![
            probe(
                "primary-port",
                "tcp",
                17..32,
                "connect 10.0.2.7:5432: timed out after 1s",
            ),
            probe(
                "replica-health",
                "http",
                18..20,
                "GET /health: 503 Service Unavailable",
            ),
        ],
        expectations: expectations(),
        recovery: RecoveryReport {
            within_ms: 30_000,
            hold_ms: 10_000,
            started_ms: Some(42_000),
            recovered_ms: Some(50_000),
            time_to_recover_ms: Some(8000),
            verdict: RecoveryVerdict::Pass,
            probes: vec!["primary-port".to_owned(), "replica-health".to_owned()],
        },
        abort: None,
        leftovers: Vec::new(),
    }
}

/// A refused drill: the steady state did not hold, so nothing was injected and no traffic ran.
pub fn refused() -> Report {
    let spec = spec();
    let not_started = |i: usize, window: (u64, u64)| FaultReport {
        name: spec.faults[i].name.clone(),
        fault: spec.faults[i].fault.clone(),
        status: FaultStatus::NotStarted,
        detail: Some("admission refused the drill".to_owned()),
        id: None,
        strategy: None,
        window: WindowMs {
            start_ms: window.0,
            end_ms: window.1,
        },
        armed_ms: None,
        ended_ms: None,
        ended_by: None,
        counters: None,
        series: Vec::new(),
        io: Vec::new(),
        time_to_detect_ms: None,
    };
    let mut failed = failed();
    failed.verdict = Verdict::Refused;
    failed.reason = Some("steady state: primary-port failed 5 of 5 checks".to_owned());
    failed.ended_unix_ms = failed.started_unix_ms + 5200;
    failed.fault_phase_ms = None;
    failed.phases = vec![
        PhaseRecord {
            name: PhaseName::Admission,
            start_ms: 0,
            end_ms: 5000,
            outcome: Outcome::Failed,
            detail: Some("steady state did not hold".to_owned()),
        },
        phase(PhaseName::Report, 5000, 5200, None),
    ];
    failed.admission.truncate(5);
    failed.admission.push(check(
        "steady state",
        false,
        "primary-port: connect 10.0.2.7:5432: connection refused",
    ));
    failed.faults = vec![
        not_started(0, (15_000, 30_000)),
        not_started(1, (32_000, 40_000)),
    ];
    for t in &mut failed.traffic {
        t.baseline = None;
        t.totals = None;
        t.series.clear();
    }
    failed.probes = vec![
        probe(
            "primary-port",
            "tcp",
            0..62,
            "connect 10.0.2.7:5432: connection refused",
        ),
        probe("replica-health", "http", 0..0, ""),
    ];
    for p in &mut failed.probes {
        p.series.retain(|c| c.t_ms < 5000);
        p.checks = p.series.len() as u64;
        p.failures = p.series.iter().filter(|c| !c.ok).count() as u64;
    }
    failed.expectations = Vec::new();
    failed.recovery = RecoveryReport {
        within_ms: 30_000,
        hold_ms: 10_000,
        started_ms: None,
        recovered_ms: None,
        time_to_recover_ms: None,
        verdict: RecoveryVerdict::Skipped,
        probes: Vec::new(),
    };
    failed
}
