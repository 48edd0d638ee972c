//! `chaos run SPEC`, `chaos run --scenario ID --set NAME=VALUE...` and `chaos demo`: a drill from
//! its file, from the risk catalog, or the built-in one, with live progress and a report.

use std::{
    collections::BTreeMap,
    io::IsTerminal,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use anyhow::Context;
use chaos_user::{
    Injector, catalog,
    experiment::{
        self,
        progress::{Event, JsonLines, Progress, Terminal},
        report::Report,
        runner::{self, Options},
        summary,
    },
};

/// Arguments of `chaos run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment: a YAML (.yaml, .yml), JSON (.json) or TOML (.toml) file.
    #[arg(required_unless_present = "scenario", conflicts_with = "scenario")]
    spec: Option<PathBuf>,
    /// Run a scenario of the risk catalog instead (`chaos catalog list`).
    #[arg(long, value_name = "ID")]
    scenario: Option<String>,
    /// A parameter of the scenario, `NAME=VALUE` (repeatable; `chaos catalog show ID` lists
    /// them).
    #[arg(long = "set", value_name = "NAME=VALUE", requires = "scenario")]
    set: Vec<String>,
    #[command(flatten)]
    out: Output,
}

/// Where and how a drill reports.
#[derive(clap::Args, Debug)]
pub struct Output {
    /// Write report.json and report.html to this directory.
    #[arg(long, default_value = ".")]
    report_dir: PathBuf,
    /// Progress as JSON lines on stdout even on a terminal (the default when stdout is not one).
    #[arg(long)]
    json: bool,
}

/// The stop flag, set by SIGINT and SIGTERM: the drill is then aborted and recovered.
pub(super) fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(stop)
}

fn progress(out: &Output, planned: Duration) -> (Box<dyn Progress>, bool) {
    if out.json || !std::io::stdout().is_terminal() {
        (Box::new(JsonLines), true)
    } else {
        (Box::new(Terminal::new(planned)), false)
    }
}

/// Writes the report, prints the summary (to stderr in JSON mode) and gives the exit code.
fn finish(report: &Report, out: &Output, json: bool) -> anyhow::Result<ExitCode> {
    let (json_path, html_path) = experiment::write_report(&out.report_dir, report)?;
    let text = summary::summary(report);
    if json {
        JsonLines.event(&Event::Done {
            verdict: report.verdict.as_str().into(),
            reason: report.reason.clone(),
            report: Some(json_path.display().to_string()),
        });
        eprintln!("{text}");
    } else {
        println!("{text}");
        println!(
            "report: {} and {}",
            json_path.display(),
            html_path.display()
        );
    }
    Ok(ExitCode::from(report.verdict.exit_code() as u8))
}

fn worker_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("finding the chaos binary (it runs the traffic workers)")
}

/// `chaos run`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (spec, schedule, source) = match (&args.spec, &args.scenario) {
        (Some(path), _) => {
            let spec = match experiment::from_path(path) {
                Ok(s) => s,
                Err(errors) => return Ok(refuse_spec(path, &errors)),
            };
            match spec.validate() {
                Ok(schedule) => (spec, schedule, path.display().to_string()),
                Err(errors) => return Ok(refuse_spec(path, &errors)),
            }
        }
        (None, Some(id)) => match scenario_drill(id, &args.set) {
            Ok((spec, schedule)) => (spec, schedule, format!("catalog:{id}")),
            Err(code) => return Ok(code),
        },
        (None, None) => anyhow::bail!("give an experiment file or --scenario ID"),
    };
    let injector = Injector::new()?;
    let stop = stop_on_signals()?;
    let (progress, json) = progress(&args.out, schedule.longest());
    let report = runner::run(
        &spec,
        &injector,
        Options {
            source: Some(source),
            worker_exe: worker_exe()?,
            stop,
            progress,
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    finish(&report, &args.out, json)
}

/// A spec that does not read or validate: every error, one per line; exit code 2 (nothing was
/// injected, as for a refused drill).
fn refuse_spec(path: &Path, errors: &experiment::SpecErrors) -> ExitCode {
    eprintln!("chaos run: {} is not a valid experiment:", path.display());
    for e in &errors.0 {
        eprintln!("  {e}");
    }
    ExitCode::from(2)
}

/// The drill of catalog scenario `id` with the `--set` pairs filled in; an unknown scenario, a
/// malformed pair, or parameters missing, unknown or of the wrong type are refused, every
/// problem on its own line and the scenario's parameters listed: exit code 2, nothing runs.
fn scenario_drill(
    id: &str,
    pairs: &[String],
) -> Result<(experiment::ExperimentSpec, experiment::Schedule), ExitCode> {
    let scenario = match catalog::get(id) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("chaos run: {e}");
            return Err(ExitCode::from(2));
        }
    };
    let mut set = BTreeMap::new();
    let mut bad = Vec::new();
    for pair in pairs {
        match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                if set.insert(k.to_owned(), v.to_owned()).is_some() {
                    bad.push(format!(
                        "--set {k} is given twice; give each parameter once"
                    ));
                }
            }
            _ => bad.push(format!("--set `{pair}` is not NAME=VALUE")),
        }
    }
    let result = if bad.is_empty() {
        scenario
            .experiment(&set)
            .map_err(|errors| errors.0.iter().map(ToString::to_string).collect::<Vec<_>>())
    } else {
        Err(bad)
    };
    result.map_err(|problems| {
        eprintln!("chaos run: scenario {id} cannot run with these parameters:");
        for p in problems {
            eprintln!("  {p}");
        }
        eprintln!("its parameters (chaos catalog show {id}):");
        for p in &scenario.parameters {
            eprintln!("  {}", p.describe());
        }
        ExitCode::from(2)
    })
}

/// Arguments of `chaos demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    #[command(flatten)]
    out: Output,
}

/// `chaos demo`.
pub fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let injector = Injector::new()?;
    let stop = stop_on_signals()?;
    let (progress, json) = progress(&args.out, Duration::from_secs(80));
    if !json {
        println!(
            "chaos demo: a drill on a built-in workload (an echo server in its own network \
             namespace, a writer on a loop device, both in a cgroup of their own), every fault \
             family this kernel ({}) can make, then recovery; faults it cannot make are \
             skipped with the reason.",
            injector.probe().kernel
        );
    }
    let report = chaos_user::demo::run(&injector, worker_exe()?, progress, stop)?;
    finish(&report, &args.out, json)
}
