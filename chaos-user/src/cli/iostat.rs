//! `chaos iostat`: block I/O of one device per interval, by cgroup and operation, from the
//! block tracepoints. Watches the device while it runs and leaves no trace after.

use std::{
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use chaos_user::{
    iostat::{self, CgroupNames, Device, IoRow, IoStats, Owner, Snapshot},
    privilege,
    store::Store,
};

/// Arguments of `chaos iostat`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The device: /dev/X, MAJ:MIN, or a path on its file system. A whole disk counts its
    /// partitions too.
    #[arg(long)]
    device: String,
    /// Length of each interval (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s")]
    interval: String,
    /// Stop after this many intervals (default: until interrupted).
    #[arg(long)]
    count: Option<u64>,
    /// Print one JSON object per interval, one per line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    privilege::check(privilege::INJECT)?;
    let interval = chaos_user::plan::parse_duration("interval", &args.interval)?;
    let device = Device::resolve(&args.device)?;
    let store = Store::open_default()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let watch = {
        let _lock = store.lock()?;
        // Watches of processes that died without removing theirs go first.
        iostat::prune_locked(&store)?;
        iostat::release_locked(&store)?;
        iostat::watch_locked(&store, &device, Owner::this_process()?)?
    };
    let measured = measure(&store, &device, &watch.id, interval, &args, &stop);
    let released = iostat::unwatch(&store, &watch.id);
    measured?;
    released?;
    Ok(ExitCode::SUCCESS)
}

/// Prints an interval's figures until `count` intervals, a signal, or the watch is removed
/// (`chaos recover --all`).
fn measure(
    store: &Store,
    device: &Device,
    watch: &str,
    interval: Duration,
    args: &Args,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut names = CgroupNames::new();
    let mut before = Snapshot::take(device)?;
    let mut printed = 0u64;
    while args.count.is_none_or(|n| printed < n) {
        let until = Instant::now() + interval;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if !store.watches()?.iter().any(|w| w.id == watch) {
            anyhow::bail!("the watch of {device} was removed (chaos recover --all)");
        }
        let after = Snapshot::take(device)?;
        let stats = IoStats::between(Some(&before), &after, &mut names);
        if args.json {
            println!("{}", serde_json::to_string(&stats)?);
        } else {
            print_table(&stats);
        }
        before = after;
        printed += 1;
    }
    Ok(())
}

fn print_table(s: &IoStats) {
    let untracked = match s.untracked {
        0 => String::new(),
        n => format!("  {n} untracked"),
    };
    println!(
        "{}  {:.2} s  {} ops  {:.1} IOPS  {:.2} MB/s  {} errors{untracked}",
        s.device,
        s.interval_ms as f64 / 1000.0,
        s.total.ops,
        s.total.iops,
        s.total.bytes_per_s / 1e6,
        s.total.errors
    );
    if s.rows.is_empty() {
        println!();
        return;
    }
    println!(
        "  {:<8} {:<32} {:>8} {:>9} {:>9} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "op", "cgroup", "ops", "iops", "MB/s", "errors", "mean µs", "p50", "p90", "p99", "max"
    );
    for r in &s.rows {
        println!("  {}", row(r));
    }
    println!();
}

fn row(r: &IoRow) -> String {
    let cgroup = match (&r.cgroup, r.cgroup_id) {
        (Some(path), _) => path.clone(),
        (None, Some(0)) | (None, None) => "?".to_owned(),
        (None, Some(id)) => format!("id {id}"),
    };
    format!(
        "{:<8} {:<32} {:>8} {:>9.1} {:>9.2} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
        r.op.as_deref().unwrap_or("all"),
        cgroup,
        r.ops,
        r.iops,
        r.bytes_per_s / 1e6,
        r.errors,
        r.mean_us,
        r.p50_us,
        r.p90_us,
        r.p99_us,
        r.max_us
    )
}
