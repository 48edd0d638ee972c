//! `chaos inject`.

use std::{
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use super::client::Backend;
use chaos_user::{
    FaultSpec, Injector,
    spec::{
        Direction, DiskAction, DiskSpec, Distribution, IoAction, IoOp, IoSpec, NetAction, NetSpec,
        Proto, SyscallAction, SyscallSpec,
    },
};

/// The flags `inject` uses once the spec is built.
struct LocalArgs {
    json: bool,
    foreground: bool,
    dry_run: bool,
}

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
    /// Validate, plan and choose the strategy, print what would be armed, and arm nothing.
    #[arg(long, global = true)]
    dry_run: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Family {
    /// Network faults.
    Net {
        #[command(subcommand)]
        action: NetCommand,
    },
    /// Syscall faults.
    Syscall {
        #[command(subcommand)]
        action: SyscallCommand,
    },
    /// Block I/O faults.
    Io {
        #[command(subcommand)]
        action: IoCommand,
    },
    /// Disk space faults.
    Disk {
        #[command(subcommand)]
        action: DiskCommand,
    },
    /// A fault given as one JSON spec, e.g. {"kind": "net", "action": "loss", "percent": 30,
    /// "interface": "eth0", "duration": "60s"}: the fields are the flags' names, with `_` for `-`.
    Spec {
        /// The file holding the spec; `-` reads standard input.
        file: String,
    },
}

/// `chaos inject io ACTION`.
#[derive(clap::Subcommand, Debug)]
enum IoCommand {
    /// Make block I/O fail with EIO (a device's, in the block layer; or file I/O under --path).
    Fail {
        /// The device: /dev/X, MAJ:MIN, or a path on its filesystem.
        #[arg(long)]
        device: Option<String>,
        /// Instead of a device: file I/O under this directory.
        #[arg(long)]
        path: Option<String>,
        /// Which operations.
        #[arg(long, value_enum)]
        op: Option<IoOpArg>,
        /// The error (a failed block I/O reaches callers as EIO; other errnos need --path).
        #[arg(long)]
        errno: Option<String>,
        /// Share of the selected I/O that fails, 0-100 (default 100).
        #[arg(long, allow_negative_numbers = true)]
        percent: Option<f64>,
        /// Only I/O touching these 512-byte sectors, A-B.
        #[arg(long)]
        sector_range: Option<String>,
        #[command(flatten)]
        target: IoTarget,
    },
    /// Throttle a target's I/O to a disk.
    Slow {
        /// The whole disk: /dev/X, MAJ:MIN, or a path on its filesystem.
        #[arg(long)]
        device: String,
        /// Read bandwidth, e.g. 2mb (per second).
        #[arg(long)]
        read_bps: Option<String>,
        /// Write bandwidth, e.g. 2mb (per second).
        #[arg(long)]
        write_bps: Option<String>,
        /// Read operations per second.
        #[arg(long)]
        read_iops: Option<u64>,
        /// Write operations per second.
        #[arg(long)]
        write_iops: Option<u64>,
        #[command(flatten)]
        target: IoTarget,
    },
    /// Stall a target's I/O to a disk until the fault ends.
    Hang {
        /// The whole disk: /dev/X, MAJ:MIN, or a path on its filesystem.
        #[arg(long)]
        device: String,
        #[command(flatten)]
        target: IoTarget,
    },
}

/// Whose I/O, and for how long.
#[derive(clap::Args, Debug)]
struct IoTarget {
    /// This process.
    #[arg(long)]
    pid: Option<u32>,
    /// The processes of this cgroup (in the io or blkio hierarchy).
    #[arg(long)]
    cgroup: Option<String>,
    /// Override the guards (the host's own disks, pid 1, the root cgroup).
    #[arg(long)]
    force: bool,
    /// How long the fault lasts (30s, 5m, 1h); 10m if not given.
    #[arg(long)]
    duration: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum IoOpArg {
    Read,
    Write,
    Flush,
    Discard,
    Any,
}

/// `chaos inject disk ACTION`.
#[derive(clap::Subcommand, Debug)]
enum DiskCommand {
    /// Fill a filesystem, leaving the space asked (or, --virtual, make the target's writes
    /// fail with ENOSPC and take nothing).
    Fill {
        /// A directory on the filesystem; the fill files go here.
        #[arg(long)]
        path: String,
        /// Fill until it is this full, as df shows it (0-100).
        #[arg(long, allow_negative_numbers = true)]
        percent: Option<f64>,
        /// Take this much, e.g. 10G.
        #[arg(long)]
        bytes: Option<String>,
        /// Leave this much free, e.g. 100M.
        #[arg(long)]
        free: Option<String>,
        /// Take nothing: writes under --path by the target fail with ENOSPC.
        #[arg(long = "virtual")]
        virtual_fill: bool,
        #[command(flatten)]
        target: IoTarget,
    },
}

fn io_spec(cmd: IoCommand) -> IoSpec {
    let with_target = |action, t: IoTarget| IoSpec {
        action,
        pid: t.pid,
        cgroup: t.cgroup,
        force: t.force,
        duration: t.duration,
        ..IoSpec::default()
    };
    match cmd {
        IoCommand::Fail {
            device,
            path,
            op,
            errno,
            percent,
            sector_range,
            target,
        } => IoSpec {
            device,
            path,
            op: op.map(|o| match o {
                IoOpArg::Read => IoOp::Read,
                IoOpArg::Write => IoOp::Write,
                IoOpArg::Flush => IoOp::Flush,
                IoOpArg::Discard => IoOp::Discard,
                IoOpArg::Any => IoOp::Any,
            }),
            errno,
            percent,
            sector_range,
            ..with_target(IoAction::Fail, target)
        },
        IoCommand::Slow {
            device,
            read_bps,
            write_bps,
            read_iops,
            write_iops,
            target,
        } => IoSpec {
            device: Some(device),
            read_bps,
            write_bps,
            read_iops,
            write_iops,
            ..with_target(IoAction::Slow, target)
        },
        IoCommand::Hang { device, target } => IoSpec {
            device: Some(device),
            ..with_target(IoAction::Hang, target)
        },
    }
}

fn disk_spec(cmd: DiskCommand) -> DiskSpec {
    match cmd {
        DiskCommand::Fill {
            path,
            percent,
            bytes,
            free,
            virtual_fill,
            target,
        } => DiskSpec {
            action: DiskAction::Fill,
            path,
            percent,
            bytes,
            free,
            virtual_fill,
            pid: target.pid,
            cgroup: target.cgroup,
            force: target.force,
            duration: target.duration,
        },
    }
}

/// `chaos inject syscall ACTION`.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum SyscallCommand {
    /// Make the calls fail with an errno instead of running.
    Fail {
        /// The error, by name or number (EIO, ENOSPC, 5).
        #[arg(long)]
        errno: String,
        #[command(flatten)]
        calls: SyscallCalls,
        #[command(flatten)]
        target: SyscallTargetArgs,
    },
    /// Run the calls late.
    Delay {
        /// How late, e.g. 200ms.
        #[arg(long)]
        latency: String,
        #[command(flatten)]
        calls: SyscallCalls,
        #[command(flatten)]
        target: SyscallTargetArgs,
    },
    /// Send a signal (SIGKILL by default) to the caller at the call.
    Kill {
        /// The signal, by name or number (SIGKILL, TERM, 6).
        #[arg(long)]
        signal: Option<String>,
        #[command(flatten)]
        calls: SyscallCalls,
        #[command(flatten)]
        target: SyscallTargetArgs,
    },
    /// Stop the caller (SIGSTOP) at the call; recovery continues it.
    Stop {
        #[command(flatten)]
        calls: SyscallCalls,
        #[command(flatten)]
        target: SyscallTargetArgs,
    },
}

/// Which calls a syscall fault selects and how often: shared by `chaos inject syscall` and
/// `chaos exec`.
#[derive(clap::Args, Debug)]
pub(crate) struct SyscallSelect {
    /// System calls by name or x86_64 number, comma separated or repeated (openat,fsync).
    #[arg(long = "syscall")]
    pub(crate) syscalls: Vec<String>,
    /// Share of the selected calls acted on, 0-100 (default 100).
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) percent: Option<f64>,
    /// Only calls on files under this directory (file calls only).
    #[arg(long)]
    pub(crate) path_prefix: Option<String>,
    /// Let the first N selected calls through.
    #[arg(long)]
    pub(crate) after: Option<u64>,
    /// Act on every Nth selected call (after --after).
    #[arg(long)]
    pub(crate) every: Option<u64>,
    /// Act at most this many times.
    #[arg(long)]
    pub(crate) max_count: Option<u64>,
}

