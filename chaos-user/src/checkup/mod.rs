//! `chaos checkup`: the risk catalog's scenarios for one kind of system, tried one by one on a
//! running service, scored and reported with the catalog's advice (`docs/checkup.md`).
//!
//! [`plan`] picks the profile's scenarios (its domain's and the generic ones), fills each one's
//! parameters from the `--set` pairs and what [`facts::gather`] finds about the target, and
//! lists the scenarios it cannot fill as skipped, with the reason. [`run`] carries the drills
//! through [`crate::experiment::runner::run`], gentlest first (by severity, then catalog order),
//! each with its own admission and verified recovery; a drill stopped by an abort rule (its
//! blast radius) or whose recovery fails stops the checkup. [`score`] turns each drill into an
//! outcome and the outcomes into a 0-100 score; [`page`] writes the summary and report.html.

pub mod facts;
pub mod page;
pub mod score;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use self::{
    facts::{Fact, Facts, Target},
    score::Outcome,
};
use crate::{
    Error, Injector,
    catalog::{self, Domain, Scenario, Severity},
    error::IoContext,
    experiment::{
        self, ExperimentSpec,
        progress::Silent,
        report::{Judgement, RecoveryVerdict, Report, Verdict},
        runner,
    },
};

/// report.json's schema.
pub const SCHEMA: &str = "chaos.checkup/v1";

/// The score at or above which a checkup passes unless `--min-score` says otherwise.
pub const DEFAULT_MIN_SCORE: u32 = 80;

/// The kinds of system a checkup knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Redis: the redis scenarios and the generic ones.
    Redis,
    /// PostgreSQL.
    Postgresql,
    /// MySQL.
    Mysql,
    /// OceanBase.
    Oceanbase,
    /// Any service: the generic scenarios only.
    Generic,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 5] = [
        Profile::Redis,
        Profile::Postgresql,
        Profile::Mysql,
        Profile::Oceanbase,
        Profile::Generic,
    ];

    /// Its catalog domain.
    pub fn domain(self) -> Domain {
        match self {
            Profile::Redis => Domain::Redis,
            Profile::Postgresql => Domain::Postgresql,
            Profile::Mysql => Domain::Mysql,
            Profile::Oceanbase => Domain::Oceanbase,
            Profile::Generic => Domain::Generic,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        self.domain().as_str()
    }

    /// Its scenarios: the domain's, then the generic ones, in the catalog's order.
    pub fn scenarios(self) -> Vec<&'static Scenario> {
        let mut out = catalog::list(Some(self.domain()));
        if self != Profile::Generic {
            out.extend(catalog::list(Some(Domain::Generic)));
        }
        out
    }
}

impl std::str::FromStr for Profile {
    type Err = Error;

    fn from_str(s: &str) -> Result<Profile, Error> {
        Profile::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "profile",
                    format!("`{s}` is not a checkup profile"),
                    format!(
                        "give one of {}",
                        Profile::ALL.map(Profile::as_str).join(", ")
                    ),
                )
            })
    }
}

/// What to check.
#[derive(Clone, Debug)]
pub struct Request {
    /// The kind of system.
    pub profile: Profile,
    /// The service.
    pub target: Target,
    /// Its health endpoint: `HOST:PORT` or an `http://` URL.
    pub probe: String,
    /// The user's own load, a shell command run for the whole of each drill.
    pub traffic: Option<String>,
    /// `--set` pairs: they win over what is found, and reach every scenario with that
    /// parameter.
    pub set: BTreeMap<String, String>,
}

/// A scenario the checkup will run, with its parameters' values.
#[derive(Clone, Debug)]
pub struct Planned {
    /// The scenario.
    pub scenario: &'static Scenario,
    /// Each parameter's value and where it came from (`--set`, a fact's source, `default`).
    pub values: BTreeMap<String, Fact>,
}

/// A scenario not run, and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Skipped {
    /// Its id.
    pub scenario: String,
    /// Its title.
    pub title: String,
    /// Its severity.
    pub severity: Severity,
    /// Why it did not run, in one line.
    pub reason: String,
}

/// The drills a checkup runs, in order, and the scenarios it cannot run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The request.
    pub request: Request,
    /// What was found about the target.
    pub facts: Facts,
    /// To run, gentlest first.
    pub drills: Vec<Planned>,
    /// Cannot run.
    pub skipped: Vec<Skipped>,
}

fn skip(s: &Scenario, reason: String) -> Skipped {
    Skipped {
        scenario: s.id.clone(),
        title: s.title.clone(),
        severity: s.severity,
        reason,
    }
}

