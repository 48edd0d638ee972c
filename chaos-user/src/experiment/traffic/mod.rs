//! A drill's traffic (`traffic` in the spec, `docs/experiments.md`): each generator runs in a
//! worker process of its own (`chaos __traffic-worker`), so that a fault aimed at the generator's
//! cgroup reaches its workers and nothing else, and a worker stuck in a hung disk cannot stall
//! the runner. The worker stamps every operation with [`mono_ns`](super::record::mono_ns)
//! (`CLOCK_MONOTONIC`, shared by both processes) and writes one line per event to its stdout; the
//! runner reads them into the generator's [`OpLog`].
//!
//! The protocol, one event a line:
//! - `B <worker> <start_ns>`: worker `worker` started an operation;
//! - `E <worker> <start_ns> <end_ns> <1|0> [error]`: it finished, successfully or not (why);
//! - `X <code|-> <signal|-> <end_ns> <1|0>`: a command run once ended (`1`: after the runner
//!   asked it to stop).
//!
//! The runner holds the worker's stdin open for as long as it runs: when the runner dies, even
//! by SIGKILL, the worker reads EOF and stops (a process-wide signal, where `PR_SET_PDEATHSIG`
//! would follow the thread that started the worker).

mod cgroup;
pub(crate) mod command;
mod file;
pub(crate) mod http;
pub(crate) mod tcp;
mod worker;

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Write},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};

pub use self::worker::worker_main;
use super::{
    Traffic,
    record::{Clock, Op, OpLog},
    report::ExitReport,
};
use crate::error::{Error, IoContext, Result};

/// The hidden subcommand of `chaos` that runs one generator's workers.
pub const WORKER_SUBCOMMAND: &str = "__traffic-worker";

/// An operation slower than this counts as an error, when the spec gives no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`TrafficRun::stop`] waits for the worker after SIGTERM before it kills it.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Lines of the worker's stderr kept for [`TrafficRun::stderr_tail`].
const STDERR_LINES: usize = 20;

/// One event of the worker protocol (see the module's documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// An operation started.
    Begin {
        /// The worker (0-based).
        worker: usize,
        /// When, `mono_ns`.
        start_ns: u64,
    },
    /// An operation ended.
    End {
        /// The worker (0-based).
        worker: usize,
        /// When it started, `mono_ns`.
        start_ns: u64,
        /// When it ended, `mono_ns`.
        end_ns: u64,
        /// Why it failed; `None`: it succeeded.
        error: Option<String>,
    },
    /// A command run once ended.
    Exit {
        /// Its exit code.
        code: Option<i32>,
        /// The signal that ended it.
        signal: Option<i32>,
        /// When, `mono_ns`.
        end_ns: u64,
        /// Whether it ended after the runner asked it to stop.
        stopped: bool,
    },
}

impl Event {
    /// The event as one protocol line, with its newline.
    pub(crate) fn line(&self) -> String {
        fn opt(v: Option<i32>) -> String {
            v.map_or_else(|| "-".to_owned(), |v| v.to_string())
        }
        match self {
            Event::Begin { worker, start_ns } => format!("B {worker} {start_ns}\n"),
            Event::End {
                worker,
                start_ns,
                end_ns,
                error,
            } => match error {
                None => format!("E {worker} {start_ns} {end_ns} 1\n"),
                Some(e) => {
                    let e = e.split_whitespace().collect::<Vec<_>>().join(" ");
                    format!("E {worker} {start_ns} {end_ns} 0 {e}\n")
                }
            },
            Event::Exit {
                code,
                signal,
                end_ns,
                stopped,
            } => format!(
                "X {} {} {end_ns} {}\n",
                opt(*code),
                opt(*signal),
                u8::from(*stopped)
            ),
        }
    }

