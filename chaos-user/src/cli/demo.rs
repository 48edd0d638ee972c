//! `chaos demo`.

use std::{
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
};

use chaos_user::{
    Injector,
    demo::{self, Event},
};

/// Arguments of `chaos demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Loss to inject, percent.
    #[arg(long, default_value_t = 30.0)]
    percent: f64,
    /// How long the fault lasts.
    #[arg(long, default_value = "6s")]
    duration: String,
    /// Write the report as JSON to this directory (report.json).
    #[arg(long)]
    report_dir: Option<std::path::PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let fault = chaos_user::plan::parse_duration("duration", &args.duration)?;
    chaos_user::plan::check_percent("percent", args.percent)?;
    let injector = Injector::new()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let opts = demo::Options {
        percent: args.percent,
        fault,
        ..Default::default()
    };
    println!(
        "chaos demo: {}% packet loss for {} on a veth between two test namespaces (kernel {})",
        opts.percent,
        humantime::format_duration(fault),
        injector.probe().kernel
    );
    let report = demo::run(
        &injector,
        &opts,
        |e| match e {
            Event::Phase(name) => println!("-- {name}"),
            Event::Armed { id, strategy } => println!("   armed {id} with {strategy}"),
            Event::Tick {
                counters,
                remaining_s,
            } => println!(
                "   seen {:>7}  matched {:>7}  dropped {:>7}  {remaining_s:>3}s left",
                counters.seen, counters.matched, counters.acted
            ),
        },
        &stop,
    )?;
    println!(
        "\n{:<10} {:>8} {:>9} {:>8}",
        "phase", "sent", "received", "loss"
    );
    for p in &report.phases {
        println!(
            "{:<10} {:>8} {:>9} {:>7.2}%",
            p.name, p.sent, p.received, p.loss_percent
        );
    }
    println!();
    for v in &report.verdicts {
        println!("[{}] {}", if v.ok { "ok" } else { "FAIL" }, v.check);
    }
    if let Some(dir) = &args.report_dir {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("report.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
        println!("\nreport: {}", path.display());
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
