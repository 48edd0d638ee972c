//! What a running drill tells as it goes: [`Event`]s, shown live on a terminal (a bar with the
//! drill's clock and the latest figures, each event a line above it) or written one JSON object
//! per line when the output is not a terminal, for tools that follow a drill.

use std::{
    io::Write,
    sync::Mutex,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::report::{EndedBy, Outcome, PhaseName};

/// One thing that happened in a drill.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A phase started.
    PhaseStart {
        /// Which.
        phase: PhaseName,
        /// When, ms since the start.
        t_ms: u64,
    },
    /// A phase ended.
    PhaseEnd {
        /// Which.
        phase: PhaseName,
        /// When.
        t_ms: u64,
        /// How.
        outcome: Outcome,
        /// What happened.
        detail: Option<String>,
    },
    /// An admission check was made.
    Check {
        /// What.
        check: String,
        /// Whether it held.
        ok: bool,
        /// What was found.
        detail: Option<String>,
    },
    /// A fault went live.
    Armed {
        /// Its name in the spec.
        fault: String,
        /// Its id.
        id: String,
        /// How it is made.
        strategy: String,
        /// When.
        t_ms: u64,
    },
    /// A fault ended.
    Ended {
        /// Its name.
        fault: String,
        /// When.
        t_ms: u64,
        /// What ended it.
        by: EndedBy,
    },
    /// A fault was left out or could not be armed.
    FaultNotArmed {
        /// Its name.
        fault: String,
        /// Why.
        detail: String,
    },
    /// One second of measurements.
    Second(Tick),
    /// An abort rule tripped, a signal came, or an error stopped the drill.
    Abort {
        /// The rule (`abort[0]`, `signal`, `error`).
        rule: String,
        /// What was measured.
        detail: String,
        /// When.
        t_ms: u64,
    },
    /// The steady state is back.
    Recovered {
        /// Time to recover, ms.
        time_to_recover_ms: u64,
    },
    /// The drill is over.
    Done {
        /// `passed`, `failed`, `aborted`, `refused`.
        verdict: String,
        /// The first cause.
        reason: Option<String>,
        /// Where the report is.
        report: Option<String>,
    },
}

/// One second of a drill, as the progress shows it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tick {
    /// The second's end, ms since the start.
    pub t_ms: u64,
    /// The phase running.
    pub phase: Option<PhaseName>,
    /// Each generator: operations finished in the second, errors, p99 ms.
    pub traffic: Vec<TrafficTick>,
    /// Each probe: its last check.
    pub probes: Vec<ProbeTick>,
    /// Each fault on: what it acted on so far.
    pub faults: Vec<FaultTick>,
}

/// A generator's second.
#[derive(Clone, Debug, Serialize)]
pub struct TrafficTick {
    /// Its name.
    pub name: String,
    /// Operations finished.
    pub ops: u64,
    /// Failed.
    pub errors: u64,
    /// 99th percentile latency, ms (with those in flight).
    pub p99_ms: Option<f64>,
}

/// A probe's latest check.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeTick {
    /// Its name.
    pub name: String,
    /// Up or down.
    pub ok: bool,
}

/// A fault's counters so far.
#[derive(Clone, Debug, Serialize)]
pub struct FaultTick {
    /// Its name.
    pub name: String,
    /// Packets or calls acted on.
    pub acted: Option<u64>,
}

/// Where events go.
pub trait Progress: Send {
    /// Shows `event`.
    fn event(&self, event: &Event);
    /// Removes any live display (before the summary is printed).
    fn finish(&self) {}
}

/// Discards events.
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: &Event) {}
}

/// One JSON object per line on stdout.
pub struct JsonLines;

impl Progress for JsonLines {
    fn event(&self, event: &Event) {
        if let Ok(line) = serde_json::to_string(event) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

/// A live bar on a terminal (stderr), events as lines above it.
pub struct Terminal {
    bar: ProgressBar,
    started: Instant,
    phase: Mutex<String>,
}

impl Terminal {
    /// A display for a drill expected to last about `planned` after admission.
    pub fn new(planned: Duration) -> Terminal {
        let bar = ProgressBar::with_draw_target(
            Some(planned.as_secs().max(1)),
            ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>4} [{bar:24}] {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Terminal {
            bar,
            started: Instant::now(),
            phase: Mutex::new(String::new()),
        }
    }

    /// An event as a line above the bar; long details are cut (the report has them whole).
    fn line(&self, text: String) {
        const MAX: usize = 160;
        let t = self.started.elapsed().as_secs_f64();
        let text = match text.char_indices().nth(MAX) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text,
        };
        self.bar.println(format!("{t:>7.1}s  {text}"));
    }
}

impl Progress for Terminal {
    fn event(&self, event: &Event) {
        match event {
            Event::PhaseStart { phase, .. } => {
                let name = format!("{phase:?}").to_lowercase();
                *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = name.clone();
                self.bar.set_message(name.clone());
                self.line(format!("-- {name}"));
            }
            Event::PhaseEnd {
                phase,
                outcome,
                detail,
                ..
            } if *outcome != Outcome::Ok || detail.is_some() => {
                let detail = detail.as_deref().unwrap_or("");
                self.line(format!("   {phase:?} {outcome:?}: {detail}").to_lowercase());
            }
            Event::PhaseEnd { .. } => {}
            Event::Check { check, ok, detail } => self.line(format!(
                "   {} {check}{}",
                if *ok { "ok  " } else { "FAIL" },
                detail
                    .as_ref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            )),
            Event::Armed {
                fault,
                id,
                strategy,
                ..
            } => self.line(format!("   armed {fault} ({id}, {strategy})")),
            Event::Ended { fault, by, .. } => self.line(format!(
                "   ended {fault} ({})",
                format!("{by:?}").to_lowercase()
            )),
            Event::FaultNotArmed { fault, detail } => {
                self.line(format!("   not armed {fault}: {detail}"))
            }
            Event::Second(tick) => {
                self.bar.set_position(self.started.elapsed().as_secs());
                let phase = self.phase.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let mut parts = vec![phase];
                for t in &tick.traffic {
                    let p99 = t
                        .p99_ms
                        .map(|p| format!(" p99 {p:.0}ms"))
                        .unwrap_or_default();
                    parts.push(format!("{} {}/s err {}{p99}", t.name, t.ops, t.errors));
                }
                for p in &tick.probes {
                    parts.push(format!("{} {}", p.name, if p.ok { "up" } else { "DOWN" }));
                }
                for f in &tick.faults {
                    if let Some(a) = f.acted {
                        parts.push(format!("{} acted {a}", f.name));
                    }
                }
                self.bar.set_message(parts.join(" | "));
            }
            Event::Abort { rule, detail, .. } => self.line(format!("   ABORT {rule}: {detail}")),
            Event::Recovered { time_to_recover_ms } => self.line(format!(
                "   steady state back after {:.1} s",
                *time_to_recover_ms as f64 / 1000.0
            )),
            Event::Done { .. } => {}
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
