//! Drills run by the daemon: `POST /v1/experiments` validates the spec, starts the runner on a
//! thread of its own and answers at once with the drill's id; `GET /v1/experiments/{id}` follows
//! it (phase, events, the last second's figures, then the verdict), and its report is served as
//! JSON and as the HTML page once it is over. `DELETE` aborts a running drill (it is then
//! recovered and reported, as on SIGINT from the CLI) or forgets a finished one.
//!
//! The drills live in memory: a daemon that restarts forgets them (their faults are recovered by
//! the store, as any fault of a dead daemon). With `--report-dir`, each report is also written
//! to `DIR/ID/report.{json,html}`.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use serde::Serialize;

use crate::{
    Error, Injector,
    experiment::{
        self, ExperimentSpec, SpecErrors,
        progress::{Event, Progress, Tick},
        report::{PhaseName, Report},
        runner::{self, Options},
    },
};

/// How many drills may run at once; more are refused with 429 (each runs traffic workers and
/// probes).
pub const MAX_RUNNING: usize = 4;

/// How many finished drills are kept; the oldest is forgotten first.
pub const KEEP_FINISHED: usize = 50;

/// How many events of one drill are kept (the per-second figures are not events: only the last
/// second is kept).
const MAX_EVENTS: usize = 1000;

/// Where a drill is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// The runner is at work.
    Running,
    /// The report is ready.
    Done,
}

/// A drill as `GET /v1/experiments/{id}` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ExperimentStatus {
    /// Its id (`x-` and 8 hex digits).
    pub id: String,
    /// The spec's name.
    pub name: String,
    /// Running or done.
    pub state: RunState,
    /// When it was started, ms since the epoch.
    pub started_unix_ms: u64,
    /// The phase running (the last one, once done).
    pub phase: Option<PhaseName>,
    /// Asked to abort (`DELETE`, or the daemon stopping).
    pub abort_requested: bool,
    /// Once done: `passed`, `failed`, `aborted`, `refused`.
    pub verdict: Option<String>,
    /// Once done, unless passed: the first cause.
    pub reason: Option<String>,
    /// What happened so far, oldest first (the last 1000).
    pub events: Vec<Event>,
    /// The last second's figures.
    pub last_second: Option<Tick>,
    /// Where the report is: `/v1/experiments/{id}/report` (JSON) and `.../report.html`, once
    /// done.
    pub report: Option<String>,
}

impl ExperimentStatus {
    /// A drill just started: running, nothing happened yet.
    pub fn starting(id: String, name: String, started_unix_ms: u64) -> Self {
        ExperimentStatus {
            id,
            name,
            state: RunState::Running,
            started_unix_ms,
            phase: None,
            abort_requested: false,
            verdict: None,
            reason: None,
            events: Vec::new(),
            last_second: None,
            report: None,
        }
    }
}

/// One drill.
struct Entry {
    stop: Arc<AtomicBool>,
    status: Mutex<ExperimentStatus>,
    report: Mutex<Option<Arc<Report>>>,
}

/// Collects a drill's events into its [`Entry`].
struct Recorder(Arc<Entry>);

impl Progress for Recorder {
    fn event(&self, event: &Event) {
        let mut s = self.0.status.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Second(tick) => {
                s.last_second = Some(tick.clone());
                return;
            }
            Event::PhaseStart { phase, .. } => s.phase = Some(*phase),
            _ => {}
        }
        if s.events.len() == MAX_EVENTS {
            s.events.remove(0);
        }
        s.events.push(event.clone());
    }
}

/// Every drill this daemon started.
pub struct Experiments {
    injector: Arc<Injector>,
    worker_exe: PathBuf,
    report_dir: Option<PathBuf>,
    /// By id, with the order they were started in (ids sort by start through `seq`).
    entries: Mutex<BTreeMap<u64, (String, Arc<Entry>)>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    seq: std::sync::atomic::AtomicU64,
    closed: AtomicBool,
}