/// Each parameter's value for `s`: from `set`, else the facts, else its default; `Err` names
/// what is missing.
fn values_for(
    s: &Scenario,
    set: &BTreeMap<String, String>,
    facts: &Facts,
) -> Result<BTreeMap<String, Fact>, String> {
    let mut values = BTreeMap::new();
    let mut missing = Vec::new();
    for p in &s.parameters {
        let found = if let Some(v) = set.get(&p.name) {
            Some(Fact {
                value: v.clone(),
                source: "--set".into(),
            })
        } else if let Some(f) = facts::fact_for(&p.name).and_then(|f| facts.get(f)) {
            Some(f.clone())
        } else {
            p.default.as_ref().map(|d| Fact {
                value: d.clone(),
                source: "default".into(),
            })
        };
        match found {
            Some(f) => {
                values.insert(p.name.clone(), f);
            }
            None => missing.push(format!("--set {}=… ({})", p.name, p.description)),
        }
    }
    if missing.is_empty() {
        Ok(values)
    } else {
        Err(format!("needs {}", missing.join("; ")))
    }
}

/// The drill of `planned` as a spec: the scenario filled in, with `--traffic` added as a
/// command run for the whole drill.
fn drill(planned: &Planned, traffic: Option<&str>) -> Result<ExperimentSpec, String> {
    let set = planned
        .values
        .iter()
        .map(|(k, f)| (k.clone(), f.value.clone()))
        .collect();
    let mut value = planned
        .scenario
        .fill(&set)
        .map_err(|e| one_line(&e.to_string()))?;
    if let Some(cmd) = traffic
        && let Value::Object(top) = &mut value
    {
        let entry = serde_json::json!({
            "name": "checkup-traffic",
            "command": {"run": ["sh", "-c", cmd]},
        });
        match top.get_mut("traffic") {
            Some(Value::Array(list)) => list.push(entry),
            _ => {
                top.insert("traffic".into(), Value::Array(vec![entry]));
            }
        }
    }
    let spec = experiment::from_value(value).map_err(|e| one_line(&e.to_string()))?;
    spec.validate().map_err(|e| one_line(&e.to_string()))?;
    Ok(spec)
}

fn one_line(text: &str) -> String {
    text.lines().collect::<Vec<_>>().join("; ")
}

/// The checkup's plan: which scenarios run, in which order, with which values, and which are
/// skipped and why. A `--set` name that no scenario of the profile has is refused.
pub fn plan(request: Request) -> Result<Plan, Error> {
    let facts = facts::gather(&request.target, &request.probe)?;
    let scenarios = request.profile.scenarios();
    let known: BTreeSet<&str> = scenarios
        .iter()
        .flat_map(|s| s.parameters.iter().map(|p| p.name.as_str()))
        .collect();
    for key in request.set.keys() {
        if !known.contains(key.as_str()) {
            return Err(Error::invalid(
                "set",
                format!(
                    "no scenario of the {} profile has a parameter `{key}`",
                    request.profile.as_str()
                ),
                format!(
                    "its parameters are: {}",
                    known.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    let mut drills = Vec::new();
    let mut skips = Vec::new();
    for s in scenarios {
        let planned = values_for(s, &request.set, &facts).map(|values| Planned {
            scenario: s,
            values,
        });
        match planned.and_then(|p| drill(&p, request.traffic.as_deref()).map(|_| p)) {
            Ok(p) => drills.push(p),
            Err(reason) => skips.push(skip(s, reason)),
        }
    }
    // Gentlest first: a drill that takes the service down stops the checkup, so it comes last.
    drills.sort_by_key(|p| p.scenario.severity);
    Ok(Plan {
        request,
        facts,
        drills,
        skipped: skips,
    })
}

/// Numbers from a drill's report that show what happened.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Evidence {
    /// The drill's verdict (`passed`, `failed`, `aborted`).
    pub verdict: String,
    /// Why it failed or was aborted.
    pub reason: Option<String>,
    /// Each fault: `name`, calls or packets acted on.
    pub faults: Vec<FaultEvidence>,
    /// Each expectation measured.
    pub expectations: Vec<ExpectationEvidence>,
    /// Each traffic generator: baseline and whole-drill figures.
    pub traffic: Vec<TrafficEvidence>,
    /// Each probe: checks and failures.
    pub probes: Vec<ProbeEvidence>,
    /// `pass`, `fail` or `skipped`.
    pub recovery: String,
    /// How long recovery took, ms.
    pub time_to_recover_ms: Option<u64>,
    /// The recovery objective, ms.
    pub recovery_within_ms: u64,
    /// What the abort rule measured.
    pub abort: Option<String>,
}

/// A fault's effect.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaultEvidence {
    /// Its name in the drill.
    pub name: String,
    /// `recovered`, `skipped`, `failed`, `not_started`.
    pub status: String,
    /// Calls or packets it acted on.
    pub acted: Option<u64>,
    /// Why skipped or failed.
    pub detail: Option<String>,
}

/// One expectation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpectationEvidence {
    /// Its label.
    pub name: String,
    /// `error_rate >= 50%`.
    pub comparison: String,
    /// What was measured.
    pub measured: Option<f64>,
    /// `pass`, `fail`, `unmeasured`.
    pub verdict: String,
}

/// A traffic generator's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrafficEvidence {
    /// Its name.
    pub name: String,
    /// Operations and errors over the baseline.
    pub baseline_ops: Option<u64>,
    /// Errors over the baseline.
    pub baseline_errors: Option<u64>,
    /// Operations over the drill.
    pub ops: Option<u64>,
    /// Errors over the drill.
    pub errors: Option<u64>,
    /// p99 latency over the drill, ms.
    pub p99_ms: Option<f64>,
    /// The last error an operation ended with.
    pub last_error: Option<String>,
}

/// A probe's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbeEvidence {
    /// Its name.
    pub name: String,
    /// Checks made.
    pub checks: u64,
    /// Those failed.
    pub failures: u64,
}

