//! `chaos checkup --profile P --pid PID|--cgroup CG --probe ADDR`: the profile's catalog
//! scenarios run one by one on a live service, scored 0-100, with report.json and report.html
//! (`docs/checkup.md`).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
};

use anyhow::Context;
use chaos_user::{
    Injector,
    checkup::{self, Event, Profile, Request, Target},
};

/// Arguments of `chaos checkup`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The kind of system: redis, postgresql, mysql, oceanbase or generic.
    #[arg(long)]
    profile: String,
    /// The service's main process.
    #[arg(long, required_unless_present = "cgroup", conflicts_with = "cgroup")]
    pid: Option<u32>,
    /// The service's cgroup (e.g. system.slice/redis-server.service).
    #[arg(long)]
    cgroup: Option<String>,
    /// The service's health endpoint: HOST:PORT (a TCP connect) or an http:// URL. Without
    /// it, the TCP socket the service listens on with the most clients (the lowest port first).
    #[arg(long)]
    probe: Option<String>,
    /// The user's own load during each drill: a shell command, run for the whole drill.
    #[arg(long, value_name = "CMD")]
    traffic: Option<String>,
    /// A scenario parameter, `NAME=VALUE`, for every scenario that has it (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Where report.json, report.html and each drill's report (drills/) go.
    #[arg(long, default_value = ".")]
    report_dir: PathBuf,
    /// The score the checkup must reach to exit 0.
    #[arg(long, default_value_t = checkup::DEFAULT_MIN_SCORE, value_parser = clap::value_parser!(u32).range(0..=100))]
    min_score: u32,
    /// Events as JSON lines on stdout, the summary on stderr.
    #[arg(long)]
    json: bool,
    /// Show the plan (what runs with which values, what is skipped) and run nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `chaos checkup`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let profile: Profile = args.profile.parse()?;
    let mut set = BTreeMap::new();
    for pair in &args.set {
        match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                if set.insert(k.to_owned(), v.to_owned()).is_some() {
                    anyhow::bail!("--set {k} is given twice; give each parameter once");
                }
            }
            _ => anyhow::bail!("--set `{pair}` is not NAME=VALUE"),
        }
    }
    let target = match (args.pid, args.cgroup) {
        (Some(pid), _) => Target::Pid(pid),
        (None, Some(cg)) => Target::Cgroup(cg),
        (None, None) => anyhow::bail!("give --pid or --cgroup"),
    };
    let probe = match args.probe {
        Some(p) => p,
        None => {
            let addr = listening_address(&target)?;
            let note = format!(
                "chaos checkup: probing {addr}, where the service listens (--probe to change)"
            );
            if args.json {
                eprintln!("{note}");
            } else {
                println!("{note}");
            }
            addr.to_string()
        }
    };
    let plan = checkup::plan(Request {
        profile,
        target,
        probe,
        traffic: args.traffic,
        set,
    })?;
    if args.dry_run {
        for d in &plan.drills {
            println!("run   {} ({})", d.scenario.id, d.scenario.severity.as_str());
            for (k, v) in &d.values {
                println!("        {k} = {} ({})", v.value, v.source);
            }
        }
        for s in &plan.skipped {
            println!("skip  {}: {}", s.scenario, s.reason);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let injector = Injector::new()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let json = args.json;
    if !json {
        println!(
            "chaos checkup: {} drills for {}, {} skipped; each is admitted, run and recovered \
             before the next",
            plan.drills.len(),
            profile.as_str(),
            plan.skipped.len()
        );
    }
    let on_event: Box<dyn Fn(&Event)> = Box::new(move |e| {
        if json {
            if let Ok(line) = serde_json::to_string(e) {
                println!("{line}");
            }
        } else {
            match e {
                Event::Drill {
                    n,
                    of,
                    scenario,
                    severity,
                } => println!("[{n}/{of}] {scenario} ({})…", severity.as_str()),
                Event::Finding {
                    outcome, detail, ..
                } => println!(
                    "        {}: {detail}",
                    outcome.map_or("not run", |o| o.as_str())
                ),
            }
        }
    });
    let report = checkup::run(
        plan,
        &injector,
        checkup::Options {
            worker_exe: std::env::current_exe()
                .context("finding the chaos binary (it runs the traffic workers)")?,
            stop,
            report_dir: args.report_dir.clone(),
            min_score: args.min_score,
            on_event,
        },
    )?;
    let (json_path, html_path) = checkup::write_report(&args.report_dir, &report)?;
    let text = checkup::page::summary(&report);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "event": "done",
                "score": report.score,
                "passed": report.passed,
                "report": json_path.display().to_string(),
            })
        );
        eprint!("{text}");
    } else {
        println!();
        print!("{text}");
        println!(
            "report: {} and {}",
            json_path.display(),
            html_path.display()
        );
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// Where the target listens: its main TCP socket (`discover::procfs::main_listener`).
fn listening_address(target: &Target) -> anyhow::Result<std::net::SocketAddr> {
    let pids = match target {
        Target::Pid(pid) => chaos_user::discover::procfs::service(*pid),
        Target::Cgroup(cg) => chaos_user::checkup::facts::cgroup_pids(cg),
    };
    chaos_user::discover::procfs::main_listener(&pids).with_context(|| {
        format!(
            "the service ({target:?}) listens on no TCP socket; give its health endpoint with \
             --probe HOST:PORT or --probe http://HOST:PORT/PATH"
        )
    })
}
