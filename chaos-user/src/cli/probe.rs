//! `chaos probe`.

use std::process::ExitCode;

use chaos_user::{privilege, probe, strategy};

use super::client::Backend;

/// Arguments of `chaos probe`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, backend: Backend) -> anyhow::Result<ExitCode> {
    let report = match backend {
        Backend::Local => {
            privilege::check(privilege::INJECT)?;
            let report = probe::run();
            // Fresh: also what the next commands reuse.
            probe::store(
                &chaos_user::store::Store::open_default()?.probe_cache(),
                &report,
            );
            report
        }
        // The daemon's probe, made when it started; the table follows from it as in-process.
        Backend::Daemon(d) => d.probe()?,
    };
    let kinds = strategy::table(&report);
    if args.json {
        super::print_json(&serde_json::json!({ "probe": report, "faults": kinds }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "kernel {}  (probed in {} ms)\n",
        report.kernel,
        report.elapsed.as_millis()
    );
    println!("{:<17} {:<32} {:<4} detail", "group", "feature", "ok");
    for row in &report.rows {
        let (group, label) = row.feature.label();
        println!(
            "{group:<17} {label:<32} {:<4} {}",
            if row.ok { "yes" } else { "no" },
            row.detail
        );
    }
    println!(
        "\n{:<40} {:<30} note",
        "fault kind", "strategy on this kernel"
    );
    for k in &kinds {
        let strategy = k.strategy.as_deref().unwrap_or("none");
        let mut note = k.note.clone();
        if !k.implemented {
            if !note.is_empty() {
                note.push_str("; ");
            }
            note.push_str("not yet implemented in this build");
        }
        println!("{:<40} {:<30} {}", k.kind, strategy, note);
    }
    Ok(ExitCode::SUCCESS)
}