impl SyscallSelect {
    /// A spec for `action` with these selectors; the caller fills the rest.
    pub(crate) fn into_spec(self, action: SyscallAction, duration: Option<String>) -> SyscallSpec {
        SyscallSpec {
            action,
            syscall: self.syscalls,
            percent: self.percent,
            path_prefix: self.path_prefix,
            after: self.after,
            every: self.every,
            max_count: self.max_count,
            duration,
            ..SyscallSpec::default()
        }
    }
}

/// Which calls a syscall fault selects, how often, and for how long.
#[derive(clap::Args, Debug)]
pub(crate) struct SyscallCalls {
    #[command(flatten)]
    select: SyscallSelect,
    /// How long the fault lasts (30s, 5m, 1h; 10m if not given); it ends on time even if chaos dies.
    #[arg(long)]
    duration: Option<String>,
}

/// Whose calls: exactly one of the three.
#[derive(clap::Args, Debug)]
pub(crate) struct SyscallTargetArgs {
    /// This process (all its threads).
    #[arg(long)]
    pid: Option<u32>,
    /// With --pid: also the processes it starts from now on.
    #[arg(long)]
    follow_children: bool,
    /// The processes of this cgroup v2 and those below it.
    #[arg(long)]
    cgroup: Option<String>,
    /// Processes with this name (as in /proc/PID/comm).
    #[arg(long)]
    comm: Option<String>,
    /// Override the guards (pid 1, the root cgroup, chaos itself).
    #[arg(long)]
    force: bool,
}

