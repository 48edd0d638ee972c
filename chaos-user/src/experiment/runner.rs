//! `chaos run`: carries a drill through its phases (admission -> traffic -> inject + measure ->
//! recover -> verify -> report) as `docs/experiments.md` ("The runner's phases") describes, and
//! returns its [`Report`]. Whatever happens (an abort rule, a signal, an error), every fault the
//! drill armed is recovered before [`run`] returns, and each has its in-kernel deadline besides.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use super::{
    ExperimentSpec, Schedule, SpecErrors, Unsupported,
    judge::{self, Data, FaultData, Metric, TrafficData},
    lock::Locks,
    probes::ProbeRun,
    progress::{Event, FaultTick, ProbeTick, Progress, Tick, TrafficTick},
    record::Clock,
    report::*,
    stats::{Span, per_second, summarize},
    target::{self, Found},
    traffic::TrafficRun,
};
use crate::{
    Error, FaultSpec, Injector,
    injector::Counters,
    iostat::{self, CgroupNames, Snapshot},
    spec::{DiskSpec, IoSpec, NetSpec, SyscallSpec},
};

/// How the measuring loop ticks.
const TICK: Duration = Duration::from_millis(100);

/// How a drill is run.
pub struct Options {
    /// The spec's file, for the report.
    pub source: Option<String>,
    /// The chaos binary, which runs the traffic workers (`chaos __traffic-worker`).
    pub worker_exe: PathBuf,
    /// Set (by a signal handler) to abort the drill; it is then recovered and reported.
    pub stop: Arc<AtomicBool>,
    /// Where events go.
    pub progress: Box<dyn Progress>,
}

/// One fault of the drill as it goes.
struct FaultRun {
    name: String,
    spec: FaultSpec,
    /// Planned window, ms since the fault phase's start.
    start: Duration,
    end: Duration,
    status: FaultStatus,
    detail: Option<String>,
    id: Option<String>,
    strategy: Option<String>,
    armed_ms: Option<u64>,
    ended_ms: Option<u64>,
    ended_by: Option<EndedBy>,
    samples: Vec<(u64, Counters)>,
    counted: bool,
    io: Vec<(iostat::Device, Option<Snapshot>, Vec<IoSecond>)>,
    /// Armed, not yet recovered.
    live: bool,
    /// When its in-kernel deadline ends it, ms.
    deadline_ms: Option<u64>,
}

/// The drill's state.
struct Drill<'a> {
    spec: &'a ExperimentSpec,
    schedule: Schedule,
    injector: &'a Injector,
    opts: Options,
    clock: Clock,
    phases: Vec<PhaseRecord>,
    admission: Vec<AdmissionCheck>,
    faults: Vec<FaultRun>,
    probes: Vec<ProbeRun>,
    traffic: Vec<TrafficRun>,
    traffic_started_ms: Option<u64>,
    baseline: Option<Span>,
    fault_phase_ms: Option<u64>,
    /// How much later than planned the windows run, ms: the sum of the arming delays.
    slip_ms: u64,
    abort: Option<AbortReport>,
    recovery: RecoveryReport,
    leftovers: Vec<String>,
    locks: Locks,
    names: CgroupNames,
}

/// Runs drill `spec`. Refuses a spec that does not validate (every error, with its path);
/// otherwise always returns the report, whatever the verdict.
pub fn run(
    spec: &ExperimentSpec,
    injector: &Injector,
    opts: Options,
) -> Result<Report, SpecErrors> {
    let schedule = spec.validate()?;
    let clock = Clock::start();
    let recovery = RecoveryReport {
        within_ms: schedule.recovery_within.as_millis() as u64,
        hold_ms: schedule.recovery_hold.as_millis() as u64,
        started_ms: None,
        recovered_ms: None,
        time_to_recover_ms: None,
        verdict: RecoveryVerdict::Skipped,
        probes: recovery_probes(spec),
    };
    let faults = spec
        .faults
        .iter()
        .zip(&schedule.windows)
        .map(|(f, w)| FaultRun {
            name: f.name.clone(),
            spec: with_duration(&f.fault, w.end - w.start),
            start: w.start,
            end: w.end,
            status: FaultStatus::NotStarted,
            detail: None,
            id: None,
            strategy: None,
            armed_ms: None,
            ended_ms: None,
            ended_by: None,
            samples: Vec::new(),
            counted: false,
            io: Vec::new(),
            live: false,
            deadline_ms: None,
        })
        .collect();
    let mut drill = Drill {
        spec,
        schedule,
        injector,
        opts,
        clock,
        phases: Vec::new(),
        admission: Vec::new(),
        faults,
        probes: Vec::new(),
        traffic: Vec::new(),
        traffic_started_ms: None,
        baseline: None,
        fault_phase_ms: None,
        slip_ms: 0,
        abort: None,
        recovery,
        leftovers: Vec::new(),
        locks: Locks::default(),
        names: CgroupNames::new(),
    };
    Ok(drill.run())
}

/// The probes whose checks make the steady state after recovery.
fn recovery_probes(spec: &ExperimentSpec) -> Vec<String> {
    spec.recovery
        .as_ref()
        .and_then(|r| r.probes.clone())
        .or_else(|| spec.admission.as_ref().and_then(|a| a.steady_state.clone()))
        .unwrap_or_else(|| spec.probes.iter().map(|p| p.name.clone()).collect())
}