    /// Parses one protocol line (without its newline); `None` if it is not one.
    pub(crate) fn parse(line: &str) -> Option<Event> {
        let mut parts = line.splitn(6, ' ');
        let tag = parts.next()?;
        let mut next = || parts.next();
        match tag {
            "B" => Some(Event::Begin {
                worker: next()?.parse().ok()?,
                start_ns: next()?.parse().ok()?,
            }),
            "E" => {
                let worker = next()?.parse().ok()?;
                let start_ns = next()?.parse().ok()?;
                let end_ns = next()?.parse().ok()?;
                let ok = match next()? {
                    "1" => true,
                    "0" => false,
                    _ => return None,
                };
                let error = (!ok).then(|| next().unwrap_or("failed").trim().to_owned());
                Some(Event::End {
                    worker,
                    start_ns,
                    end_ns,
                    error,
                })
            }
            "X" => {
                let opt = |s: &str| -> Option<Option<i32>> {
                    if s == "-" {
                        Some(None)
                    } else {
                        s.parse().ok().map(Some)
                    }
                };
                let code = opt(next()?)?;
                let signal = opt(next()?)?;
                let end_ns = next()?.parse().ok()?;
                let stopped = next()? == "1";
                Some(Event::Exit {
                    code,
                    signal,
                    end_ns,
                    stopped,
                })
            }
            _ => None,
        }
    }

    /// Records the event in `log` (operations) or `exit` (a command run once).
    pub(crate) fn apply(self, clock: &Clock, log: &OpLog, exit: &Mutex<Option<ExitReport>>) {
        match self {
            Event::Begin { worker, start_ns } => log.begin(worker, clock.us(start_ns)),
            Event::End {
                worker,
                start_ns,
                end_ns,
                error,
            } => {
                let op = Op {
                    start_us: clock.us(start_ns),
                    latency_us: end_ns.saturating_sub(start_ns) / 1000,
                    ok: error.is_none(),
                };
                log.end(worker, op, error);
            }
            Event::Exit {
                code,
                signal,
                end_ns,
                stopped,
            } => {
                *exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(ExitReport {
                    code,
                    signal,
                    at_ms: (!stopped).then(|| clock.us(end_ns) / 1000),
                });
            }
        }
    }
}

/// The generator's kind (`tcp`, `http`, `file`, `command`), refusing a spec that gives none.
fn kind_of(spec: &Traffic) -> Result<&'static str> {
    spec.kind().ok_or_else(|| {
        Error::invalid(
            "traffic",
            format!("generator {:?} generates nothing", spec.name),
            "give one of tcp, http, file or command",
        )
    })
}

/// The number of workers a (valid) generator runs: `concurrency`, one for a command run once.
pub(crate) fn workers_of(spec: &Traffic) -> usize {
    if spec.measures_operations() {
        spec.concurrency.unwrap_or(1).max(1) as usize
    } else {
        1
    }
}

/// The operation timeout of a (valid) generator.
pub(crate) fn timeout_of(spec: &Traffic) -> Result<Duration> {
    match &spec.timeout {
        None => Ok(DEFAULT_TIMEOUT),
        Some(t) => humantime::parse_duration(t.trim()).map_err(|e| {
            Error::invalid(
                "timeout",
                format!("{t:?} is not a duration ({e})"),
                "write a number with a unit, e.g. 5s",
            )
        }),
    }
}

/// Formats a duration for a message: `1s`, `1s 500ms`, `250ms`.
pub(crate) fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

/// The file worker `worker` of generator `name`, in worker process `pid`, writes in `dir`.
pub(crate) fn file_path(dir: &Path, name: &str, pid: u32, worker: usize) -> PathBuf {
    dir.join(format!("chaos-traffic-{name}-{pid}-{worker}"))
}

/// One running generator: its worker process, the operations it has measured so far, and what
/// it made (cgroups, files), undone by [`TrafficRun::stop`].
#[derive(Debug)]
pub struct TrafficRun {
    name: String,
    kind: &'static str,
    child: Child,
    pid: u32,
    stdin: Option<ChildStdin>,
    log: Arc<OpLog>,
    exit: Arc<Mutex<Option<ExitReport>>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    reader: Option<JoinHandle<()>>,
    files: Vec<PathBuf>,
    cgroups: Option<cgroup::Placement>,
    stopped: bool,
}