impl SyscallCommand {
    /// The spec this command asks for.
    pub(crate) fn into_spec(self) -> SyscallSpec {
        let (action, calls, target, errno, latency, signal) = match self {
            SyscallCommand::Fail {
                errno,
                calls,
                target,
            } => (SyscallAction::Fail, calls, target, Some(errno), None, None),
            SyscallCommand::Delay {
                latency,
                calls,
                target,
            } => (
                SyscallAction::Delay,
                calls,
                target,
                None,
                Some(latency),
                None,
            ),
            SyscallCommand::Kill {
                signal,
                calls,
                target,
            } => (SyscallAction::Kill, calls, target, None, None, signal),
            SyscallCommand::Stop { calls, target } => {
                (SyscallAction::Stop, calls, target, None, None, None)
            }
        };
        SyscallSpec {
            errno,
            latency,
            signal,
            pid: target.pid,
            follow_children: target.follow_children,
            cgroup: target.cgroup,
            comm: target.comm,
            force: target.force,
            ..calls.select.into_spec(action, calls.duration)
        }
    }
}

#[derive(clap::Subcommand, Debug)]
enum NetCommand {
    /// Drop a share of the packets (with --correlation, in bursts).
    Loss {
        #[command(flatten)]
        chance: Chance,
        #[command(flatten)]
        target: NetTarget,
    },
    /// Drop every selected packet, both directions by default.
    Partition {
        #[command(flatten)]
        target: NetTarget,
    },
    /// Delay packets.
    Delay {
        /// Added delay, e.g. 100ms.
        #[arg(long)]
        latency: String,
        /// Variation, e.g. 20ms.
        #[arg(long)]
        jitter: Option<String>,
        /// Shape of the variation.
        #[arg(long, value_enum)]
        distribution: Option<DistributionArg>,
        #[command(flatten)]
        target: NetTarget,
    },
    /// Limit the selected traffic's rate.
    Rate {
        /// e.g. 1mbit, 500kbit, 10mbps (bytes/s).
        #[arg(long)]
        rate: String,
        #[command(flatten)]
        target: NetTarget,
    },
    /// Flip a random bit in a share of the packets.
    Corrupt {
        #[command(flatten)]
        chance: Chance,
        #[command(flatten)]
        target: NetTarget,
    },
    /// Send a share of the packets twice.
    Duplicate {
        #[command(flatten)]
        chance: Chance,
        #[command(flatten)]
        target: NetTarget,
    },
    /// Send a share of the packets at once and delay the rest, so packets overtake each other.
    Reorder {
        /// Share sent at once, 0-100.
        #[arg(long, allow_negative_numbers = true)]
        percent: f64,
        /// Delay of the others, e.g. 10ms.
        #[arg(long)]
        latency: String,
        #[command(flatten)]
        target: NetTarget,
    },
}

