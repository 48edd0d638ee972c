//! `chaos exec`: run a command under a syscall fault (seccomp user notification).

use std::process::ExitCode;

use chaos_user::{
    exec::{self, ExecReport},
    plan::{MAX_DURATION, PlannedFault, plan_exec},
    spec::{SyscallAction, SyscallSpec},
};

use super::inject::SyscallSelect;

/// Arguments of `chaos exec`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example: chaos exec syscall fail --syscall openat --errno EACCES \
                  --path-prefix /var/lib/db -- postgres -D /var/lib/db"
)]
pub struct Args {
    /// How long the fault acts (30s, 5m); default: as long as the command runs (7 days at most).
    #[arg(long, global = true)]
    duration: Option<String>,
    /// Print the report as JSON on stdout (instead of one line on stderr).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    family: Family,
}

#[derive(clap::Subcommand, Debug)]
enum Family {
    /// Syscall faults.
    Syscall {
        #[command(subcommand)]
        action: Action,
    },
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Make the selected calls return an error without running.
    Fail {
        /// The error: a name (EIO, ENOSPC, EACCES) or a number.
        #[arg(long)]
        errno: Option<String>,
        #[command(flatten)]
        filter: Filter,
    },
    /// Run the selected calls late.
    Delay {
        /// How late, e.g. 200ms (at most 60s).
        #[arg(long)]
        latency: Option<String>,
        #[command(flatten)]
        filter: Filter,
    },
}

/// Which calls of the command a fault selects, and the command.
#[derive(clap::Args, Debug)]
struct Filter {
    #[command(flatten)]
    select: SyscallSelect,
    /// Not for chaos exec (its command is the target); accepted only to say so.
    #[arg(long, hide = true)]
    pid: Option<u32>,
    /// Not for chaos exec; accepted only to say so.
    #[arg(long, hide = true)]
    cgroup: Option<String>,
    /// Not for chaos exec; accepted only to say so.
    #[arg(long, hide = true)]
    comm: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

impl Filter {
    fn into_spec(
        self,
        action: SyscallAction,
        duration: Option<String>,
    ) -> (SyscallSpec, Vec<String>) {
        let spec = SyscallSpec {
            pid: self.pid,
            cgroup: self.cgroup,
            comm: self.comm,
            ..self.select.into_spec(action, duration)
        };
        (spec, self.command)
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Under exec the command's lifetime bounds the fault, so no 10-minute default.
    let duration = Some(
        args.duration
            .unwrap_or_else(|| humantime::format_duration(MAX_DURATION).to_string()),
    );
    let Family::Syscall { action } = args.family;
    let (spec, command) = match action {
        Action::Fail { errno, filter } => {
            let (spec, command) = filter.into_spec(SyscallAction::Fail, duration);
            (SyscallSpec { errno, ..spec }, command)
        }
        Action::Delay { latency, filter } => {
            let (spec, command) = filter.into_spec(SyscallAction::Delay, duration);
            (SyscallSpec { latency, ..spec }, command)
        }
    };
    let plan = plan_exec(&spec)?;
    let report: ExecReport = exec::exec(&plan, &command)?;
    if args.json {
        super::print_json(&report)?;
    } else if let PlannedFault::Syscall(sp) = &plan.fault {
        eprintln!("{}", exec::summary(&report, sp));
    }
    // Exit codes are 0-255; 128 + signal stays within that.
    Ok(ExitCode::from(report.exit.shell_code().clamp(0, 255) as u8))
}
