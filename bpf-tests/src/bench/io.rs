//! Block I/O rows: fio 4 KiB random direct reads on a device of the bench's own (`/dev/nullb0`
//! when the kernel has null_blk, else a loop device on a sparse file), with and without what
//! the injector puts on that device's path.
//!
//! Natively:
//! * `io.nonmatching_iops_ratio`: read IOPS with the measurement watching the device
//!   (`chaos_user::iostat`: the `block_rq_issue` / `block_rq_complete` programs count every
//!   read of it) against nothing of ours, paired trials in ABBA order (nothing then armed,
//!   armed then nothing, ...). The reads are a non-target's: no rule acts on them.
//! * `io.nonmatching_iops_ratio.floor`: the same with a program that does nothing on
//!   `block_rq_complete` (where ours runs on this device): what any program there costs.
//! * `io.prog_ns_per_io[.variant]`: the programs' own time per I/O (BPF run-time statistics),
//!   against the time per I/O of the whole path.
//!
//! * `io.nonmatching_iops_ratio.error_rule`: the same with an `io fail` rule on the device for
//!   another cgroup (and the fault's measurement), where bios can be failed (function error
//!   injection: the test kernel); skipped with the reason elsewhere.
//!
//! Each variant arms for one trial and disarms when its guard drops.

use std::{
    any::Any,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};
use chaos_user::{
    iostat::{self, Device, Owner},
    store::Store,
};
use libbpf_rs::{libbpf_sys, query::ProgInfoIter};
use serde_json::Value;

use super::{
    Bench, Goal, Place, Row,
    bpf::{RunStats, RunTotals},
    stats::{Spread, median, paired_ratios},
};
use crate::{LoopDevice, oracle::PROG_PREFIX};

/// Requests fio keeps in flight. With one at a time (psync) the IOPS of a loop device swing by a
/// factor of four between trials on a shared machine (each request waits for the loop worker
/// to be scheduled); 32 keep the worker busy, the trials within about 5 %, and make the path
/// CPU-bound: the programs' cost shows in full.
const IODEPTH: u32 = 32;

/// Rounds whose armed trial is followed by one with BPF run-time statistics on.
const PROG_TIME_ROUNDS: usize = 6;

/// Size of the loop device's backing file (sparse: reads of holes cost no disk).
const LOOP_SIZE: u64 = 256 << 20;

/// The family's entry point.
pub fn run(b: &mut Bench) {
    if b.config().place == Place::Native {
        b.section("io.nonmatching", nonmatching);
    }
}

/// The device the reads go to.
struct Target {
    path: PathBuf,
    what: String,
    /// The loop device when there is no null_blk (detached on drop).
    _loop: Option<LoopDevice>,
}

impl Target {
    fn new() -> Result<Target> {
        let nullb = Path::new("/dev/nullb0");
        if nullb.exists() && Path::new("/sys/block/nullb0").exists() {
            return Ok(Target {
                path: nullb.to_owned(),
                what: "null_blk nullb0".to_owned(),
                _loop: None,
            });
        }
        let lo = LoopDevice::new(LOOP_SIZE).context("making a loop device")?;
        Ok(Target {
            path: lo.device().to_owned(),
            what: format!(
                "loop device on a sparse {} MiB file (no null_blk here)",
                LOOP_SIZE >> 20
            ),
            _loop: Some(lo),
        })
    }
}

/// A variant: what an armed trial has on the device's path.
struct Variant {
    /// Row name suffix.
    suffix: &'static str,
    /// What it is, for notes.
    what: &'static str,
    /// Arms it; the returned guard disarms when dropped.
    arm: fn(&Store, &Device) -> Result<Box<dyn Any>>,
    /// Whether its ratio has the project's goal (>= 0.97).
    goal: bool,
    /// Whether this kernel can arm it, or why not.
    available: fn() -> std::result::Result<(), String>,
}

fn always() -> std::result::Result<(), String> {
    Ok(())
}

/// An `io fail` rule (with its measurement) for a cgroup the reads are not in, recovered on
/// drop.
struct ErrorRule {
    injector: chaos_user::Injector,
    id: String,
    _cgroup: crate::TestCgroup,
}

impl Drop for ErrorRule {
    fn drop(&mut self) {
        if let Err(e) = self.injector.recover(&self.id) {
            eprintln!("chaos-bench: recovering {}: {e:#}", self.id);
        }
    }
}

/// Whether bios can be failed here (kprobe override on `should_fail_bio`).
fn error_rule_available() -> std::result::Result<(), String> {
    let probe = chaos_user::probe::run();
    for f in [
        chaos_user::probe::Feature::KprobeOverride,
        chaos_user::probe::Feature::ErrorInjectionBio,
        chaos_user::probe::Feature::Btf,
    ] {
        probe.require(f)?;
    }
    Ok(())
}