impl Evidence {
    /// The evidence in `r`.
    pub fn from_report(r: &Report) -> Evidence {
        Evidence {
            verdict: r.verdict.as_str().into(),
            reason: r.reason.clone(),
            faults: r
                .faults
                .iter()
                .map(|f| FaultEvidence {
                    name: f.name.clone(),
                    status: enum_name(&f.status),
                    acted: f.counters.map(|c| c.acted),
                    detail: f.detail.clone(),
                })
                .collect(),
            expectations: r
                .expectations
                .iter()
                .map(|e| ExpectationEvidence {
                    name: e.name.clone(),
                    comparison: format!("{} {}", e.metric, e.comparison),
                    measured: e.measured,
                    verdict: match e.verdict {
                        Judgement::Pass => "pass",
                        Judgement::Fail => "fail",
                        Judgement::Unmeasured => "unmeasured",
                    }
                    .into(),
                })
                .collect(),
            traffic: r
                .traffic
                .iter()
                .map(|t| TrafficEvidence {
                    name: t.name.clone(),
                    baseline_ops: t.baseline.as_ref().map(|b| b.ops),
                    baseline_errors: t.baseline.as_ref().map(|b| b.errors),
                    ops: t.totals.as_ref().map(|b| b.ops),
                    errors: t.totals.as_ref().map(|b| b.errors),
                    p99_ms: t
                        .totals
                        .as_ref()
                        .and_then(|b| b.latency_ms.as_ref())
                        .map(|l| l.p99),
                    last_error: t.last_error.clone(),
                })
                .collect(),
            probes: r
                .probes
                .iter()
                .map(|p| ProbeEvidence {
                    name: p.name.clone(),
                    checks: p.checks,
                    failures: p.failures,
                })
                .collect(),
            recovery: match r.recovery.verdict {
                RecoveryVerdict::Pass => "pass",
                RecoveryVerdict::Fail => "fail",
                RecoveryVerdict::Skipped => "skipped",
            }
            .into(),
            time_to_recover_ms: r.recovery.time_to_recover_ms,
            recovery_within_ms: r.recovery.within_ms,
            abort: r
                .abort
                .as_ref()
                .map(|a| format!("{}: {}", a.rule, a.detail)),
        }
    }

    /// One line with the numbers that matter most.
    pub fn headline(&self) -> String {
        let mut parts = Vec::new();
        for f in &self.faults {
            match f.acted {
                Some(n) => parts.push(format!("{}: {n} acted on", f.name)),
                None => parts.push(format!("{}: {}", f.name, f.status)),
            }
        }
        for t in &self.traffic {
            if let (Some(ops), Some(errors)) = (t.ops, t.errors) {
                parts.push(format!("{}: {errors}/{ops} failed", t.name));
            }
        }
        for p in &self.probes {
            parts.push(format!(
                "probe {}: {}/{} down",
                p.name, p.failures, p.checks
            ));
        }
        parts.push(match (self.recovery.as_str(), self.time_to_recover_ms) {
            ("pass", Some(ms)) => format!("recovered in {:.1}s", ms as f64 / 1000.0),
            ("fail", _) => format!("not recovered within {}s", self.recovery_within_ms / 1000),
            (v, _) => format!("recovery {v}"),
        });
        parts.join("; ")
    }
}