/// How often a loss, corrupt or duplicate fault acts.
#[derive(clap::Args, Debug)]
struct Chance {
    /// Share of the selected packets, 0-100.
    #[arg(long, allow_negative_numbers = true)]
    percent: f64,
    /// How much each decision follows the previous one, 0-100 (bursts at the same average).
    #[arg(long, allow_negative_numbers = true)]
    correlation: Option<f64>,
}

impl Chance {
    fn into_spec(self, target: NetTarget, action: NetAction) -> NetSpec {
        NetSpec {
            percent: Some(self.percent),
            correlation: self.correlation,
            ..target.into_spec(action)
        }
    }
}

/// Which traffic a network fault selects, and for how long.
#[derive(clap::Args, Debug)]
struct NetTarget {
    /// Interface; default: the interfaces that route to --dst.
    #[arg(long)]
    interface: Option<String>,
    /// Network namespace of the interface: a name from `ip netns list` or a path.
    #[arg(long, conflicts_with = "target_pid")]
    netns: Option<String>,
    /// Act inside this process's network namespace (as a pod sidecar would).
    #[arg(long)]
    target_pid: Option<u32>,
    /// Which packets: egress, ingress or both (partition: both by default).
    #[arg(long, value_enum)]
    direction: Option<DirectionArg>,
    /// Destination address or CIDR, IPv4 or IPv6 (repeatable).
    #[arg(long)]
    dst: Vec<String>,
    /// Source address or CIDR (repeatable).
    #[arg(long)]
    src: Vec<String>,
    /// Destination port or range A-B.
    #[arg(long)]
    dport: Option<String>,
    /// Source port or range A-B.
    #[arg(long)]
    sport: Option<String>,
    /// Transport protocol.
    #[arg(long, value_enum)]
    proto: Option<ProtoArg>,
    /// Only the sockets of this cgroup v2 and those below it (repeatable). Inbound, it can
    /// only drop (loss, partition).
    #[arg(long)]
    cgroup: Vec<String>,
    /// Only the sockets this process holds when the fault is armed. Inbound, it can only drop.
    #[arg(long)]
    pid: Option<u32>,
    /// A port, address or CIDR never touched (repeatable). Port 22 is always kept unless --force.
    #[arg(long)]
    exclude: Vec<String>,
    /// Override the safety guards (port 22, an unfiltered 100% drop on the default route).
    #[arg(long)]
    force: bool,
    /// How long the fault lasts (30s, 5m, 1h; 10m if not given); it ends on time even if chaos dies.
    #[arg(long)]
    duration: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum DirectionArg {
    Egress,
    Ingress,
    Both,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ProtoArg {
    Tcp,
    Udp,
    Icmp,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum DistributionArg {
    Uniform,
    Normal,
    Pareto,
    Paretonormal,
}

impl NetTarget {
    fn into_spec(self, action: NetAction) -> NetSpec {
        NetSpec {
            action,
            interface: self.interface,
            netns: self.netns,
            target_pid: self.target_pid,
            direction: self.direction.map(|d| match d {
                DirectionArg::Egress => Direction::Egress,
                DirectionArg::Ingress => Direction::Ingress,
                DirectionArg::Both => Direction::Both,
            }),
            dst: self.dst,
            src: self.src,
            dport: self.dport,
            sport: self.sport,
            proto: self.proto.map(|p| match p {
                ProtoArg::Tcp => Proto::Tcp,
                ProtoArg::Udp => Proto::Udp,
                ProtoArg::Icmp => Proto::Icmp,
            }),
            cgroup: self.cgroup,
            pid: self.pid,
            exclude: self.exclude,
            force: self.force,
            duration: self.duration,
            ..NetSpec::default()
        }
    }
}

fn net_spec(cmd: NetCommand) -> NetSpec {
    match cmd {
        NetCommand::Loss { chance, target } => chance.into_spec(target, NetAction::Loss),
        NetCommand::Partition { target } => target.into_spec(NetAction::Partition),
        NetCommand::Delay {
            latency,
            jitter,
            distribution,
            target,
        } => NetSpec {
            latency: Some(latency),
            jitter,
            distribution: distribution.map(|d| match d {
                DistributionArg::Uniform => Distribution::Uniform,
                DistributionArg::Normal => Distribution::Normal,
                DistributionArg::Pareto => Distribution::Pareto,
                DistributionArg::Paretonormal => Distribution::Paretonormal,
            }),
            ..target.into_spec(NetAction::Delay)
        },
        NetCommand::Rate { rate, target } => NetSpec {
            rate: Some(rate),
            ..target.into_spec(NetAction::Rate)
        },
        NetCommand::Corrupt { chance, target } => chance.into_spec(target, NetAction::Corrupt),
        NetCommand::Duplicate { chance, target } => chance.into_spec(target, NetAction::Duplicate),
        NetCommand::Reorder {
            percent,
            latency,
            target,
        } => NetSpec {
            percent: Some(percent),
            latency: Some(latency),
            ..target.into_spec(NetAction::Reorder)
        },
    }
}

/// The spec in `file` (`-`: standard input).
fn read_spec(file: &str) -> anyhow::Result<FaultSpec> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| anyhow::anyhow!("reading the spec from standard input: {e}"))?
    } else {
        std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("reading spec {file}: {e}"))?
    };
    Ok(chaos_user::spec::from_json(&text)?)
}

