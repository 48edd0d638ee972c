//! `chaos recover`.

use std::process::ExitCode;

use chaos_user::Injector;

use super::client::Backend;

/// Arguments of `chaos recover`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["id", "all"])))]
pub struct Args {
    /// Fault id to recover.
    id: Option<String>,
    /// Recover every fault and remove every trace of the injector (after a crash too).
    #[arg(long)]
    all: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, backend: Backend) -> anyhow::Result<ExitCode> {
    let id = match (&args.id, args.all) {
        (_, true) => None,
        (Some(id), false) => Some(id.as_str()),
        (None, false) => unreachable!("clap requires an id or --all"),
    };
    let out = match backend {
        Backend::Local => {
            let injector = Injector::without_probe()?;
            match id {
                None => injector.recover_all()?,
                Some(id) => injector.recover(id)?,
            }
        }
        Backend::Daemon(d) => d.recover(id)?,
    };
    for u in &out.unreadable {
        eprintln!("warning: removed an unreadable state file: {u}");
    }
    for s in &out.swept {
        eprintln!("warning: removed {s}, which no record named");
    }
    if args.json {
        super::print_json(&out)?;
    } else if out.faults.is_empty() && out.attachments == 0 && out.swept.is_empty() {
        println!("nothing to recover");
    } else {
        println!(
            "recovered {} fault(s){}, detached {} attachment(s)",
            out.faults.len(),
            if out.faults.is_empty() {
                String::new()
            } else {
                format!(" ({})", out.faults.join(", "))
            },
            out.attachments
        );
    }
    Ok(ExitCode::SUCCESS)
}
