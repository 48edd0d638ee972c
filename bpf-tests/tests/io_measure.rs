//! Block I/O measurement (`chaos iostat`, raw tracepoints on `block_rq_issue` /
//! `block_rq_complete`), natively on a loop device with ext4: direct I/O of known count and size
//! by a process in a test cgroup (cgroup v1 blkio here, v2 io in the VMs) is counted exactly
//! and charged to that cgroup, with plausible latencies; a device nobody watches is not
//! counted; and once `chaos iostat` ends (or is killed and `chaos recover --all` runs) the
//! oracle finds nothing of ours.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use bpf_tests::{
    ChildProcess, LoopDevice, Oracle, TestCgroup, chaos::Chaos, skip_on_err, skip_unless,
};
use libbpf_rs::{ProgramType, query::ProgInfoIter};
use serde_json::Value;

/// Writes and reads the test cgroup does, and their sizes.
const WRITES: u64 = 32;
const WRITE_SIZE: u64 = 64 << 10;
const READS: u64 = 64;
const READ_SIZE: u64 = 16 << 10;

/// A chaos binary on a kernel with raw tracepoints and BTF, as root, with loop devices and
/// mkfs.ext4; `Err` is a skip reason.
fn chaos_for_io() -> Result<Chaos, String> {
    bpf_tests::skip::require_root()?;
    bpf_tests::skip::require_loop()?;
    bpf_tests::skip::require_command("mkfs.ext4")?;
    bpf_tests::skip::require_command("dd")?;
    let chaos = Chaos::from_env()?;
    chaos.probe_row("raw_tracepoint")?;
    chaos.probe_row("btf")?;
    Ok(chaos)
}

/// `chaos iostat` running with `--json`, its lines arriving on a channel. Killed on drop.
struct Iostat {
    child: ChildProcess,
    lines: mpsc::Receiver<Value>,
}

impl Iostat {
    fn start(chaos: &Chaos, device: &Path, interval: &str) -> Iostat {
        let mut cmd = chaos.command(&[
            "iostat",
            "--device",
            device.to_str().unwrap(),
            "--interval",
            interval,
            "--json",
        ]);
        cmd.stdout(Stdio::piped());
        let mut child = ChildProcess::spawn(cmd).expect("starting chaos iostat");
        let stdout = child.child_mut().stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("chaos iostat printed invalid JSON ({e}): {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Iostat { child, lines }
    }

    /// The next interval's figures.
    fn next(&mut self) -> Value {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                let status = self.child.try_wait();
                panic!("chaos iostat printed nothing for 20 s (exit: {status:?})")
            })
    }

    /// Stops it with SIGINT, as Ctrl-C would; returns the lines it printed since the last
    /// `next`, and asserts it exited cleanly.
    fn stop(mut self) -> Vec<Value> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.pid() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "chaos iostat still running 10 s after SIGINT"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "chaos iostat exited with {status}");
        self.lines.try_iter().collect()
    }
}

/// A file's content, written back on drop.
struct Restore {
    path: std::path::PathBuf,
    content: String,
}

impl Restore {
    fn file(path: std::path::PathBuf) -> Restore {
        let content = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        Restore { path, content }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, self.content.trim());
    }
}

/// Runs `cmd` in `cgroup` to completion; panics if it fails.
fn run_in(cgroup: &TestCgroup, cmd: Command) {
    let what = format!("{cmd:?}");
    let mut child = ChildProcess::builder(cmd)
        .cgroup(cgroup)
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = child.wait().unwrap();
    assert!(status.success(), "{what} exited with {status}");
}

fn dd(args: &[&str]) -> Command {
    let mut c = Command::new("dd");
    c.args(args).stderr(Stdio::null());
    c
}

