//! The user's command as load, run once for the whole drill or again and again (each run one
//! operation), and the command runs the command probe shares. Each command runs without a shell,
//! in a process group of its own (so that what it starts is stopped with it), with stdin and
//! stdout on /dev/null (the worker's stdout is the protocol), and dies with the thread that
//! started it (`PR_SET_PDEATHSIG`: the worker thread waits for it, so this is the worker).

use std::{
    collections::HashSet,
    os::unix::process::{CommandExt, ExitStatusExt},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use super::{
    Event, human,
    worker::{OpError, Operation, Sink},
};
use crate::experiment::{CommandLoad, record::mono_ns};

/// The process groups of the commands running now, to stop them all at once.
#[derive(Debug, Default)]
pub(crate) struct Groups(Mutex<HashSet<i32>>);

impl Groups {
    fn add(&self, pgid: i32) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pgid);
    }

    fn remove(&self, pgid: i32) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pgid);
    }

    /// Sends `signal` to every group.
    pub(crate) fn signal(&self, signal: i32) {
        for &pgid in self.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            signal_group(pgid, signal);
        }
    }
}

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) with a negative pid (a process group) and a signal number.
    unsafe { libc::kill(-pgid, signal) };
}

/// Starts `argv` in its own process group (stdin and stdout on /dev/null, stderr as given).
pub(crate) fn spawn(argv: &[String], stderr: Stdio) -> Result<Child, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("no command".into());
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0);
    // SAFETY: prctl with integer arguments is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().map_err(|e| {
        let text = e.to_string();
        let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
        format!("cannot run {program}: {}", text.to_lowercase())
    })
}

/// How a command run with a time limit ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// It exited.
    Exited(ExitStatus),
    /// It ran past its limit and was killed.
    TimedOut,
    /// `stop` was set: it was killed.
    Stopped,
}

/// Waits for `child` (group leader) until `deadline`, killing its group at the deadline or
/// when `stop` is set. Polls, from 1 ms up to 20 ms between looks.
pub(crate) fn wait(child: &mut Child, deadline: Option<Instant>, stop: &AtomicBool) -> Ended {
    let pgid = child.id() as i32;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ended::Exited(status),
            Ok(None) => {}
            Err(_) => break,
        }
        if stop.load(Ordering::Relaxed) {
            signal_group(pgid, libc::SIGKILL);
            let _ = child.wait();
            return Ended::Stopped;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    signal_group(pgid, libc::SIGKILL);
    let _ = child.wait();
    Ended::TimedOut
}

/// An exit status in a few words: `exit code 1`, `killed by signal 9`.
pub(crate) fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => format!("{status}"),
    }
}

/// A repeated command: one run is one operation, exit code 0 a success, killed at the timeout.
#[derive(Debug)]
pub(crate) struct CommandOp {
    run: Vec<String>,
    stop: Arc<AtomicBool>,
    groups: Arc<Groups>,
}

impl CommandOp {
    pub(crate) fn new(spec: &CommandLoad, stop: Arc<AtomicBool>, groups: Arc<Groups>) -> Self {
        CommandOp {
            run: spec.run.clone(),
            stop,
            groups,
        }
    }
}

impl Operation for CommandOp {
    fn run(&mut self, timeout: Duration) -> Result<(), OpError> {
        let mut child = spawn(&self.run, Stdio::inherit()).map_err(OpError::Failed)?;
        let pgid = child.id() as i32;
        self.groups.add(pgid);
        // A stop is seen by the worker's main thread, which signals the groups; so wait here
        // without the flag, then tell a run cut short by the stop from a failure.
        let never = AtomicBool::new(false);
        let ended = wait(&mut child, Some(Instant::now() + timeout), &never);
        self.groups.remove(pgid);
        match ended {
            _ if self.stop.load(Ordering::Relaxed) => Err(OpError::Stopped),
            Ended::Exited(s) if s.success() => Ok(()),
            Ended::Exited(s) => Err(OpError::Failed(describe_status(s))),
            Ended::TimedOut => Err(OpError::Failed(format!(
                "timed out after {}, killed",
                human(timeout)
            ))),
            Ended::Stopped => Err(OpError::Stopped),
        }
    }
}