fn enum_name(v: &impl Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// One risk tried.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Finding {
    /// 1 for the worst.
    pub rank: usize,
    /// The scenario's id.
    pub scenario: String,
    /// Its title.
    pub title: String,
    /// Its severity.
    pub severity: Severity,
    /// How the service took it.
    pub outcome: Outcome,
    /// Severity weight × outcome loss; the ranking's key.
    pub risk_points: f64,
    /// The numbers from the drill.
    pub evidence: Evidence,
    /// One line of them.
    pub headline: String,
    /// The parameters' values and where each came from.
    pub parameters: BTreeMap<String, Fact>,
    /// The risk, in plain words.
    pub risk: String,
    /// What a resilient system does.
    pub expected: String,
    /// How to detect it in production.
    pub detect: Vec<String>,
    /// How to make it less likely or less harmful.
    pub prevention: Vec<String>,
    /// What to do when it happens.
    pub emergency: Vec<String>,
    /// The drill's own report.json, relative to the checkup's report directory.
    pub report: String,
    /// The drill's own page.
    pub report_html: String,
}

/// report.json of a checkup: the schema `chaos.checkup/v1` (`docs/checkup.md`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckupReport {
    /// `chaos.checkup/v1`.
    pub schema: String,
    /// The chaos that ran it.
    pub chaos_version: String,
    /// The profile.
    pub profile: Profile,
    /// The target as given.
    pub target: Target,
    /// The probe as given.
    pub probe: String,
    /// What was found about the target before the first drill.
    pub facts: Facts,
    /// When it started, ms since the epoch.
    pub started_unix_ms: u64,
    /// When it ended.
    pub ended_unix_ms: u64,
    /// 0-100, 100 healthy; null when no drill ran.
    pub score: Option<u32>,
    /// The score a checkup must reach to pass.
    pub min_score: u32,
    /// `score >= min_score` and the checkup was not interrupted.
    pub passed: bool,
    /// Why the checkup stopped before its last drill.
    pub stopped: Option<String>,
    /// The risks tried, worst first.
    pub findings: Vec<Finding>,
    /// The scenarios not run, and why.
    pub skipped: Vec<Skipped>,
}

impl CheckupReport {
    /// The exit code of `chaos checkup`: 0 passed, 1 below the minimum score, 2 nothing ran,
    /// 3 interrupted (a signal).
    pub fn exit_code(&self) -> u8 {
        if self.score.is_none() {
            2
        } else if self
            .stopped
            .as_deref()
            .is_some_and(|s| s.starts_with("interrupted"))
        {
            3
        } else if self.passed {
            0
        } else {
            1
        }
    }
}

/// What happens as a checkup goes.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A drill starts.
    Drill {
        /// 1-based.
        n: usize,
        /// Of how many.
        of: usize,
        /// The scenario.
        scenario: String,
        /// Its severity.
        severity: Severity,
    },
    /// A drill ended.
    Finding {
        /// The scenario.
        scenario: String,
        /// How it went; null when it did not run.
        outcome: Option<Outcome>,
        /// The numbers, or why it did not run.
        detail: String,
    },
}