/// `fault` lasting `d`.
fn with_duration(fault: &FaultSpec, d: Duration) -> FaultSpec {
    let text = Some(format!("{}ms", d.as_millis()));
    match fault {
        FaultSpec::Net(s) => FaultSpec::Net(NetSpec {
            duration: text,
            ..s.clone()
        }),
        FaultSpec::Syscall(s) => FaultSpec::Syscall(SyscallSpec {
            duration: text,
            ..s.clone()
        }),
        FaultSpec::Io(s) => FaultSpec::Io(IoSpec {
            duration: text,
            ..s.clone()
        }),
        FaultSpec::Disk(s) => FaultSpec::Disk(DiskSpec {
            duration: text,
            ..s.clone()
        }),
    }
}

impl Drill<'_> {
    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    fn emit(&self, e: Event) {
        self.opts.progress.event(&e);
    }

    fn stopped(&self) -> bool {
        self.opts.stop.load(Ordering::Relaxed)
    }

    fn begin(&self, phase: PhaseName) -> u64 {
        let t = self.now();
        self.emit(Event::PhaseStart { phase, t_ms: t });
        t
    }

    fn end(&mut self, name: PhaseName, start_ms: u64, outcome: Outcome, detail: Option<String>) {
        let end_ms = self.now();
        self.emit(Event::PhaseEnd {
            phase: name,
            t_ms: end_ms,
            outcome,
            detail: detail.clone(),
        });
        self.phases.push(PhaseRecord {
            name,
            start_ms,
            end_ms,
            outcome,
            detail,
        });
    }

    fn check(&mut self, check: impl Into<String>, result: Result<String, String>) -> bool {
        let check = check.into();
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        self.emit(Event::Check {
            check: check.clone(),
            ok,
            detail: Some(detail.clone()),
        });
        self.admission.push(AdmissionCheck {
            check,
            ok,
            detail: Some(detail),
        });
        ok
    }

    fn abort(&mut self, rule: impl Into<String>, detail: impl Into<String>) {
        if self.abort.is_some() {
            return;
        }
        let (rule, detail, at_ms) = (rule.into(), detail.into(), self.now());
        self.emit(Event::Abort {
            rule: rule.clone(),
            detail: detail.clone(),
            t_ms: at_ms,
        });
        self.abort = Some(AbortReport {
            rule,
            at_ms,
            detail,
        });
    }

    fn run(&mut self) -> Report {
        let admitted = self.admission();
        if admitted {
            self.traffic_phase();
            if self.abort.is_none() {
                self.inject_and_measure();
            }
            self.recover();
            self.verify();
        }
        let report = self.report(admitted);
        self.opts.progress.finish();
        report
    }

    // ---- admission ----

    fn admission(&mut self) -> bool {
        let t = self.begin(PhaseName::Admission);
        let adm = self.spec.admission.clone().unwrap_or_default();
        let mut ok = self.check(
            "privileges",
            Ok("root, the kernel probed, the state store open".into()),
        );
        if let Some(min) = &adm.min_kernel {
            let release = nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default();
            let r = if version(&release) >= version(min) {
                Ok(format!("{release} >= {min}"))
            } else {
                Err(format!("{release} is older than {min}"))
            };
            ok &= self.check("min kernel", r);
        }
        let found = match &self.spec.target {
            Some(t) => match target::find(t) {
                Ok(f) => Some(f),
                Err(e) => {
                    ok &= self.check("target", Err(e));
                    None
                }
            },
            None => None,
        };
        if let Some(f) = &found
            && adm.target_alive.unwrap_or(true)
        {
            ok &= self.check("target alive", target::alive(f));
        }
        ok &= self.plan_faults(found.as_ref(), adm.unsupported.unwrap_or_default());
        if adm.exclusive.unwrap_or(true) {
            let r = self.exclusive();
            ok &= self.check("exclusive", r);
        }
        for (i, fd) in adm.free_disk.iter().enumerate() {
            let r = free_disk(&fd.path, &fd.min);
            ok &= self.check(
                format!("free disk {} (admission.free_disk[{i}])", fd.path),
                r,
            );
        }
        if ok {
            ok &= self.start_probes();
        }
        if ok {
            let r = self.steady_state(&adm);
            ok &= self.check("steady state", r);
        }
        if !ok && self.stopped() {
            self.abort("signal", "stopped during admission");
        }
        let outcome = if ok { Outcome::Ok } else { Outcome::Failed };
        let detail = (!ok).then(|| self.refusal());
        self.end(PhaseName::Admission, t, outcome, detail);
        ok
    }

    fn refusal(&self) -> String {
        self.admission
            .iter()
            .find(|c| !c.ok)
            .map(|c| format!("{}: {}", c.check, c.detail.as_deref().unwrap_or("failed")))
            .unwrap_or_else(|| "admission failed".into())
    }

    /// Fills the target into each fault and dry-runs it (plan + strategy) on this kernel.
    fn plan_faults(&mut self, found: Option<&Found>, unsupported: Unsupported) -> bool {
        let mut ok = true;
        for i in 0..self.faults.len() {
            let name = self.faults[i].name.clone();
            let check = format!("fault {name}: strategy");
            if let Some(f) = found {
                match target::inherit(&self.faults[i].spec, f) {
                    Ok(spec) => self.faults[i].spec = spec,
                    Err(e) => {
                        ok &= self.check(check, Err(format!("faults[{i}].fault: {e}")));
                        continue;
                    }
                }
            }
            match self.injector.dry_run(&self.faults[i].spec) {
                Ok(d) => {
                    self.faults[i].strategy = Some(d.strategy.to_string());
                    self.check(check, Ok(format!("{} on {}", d.strategy, d.acts_on)));
                }
                Err(e @ Error::Unsupported { .. }) if unsupported == Unsupported::Skip => {
                    let why = e.to_string();
                    self.faults[i].status = FaultStatus::Skipped;
                    self.faults[i].detail = Some(why.clone());
                    self.check(check, Ok(format!("skipped: {why}")));
                }
                Err(e) => {
                    let msg = prefix_field(&e, &format!("faults[{i}].fault"));
                    ok &= self.check(check, Err(msg));
                }
            }
        }
        ok
    }

    /// No fault armed on the drill's targets, and no other drill holding them.
    fn exclusive(&mut self) -> Result<String, String> {
        let keys: Vec<String> = self
            .faults
            .iter()
            .filter(|f| f.status != FaultStatus::Skipped)
            .flat_map(|f| target::key(&f.spec))
            .collect();
        let armed = self.injector.list().map_err(|e| e.to_string())?;
        for s in &armed {
            let theirs = target::key(&s.record.spec);
            if let Some(k) = keys.iter().find(|k| theirs.contains(k)) {
                return Err(format!(
                    "fault {} is armed on {k}; recover it or wait for it to end",
                    s.record.id
                ));
            }
        }
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        self.locks = Locks::take(self.injector.store().dir(), &unique)?;
        Ok(format!(
            "no fault armed on, and no other drill holding: {}",
            if unique.is_empty() {
                "(no target)".into()
            } else {
                unique.join(", ")
            }
        ))
    }

    fn start_probes(&mut self) -> bool {
        let mut ok = true;
        for p in &self.spec.probes {
            match ProbeRun::start(p, self.clock) {
                Ok(run) => self.probes.push(run),
                Err(e) => ok &= self.check(format!("probe {}", p.name), Err(e.to_string())),
            }
        }
        ok
    }

    /// Waits until every steady-state probe has been up, without a failed check, for
    /// `steady_for` (one check each when 0), or refuses at `timeout`.
    fn steady_state(&mut self, adm: &super::Admission) -> Result<String, String> {
        let names = adm
            .steady_state
            .clone()
            .unwrap_or_else(|| self.spec.probes.iter().map(|p| p.name.clone()).collect());
        if names.is_empty() {
            return Ok("no probe: nothing to wait for".into());
        }
        let start = self.now();
        let (steady_for, timeout) = (
            self.schedule.steady_for.as_millis() as u64,
            self.schedule.admission_timeout.as_millis() as u64,
        );
        loop {
            let now = self.now();
            let data = self.data();
            let from = now.saturating_sub(steady_for).max(start);
            let span = Span::ms(from, now + 1);
            if now >= start + steady_for && judge::steady(&names, &[], span, &data) {
                return Ok(format!(
                    "{} up for {:.1} s",
                    names.join(", "),
                    steady_for as f64 / 1000.0
                ));
            }
            if now >= start + timeout || self.stopped() {
                let down: Vec<String> = names
                    .iter()
                    .filter_map(|n| {
                        let last = data.probes.get(n)?.iter().rev().find(|c| !c.ok)?.clone();
                        Some(format!(
                            "{n} ({})",
                            last.detail.unwrap_or_else(|| "down".into())
                        ))
                    })
                    .collect();
                return Err(format!(
                    "not steady within {:.0} s: {}",
                    timeout as f64 / 1000.0,
                    if down.is_empty() {
                        "no check yet".into()
                    } else {
                        down.join(", ")
                    }
                ));
            }
            std::thread::sleep(TICK);
        }
    }

    // ---- traffic ----

    fn traffic_phase(&mut self) {
        let t = self.begin(PhaseName::Traffic);
        self.traffic_started_ms = Some(t);
        for g in &self.spec.traffic {
            match TrafficRun::start(g, self.clock, &self.opts.worker_exe) {
                Ok(run) => self.traffic.push(run),
                Err(e) => {
                    let detail = format!("traffic {} did not start: {e}", g.name);
                    self.abort("error", detail);
                    break;
                }
            }
        }
        let until = t + self.schedule.baseline.as_millis() as u64;
        let mut next_tick = t + 1000;
        while self.abort.is_none() && self.now() < until {
            if self.stopped() {
                self.abort("signal", "interrupted during the baseline");
                break;
            }
            if self.now() >= next_tick {
                self.tick(Some(PhaseName::Traffic), next_tick);
                next_tick += 1000;
            }
            std::thread::sleep(TICK);
        }
        let end = self.now();
        self.baseline = Some(Span::ms(t, end));
        let (outcome, detail) = match &self.abort {
            Some(a) => (Outcome::Aborted, Some(a.detail.clone())),
            None => (Outcome::Ok, None),
        };
        self.end(PhaseName::Traffic, t, outcome, detail);
    }

    // ---- inject + measure ----

    fn inject_and_measure(&mut self) {
        let t0 = self.begin(PhaseName::Inject);
        self.emit(Event::PhaseStart {
            phase: PhaseName::Measure,
            t_ms: t0,
        });
        self.fault_phase_ms = Some(t0);
        let last_end = self
            .faults
            .iter()
            .map(|f| f.end.as_millis() as u64)
            .max()
            .unwrap_or(0);
        let mut next_sample = t0;
        loop {
            if self.stopped() {
                self.abort("signal", "interrupted (SIGINT or SIGTERM)");
            }
            // The last window's end (shifted by any slip), and the deadline of each fault
            // armed: each fault ends by its own deadline.
            let now = self.now();
            let deadlines_passed = self
                .faults
                .iter()
                .all(|f| !f.live || f.deadline_ms.is_none_or(|d| now >= d));
            if self.abort.is_some() || (now >= t0 + self.slip_ms + last_end && deadlines_passed) {
                break;
            }
            self.arm_due(t0);
            let now = self.now();
            if now >= next_sample {
                self.sample();
                self.watch_abort_rules(t0);
                self.tick(Some(PhaseName::Measure), now);
                // Seconds missed while arming took long are not made up in a burst.
                while next_sample <= now {
                    next_sample += 1000;
                }
            }
            std::thread::sleep(TICK);
        }
        // Final counters, and the faults that ended at their deadlines.
        self.sample();
        let (outcome, detail) = match &self.abort {
            Some(a) => (Outcome::Aborted, Some(format!("{}: {}", a.rule, a.detail))),
            None => (Outcome::Ok, None),
        };
        self.end(PhaseName::Inject, t0, outcome, detail.clone());
        self.end(PhaseName::Measure, t0, outcome, detail);
    }

    /// Arms the faults whose window starts now. A fault that took long to arm (loading and
    /// verifying programs is slow on an emulated CPU) shifts every later window by as much, so
    /// faults the spec keeps apart stay apart, and those it puts together stay together.
    fn arm_due(&mut self, t0: u64) {
        for i in 0..self.faults.len() {
            let f = &self.faults[i];
            let due = t0 + self.slip_ms + f.start.as_millis() as u64;
            if f.status != FaultStatus::NotStarted || f.id.is_some() || self.now() < due {
                continue;
            }
            let name = f.name.clone();
            match self.injector.arm(&self.faults[i].spec) {
                Ok(armed) => {
                    let at = self.now();
                    self.slip_ms += at.saturating_sub(due);
                    let f = &mut self.faults[i];
                    f.id = Some(armed.id.clone());
                    f.strategy = Some(armed.strategy.to_string());
                    f.armed_ms = Some(at);
                    f.live = true;
                    // The fault acts already; its packets move to the cheaper TCX path beside
                    // the drill (the store's lock orders it with a recovery).
                    let injector = self.injector.clone();
                    std::thread::spawn(move || injector.hand_over_or_log());
                    f.deadline_ms = Some(
                        armed
                            .deadline_unix_ms
                            .saturating_sub(self.clock.origin_unix_ms),
                    );
                    f.io = iostat::fault_stats(self.injector.store(), &armed.id)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|s| {
                            let snap = Snapshot::take(&s.device).ok();
                            (s.device, snap, Vec::new())
                        })
                        .collect();
                    self.emit(Event::Armed {
                        fault: name,
                        id: armed.id,
                        strategy: armed.strategy.to_string(),
                        t_ms: at,
                    });
                }
                Err(e) => {
                    let f = &mut self.faults[i];
                    f.status = FaultStatus::Failed;
                    f.detail = Some(e.to_string());
                    self.emit(Event::FaultNotArmed {
                        fault: name.clone(),
                        detail: e.to_string(),
                    });
                    self.abort("error", format!("fault {name} could not be armed: {e}"));
                    return;
                }
            }
        }
    }

    /// Samples each live fault's counters and I/O; marks those past their deadline ended.
    fn sample(&mut self) {
        for i in 0..self.faults.len() {
            if !self.faults[i].live || self.faults[i].ended_ms.is_some() {
                continue;
            }
            let Some(id) = self.faults[i].id.clone() else {
                continue;
            };
            let status = self.injector.status(&id);
            let now = self.now();
            let f = &mut self.faults[i];
            // Ended at its deadline: expired, or already reaped by the deadline keeper.
            let ended = match status {
                Ok(s) => {
                    if let Some(c) = s.counters {
                        f.counted = true;
                        f.samples.push((now, c));
                    }
                    s.expired
                }
                Err(Error::NotFound(_)) => {
                    f.live = false;
                    true
                }
                Err(_) => false,
            };
            if ended {
                let at = f.deadline_ms.unwrap_or(now).min(now);
                f.ended_ms = Some(at);
                f.ended_by = Some(EndedBy::Deadline);
                let fault = f.name.clone();
                self.emit(Event::Ended {
                    fault,
                    t_ms: at,
                    by: EndedBy::Deadline,
                });
            }
            let f = &mut self.faults[i];
            for (device, prev, series) in &mut f.io {
                if let Ok(cur) = Snapshot::take(device) {
                    if let Some(p) = prev {
                        let s = iostat::IoStats::between(Some(p), &cur, &mut self.names);
                        series.push(io_second(now, &s));
                    }
                    *prev = Some(cur);
                }
            }
        }
    }

    fn watch_abort_rules(&mut self, from_ms: u64) {
        if self.spec.abort.is_empty() {
            return;
        }
        let data = self.data();
        let now = self.now();
        for (i, rule) in self.spec.abort.iter().enumerate() {
            if let Some(detail) = judge::abort_trips(rule, from_ms, now, &data) {
                self.abort(format!("abort[{i}]"), detail);
                return;
            }
        }
    }

    /// One second of progress.
    fn tick(&self, phase: Option<PhaseName>, now: u64) {
        let span = Span::ms(now.saturating_sub(1000), now);
        let traffic = self
            .traffic
            .iter()
            .map(|t| {
                let log = t.log();
                let s = summarize(&log.ops(), &log.in_flight(), span, self.clock.now_us());
                TrafficTick {
                    name: t.name().to_owned(),
                    ops: s.ops,
                    errors: s.errors,
                    p99_ms: s.latency_ms.map(|l| l.p99),
                }
            })
            .collect();
        let probes = self
            .probes
            .iter()
            .filter_map(|p| {
                let last = p.log().checks().pop()?;
                Some(ProbeTick {
                    name: p.name().to_owned(),
                    ok: last.ok,
                })
            })
            .collect();
        let faults = self
            .faults
            .iter()
            .filter(|f| f.live && f.ended_ms.is_none())
            .map(|f| FaultTick {
                name: f.name.clone(),
                acted: f.samples.last().map(|(_, c)| c.acted),
            })
            .collect();
        self.emit(Event::Second(Tick {
            t_ms: now,
            phase,
            traffic,
            probes,
            faults,
        }));
    }

    // ---- recover ----

    fn recover(&mut self) {
        let t = self.begin(PhaseName::Recover);
        let by = if self.abort.is_some() {
            EndedBy::Abort
        } else {
            EndedBy::Recovery
        };
        let mut errors = Vec::new();
        for i in 0..self.faults.len() {
            if self.faults[i].id.is_none() {
                continue;
            }
            let id = self.faults[i].id.clone().unwrap_or_default();
            let result = self.injector.recover(&id);
            let now = self.now();
            let f = &mut self.faults[i];
            match result {
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(e) => errors.push(format!("{}: {e}", f.name)),
            }
            if f.ended_ms.is_none() {
                // Past its deadline already (not yet noticed by a sample): the kernel ended it.
                let (at, by) = match f.deadline_ms {
                    Some(d) if d <= now => (d, EndedBy::Deadline),
                    _ => (now, by),
                };
                f.ended_ms = Some(at);
                f.ended_by = Some(by);
                let fault = f.name.clone();
                self.emit(Event::Ended {
                    fault,
                    t_ms: at,
                    by,
                });
            }
            let f = &mut self.faults[i];
            f.live = false;
            if f.status == FaultStatus::NotStarted {
                f.status = FaultStatus::Recovered;
            }
        }
        // What is left of the drill's faults (`chaos list` would still show them).
        let ours: Vec<String> = self.faults.iter().filter_map(|f| f.id.clone()).collect();
        if let Ok(list) = self.injector.list() {
            for s in list {
                if ours.contains(&s.record.id) {
                    self.leftovers.push(format!(
                        "fault {} ({})",
                        s.record.id,
                        s.record.spec.name()
                    ));
                }
            }
        }
        let outcome = if errors.is_empty() && self.leftovers.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Failed
        };
        let detail = (!errors.is_empty()).then(|| errors.join("; "));
        self.end(PhaseName::Recover, t, outcome, detail);
    }

    // ---- verify ----

    fn verify(&mut self) {
        let t = self.begin(PhaseName::Verify);
        if self.abort.is_some() {
            self.end(
                PhaseName::Verify,
                t,
                Outcome::Skipped,
                Some("aborted".into()),
            );
            return;
        }
        // The last window's end: when the fault phase ended.
        let started = self
            .phases
            .iter()
            .find(|p| p.name == PhaseName::Inject)
            .map_or(t, |p| p.end_ms);
        self.recovery.started_ms = Some(started);
        let expect: Vec<Metric> = self
            .spec
            .recovery
            .iter()
            .flat_map(|r| r.expect.iter().enumerate())
            .flat_map(|(i, e)| judge::metrics(&format!("recovery.expect[{i}]"), e))
            .collect();
        let probes = self.recovery.probes.clone();
        let (within, hold) = (self.recovery.within_ms, self.recovery.hold_ms);
        let step = 100;
        let mut candidate = started;
        let mut next_tick = self.now() + 1000;
        let recovered = loop {
            let now = self.now();
            let data = self.data();
            let mut found = None;
            while candidate + hold <= now && candidate <= started + within - hold.min(within) {
                let span = Span::ms(candidate, candidate + hold.max(1));
                if judge::steady(&probes, &expect, span, &data) {
                    found = Some(candidate);
                    break;
                }
                candidate += step;
            }
            if found.is_some() {
                break found;
            }
            if now > started + within {
                break None;
            }
            if self.stopped() {
                self.abort("signal", "interrupted while verifying recovery");
                break None;
            }
            self.watch_abort_rules(started);
            if self.abort.is_some() {
                break None;
            }
            if now >= next_tick {
                self.tick(Some(PhaseName::Verify), now);
                next_tick += 1000;
            }
            std::thread::sleep(TICK);
        };
        let (outcome, detail) = match recovered {
            Some(at) => {
                let ttr = at - started;
                self.recovery.recovered_ms = Some(at);
                self.recovery.time_to_recover_ms = Some(ttr);
                self.recovery.verdict = RecoveryVerdict::Pass;
                self.emit(Event::Recovered {
                    time_to_recover_ms: ttr,
                });
                (
                    Outcome::Ok,
                    Some(format!(
                        "steady state back after {:.1} s",
                        ttr as f64 / 1000.0
                    )),
                )
            }
            None if self.abort.is_some() => (Outcome::Aborted, None),
            None => {
                self.recovery.verdict = RecoveryVerdict::Fail;
                (
                    Outcome::Failed,
                    Some(format!(
                        "the steady state did not hold for {:.1} s within {:.1} s",
                        hold as f64 / 1000.0,
                        within as f64 / 1000.0
                    )),
                )
            }
        };
        self.end(PhaseName::Verify, t, outcome, detail);
    }

    // ---- report ----

    /// A snapshot of everything measured.
    fn data(&self) -> Data {
        let baseline = self.baseline;
        let now_us = self.clock.now_us();
        let traffic = self
            .traffic
            .iter()
            .map(|t| {
                let log = t.log();
                let ops = log.ops();
                let in_flight = log.in_flight();
                let base = baseline.map(|b| summarize(&ops, &[], b, now_us).throughput);
                let spec = self.spec.traffic.iter().find(|g| g.name == t.name());
                (
                    t.name().to_owned(),
                    TrafficData {
                        ops,
                        in_flight,
                        baseline: base,
                        measures_ops: spec.is_none_or(|g| g.measures_operations()),
                    },
                )
            })
            .collect();
        let probes = self
            .probes
            .iter()
            .map(|p| (p.name().to_owned(), p.log().checks()))
            .collect();
        let faults = self
            .faults
            .iter()
            .map(|f| {
                let not_armed = match f.status {
                    FaultStatus::Skipped | FaultStatus::Failed => f.detail.clone(),
                    _ if f.armed_ms.is_none() => Some("the drill ended before its window".into()),
                    _ => None,
                };
                (
                    f.name.clone(),
                    FaultData {
                        samples: f.samples.clone(),
                        counted: f.counted,
                        not_armed,
                        armed_ms: f.armed_ms,
                        ended_ms: f.ended_ms,
                    },
                )
            })
            .collect();
        Data {
            traffic,
            probes,
            faults,
            now_us,
        }
    }

    /// The span expectation `during` refers to, less `settle`.
    fn expectation_window(&self, during: Option<&str>, settle: Option<&str>) -> WindowMs {
        let t0 = self.fault_phase_ms.unwrap_or(0);
        let (start, end) = match during.and_then(|d| self.faults.iter().find(|f| f.name == d)) {
            Some(f) => (
                f.armed_ms.unwrap_or(t0 + f.start.as_millis() as u64),
                f.ended_ms.unwrap_or(t0 + f.end.as_millis() as u64),
            ),
            None => {
                let armed: Vec<&FaultRun> = self
                    .faults
                    .iter()
                    .filter(|f| f.armed_ms.is_some())
                    .collect();
                let first = armed.iter().filter_map(|f| f.armed_ms).min();
                let last = armed.iter().filter_map(|f| f.ended_ms).max();
                let planned_start = self
                    .faults
                    .iter()
                    .map(|f| f.start)
                    .min()
                    .unwrap_or_default();
                let planned_end = self.faults.iter().map(|f| f.end).max().unwrap_or_default();
                (
                    first.unwrap_or(t0 + planned_start.as_millis() as u64),
                    last.unwrap_or(t0 + planned_end.as_millis() as u64),
                )
            }
        };
        let settle = settle
            .and_then(|s| humantime::parse_duration(s.trim()).ok())
            .map_or(0, |d| d.as_millis() as u64);
        WindowMs {
            start_ms: (start + settle).min(end),
            end_ms: end,
        }
    }

    fn report(&mut self, admitted: bool) -> Report {
        let t = self.begin(PhaseName::Report);
        for tr in &mut self.traffic {
            let _ = tr.stop();
        }
        for p in &mut self.probes {
            p.stop();
        }
        let data = self.data();
        // Each expectation, and whether it is excused from the verdict (about a fault skipped
        // at admission: `admission.unsupported: skip`).
        let mut judged: Vec<(ExpectationReport, bool)> = Vec::new();
        let mut ttd: BTreeMap<String, u64> = BTreeMap::new();
        let skipped = |name: &str| {
            self.faults
                .iter()
                .find(|f| f.name == name && f.status == FaultStatus::Skipped)
                .and_then(|f| f.detail.clone())
        };
        if admitted && self.fault_phase_ms.is_some() {
            for (i, e) in self.spec.expect.iter().enumerate() {
                let window = self.expectation_window(e.during.as_deref(), e.settle.as_deref());
                let tied = e.during.clone().or_else(|| e.fault.clone());
                let excuse = tied.as_deref().and_then(skipped);
                for m in judge::metrics(&format!("expect[{i}]"), e) {
                    let mut r = judge::judge(&m, window, &data);
                    if let Some(why) = &excuse {
                        r.verdict = Judgement::Unmeasured;
                        r.measured = None;
                        r.detail = Some(format!(
                            "fault {} was skipped (admission.unsupported: skip): {why}",
                            tied.as_deref().unwrap_or_default()
                        ));
                    } else if let Some(name) = &tied
                        && let Some(f) = self.faults.iter().find(|f| &f.name == name)
                        && let (Some(armed), Some(ended)) = (f.armed_ms, f.ended_ms)
                        && let Some(at) = judge::first_second_holding(&m, armed, ended, &data)
                    {
                        let d = at - armed;
                        ttd.entry(name.clone())
                            .and_modify(|v| *v = (*v).min(d))
                            .or_insert(d);
                    }
                    judged.push((r, excuse.is_some()));
                }
            }
            if let (Some(rec), Some(started)) = (&self.spec.recovery, self.recovery.started_ms) {
                let window = match self.recovery.recovered_ms {
                    Some(at) => WindowMs {
                        start_ms: at,
                        end_ms: at + self.recovery.hold_ms,
                    },
                    None => WindowMs {
                        start_ms: (started + self.recovery.within_ms)
                            .saturating_sub(self.recovery.hold_ms),
                        end_ms: started + self.recovery.within_ms,
                    },
                };
                for (i, e) in rec.expect.iter().enumerate() {
                    for m in judge::metrics(&format!("recovery.expect[{i}]"), e) {
                        judged.push((judge::judge(&m, window, &data), false));
                    }
                }
            }
        }
        let failing = judged.iter().find(|(r, excused)| {
            r.verdict == Judgement::Fail || (r.verdict == Judgement::Unmeasured && !excused)
        });
        let (verdict, reason) = if !admitted {
            (Verdict::Refused, Some(self.refusal()))
        } else if let Some(a) = &self.abort {
            (Verdict::Aborted, Some(format!("{}: {}", a.rule, a.detail)))
        } else if let Some((r, _)) = failing {
            let what = match (r.verdict, r.measured) {
                (Judgement::Fail, Some(v)) => format!("measured {v}"),
                _ => format!("unmeasured: {}", r.detail.as_deref().unwrap_or("")),
            };
            (
                Verdict::Failed,
                Some(format!("{} ({} {}): {what}", r.name, r.path, r.comparison)),
            )
        } else if self.recovery.verdict == RecoveryVerdict::Fail {
            (
                Verdict::Failed,
                Some(format!(
                    "not recovered within {:.1} s",
                    self.recovery.within_ms as f64 / 1000.0
                )),
            )
        } else if !self.leftovers.is_empty() {
            (
                Verdict::Failed,
                Some(format!("left behind: {}", self.leftovers.join(", "))),
            )
        } else {
            (Verdict::Passed, None)
        };
        let expectations: Vec<ExpectationReport> = judged.into_iter().map(|(r, _)| r).collect();
        let end_ms = self.now();
        let traffic = self.traffic_reports(&data, end_ms);
        let probes = self
            .probes
            .iter()
            .map(|p| {
                let series = p.log().checks();
                ProbeReport {
                    name: p.name().to_owned(),
                    kind: p.kind().to_owned(),
                    checks: series.len() as u64,
                    failures: series.iter().filter(|c| !c.ok).count() as u64,
                    series,
                }
            })
            .collect();
        let t0 = self.fault_phase_ms.unwrap_or(0);
        let faults = self
            .faults
            .iter()
            .map(|f| FaultReport {
                name: f.name.clone(),
                fault: f.spec.clone(),
                status: f.status,
                detail: f.detail.clone(),
                id: f.id.clone(),
                strategy: f.strategy.clone(),
                window: WindowMs {
                    start_ms: t0 + f.start.as_millis() as u64,
                    end_ms: t0 + f.end.as_millis() as u64,
                },
                armed_ms: f.armed_ms,
                ended_ms: f.ended_ms,
                ended_by: f.ended_by,
                counters: f.samples.last().map(|(_, c)| *c),
                series: counter_series(&f.samples, f.armed_ms),
                io: f
                    .io
                    .iter()
                    .map(|(d, _, s)| IoSeries {
                        device: d.to_string(),
                        series: s.clone(),
                    })
                    .collect(),
                time_to_detect_ms: ttd.get(&f.name).copied(),
            })
            .collect();
        self.end(PhaseName::Report, t, Outcome::Ok, None);
        let uts = nix::sys::utsname::uname().ok();
        Report {
            schema: super::REPORT_SCHEMA.into(),
            chaos_version: env!("CARGO_PKG_VERSION").into(),
            experiment: ExperimentInfo {
                name: self.spec.name.clone(),
                description: self.spec.description.clone(),
                source: self.opts.source.clone(),
                spec: self.spec.clone(),
            },
            host: Host {
                hostname: uts
                    .as_ref()
                    .map(|u| u.nodename().to_string_lossy().into_owned())
                    .unwrap_or_default(),
                kernel: uts
                    .as_ref()
                    .map(|u| u.release().to_string_lossy().into_owned())
                    .unwrap_or_default(),
            },
            verdict,
            reason,
            started_unix_ms: self.clock.origin_unix_ms,
            ended_unix_ms: self.clock.origin_unix_ms + self.now(),
            fault_phase_ms: self.fault_phase_ms,
            phases: self.phases.clone(),
            admission: self.admission.clone(),
            faults,
            traffic,
            probes,
            expectations,
            recovery: self.recovery.clone(),
            abort: self.abort.clone(),
            leftovers: self.leftovers.clone(),
        }
    }

    fn traffic_reports(&self, data: &Data, end_ms: u64) -> Vec<TrafficReport> {
        let start = self.traffic_started_ms.unwrap_or(0);
        self.traffic
            .iter()
            .map(|t| {
                let d = data.traffic.get(t.name()).cloned().unwrap_or_default();
                let figures = |span: Span| {
                    let s = summarize(&d.ops, &d.in_flight, span, data.now_us);
                    TrafficFigures {
                        ops: s.ops,
                        errors: s.errors,
                        error_rate: s.error_rate,
                        throughput: s.throughput,
                        latency_ms: s.latency_ms,
                    }
                };
                let measures = d.measures_ops;
                TrafficReport {
                    name: t.name().to_owned(),
                    kind: t.kind().to_owned(),
                    baseline: self.baseline.filter(|_| measures).map(figures),
                    totals: measures.then(|| figures(Span::ms(start, end_ms))),
                    series: if measures {
                        per_second(&d.ops, start, end_ms)
                    } else {
                        Vec::new()
                    },
                    exit: t.exit(),
                    last_error: t.log().last_error(),
                }
            })
            .collect()
    }
}