/// Why a drill was not started.
#[derive(Debug)]
pub enum StartError {
    /// The spec does not read or validate: every error, with its field path.
    Spec(SpecErrors),
    /// [`MAX_RUNNING`] drills are running.
    Busy,
    /// The daemon is stopping.
    Closed,
    /// The runner's thread could not be made.
    Spawn(Error),
}

impl Experiments {
    /// Drills run with `injector`; `worker_exe` is the chaos binary (it runs the traffic workers,
    /// `chaos __traffic-worker`); reports are also written under `report_dir` if given.
    pub fn new(injector: Arc<Injector>, worker_exe: PathBuf, report_dir: Option<PathBuf>) -> Self {
        Experiments {
            injector,
            worker_exe,
            report_dir,
            entries: Mutex::new(BTreeMap::new()),
            threads: Mutex::new(Vec::new()),
            seq: std::sync::atomic::AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// Validates `spec` and starts it; returns the drill's status as started.
    pub fn start(self: &Arc<Self>, spec: ExperimentSpec) -> Result<ExperimentStatus, StartError> {
        spec.validate().map_err(StartError::Spec)?;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if self.closed.load(Ordering::SeqCst) {
            return Err(StartError::Closed);
        }
        let running = entries
            .values()
            .filter(|(_, e)| self::state(e) == RunState::Running)
            .count();
        if running >= MAX_RUNNING {
            return Err(StartError::Busy);
        }
        let id = format!("x-{}", &crate::store::new_fault_id()[2..]);
        let entry = Arc::new(Entry {
            stop: Arc::new(AtomicBool::new(false)),
            status: Mutex::new(ExperimentStatus::starting(
                id.clone(),
                spec.name.clone(),
                crate::clock::unix_ms(),
            )),
            report: Mutex::new(None),
        });
        let this = self.clone();
        let e = entry.clone();
        let handle = std::thread::Builder::new()
            .name(format!("drill {id}"))
            .spawn(move || this.run(spec, e))
            .map_err(|err| StartError::Spawn(Error::io("starting the drill's thread", err)))?;
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        entries.insert(seq, (id, entry.clone()));
        forget_oldest_finished(&mut entries);
        drop(entries);
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads.retain(|t| !t.is_finished());
        threads.push(handle);
        Ok(status(&entry))
    }

    /// The runner's thread: runs the drill, then files its report.
    fn run(&self, spec: ExperimentSpec, entry: Arc<Entry>) {
        let id = entry
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .id
            .clone();
        let opts = Options {
            source: Some(format!("POST /v1/experiments ({id})")),
            worker_exe: self.worker_exe.clone(),
            stop: entry.stop.clone(),
            progress: Box::new(Recorder(entry.clone())),
        };
        let outcome = runner::run(&spec, &self.injector, opts);
        let mut s = entry.status.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(report) => {
                if let Some(dir) = &self.report_dir
                    && let Err(e) = experiment::write_report(&dir.join(&id), &report)
                {
                    tracing::warn!(
                        "drill {id}: writing its report under {}: {e}",
                        dir.display()
                    );
                }
                s.verdict = Some(report.verdict.as_str().to_owned());
                s.reason = report.reason.clone();
                s.report = Some(format!("/v1/experiments/{id}/report"));
                *entry.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(report));
            }
            // Validated before the thread started: only a spec the runner reads differently
            // would get here.
            Err(errors) => {
                s.verdict = Some("refused".to_owned());
                s.reason = Some(errors.to_string());
            }
        }
        s.state = RunState::Done;
    }

