//! `chaos inject`.

use std::{
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chaos_user::{
    FaultSpec, Injector,
    spec::{Direction, NetFault, NetLoss},
};

/// Arguments of `chaos inject`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    family: Family,
    /// Print the result as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Stay in the foreground with live counters; recover on exit or Ctrl-C.
    #[arg(long, global = true)]
    foreground: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Family {
    /// Network faults.
    Net {
        #[command(subcommand)]
        action: NetAction,
    },
}

#[derive(clap::Subcommand, Debug)]
enum NetAction {
    /// Drop a share of the packets.
    Loss(LossArgs),
}

#[derive(clap::Args, Debug)]
struct LossArgs {
    /// Share of packets to drop, 0-100.
    #[arg(long, allow_negative_numbers = true)]
    percent: f64,
    /// Interface to act on.
    #[arg(long)]
    interface: String,
    /// Network namespace of the interface: a name from `ip netns list` or a path.
    #[arg(long)]
    netns: Option<String>,
    /// Which packets: egress, ingress or both.
    #[arg(long, value_enum, default_value = "egress")]
    direction: DirectionArg,
    /// How long the fault lasts (30s, 5m, 1h); the kernel ends it on time even if chaos dies.
    #[arg(long)]
    duration: String,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum DirectionArg {
    Egress,
    Ingress,
    Both,
}

impl From<DirectionArg> for Direction {
    fn from(d: DirectionArg) -> Self {
        match d {
            DirectionArg::Egress => Direction::Egress,
            DirectionArg::Ingress => Direction::Ingress,
            DirectionArg::Both => Direction::Both,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let spec = match args.family {
        Family::Net {
            action: NetAction::Loss(l),
        } => FaultSpec::Net(NetFault::Loss(NetLoss {
            percent: l.percent,
            interface: l.interface,
            netns: l.netns,
            direction: l.direction.into(),
            duration: l.duration,
        })),
    };
    let injector = Injector::new()?;
    let armed = injector.inject(&spec)?;
    if args.json {
        super::print_json(&armed)?;
    } else {
        println!(
            "{}  {} armed with {}, ends {}",
            armed.id,
            spec.name(),
            armed.strategy.describe(),
            super::rfc3339(armed.deadline_unix_ms)
        );
    }
    if !args.foreground {
        return Ok(ExitCode::SUCCESS);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let json = args.json;
    let last = injector.hold(
        &armed.id,
        Duration::from_secs(1),
        |s| {
            if let Some(c) = s.counters {
                if json {
                    let _ = super::print_json(&s);
                } else {
                    println!(
                        "{}  seen {:>9}  matched {:>9}  acted {:>9}  {:>5}s left",
                        s.record.id,
                        c.seen,
                        c.matched,
                        c.acted,
                        s.remaining_s()
                    );
                }
            }
        },
        || stop.load(Ordering::Relaxed),
    )?;
    if !json {
        println!("{}  recovered", last.record.id);
    }
    Ok(ExitCode::SUCCESS)
}
