//! The worker process (`chaos __traffic-worker`): `concurrency` threads, each with one operation
//! in flight, paced together to `rate`, every operation reported as protocol events.

use std::{
    io::{BufRead, BufReader, Write},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{Event, command, file, http, human, tcp, timeout_of, workers_of};
use crate::{
    error::{Error, IoContext, Result},
    experiment::{Traffic, record::mono_ns},
};

/// Where events go: stdout in the worker process, a log in tests.
pub(crate) type Sink = dyn Fn(Event) + Send + Sync;

/// How long the worker waits for its threads after asking its commands to stop with SIGTERM,
/// before SIGKILL; then as long again for the threads to report. Below the runner's 3 s.
const COMMAND_GRACE: Duration = Duration::from_millis(1500);

/// Why an operation did not succeed.
#[derive(Debug)]
pub(crate) enum OpError {
    /// It failed, for this reason.
    Failed(String),
    /// The worker is stopping: the operation was cut short and is not reported.
    Stopped,
}

/// One kind of operation, as one worker runs it again and again.
pub(crate) trait Operation: Send {
    /// Runs one operation; `timeout` is the spec's.
    fn run(&mut self, timeout: Duration) -> Result<(), OpError>;
}

/// Starts of operations over all workers, `period` apart (no pacing without a rate). A worker
/// that falls behind does not make up for lost slots with a burst.
#[derive(Debug)]
struct Pacer {
    period: Option<Duration>,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    fn new(rate: Option<f64>) -> Pacer {
        Pacer {
            period: rate
                .filter(|r| r.is_finite() && *r > 0.0)
                .map(|r| Duration::from_secs_f64(1.0 / r)),
            next: Mutex::new(None),
        }
    }

    /// Waits for this worker's next slot; false when the worker is to stop.
    fn wait(&self, stop: &AtomicBool) -> bool {
        let Some(period) = self.period else {
            return !stop.load(Ordering::Relaxed);
        };
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let slot = next.filter(|n| *n > now).unwrap_or(now);
            *next = Some(slot + period);
            slot
        };
        loop {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            let now = Instant::now();
            if now >= slot {
                return true;
            }
            std::thread::sleep((slot - now).min(Duration::from_millis(50)));
        }
    }
}

/// One worker's loop: paced operations until `stop`.
fn op_loop(
    worker: usize,
    op: &mut dyn Operation,
    pacer: &Pacer,
    stop: &AtomicBool,
    sink: &Sink,
    timeout: Duration,
) {
    while pacer.wait(stop) {
        let start_ns = mono_ns();
        sink(Event::Begin { worker, start_ns });
        let result = op.run(timeout);
        let end_ns = mono_ns();
        let took = Duration::from_nanos(end_ns.saturating_sub(start_ns));
        let error = match result {
            Err(OpError::Stopped) => break,
            Err(OpError::Failed(e)) => Some(e),
            Ok(()) if took > timeout => Some(format!(
                "took {}, over the {} timeout",
                human(took),
                human(timeout)
            )),
            Ok(()) => None,
        };
        sink(Event::End {
            worker,
            start_ns,
            end_ns,
            error,
        });
    }
}

/// The operation of worker `worker` of generator `spec`.
fn operation(
    spec: &Traffic,
    worker: usize,
    stop: &Arc<AtomicBool>,
    groups: &Arc<command::Groups>,
) -> Result<Box<dyn Operation>> {
    if let Some(t) = &spec.tcp {
        return Ok(Box::new(tcp::TcpOp::new(t)));
    }
    if let Some(h) = &spec.http {
        return Ok(Box::new(http::HttpOp::new(h, timeout_of(spec)?)));
    }
    if let Some(f) = &spec.file {
        return Ok(Box::new(file::FileOp::new(
            f,
            &spec.name,
            std::process::id(),
            worker,
        )?));
    }
    if let Some(c) = &spec.command {
        return Ok(Box::new(command::CommandOp::new(
            c,
            stop.clone(),
            groups.clone(),
        )));
    }
    Err(Error::invalid(
        "traffic",
        format!("generator {:?} generates nothing", spec.name),
        "give one of tcp, http, file or command",
    ))
}