/// How a checkup runs.
pub struct Options {
    /// The chaos binary (traffic workers).
    pub worker_exe: PathBuf,
    /// Set by a signal: the drill under way is aborted and recovered, and the checkup stops.
    pub stop: Arc<AtomicBool>,
    /// Where each drill's report goes: `DIR/drills/NN-ID/`.
    pub report_dir: PathBuf,
    /// The score to reach.
    pub min_score: u32,
    /// Called as the checkup goes.
    pub on_event: Box<dyn Fn(&Event)>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs the plan's drills one by one and scores them. Each drill's report is written under
/// `opts.report_dir/drills/`; the checkup's own report.json and report.html are written by
/// [`write_report`].
pub fn run(plan: Plan, injector: &Injector, opts: Options) -> Result<CheckupReport, Error> {
    let started = now_ms();
    let mut findings = Vec::new();
    let mut skipped = plan.skipped.clone();
    let mut stopped: Option<String> = None;
    let of = plan.drills.len();
    for (i, planned) in plan.drills.iter().enumerate() {
        let s = planned.scenario;
        if let Some(why) = &stopped {
            skipped.push(skip(s, format!("not run: {why}")));
            continue;
        }
        (opts.on_event)(&Event::Drill {
            n: i + 1,
            of,
            scenario: s.id.clone(),
            severity: s.severity,
        });
        // The facts again: a restarted service has a new pid.
        let facts = facts::gather(&plan.request.target, &plan.request.probe)?;
        let fresh = values_for(s, &plan.request.set, &facts).map(|values| Planned {
            scenario: s,
            values,
        });
        let (planned, spec) = match fresh
            .and_then(|p| drill(&p, plan.request.traffic.as_deref()).map(|spec| (p, spec)))
        {
            Ok(x) => x,
            Err(reason) => {
                let reason = format!("the target changed: {reason}");
                (opts.on_event)(&Event::Finding {
                    scenario: s.id.clone(),
                    outcome: None,
                    detail: reason.clone(),
                });
                skipped.push(skip(s, reason));
                continue;
            }
        };
        let report = runner::run(
            &spec,
            injector,
            runner::Options {
                source: Some(format!(
                    "checkup:{}:{}",
                    plan.request.profile.as_str(),
                    s.id
                )),
                worker_exe: opts.worker_exe.clone(),
                stop: opts.stop.clone(),
                progress: Box::new(Silent),
            },
        )
        .map_err(|e| Error::invalid("scenario", one_line(&e.to_string()), "fix the scenario"))?;
        let rel = format!("drills/{:02}-{}", i + 1, s.id);
        experiment::write_report(&opts.report_dir.join(&rel), &report)?;
        let outcome = if score::not_exercised(&report) {
            None
        } else {
            score::classify(&report)
        };
        let evidence = Evidence::from_report(&report);
        (opts.on_event)(&Event::Finding {
            scenario: s.id.clone(),
            outcome,
            detail: match outcome {
                Some(_) => evidence.headline(),
                None => report.reason.clone().unwrap_or_default(),
            },
        });
        if opts.stop.load(Ordering::Relaxed) {
            stopped = Some(format!("interrupted during {}", s.id));
        }
        let Some(outcome) = outcome else {
            let why = match report.verdict {
                Verdict::Refused => "refused at admission",
                Verdict::Failed => "not exercised (its faults acted on nothing)",
                _ => "stopped",
            };
            skipped.push(skip(
                s,
                format!(
                    "{why}: {}",
                    report
                        .reason
                        .clone()
                        .unwrap_or_else(|| "no reason given".into())
                ),
            ));
            continue;
        };
        if stopped.is_none() {
            if outcome == Outcome::DidNotRecover {
                stopped = Some(format!("{} did not recover", s.id));
            } else if report.verdict == Verdict::Aborted {
                stopped = Some(format!("{} was aborted by its blast-radius rule", s.id));
            }
        }
        findings.push(Finding {
            rank: 0,
            scenario: s.id.clone(),
            title: s.title.clone(),
            severity: s.severity,
            outcome,
            risk_points: score::points(s.severity, outcome),
            headline: evidence.headline(),
            evidence,
            parameters: planned.values.clone(),
            risk: s.risk.trim().to_owned(),
            expected: s.expected.trim().to_owned(),
            detect: s.detect.clone(),
            prevention: s.prevention.clone(),
            emergency: s.emergency.clone(),
            report: format!("{rel}/report.json"),
            report_html: format!("{rel}/report.html"),
        });
    }
    rank(&mut findings);
    let score = score::score(findings.iter().map(|f| (f.severity, f.outcome)));
    let interrupted = stopped
        .as_deref()
        .is_some_and(|s| s.starts_with("interrupted"));
    Ok(CheckupReport {
        schema: SCHEMA.into(),
        chaos_version: env!("CARGO_PKG_VERSION").into(),
        profile: plan.request.profile,
        target: plan.request.target.clone(),
        probe: plan.request.probe.clone(),
        facts: plan.facts,
        started_unix_ms: started,
        ended_unix_ms: now_ms(),
        passed: score.is_some_and(|s| s >= opts.min_score) && !interrupted,
        score,
        min_score: opts.min_score,
        stopped,
        findings,
        skipped,
    })
}

/// Worst first: by risk points, then severity, then outcome; ranks from 1.
fn rank(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        b.risk_points
            .total_cmp(&a.risk_points)
            .then(b.severity.cmp(&a.severity))
            .then(b.outcome.cmp(&a.outcome))
    });
    for (i, f) in findings.iter_mut().enumerate() {
        f.rank = i + 1;
    }
}