/// Per-second counts from cumulative samples.
fn counter_series(samples: &[(u64, Counters)], armed_ms: Option<u64>) -> Vec<CounterSecond> {
    let mut prev = (armed_ms.unwrap_or(0), Counters::default());
    samples
        .iter()
        .map(|&(t, c)| {
            let s = CounterSecond {
                t_ms: prev.0,
                seen: c.seen.saturating_sub(prev.1.seen),
                matched: c.matched.saturating_sub(prev.1.matched),
                acted: c.acted.saturating_sub(prev.1.acted),
            };
            prev = (t, c);
            s
        })
        .collect()
}

/// One second of a device's I/O from an interval's stats.
fn io_second(t_ms: u64, s: &iostat::IoStats) -> IoSecond {
    let op = |name: &str| s.by_op.iter().find(|r| r.op.as_deref() == Some(name));
    let bounds = iostat::bucket_bounds_us();
    IoSecond {
        t_ms,
        read_iops: op("read").map_or(0.0, |r| r.iops),
        write_iops: op("write").map_or(0.0, |r| r.iops),
        read_bps: op("read").map_or(0.0, |r| r.bytes_per_s),
        write_bps: op("write").map_or(0.0, |r| r.bytes_per_s),
        latency_us: Histogram {
            bounds,
            counts: s.total.hist.clone(),
        },
    }
}