/// A command run once: runs until it exits or the worker stops it (its group gets SIGTERM, then
/// SIGKILL, from the worker's main thread), then reports how it ended. A command that cannot be
/// started is reported as exit code 127, as a shell does.
pub(crate) fn run_once(spec: &CommandLoad, stop: &AtomicBool, groups: &Groups, sink: &Sink) {
    let mut child = match spawn(&spec.run, Stdio::inherit()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            sink(Event::Exit {
                code: Some(127),
                signal: None,
                end_ns: mono_ns(),
                stopped: false,
            });
            return;
        }
    };
    let pgid = child.id() as i32;
    groups.add(pgid);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let end_ns = mono_ns();
    groups.remove(pgid);
    sink(Event::Exit {
        code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        end_ns,
        stopped: stop.load(Ordering::Relaxed),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{Traffic, traffic::worker::tests::run_for};

    fn command(run: &[&str], repeat: bool) -> Traffic {
        Traffic {
            name: "c".into(),
            command: Some(CommandLoad {
                run: run.iter().map(|s| s.to_string()).collect(),
                repeat,
            }),
            ..Traffic::default()
        }
    }

    #[test]
    fn a_command_run_once_reports_its_exit_code() {
        let t = Instant::now();
        let (log, exit) = run_for(
            &command(&["sh", "-c", "exit 3"], false),
            Duration::from_secs(5),
        );
        assert!(t.elapsed() < Duration::from_secs(4), "ended by itself");
        let exit = exit.expect("an exit");
        assert_eq!((exit.code, exit.signal), (Some(3), None));
        assert!(exit.at_ms.is_some());
        assert!(log.ops().is_empty());
    }

    #[test]
    fn a_command_run_once_is_stopped_with_sigterm() {
        let t = Instant::now();
        let (_, exit) = run_for(
            &command(&["sleep", "30"], false),
            Duration::from_millis(300),
        );
        assert!(t.elapsed() < Duration::from_secs(3));
        let exit = exit.expect("an exit");
        assert_eq!((exit.code, exit.signal), (None, Some(libc::SIGTERM)));
        assert_eq!(exit.at_ms, None, "it was running at the end");
    }

    #[test]
    fn a_missing_program_is_exit_code_127() {
        let (_, exit) = run_for(
            &command(&["/nonexistent/chaos-no-such-program"], false),
            Duration::from_secs(2),
        );
        assert_eq!(exit.and_then(|e| e.code), Some(127));
    }

    #[test]
    fn repeated_runs_are_operations() {
        let mut spec = command(&["true"], true);
        spec.rate = Some(50.0);
        let (log, exit) = run_for(&spec, Duration::from_millis(400));
        assert!(exit.is_none());
        let ops = log.ops();
        assert!((12..=25).contains(&ops.len()), "{} runs", ops.len());
        assert!(ops.iter().all(|o| o.ok));

        let mut spec = command(&["false"], true);
        spec.rate = Some(50.0);
        let (log, _) = run_for(&spec, Duration::from_millis(200));
        assert!(!log.ops().is_empty() && log.ops().iter().all(|o| !o.ok));
        assert_eq!(log.last_error().as_deref(), Some("exit code 1"));
    }

    #[test]
    fn a_repeated_run_past_the_timeout_is_killed() {
        let mut spec = command(&["sleep", "5"], true);
        spec.timeout = Some("150ms".into());
        let t = Instant::now();
        let (log, _) = run_for(&spec, Duration::from_millis(400));
        assert!(t.elapsed() < Duration::from_secs(2));
        let ops = log.ops();
        assert!(!ops.is_empty());
        assert!(
            ops.iter()
                .all(|o| !o.ok && o.latency_us >= 150_000 && o.latency_us < 1_000_000)
        );
        assert_eq!(
            log.last_error().as_deref(),
            Some("timed out after 150ms, killed")
        );
    }
}