    /// Every drill, oldest first.
    pub fn list(&self) -> Vec<ExperimentStatus> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .values()
            .map(|(_, e)| {
                let mut s = status(e);
                // The list is a summary: the events are at the drill's own route.
                s.events.clear();
                s
            })
            .collect()
    }

    fn find(&self, id: &str) -> Option<Arc<Entry>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .values()
            .find(|(i, _)| i == id)
            .map(|(_, e)| e.clone())
    }

    /// One drill.
    pub fn get(&self, id: &str) -> Option<ExperimentStatus> {
        self.find(id).map(|e| status(&e))
    }

    /// A drill's report: `None` if there is no such drill, `Some(None)` while it runs.
    pub fn report(&self, id: &str) -> Option<Option<Arc<Report>>> {
        self.find(id)
            .map(|e| e.report.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Aborts a running drill (it recovers and reports) or forgets a finished one; `None` if
    /// there is no such drill.
    pub fn abort_or_forget(&self, id: &str) -> Option<ExperimentStatus> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let key = *entries.iter().find(|(_, (i, _))| i == id)?.0;
        let entry = entries[&key].1.clone();
        if self::state(&entry) == RunState::Done {
            entries.remove(&key);
        } else {
            request_abort(&entry);
        }
        Some(status(&entry))
    }

    /// Drills running now.
    pub fn running(&self) -> usize {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .values()
            .filter(|(_, e)| self::state(e) == RunState::Running)
            .count()
    }

    /// Refuses new drills, aborts the running ones and waits until they have recovered and
    /// reported. The daemon calls it when it stops.
    pub fn shutdown(&self) {
        {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            self.closed.store(true, Ordering::SeqCst);
            for (_, e) in entries.values() {
                if self::state(e) == RunState::Running {
                    request_abort(e);
                }
            }
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn request_abort(entry: &Entry) {
    entry.stop.store(true, Ordering::SeqCst);
    entry
        .status
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .abort_requested = true;
}

fn status(entry: &Entry) -> ExperimentStatus {
    entry
        .status
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

fn state(entry: &Entry) -> RunState {
    entry.status.lock().unwrap_or_else(|e| e.into_inner()).state
}

/// Keeps at most [`KEEP_FINISHED`] finished drills.
fn forget_oldest_finished(entries: &mut BTreeMap<u64, (String, Arc<Entry>)>) {
    let finished: Vec<u64> = entries
        .iter()
        .filter(|(_, (_, e))| state(e) == RunState::Done)
        .map(|(k, _)| *k)
        .collect();
    for k in finished
        .iter()
        .take(finished.len().saturating_sub(KEEP_FINISHED))
    {
        entries.remove(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(state: RunState) -> Arc<Entry> {
        Arc::new(Entry {
            stop: Arc::new(AtomicBool::new(false)),
            status: Mutex::new(ExperimentStatus {
                state,
                ..ExperimentStatus::starting("x-1".into(), "n".into(), 0)
            }),
            report: Mutex::new(None),
        })
    }

    #[test]
    fn the_recorder_keeps_the_phase_the_last_second_and_a_bounded_event_list() {
        let e = entry(RunState::Running);
        let r = Recorder(e.clone());
        r.event(&Event::PhaseStart {
            phase: PhaseName::Admission,
            t_ms: 0,
        });
        for t in 0..(MAX_EVENTS as u64 + 10) {
            r.event(&Event::Abort {
                rule: "r".into(),
                detail: "d".into(),
                t_ms: t,
            });
            r.event(&Event::Second(Tick {
                t_ms: t,
                ..Tick::default()
            }));
        }
        let s = status(&e);
        assert_eq!(s.phase, Some(PhaseName::Admission));
        assert_eq!(s.events.len(), MAX_EVENTS);
        // The oldest went first: the phase start and the first ten aborts.
        assert!(matches!(s.events[0], Event::Abort { t_ms: 10, .. }));
        assert_eq!(s.last_second.map(|t| t.t_ms), Some(MAX_EVENTS as u64 + 9));
    }

    #[test]
    fn only_finished_drills_are_forgotten_oldest_first() {
        let mut m = BTreeMap::new();
        m.insert(0, ("run".to_owned(), entry(RunState::Running)));
        for k in 1..=(KEEP_FINISHED as u64 + 3) {
            m.insert(k, (format!("d{k}"), entry(RunState::Done)));
        }
        forget_oldest_finished(&mut m);
        assert_eq!(m.len(), KEEP_FINISHED + 1);
        assert!(m.contains_key(&0), "a running drill is never forgotten");
        assert!(!m.contains_key(&3) && m.contains_key(&4));
    }
}