/// A kernel release's leading numbers (`6.12.0-1-amd64` -> [6, 12, 0]).
fn version(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map_while(|p| p.parse().ok())
        .collect()
}

/// Free space on `path`'s filesystem against `min` (a size or `N%`).
fn free_disk(path: &str, min: &str) -> Result<String, String> {
    let st = nix::sys::statvfs::statvfs(Path::new(path)).map_err(|e| format!("{path}: {e}"))?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    let total = st.blocks() as u64 * st.fragment_size() as u64;
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let need = match min.trim().strip_suffix('%') {
        Some(p) => {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("{min:?} is not a share"))?;
            (total as f64 * p / 100.0) as u64
        }
        None => crate::plan::parse_size("min", min).map_err(|e| e.to_string())?,
    };
    if free >= need {
        Ok(format!(
            "{:.0} MiB free, {:.0} MiB needed",
            mib(free),
            mib(need)
        ))
    } else {
        Err(format!(
            "{:.0} MiB free, {:.0} MiB needed",
            mib(free),
            mib(need)
        ))
    }
}

/// An error's message with its field under `prefix` (`faults[0].fault.percent`).
fn prefix_field(e: &Error, prefix: &str) -> String {
    match e {
        Error::Invalid {
            field,
            problem,
            fix,
        } => {
            format!("invalid {prefix}.{field}: {problem}; {fix}")
        }
        Error::InvalidField {
            field,
            problem,
            fix,
        } => format!("invalid {prefix}.{field}: {problem}; {fix}"),
        other => format!("{prefix}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_compare_by_number() {
        assert!(version("6.12.0-1-amd64") >= version("6.1"));
        assert!(version("6.1.0") < version("6.12"));
        assert!(version("5.17") >= version("5.17.0").into_iter().take(2).collect::<Vec<_>>());
    }

    #[test]
    fn counter_series_are_per_second_differences() {
        let c = |acted| Counters {
            seen: acted,
            matched: acted,
            acted,
        };
        let s = counter_series(&[(1000, c(5)), (2000, c(12))], Some(500));
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].t_ms, s[0].acted, s[1].t_ms, s[1].acted),
            (500, 5, 1000, 7)
        );
    }
}
