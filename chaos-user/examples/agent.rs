//! A small agent built on the `chaos_user` library, as a drill platform's node agent would be.
//!
//! ```sh
//! # one fault: JSON or YAML text, a file holding it, or - for stdin
//! agent '{"kind": "net", "action": "loss", "percent": 30, "interface": "veth0", "duration": "30s"}'
//! agent fault.yaml
//! # a whole drill, as `chaos run` takes it
//! agent --experiment drill.yaml [--report-dir DIR]
//! ```
//!
//! With one fault it arms it, prints its status and counters every second until its duration
//! ends or Ctrl-C (SIGINT or SIGTERM), then recovers it: the fault's guard does, on every way
//! out of `main` but a SIGKILL (the fault's in-kernel deadline covers that one). With
//! `--experiment` it runs the drill, prints its progress as JSON lines and its summary, and
//! exits with the drill's exit code (0: passed). Run it as root; `CHAOS_LOG=debug` shows what
//! the library logs.

use std::{
    error::Error,
    io::Read,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chaos_user::{
    FaultSpec, Injector, RunOptions,
    experiment::{self, progress::JsonLines},
};

const USAGE: &str = "usage: agent FAULT (JSON or YAML text, a file, or - for stdin)\n       \
                     agent --experiment FILE [--report-dir DIR]";

fn main() -> ExitCode {
    // Drills start their traffic workers from this executable.
    chaos_user::serve_traffic_worker();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CHAOS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode, Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    match args.as_slice() {
        [flag, file] if flag == "--experiment" => drill(file, None, stop),
        [flag, file, dir_flag, dir] if flag == "--experiment" && dir_flag == "--report-dir" => {
            drill(file, Some(PathBuf::from(dir)), stop)
        }
        [fault_arg] if !fault_arg.starts_with("--") => fault(fault_arg, &stop),
        _ => {
            eprintln!("{USAGE}");
            Ok(ExitCode::from(2))
        }
    }
}

/// Reads one fault: the argument's text, the file it names, or stdin for `-`; JSON, or YAML
/// turned into the same JSON (so errors name the same fields).
fn read_fault(arg: &str) -> Result<FaultSpec, Box<dyn Error>> {
    let text = if arg == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else if std::path::Path::new(arg).is_file() {
        std::fs::read_to_string(arg)?
    } else {
        arg.to_owned()
    };
    if serde_json::from_str::<serde_json::Value>(&text).is_ok() {
        return Ok(chaos_user::spec::from_json(&text)?);
    }
    let value: serde_json::Value = serde_norway::from_str(&text)?;
    Ok(chaos_user::spec::from_json(&value.to_string())?)
}

/// Arms one fault and watches it until it ends or a signal comes; the guard recovers it.
fn fault(arg: &str, stop: &AtomicBool) -> Result<ExitCode, Box<dyn Error>> {
    let spec = read_fault(arg)?;
    let injector = Injector::new()?;
    let guard = injector.inject(&spec)?;
    println!(
        "{}  {} armed with {}",
        guard.id(),
        spec.name(),
        guard.strategy().describe()
    );
    loop {
        // A second, in steps short enough to answer Ctrl-C at once.
        for _ in 0..10 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = match guard.status() {
            Ok(s) => s,
            // Reaped by another process once its deadline passed: nothing left to watch.
            Err(chaos_user::Error::NotFound(_)) => break,
            Err(e) => return Err(e.into()),
        };
        match status.counters {
            Some(c) => println!(
                "{}  seen {:>9}  matched {:>9}  acted {:>9}  {:>5}s left",
                guard.id(),
                c.seen,
                c.matched,
                c.acted,
                status.remaining_s()
            ),
            None => println!("{}  {:>5}s left", guard.id(), status.remaining_s()),
        }
        if status.expired || stop.load(Ordering::Relaxed) {
            break;
        }
    }
    let id = guard.id().to_owned();
    guard.recover()?;
    println!("{id}  recovered");
    Ok(ExitCode::SUCCESS)
}

/// Runs a drill from its file, progress as JSON lines on stdout, the summary on stderr.
fn drill(
    file: &str,
    report_dir: Option<PathBuf>,
    stop: Arc<AtomicBool>,
) -> Result<ExitCode, Box<dyn Error>> {
    let spec = experiment::from_path(file.as_ref())?;
    let injector = Injector::new()?;
    let report = injector.run_with(
        &spec,
        RunOptions {
            report_dir,
            progress: Box::new(JsonLines),
            stop,
            source: Some(file.to_owned()),
            ..RunOptions::default()
        },
    )?;
    eprintln!("{}", experiment::summary::summary(&report));
    Ok(ExitCode::from(report.verdict.exit_code() as u8))
}
