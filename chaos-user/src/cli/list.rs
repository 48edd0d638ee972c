//! `chaos list` and `chaos status`.

use std::process::ExitCode;

use chaos_user::{Injector, Status};

use super::client::Backend;

/// Arguments of `chaos list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `chaos status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Fault id, as printed by `chaos inject` or `chaos list`.
    id: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Listing needs no probe: only the store and the pinned maps.
fn injector() -> anyhow::Result<Injector> {
    Ok(Injector::without_probe()?)
}

fn line(s: &Status) -> String {
    let c = s.counters.unwrap_or_default();
    format!(
        "{:<11} {:<15} {:<8} {:<22} {:>9} {:>9} {:>9}  {}",
        s.record.id,
        s.record.spec.name(),
        if s.expired { "expired" } else { "armed" },
        s.record.strategy.to_string(),
        c.seen,
        c.matched,
        c.acted,
        if s.expired {
            "recover to remove".to_owned()
        } else {
            format!("{}s left", s.remaining_s())
        }
    )
}

const HEADER: &str =
    "id          fault           state    strategy                    seen   matched     acted";

pub fn run_list(args: ListArgs, backend: Backend) -> anyhow::Result<ExitCode> {
    let statuses = match backend {
        Backend::Local => injector()?.list()?,
        Backend::Daemon(d) => d.list()?,
    };
    if args.json {
        super::print_json(&statuses)?;
    } else if statuses.is_empty() {
        println!("no faults armed");
    } else {
        println!("{HEADER}");
        for s in &statuses {
            println!("{}", line(s));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_status(args: StatusArgs, backend: Backend) -> anyhow::Result<ExitCode> {
    let s = match backend {
        Backend::Local => injector()?.status(&args.id)?,
        Backend::Daemon(d) => d.status(&args.id)?,
    };
    if args.json {
        super::print_json(&s)?;
    } else {
        println!("{HEADER}\n{}", line(&s));
        println!("spec: {}", serde_json::to_string(&s.record.spec)?);
        println!("ends: {}", super::rfc3339(s.record.deadline_unix_ms));
        for io in &s.io {
            let t = &io.total;
            println!(
                "io: {} over {:.1} s: {} ops ({:.1} IOPS), {} errors, latency p50 {:.1} µs, p99 \
                 {:.1} µs, max {:.1} µs",
                io.device,
                io.interval_ms as f64 / 1000.0,
                t.ops,
                t.iops,
                t.errors,
                t.p50_us,
                t.p99_us,
                t.max_us
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