/// Runs generator `spec` in this process until `stop` is set (or, for a command run once, until
/// it exits), sending every event to `sink`. On stop, the commands' process groups get SIGTERM,
/// then SIGKILL; threads still stuck in an operation after that (a hung disk) are left behind.
pub(crate) fn run_in_process(
    spec: &Traffic,
    stop: &Arc<AtomicBool>,
    sink: Arc<Sink>,
) -> Result<()> {
    let timeout = timeout_of(spec)?;
    let groups = Arc::new(command::Groups::default());
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let once = spec.command.as_ref().filter(|c| !c.repeat);
    if let Some(c) = once {
        let (c, stop, groups, sink) = (c.clone(), stop.clone(), groups.clone(), sink.clone());
        threads.push(
            std::thread::Builder::new()
                .name("traffic-once".into())
                .spawn(move || command::run_once(&c, &stop, &groups, &*sink))
                .ctx(|| "starting a traffic thread")?,
        );
    } else {
        let pacer = Arc::new(Pacer::new(spec.rate));
        for w in 0..workers_of(spec) {
            let mut op = operation(spec, w, stop, &groups)?;
            let (pacer, flag, sink) = (pacer.clone(), stop.clone(), sink.clone());
            let thread = std::thread::Builder::new()
                .name(format!("traffic-{w}"))
                .spawn(move || op_loop(w, &mut *op, &pacer, &flag, &*sink, timeout));
            match thread {
                Ok(t) => threads.push(t),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(Error::io("starting a traffic thread", e));
                }
            }
        }
    }
    while !stop.load(Ordering::Relaxed) && threads.iter().any(|t| !t.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    groups.signal(libc::SIGTERM);
    let wait = |threads: &[JoinHandle<()>]| {
        let deadline = Instant::now() + COMMAND_GRACE;
        while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait(&threads);
    groups.signal(libc::SIGKILL);
    wait(&threads);
    for t in threads {
        if t.is_finished() {
            let _ = t.join();
        }
    }
    Ok(())
}

/// The `chaos __traffic-worker` process: reads its generator (JSON, one line) from stdin, runs
/// it and writes the events to stdout, one line each, until SIGTERM, SIGINT or the end of its
/// stdin (its runner is gone).
pub fn worker_main() -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGTERM, libc::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())
            .ctx(|| "setting up the traffic worker's signals")?;
    }
    let mut input = BufReader::new(std::io::stdin());
    let mut line = String::new();
    input
        .read_line(&mut line)
        .ctx(|| "reading the generator from stdin")?;
    let spec: Traffic = serde_json::from_str(&line).map_err(|e| {
        Error::invalid(
            "traffic",
            format!("the worker's input is not a generator ({e})"),
            "this subcommand is run by `chaos run`, which gives it a generator as JSON on stdin",
        )
    })?;
    {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("runner-watch".into())
            .spawn(move || {
                let _ = std::io::copy(&mut input, &mut std::io::sink());
                stop.store(true, Ordering::Relaxed);
            })
            .ctx(|| "starting the traffic worker's watch thread")?;
    }
    let out_stop = stop.clone();
    let sink = move |event: Event| {
        let mut out = std::io::stdout().lock();
        if out
            .write_all(event.line().as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            out_stop.store(true, Ordering::Relaxed);
        }
    };
    run_in_process(&spec, &stop, Arc::new(sink))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::experiment::{
        record::{Clock, OpLog},
        report::ExitReport,
    };

    /// Runs `spec` in this process for `run` (or until it ends by itself), and returns its log
    /// and, for a command run once, its exit.
    pub(crate) fn run_for(spec: &Traffic, run: Duration) -> (Arc<OpLog>, Option<ExitReport>) {
        let clock = Clock::start();
        let log = Arc::new(OpLog::new(workers_of(spec)));
        let exit = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let sink = {
            let (log, exit) = (log.clone(), exit.clone());
            move |e: Event| e.apply(&clock, &log, &exit)
        };
        let runner = {
            let (spec, stop) = (spec.clone(), stop.clone());
            std::thread::spawn(move || run_in_process(&spec, &stop, Arc::new(sink)))
        };
        let deadline = Instant::now() + run;
        while Instant::now() < deadline && !runner.is_finished() {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        runner.join().unwrap().unwrap();
        let exit = exit.lock().unwrap().clone();
        (log, exit)
    }

    #[test]
    fn pacing_holds_the_rate_over_all_workers() {
        let pacer = Pacer::new(Some(200.0));
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        let count = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    while started.elapsed() < Duration::from_millis(500) && pacer.wait(&stop) {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        // 200/s for 0.5 s: about 100 starts, whatever the number of workers.
        let n = count.load(Ordering::Relaxed);
        assert!((85..=110).contains(&n), "{n} starts in 0.5 s at 200/s");
    }

    #[test]
    fn an_unpaced_pacer_stops_at_once() {
        let pacer = Pacer::new(None);
        let stop = AtomicBool::new(false);
        assert!(pacer.wait(&stop));
        stop.store(true, Ordering::Relaxed);
        assert!(!pacer.wait(&stop));
        let slow = Pacer::new(Some(0.01));
        let stop = AtomicBool::new(false);
        assert!(slow.wait(&stop), "the first slot is now");
        let t = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                stop.store(true, Ordering::Relaxed);
            });
            assert!(!slow.wait(&stop), "the next slot is 100 s away");
        });
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