/// Totals of the `rows` of the intervals `lines` for `op` and cgroup `cgroup_id`:
/// (ops, bytes, errors), and every such row.
fn totals(lines: &[Value], op: &str, cgroup_id: u64) -> (u64, u64, u64, Vec<Value>) {
    let rows: Vec<Value> = lines
        .iter()
        .flat_map(|l| l["rows"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["op"] == op && r["cgroup_id"] == cgroup_id)
        .collect();
    let sum = |k: &str| rows.iter().map(|r| r[k].as_u64().unwrap()).sum::<u64>();
    (sum("ops"), sum("bytes"), sum("errors"), rows)
}

fn assert_plausible_latency(rows: &[Value]) {
    for r in rows {
        let f = |k: &str| r[k].as_f64().unwrap();
        let (mean, p50, p99, max) = (f("mean_us"), f("p50_us"), f("p99_us"), f("max_us"));
        assert!(mean > 0.0 && p50 > 0.0, "latency not positive: {r}");
        assert!(p50 <= p99 && p99 <= max, "percentiles out of order: {r}");
        assert!(mean <= max, "mean above the maximum: {r}");
        // A loop device on a file answers well within 5 s.
        assert!(max < 5e6, "implausible latency: {r}");
    }
}

/// Every kernel these tests run on (5.5+, with BTF) takes the BTF-typed programs. A loop
/// device keeps I/O statistics, so the block layer times each request and the completion
/// program alone does the work.
#[test]
fn direct_io_is_counted_per_cgroup_and_operation() {
    let chaos = skip_on_err!(chaos_for_io());
    counts_direct_io(&chaos, ProgramType::Tracing, true);
}

/// The same with the raw tracepoint programs, which kernels without `tp_btf` get.
#[test]
fn direct_io_is_counted_by_the_raw_tracepoint_programs() {
    let chaos = skip_on_err!(chaos_for_io());
    counts_direct_io(
        &chaos.env(chaos_user::iostat::ISSUE_MODE_ENV, "raw"),
        ProgramType::RawTracepoint,
        true,
    );
}

/// On a queue that keeps no I/O statistics (and has no scheduler) the block layer does not time
/// requests: the issue program does, through the in-flight table.
#[test]
fn direct_io_is_counted_on_a_queue_without_io_statistics() {
    let chaos = skip_on_err!(chaos_for_io());
    counts_direct_io(&chaos, ProgramType::Tracing, false);
}

/// The same with the raw tracepoint programs.
#[test]
fn direct_io_is_counted_without_io_statistics_by_the_raw_programs() {
    let chaos = skip_on_err!(chaos_for_io());
    counts_direct_io(
        &chaos.env(chaos_user::iostat::ISSUE_MODE_ENV, "raw"),
        ProgramType::RawTracepoint,
        false,
    );
}

/// The types of our block I/O programs loaded now.
fn io_program_types() -> Vec<ProgramType> {
    ProgInfoIter::default()
        .filter(|p| p.name.to_string_lossy().starts_with("chaos_io_"))
        .map(|p| p.ty)
        .collect()
}

/// Direct I/O of known count and size by a process in a test cgroup, under `chaos iostat`
/// running programs of type `programs`, on a loop device keeping I/O statistics or not.
fn counts_direct_io(chaos: &Chaos, programs: ProgramType, iostats: bool) {
    let lo = skip_on_err!(LoopDevice::with_ext4(64 << 20));
    let queue = Path::new("/sys/block").join(lo.name()).join("queue");
    // Loop devices outlive their attachments, settings included: put it back even on panic.
    let _restore = Restore::file(queue.join("iostats"));
    if !iostats {
        std::fs::write(queue.join("iostats"), "0").unwrap();
        let scheduler = std::fs::read_to_string(queue.join("scheduler")).unwrap();
        skip_unless!(if scheduler.contains("[none]") {
            Ok(())
        } else {
            Err(format!(
                "loop devices get a scheduler here ({})",
                scheduler.trim()
            ))
        });
    }
    let other = skip_on_err!(LoopDevice::new(16 << 20));
    let cg = skip_on_err!(TestCgroup::new("blkio"));
    let cg_id = cg.id().unwrap();
    let cg_name = format!("/{}", cg.path().file_name().unwrap().to_str().unwrap());
    let data = lo.mount_point().unwrap().join("data");
    let data = data.to_str().unwrap();
    // The file exists, allocated and on disk, before the measured I/O: the direct writes then
    // change no block mapping.
    let status = dd(&[
        "if=/dev/zero",
        &format!("of={data}"),
        "bs=1M",
        "count=4",
        "conv=fsync",
    ])
    .status()
    .unwrap();
    assert!(status.success());

    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let mut iostat = Iostat::start(chaos, lo.device(), "500ms");
    // The first interval is printed once the watch is in place.
    iostat.next();
    // The completion program; the issue program too where the block layer keeps no times.
    let expected = if iostats { 1 } else { 2 };
    assert_eq!(
        io_program_types(),
        vec![programs; expected],
        "our block I/O programs"
    );

    let count = |n: u64| format!("count={n}");
    run_in(
        &cg,
        dd(&[
            "if=/dev/zero",
            &format!("of={data}"),
            &format!("bs={WRITE_SIZE}"),
            &count(WRITES),
            "oflag=direct",
            "conv=notrunc",
        ]),
    );
    run_in(
        &cg,
        dd(&[
            &format!("if={data}"),
            "of=/dev/null",
            &format!("bs={READ_SIZE}"),
            &count(READS),
            "iflag=direct",
        ]),
    );
    // The same from here, on the device nobody watches.
    let other_dev = other.device().to_str().unwrap();
    for args in [
        [
            "if=/dev/zero",
            &format!("of={other_dev}"),
            "bs=4096",
            "count=50",
            "oflag=direct",
        ],
        [
            &format!("if={other_dev}"),
            "of=/dev/null",
            "bs=4096",
            "count=50",
            "iflag=direct",
        ],
    ] {
        assert!(dd(&args).status().unwrap().success());
    }
    // While the watch is on: the other device is not in the kernel's watch set, and has no
    // rows.
    let other_device =
        chaos_user::iostat::Device::resolve(other_dev).expect("resolving the other device");
    let snapshot = chaos_user::iostat::Snapshot::take(&other_device).unwrap();
    assert!(!snapshot.watched(), "{other_dev} is watched");
    let stats = chaos_user::iostat::IoStats::between(
        None,
        &snapshot,
        &mut chaos_user::iostat::CgroupNames::new(),
    );
    assert_eq!(stats.total.ops, 0, "{other_dev} was counted: {stats:?}");
    assert!(
        chaos_user::iostat::Snapshot::take(
            &chaos_user::iostat::Device::resolve(lo.device().to_str().unwrap()).unwrap()
        )
        .unwrap()
        .watched()
    );

    // Two more intervals, so every completion is in some line.
    let mut lines = vec![iostat.next(), iostat.next()];
    lines.extend(iostat.stop());

    let (w_ops, w_bytes, w_err, w_rows) = totals(&lines, "write", cg_id);
    let (r_ops, r_bytes, r_err, r_rows) = totals(&lines, "read", cg_id);
    assert_eq!(
        (w_ops, w_bytes, w_err),
        (WRITES, WRITES * WRITE_SIZE, 0),
        "writes of the test cgroup: {lines:#?}"
    );
    assert_eq!(
        (r_ops, r_bytes, r_err),
        (READS, READS * READ_SIZE, 0),
        "reads of the test cgroup: {lines:#?}"
    );
    assert_plausible_latency(&w_rows);
    assert_plausible_latency(&r_rows);
    // Charged to the test cgroup by name too; whatever else ran (the journal, from its own
    // thread) is charged elsewhere.
    for r in w_rows.iter().chain(&r_rows) {
        assert_eq!(r["cgroup"], cg_name.as_str(), "{r}");
    }
    let by_cgroup: Vec<&Value> = lines
        .iter()
        .flat_map(|l| l["by_cgroup"].as_array().unwrap())
        .filter(|r| r["cgroup_id"] == cg_id)
        .collect();
    let ops: u64 = by_cgroup.iter().map(|r| r["ops"].as_u64().unwrap()).sum();
    assert_eq!(ops, WRITES + READS, "by cgroup: {by_cgroup:#?}");
    // Rates agree with the counts over each interval.
    for l in &lines {
        let secs = l["interval_ms"].as_f64().unwrap() / 1000.0;
        let total = &l["total"];
        let iops = total["iops"].as_f64().unwrap();
        assert!(
            (iops * secs - total["ops"].as_f64().unwrap()).abs() < 0.5,
            "iops vs ops over {secs} s: {total}"
        );
    }
    oracle.assert_clean(&before);
}

#[test]
fn a_killed_iostat_is_cleaned_by_recover_all() {
    let chaos = skip_on_err!(chaos_for_io());
    let lo = skip_on_err!(LoopDevice::new(16 << 20));
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let mut iostat = Iostat::start(&chaos, lo.device(), "200ms");
    iostat.next();
    iostat.child.kill().unwrap();
    // Its watch, programs and pins stay until something cleans up.
    assert!(
        !oracle.leftovers(&before).is_empty(),
        "a killed chaos iostat left nothing to clean"
    );
    chaos.recover_all().expect("chaos recover --all");
    oracle.assert_clean(&before);
}

#[test]
fn a_second_iostat_prunes_the_watch_of_a_killed_one() {
    let chaos = skip_on_err!(chaos_for_io());
    let lo = skip_on_err!(LoopDevice::new(16 << 20));
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let mut first = Iostat::start(&chaos, lo.device(), "200ms");
    first.next();
    first.child.kill().unwrap();
    let out = chaos
        .run(&[
            "iostat",
            "--device",
            lo.device().to_str().unwrap(),
            "--interval",
            "100ms",
            "--count",
            "1",
        ])
        .expect("a second chaos iostat");
    assert!(out.contains(lo.name()), "{out}");
    oracle.assert_clean(&before);
}

#[test]
fn bad_devices_are_refused_with_one_line() {
    let chaos = skip_on_err!(chaos_for_io());
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    for (device, says) in [
        ("/no/such/device", "invalid device: /no/such/device"),
        ("/proc", "not a block device"),
        ("4095:4095", "not a block device"),
    ] {
        let f = chaos
            .run(&["iostat", "--device", device, "--count", "1"])
            .expect_err(device);
        assert_eq!(f.code, Some(1), "{device}: {f}");
        assert!(f.stderr.contains(says), "{device}: {f}");
        assert_eq!(f.stderr.trim().lines().count(), 1, "{device}: {f}");
    }
    oracle.assert_clean(&before);
}