/// Writes report.json and report.html of `report` to `dir`; returns their paths.
pub fn write_report(dir: &Path, report: &CheckupReport) -> Result<(PathBuf, PathBuf), Error> {
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let json = dir.join("report.json");
    let html = dir.join("report.html");
    let text = serde_json::to_vec_pretty(report)
        .map_err(|e| Error::io("encoding the checkup report", std::io::Error::other(e)))?;
    std::fs::write(&json, text).ctx(|| format!("writing {}", json.display()))?;
    std::fs::write(&html, page::html(report)).ctx(|| format!("writing {}", html.display()))?;
    Ok((json, html))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(set: &[(&str, &str)]) -> Request {
        Request {
            profile: Profile::Redis,
            target: Target::Pid(std::process::id()),
            probe: "127.0.0.1:6379".into(),
            traffic: None,
            set: set
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn profiles_are_their_domain_and_the_generic_scenarios() {
        let redis = Profile::Redis.scenarios();
        assert!(redis.iter().any(|s| s.id == "redis-aof-fsync-eio"));
        assert!(redis.iter().any(|s| s.id == "generic-fd-exhausted"));
        assert!(!redis.iter().any(|s| s.domain == Domain::Mysql));
        assert!(
            Profile::Generic
                .scenarios()
                .iter()
                .all(|s| s.domain == Domain::Generic)
        );
        assert!("cassandra".parse::<Profile>().is_err());
    }

    #[test]
    fn the_plan_fills_from_the_target_and_skips_with_the_reason() {
        let p = plan(request(&[("window", "5s"), ("cgroup", "chaos-x")])).unwrap();
        let aof = p
            .drills
            .iter()
            .find(|d| d.scenario.id == "redis-aof-fsync-eio")
            .expect("the AOF drill is planned");
        assert_eq!(aof.values["redis_addr"].value, "127.0.0.1:6379");
        assert_eq!(aof.values["redis_addr"].source, "--probe");
        assert_eq!(aof.values["pid"].value, std::process::id().to_string());
        assert_eq!(aof.values["window"].source, "--set");
        let delay = p
            .skipped
            .iter()
            .find(|s| s.scenario == "redis-client-network-delay")
            .expect("the delay drill needs the clients");
        assert!(delay.reason.contains("--set clients="), "{}", delay.reason);
        let dep = p
            .skipped
            .iter()
            .find(|s| s.scenario == "generic-dependency-timeout")
            .unwrap();
        assert!(dep.reason.contains("dependency_ip"), "{}", dep.reason);
        // Gentlest first.
        let sev: Vec<Severity> = p.drills.iter().map(|d| d.scenario.severity).collect();
        assert!(sev.windows(2).all(|w| w[0] <= w[1]), "{sev:?}");
        assert_eq!(sev.last(), Some(&Severity::Critical));
    }

    #[test]
    fn an_unknown_set_name_is_refused() {
        let e = plan(request(&[("colour", "red")])).unwrap_err().to_string();
        assert!(e.contains("colour") && e.contains("redis_addr"), "{e}");
    }

    #[test]
    fn traffic_is_added_to_every_drill() {
        let p = plan(request(&[("cgroup", "chaos-x")])).unwrap();
        let spec = drill(&p.drills[0], Some("redis-benchmark -q")).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert!(
            json["traffic"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["name"] == "checkup-traffic"),
            "{json}"
        );
    }

    #[test]
    fn findings_rank_worst_first() {
        let f = |id: &str, severity, outcome| Finding {
            rank: 0,
            scenario: id.into(),
            title: String::new(),
            severity,
            outcome,
            risk_points: score::points(severity, outcome),
            evidence: Evidence::default(),
            headline: String::new(),
            parameters: BTreeMap::new(),
            risk: String::new(),
            expected: String::new(),
            detect: vec![],
            prevention: vec![],
            emergency: vec![],
            report: String::new(),
            report_html: String::new(),
        };
        let mut list = vec![
            f("a", Severity::Critical, Outcome::Tolerated),
            f("b", Severity::Medium, Outcome::Failed),
            f("c", Severity::Critical, Outcome::DidNotRecover),
            f("d", Severity::Low, Outcome::Tolerated),
        ];
        rank(&mut list);
        let ids: Vec<&str> = list.iter().map(|f| f.scenario.as_str()).collect();
        assert_eq!(ids, ["c", "b", "a", "d"]);
        assert_eq!(list[0].rank, 1);
    }
}