pub fn run(args: Args, backend: Backend) -> anyhow::Result<ExitCode> {
    let spec = match args.family {
        Family::Net { action } => FaultSpec::Net(net_spec(action)),
        Family::Syscall { action } => FaultSpec::Syscall(action.into_spec()),
        Family::Io { action } => FaultSpec::Io(io_spec(action)),
        Family::Disk { action } => FaultSpec::Disk(disk_spec(action)),
        Family::Spec { file } => read_spec(&file)?,
    };
    let Backend::Daemon(daemon) = backend else {
        return run_local(args.json, args.foreground, args.dry_run, spec);
    };
    if args.dry_run || args.foreground {
        anyhow::bail!(
            "--dry-run and --foreground run in-process only; drop --server (and CHAOS_SERVER) \
             to use them"
        );
    }
    let armed = daemon.inject(&spec)?;
    print_armed(args.json, &spec, &armed)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints what `inject` armed.
fn print_armed(json: bool, spec: &FaultSpec, armed: &chaos_user::Armed) -> anyhow::Result<()> {
    if json {
        super::print_json(armed)?;
    } else {
        println!(
            "{}  {} armed with {}, ends {}",
            armed.id,
            spec.name(),
            armed.strategy.describe(),
            super::rfc3339(armed.deadline_unix_ms)
        );
    }
    Ok(())
}

/// `inject` with this process's own injector.
fn run_local(
    json: bool,
    foreground: bool,
    dry_run: bool,
    spec: FaultSpec,
) -> anyhow::Result<ExitCode> {
    let args = LocalArgs {
        json,
        foreground,
        dry_run,
    };
    let injector = Injector::new()?;
    if args.dry_run {
        let dry = injector.dry_run(&spec)?;
        if args.json {
            super::print_json(&dry)?;
        } else {
            println!(
                "dry run: {} for {} on {} would use {}; nothing armed",
                dry.fault,
                humantime::format_duration(Duration::from_millis(dry.duration_ms)),
                dry.acts_on,
                dry.strategy.describe(),
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let armed = injector.arm(&spec)?;
    print_armed(args.json, &spec, &armed)?;
    // The fault acts already; its packets now move to the cheaper TCX path before we exit.
    injector.hand_over_or_log();
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