impl TrafficRun {
    /// Starts generator `spec` (validated by
    /// [`ExperimentSpec::validate`](super::ExperimentSpec::validate)): runs `worker_exe
    /// __traffic-worker` (the `chaos` binary) with the spec on its stdin. With `spec.cgroup`,
    /// the cgroup is made where missing, in the cgroup v2 hierarchy and in the io / blkio one
    /// when that is another mount, and the worker is placed in each before it runs anything.
    /// Operations are stamped on `clock`.
    pub fn start(spec: &Traffic, clock: Clock, worker_exe: &Path) -> Result<TrafficRun> {
        let kind = kind_of(spec)?;
        let workers = workers_of(spec);
        let json = serde_json::to_string(spec).map_err(|e| {
            Error::invalid("traffic", format!("cannot encode the generator ({e})"), "")
        })?;
        let placement = spec
            .cgroup
            .as_deref()
            .map(cgroup::Placement::prepare)
            .transpose()?;
        match Self::spawn(spec, kind, workers, &json, clock, worker_exe, &placement) {
            Ok(mut run) => {
                run.cgroups = placement;
                Ok(run)
            }
            Err(e) => {
                if let Some(p) = placement {
                    let _ = p.remove();
                }
                Err(e)
            }
        }
    }

    fn spawn(
        spec: &Traffic,
        kind: &'static str,
        workers: usize,
        json: &str,
        clock: Clock,
        worker_exe: &Path,
        placement: &Option<cgroup::Placement>,
    ) -> Result<TrafficRun> {
        let procs = match placement {
            Some(p) => p.open_procs()?,
            None => Vec::new(),
        };
        let fds: Vec<i32> = procs.iter().map(|f| f.as_raw_fd()).collect();
        let mut command = Command::new(worker_exe);
        command
            .arg(WORKER_SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C at the terminal reaches the runner, which stops
            // the worker in order, not the worker directly.
            .process_group(0);
        // SAFETY: write(2) on descriptors opened above (closed at exec by O_CLOEXEC) is
        // async-signal-safe; the closure allocates nothing. Writing "0" to cgroup.procs moves
        // the writer, so the worker is in every cgroup before it runs an instruction of its own.
        unsafe {
            command.pre_exec(move || {
                for &fd in &fds {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = command.spawn().ctx(|| {
            format!(
                "starting traffic worker {} {WORKER_SUBCOMMAND}",
                worker_exe.display()
            )
        })?;
        drop(procs);
        let pid = child.id();
        let (stdin, stdout, stderr) =
            match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
                (Some(i), Some(o), Some(e)) => (i, o, e),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::io(
                        "starting a traffic worker",
                        std::io::Error::other("its pipes are missing"),
                    ));
                }
            };
        let log = Arc::new(OpLog::new(workers));
        let exit = Arc::new(Mutex::new(None));
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let reader = {
            let (log, exit) = (log.clone(), exit.clone());
            std::thread::Builder::new()
                .name(format!("traffic-{}", spec.name))
                .spawn(move || {
                    for line in BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        match Event::parse(&line) {
                            Some(event) => event.apply(&clock, &log, &exit),
                            None => tracing::warn!("traffic worker said {line:?}"),
                        }
                    }
                })
        };
        {
            let tail = tail.clone();
            let name = spec.name.clone();
            // Detached: a command's own children may hold the pipe open after the worker ends.
            let _ = std::thread::Builder::new()
                .name(format!("traffic-{}-err", spec.name))
                .spawn(move || {
                    for line in BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        tracing::debug!("traffic {name}: {line}");
                        let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                        if t.len() == STDERR_LINES {
                            t.pop_front();
                        }
                        t.push_back(line);
                    }
                });
        }
        let files = match &spec.file {
            Some(f) => (0..workers)
                .map(|w| file_path(Path::new(&f.path), &spec.name, pid, w))
                .collect(),
            None => Vec::new(),
        };
        let mut run = TrafficRun {
            name: spec.name.clone(),
            kind,
            child,
            pid,
            stdin: Some(stdin),
            log,
            exit,
            stderr: tail,
            reader: None,
            files,
            cgroups: None,
            stopped: false,
        };
        run.reader = Some(reader.ctx(|| "starting a traffic reader thread")?);
        let mut line = json.to_owned();
        line.push('\n');
        if let Some(stdin) = run.stdin.as_mut() {
            stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.flush())
                .ctx(|| format!("sending generator {} to its worker", spec.name))?;
        }
        Ok(run)
    }

    /// The generator's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its kind: `tcp`, `http`, `file` or `command`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The worker process's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The operations measured so far, and those in flight.
    pub fn log(&self) -> &Arc<OpLog> {
        &self.log
    }

    /// For a command run once: how it ended (`at_ms` null when it was still running at the
    /// end and was stopped); `None` while it runs, and for every other generator.
    pub fn exit(&self) -> Option<ExitReport> {
        self.exit.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The last lines the worker (and a command's own stderr) wrote to stderr: why a worker
    /// ended early.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Stops the generator: SIGTERM to the worker (which stops its commands' process groups),
    /// SIGKILL if it is still there after 3 s; then removes the files of a file load and the
    /// cgroups it made (moving what is left in them to their parent first). Idempotent; the
    /// first error is returned after everything was tried.
    pub fn stop(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let mut errors = Vec::new();
        if let Err(e) = self.end_worker() {
            errors.push(e);
        }
        drop(self.stdin.take());
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        for f in &self.files {
            match std::fs::remove_file(f) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    errors.push(Error::io(format!("removing {}", f.display()), e));
                }
                _ => {}
            }
        }
        if let Some(p) = self.cgroups.take()
            && let Err(e) = p.remove()
        {
            errors.push(e);
        }
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn end_worker(&mut self) -> Result<()> {
        if self.child.try_wait().ok().flatten().is_some() {
            return Ok(());
        }
        let pid = Pid::from_raw(self.pid as i32);
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        tracing::warn!(
            "traffic worker {} (pid {}) still running {}s after SIGTERM: killing it",
            self.name,
            self.pid,
            STOP_GRACE.as_secs()
        );
        let _ = self.child.kill();
        self.child
            .wait()
            .map(drop)
            .ctx(|| format!("waiting for traffic worker {}", self.pid))
    }
}

