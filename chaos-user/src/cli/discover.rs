//! `chaos discover --pid PID [--seconds N]`: what a live service writes, syncs, listens on and
//! talks to, and the catalog scenarios that apply, filled in (`docs/discover.md`).

use std::{fmt::Write as _, process::ExitCode, time::Duration};

use chaos_user::discover::{self, Discovery, MAX_SECONDS, Observation};

/// Arguments of `chaos discover`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The service's main process; its descendants are watched too.
    #[arg(long)]
    pid: u32,
    /// How long to watch. Give it time to do its usual work (writes, syncs, clients).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_SECONDS))]
    seconds: u64,
    /// The discovery as JSON.
    #[arg(long)]
    json: bool,
    /// Files and directories shown (the rest are counted).
    #[arg(long, default_value_t = 8)]
    top: usize,
}

/// `chaos discover`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let stop = super::run::stop_on_signals()?;
    if !args.json {
        eprintln!(
            "chaos discover: watching pid {} and its descendants for {} s (Ctrl-C ends it early)",
            args.pid, args.seconds
        );
    }
    let d = discover::discover(args.pid, Duration::from_secs(args.seconds), &stop)?;
    if args.json {
        super::print_json(&d)?;
    } else {
        print!("{}", render(&d, args.top));
    }
    Ok(ExitCode::SUCCESS)
}

fn observation(o: &Observation, top: usize, out: &mut String) -> std::fmt::Result {
    writeln!(
        out,
        "pid {} ({}, {}) looks like: {}; watched {:.1} s, {} processes, {} events{}",
        o.pid,
        o.comm,
        o.exe,
        o.domain.as_str(),
        o.seconds,
        o.processes.len(),
        o.events,
        if o.lost_events > 0 {
            format!(" ({} lost: counts are lower bounds)", o.lost_events)
        } else {
            String::new()
        }
    )?;
    if let Some(cwd) = &o.cwd {
        writeln!(out, "  working directory: {}", cwd.display())?;
    }
    if let Some(cg) = &o.cgroup {
        writeln!(out, "  cgroup: {cg}")?;
    }
    writeln!(out, "\ndirectories written (most synced first):")?;
    if o.directories.is_empty() {
        writeln!(out, "  none seen")?;
    }
    for d in o.directories.iter().take(top) {
        writeln!(
            out,
            "  {:<48} {:>4} files {:>8} writes {:>7} syncs  {}",
            d.path.display(),
            d.files,
            d.writes,
            d.syncs,
            d.device.as_deref().unwrap_or("-")
        )?;
    }
    if o.directories.len() > top {
        writeln!(
            out,
            "  ... {} more (--top, --json)",
            o.directories.len() - top
        )?;
    }
    writeln!(out, "\nfiles (most synced first):")?;
    for f in o.files.iter().take(top) {
        writeln!(
            out,
            "  {:<60} {:>8} writes {:>7} syncs",
            f.path.display(),
            f.usage.writes,
            f.usage.syncs
        )?;
    }
    if o.files.len() > top {
        writeln!(out, "  ... {} more", o.files.len() - top)?;
    }
    writeln!(out, "\nnetwork:")?;
    for l in &o.listening {
        writeln!(
            out,
            "  listens on {:?} {} ({} connections seen)",
            l.proto, l.address, l.connections
        )?;
    }
    for c in &o.clients {
        writeln!(
            out,
            "  client {} ({} connections)",
            c.address.ip(),
            c.connections
        )?;
    }
    for p in &o.outgoing {
        writeln!(
            out,
            "  connects to {} ({} connections)",
            p.address, p.connections
        )?;
    }
    for d in &o.dns {
        writeln!(
            out,
            "  DNS server {} ({} queries)",
            d.address.ip(),
            d.connections
        )?;
    }
    if o.listening.is_empty() && o.outgoing.is_empty() && o.dns.is_empty() {
        writeln!(out, "  nothing seen")?;
    }
    Ok(())
}

/// The discovery as text: what was seen, the values found, the scenarios.
pub fn render(d: &Discovery, top: usize) -> String {
    let mut out = String::new();
    let _ = observation(&d.observation, top, &mut out);
    let _ = (|| -> std::fmt::Result {
        writeln!(out, "\nvalues found:")?;
        for (name, f) in &d.values {
            writeln!(out, "  {name:<16} {:<32} {}", f.value, f.source)?;
        }
        let ready = d.proposals.iter().filter(|p| p.ready()).count();
        writeln!(
            out,
            "\nscenarios: {ready} ready to run, {} need values",
            d.proposals.len() - ready
        )?;
        for p in &d.proposals {
            writeln!(
                out,
                "  [{}] {} - {}",
                p.severity.as_str(),
                p.scenario,
                p.title
            )?;
            match &p.command {
                Some(c) => writeln!(out, "      {c}")?,
                None if !p.missing.is_empty() => {
                    writeln!(out, "      give: {}", p.missing.join(", "))?;
                }
                None => {
                    for problem in &p.problems {
                        writeln!(out, "      not valid with the values found: {problem}")?;
                    }
                }
            }
        }
        if let Some(c) = &d.checkup {
            writeln!(out, "\nhealth check:\n  {c}")?;
        }
        Ok(())
    })();
    out
}
