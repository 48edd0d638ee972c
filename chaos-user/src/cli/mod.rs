//! Subcommands, one file each.

mod catalog;
mod checkup;
mod client;
mod discover;
mod exec;
mod inject;
mod iostat;
mod list;
mod probe;
mod recover;
mod run;
mod serve;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A fault injector for chaos drills: network, syscall and block I/O faults made with eBPF,
/// precisely targeted, with in-kernel deadlines and full recovery.
#[derive(Parser, Debug)]
#[command(name = "chaos", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    server: client::ServerArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show what the running kernel allows and which strategy serves each fault kind.
    Probe(probe::Args),
    /// Arm a fault.
    Inject(Box<inject::Args>),
    /// Run a command under a syscall fault (seccomp user notification), until it exits.
    Exec(Box<exec::Args>),
    /// List armed faults with their counters.
    #[command(alias = "ls")]
    List(list::ListArgs),
    /// Show one fault with its counters.
    Status(list::StatusArgs),
    /// Recover a fault, or every trace of the injector with --all.
    Recover(recover::Args),
    /// Measure one device's block I/O per interval, by cgroup and operation.
    Iostat(iostat::Args),
    /// Run a drill from its file or the catalog (--scenario): admission, traffic, faults,
    /// measurements, recovery, report.
    Run(run::Args),
    /// The risk catalog: known risks of databases, caches, queues and any service, each a
    /// drill ready for `chaos run --scenario ID`.
    Catalog(catalog::Args),
    /// Try the catalog's risks for a kind of system on a live service, one drill at a time,
    /// and score its health 0-100 with findings and advice.
    Checkup(Box<checkup::Args>),
    /// Watch a live service with eBPF (files it writes and syncs, devices, ports, clients,
    /// peers, DNS) and propose the catalog scenarios that apply, filled in.
    Discover(discover::Args),
    /// Run the built-in drill: every fault family this kernel can make on a workload chaos
    /// builds, measured, recovered and reported.
    Demo(run::DemoArgs),
    /// Serve the injector over HTTP: a unix socket by default, TCP with a token.
    Serve(serve::Args),
    /// Continue processes stopped by delay faults (started by chaos itself).
    #[command(name = "keep-delays", hide = true)]
    KeepDelays,
    /// Recover cgroup and fill faults at their deadlines (started by chaos itself).
    #[command(name = "keep-deadlines", hide = true)]
    KeepDeadlines,
    /// Run one traffic generator of a drill (started by `chaos run`).
    #[command(name = "__traffic-worker", hide = true)]
    TrafficWorker,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Faults armed from here are the command line's (`chaos serve` says it is a daemon).
    chaos_user::store::Owner::set_process_kind(chaos_user::store::OwnerKind::Cli);
    let served = matches!(
        cli.command,
        Command::Probe(_)
            | Command::Inject(_)
            | Command::List(_)
            | Command::Status(_)
            | Command::Recover(_)
    );
    if !served && cli.server.given() {
        anyhow::bail!(
            "--server, --token-file and --ca-cert are for inject, list, status, recover and \
             probe; run other commands on the daemon's host"
        );
    }
    // CHAOS_SERVER applies to the served commands only: a shell that sets it can still run
    // `chaos serve` or `chaos run`.
    let backend = || client::Backend::from_args(&cli.server);
    match cli.command {
        Command::Probe(a) => probe::run(a, backend()?),
        Command::Inject(a) => inject::run(*a, backend()?),
        Command::Exec(a) => exec::run(*a),
        Command::List(a) => list::run_list(a, backend()?),
        Command::Status(a) => list::run_status(a, backend()?),
        Command::Recover(a) => recover::run(a, backend()?),
        Command::Run(a) => run::run(a),
        Command::Demo(a) => run::demo(a),
        Command::Catalog(a) => catalog::run(a),
        Command::Checkup(a) => checkup::run(*a),
        Command::Discover(a) => discover::run(a),
        Command::Iostat(a) => iostat::run(a),
        Command::Serve(a) => serve::run(a),
        Command::KeepDelays => {
            let store = chaos_user::store::Store::open_default()?;
            chaos_user::backend::keeper::run(&store)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::KeepDeadlines => {
            let store = chaos_user::store::Store::open_default()?;
            chaos_user::backend::deadline::run(&store)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::TrafficWorker => worker::run(),
    }
}

/// Prints `value` as pretty JSON.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Formats ms since the epoch as RFC 3339 (UTC, seconds).
fn rfc3339(unix_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    humantime::format_rfc3339_seconds(t).to_string()
}