fn arm_error_rule(_store: &Store, device: &Device) -> Result<Box<dyn Any>> {
    let cgroup = crate::TestCgroup::new("blkio").context("a cgroup for the rule's target")?;
    let injector = chaos_user::Injector::new()?;
    let spec = chaos_user::FaultSpec::Io(chaos_user::spec::IoSpec {
        action: chaos_user::spec::IoAction::Fail,
        device: Some(format!("{}:{}", device.major, device.minor)),
        cgroup: Some(cgroup.path().display().to_string()),
        duration: Some("10m".into()),
        ..Default::default()
    });
    let armed = injector.arm(&spec)?;
    Ok(Box::new(ErrorRule {
        injector,
        id: armed.id,
        _cgroup: cgroup,
    }))
}

/// A measurement watch, removed on drop.
struct Watch {
    store: Store,
    id: String,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Err(e) = iostat::unwatch(&self.store, &self.id) {
            eprintln!("chaos-bench: removing watch {}: {e:#}", self.id);
        }
    }
}

/// A program that does nothing (`r0 = 0; exit`, named `chaos_io_noop`) on `block_rq_complete`,
/// where ours runs (on a queue that keeps I/O statistics, as this one does, the issue program
/// is not attached): what running any program there costs. Closing the link's descriptor
/// detaches and frees it.
struct NoopProgram {
    _link: OwnedFd,
}

impl NoopProgram {
    fn attach() -> Result<NoopProgram> {
        let insns = [
            libbpf_sys::bpf_insn {
                code: (libbpf_sys::BPF_ALU64 | libbpf_sys::BPF_MOV | libbpf_sys::BPF_K) as u8,
                ..Default::default()
            },
            libbpf_sys::bpf_insn {
                code: (libbpf_sys::BPF_JMP | libbpf_sys::BPF_EXIT) as u8,
                ..Default::default()
            },
        ];
        // SAFETY: the strings are NUL-terminated, `insns` holds `insns.len()` instructions, and
        // null options are allowed.
        let prog = fd(unsafe {
            libbpf_sys::bpf_prog_load(
                libbpf_sys::BPF_PROG_TYPE_RAW_TRACEPOINT,
                c"chaos_io_noop".as_ptr(),
                c"GPL".as_ptr(),
                insns.as_ptr(),
                insns.len() as _,
                std::ptr::null_mut(),
            )
        })
        .context("loading a do-nothing raw tracepoint program")?;
        // SAFETY: the name is NUL-terminated and the descriptor valid; the link holds the
        // program once made.
        let link = fd(unsafe {
            libbpf_sys::bpf_raw_tracepoint_open(c"block_rq_complete".as_ptr(), prog.as_raw_fd())
        })
        .context("attaching it to block_rq_complete")?;
        Ok(NoopProgram { _link: link })
    }
}