impl Drop for TrafficRun {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!("stopping traffic {}: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_lines() {
        let events = [
            Event::Begin {
                worker: 3,
                start_ns: 12_345,
            },
            Event::End {
                worker: 0,
                start_ns: 1_000_000,
                end_ns: 3_500_000,
                error: None,
            },
            Event::End {
                worker: 1,
                start_ns: 5,
                end_ns: 9,
                error: Some("fdatasync: EIO: Input/output error".into()),
            },
            Event::Exit {
                code: Some(3),
                signal: None,
                end_ns: 77,
                stopped: false,
            },
            Event::Exit {
                code: None,
                signal: Some(15),
                end_ns: 78,
                stopped: true,
            },
        ];
        for e in events {
            let line = e.line();
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            assert_eq!(Event::parse(line.trim_end_matches('\n')), Some(e));
        }
        // An error text spanning lines stays one line.
        let e = Event::End {
            worker: 0,
            start_ns: 1,
            end_ns: 2,
            error: Some("a\nb".into()),
        };
        assert_eq!(e.line(), "E 0 1 2 0 a b\n");
        assert_eq!(Event::parse("Z 1 2"), None);
        assert_eq!(Event::parse("E 0 1"), None);
        assert_eq!(Event::parse("B x 1"), None);
    }

    #[test]
    fn events_fill_the_log_on_the_drill_clock() {
        let clock = Clock {
            origin_ns: 1_000_000_000,
            origin_unix_ms: 0,
        };
        let log = OpLog::new(2);
        let exit = Mutex::new(None);
        Event::Begin {
            worker: 1,
            start_ns: 3_000_000_000,
        }
        .apply(&clock, &log, &exit);
        assert_eq!(log.in_flight(), vec![2_000_000]);
        Event::End {
            worker: 1,
            start_ns: 3_000_000_000,
            end_ns: 3_000_250_000,
            error: Some("status 503".into()),
        }
        .apply(&clock, &log, &exit);
        assert!(log.in_flight().is_empty());
        assert_eq!(
            log.ops(),
            vec![Op {
                start_us: 2_000_000,
                latency_us: 250,
                ok: false
            }]
        );
        assert_eq!(log.last_error().as_deref(), Some("status 503"));
        Event::Exit {
            code: Some(1),
            signal: None,
            end_ns: 1_500_000_000,
            stopped: false,
        }
        .apply(&clock, &log, &exit);
        assert_eq!(
            exit.lock().unwrap().clone(),
            Some(ExitReport {
                code: Some(1),
                signal: None,
                at_ms: Some(500)
            })
        );
    }
}