/// A libbpf return value (a descriptor, or minus an errno) as an owned descriptor.
fn fd(r: i32) -> std::io::Result<OwnedFd> {
    if r < 0 {
        return Err(std::io::Error::from_raw_os_error(-r));
    }
    // SAFETY: libbpf returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// The variants measured.
fn variants() -> Vec<Variant> {
    vec![
        Variant {
            suffix: ".floor",
            what: "a do-nothing program on the same tracepoint",
            arm: |_, _| Ok(Box::new(NoopProgram::attach()?)),
            goal: false,
            available: always,
        },
        Variant {
            suffix: "",
            what: "measurement watching the device",
            goal: true,
            available: always,
            arm: |store, device| {
                let w = iostat::watch(store, device, Owner::this_process()?)?;
                Ok(Box::new(Watch {
                    store: store.clone(),
                    id: w.id,
                }))
            },
        },
        Variant {
            suffix: ".error_rule",
            what: "an io fail rule on the device for another cgroup, with its measurement",
            goal: true,
            available: error_rule_available,
            arm: arm_error_rule,
        },
    ]
}

/// Programs of ours that run on block I/O, by id.
fn io_programs() -> Vec<u32> {
    let prefix = format!("{PROG_PREFIX}io_");
    ProgInfoIter::default()
        .filter(|p| p.name.to_string_lossy().starts_with(&prefix))
        .map(|p| p.id)
        .collect()
}

/// fio's read IOPS over `ms` milliseconds of 4 KiB random direct reads of `device`.
fn fio_iops(device: &Path, ms: u32) -> Result<f64> {
    let out = Command::new("fio")
        .args([
            "--name=randread",
            &format!("--filename={}", device.display()),
            "--rw=randread",
            "--bs=4k",
            "--direct=1",
            "--ioengine=libaio",
            &format!("--iodepth={IODEPTH}"),
            "--numjobs=1",
            "--time_based",
            &format!("--runtime={ms}ms"),
            "--ramp_time=0",
            "--norandommap",
            "--randrepeat=0",
            "--output-format=json",
        ])
        .output()
        .context("running fio (cargo xtask setup installs it)")?;
    if !out.status.success() {
        bail!(
            "fio exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("reading fio's JSON")?;
    let iops = v["jobs"][0]["read"]["iops"]
        .as_f64()
        .context("fio's JSON has no jobs[0].read.iops")?;
    ensure!(iops > 0.0, "fio read nothing");
    Ok(iops)
}

/// Waits until no program of ours runs on block I/O: the kernel frees those of the trial
/// before shortly after their links go (after an RCU grace period). Fails after 5 s: another
/// chaos iostat or io fault is running.
fn wait_no_io_programs() -> Result<()> {
    let start = std::time::Instant::now();
    let mut progs = io_programs();
    while !progs.is_empty() && start.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        progs = io_programs();
    }
    ensure!(
        progs.is_empty(),
        "block I/O programs of ours ({progs:?}) are loaded outside a trial: another chaos \
         iostat or io fault is running"
    );
    Ok(())
}

/// A baseline trial: nothing of ours may run on block I/O.
fn baseline_iops(b: &Bench, device: &Path, ms: u32) -> Result<f64> {
    b.check()?;
    wait_no_io_programs()?;
    fio_iops(device, ms)
}

#[derive(Default)]
struct Trials {
    baseline: Vec<f64>,
    armed: Vec<f64>,
    prog_ns: Vec<f64>,
}

fn nonmatching(b: &mut Bench) -> Result<()> {
    // Paired 1 s trials differ by 3 to 10 % on this shared machine (the neighbours' load,
    // not ours: two runs of nothing differ as much), so the median of 12 pairs moved by a
    // point and a half between runs; 30 pairs halve that.
    let (rounds, ms) = b.config().pick((30, 1000u32), (60, 1000));
    let target = Target::new()?;
    let device = Device::resolve(target.path.to_str().context("device path")?)?;
    let store = Store::open_default()?;
    let variants: Vec<Variant> = variants()
        .into_iter()
        .filter(|v| match (v.available)() {
            Ok(()) => true,
            Err(why) => {
                println!("  skipped io.nonmatching_iops_ratio{}: {why}", v.suffix);
                false
            }
        })
        .collect();
    let mut trials: Vec<Trials> = variants.iter().map(|_| Trials::default()).collect();
    // Warm-up: the first reads fill the loop device's backing page cache.
    fio_iops(&target.path, ms)?;
    for round in 0..rounds {
        for (v, t) in variants.iter().zip(trials.iter_mut()) {
            // Every other round the armed trial goes first, so a drift in the machine's load
            // does not favour either side.
            let armed_first = round % 2 == 1;
            let mut base = f64::NAN;
            if !armed_first {
                base = baseline_iops(b, &target.path, ms)?;
            }
            // Only this trial's programs, for their run times.
            wait_no_io_programs()?;
            let guard = (v.arm)(&store, &device)?;
            let progs = io_programs();
            ensure!(
                !progs.is_empty(),
                "{}: no block I/O program of ours",
                v.what
            );
            let armed = fio_iops(&target.path, ms)?;
            // The programs' run time per I/O varies by a few ns between trials: measured in
            // the first rounds only, which leaves the time to more pairs.
            let ns = if round >= PROG_TIME_ROUNDS {
                None
            } else {
                let _stats = RunStats::enable()?;
                let before = RunTotals::read(&progs)?;
                fio_iops(&target.path, 500)?;
                let after = RunTotals::read(&progs)?;
                // Each program runs once per I/O.
                after
                    .ns_per_run_since(&before)
                    .map(|n| n * progs.len() as f64)
            };
            drop(guard);
            if armed_first {
                base = baseline_iops(b, &target.path, ms)?;
            }
            println!(
                "  round {round} {}: {base:.0} IOPS with nothing, {armed:.0} armed ({:.4}), \
                 programs {} ns/io",
                v.what,
                armed / base,
                ns.map_or("-".to_owned(), |n| format!("{n:.1}"))
            );
            t.baseline.push(base);
            t.armed.push(armed);
            t.prog_ns.extend(ns);
        }
    }
    for (v, t) in variants.iter().zip(&trials) {
        let ratios = paired_ratios(&t.armed, &t.baseline);
        let base = median(&t.baseline);
        let row = Row::cost(
            &format!("io.nonmatching_iops_ratio{}", v.suffix),
            "IOPS",
            median(&t.armed),
            base,
        )
        .with_ratio(median(&ratios))
        .spread(Spread::of(&ratios))
        .note(format!(
            "{}, vs nothing of ours; fio 4k randread, direct, libaio, iodepth {IODEPTH}, 1 job, \
             {ms} ms per trial, on a {}; ratio = median of paired trials (ABBA order)",
            v.what, target.what
        ));
        b.row(if v.goal {
            row.goal(Goal::ratio_at_least(0.97))
        } else {
            row
        });
        b.row(
            Row::cost(
                &format!("io.prog_ns_per_io{}", v.suffix),
                "ns",
                median(&t.prog_ns),
                1e9 / base,
            )
            .spread(Spread::of(&t.prog_ns))
            .note(format!(
                "{}: run_time_ns/run_cnt of the programs, times their number (each runs once \
                 per I/O; BPF_ENABLE_STATS); baseline: ns per I/O of the whole path with nothing \
                 armed",
                v.what
            )),
        );
    }
    Ok(())
}
