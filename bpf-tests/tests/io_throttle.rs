//! `io slow` and `io hang` through the CLI: cgroup v1 `blkio.throttle.*` natively here, v2
//! `io.max` in the VMs. Each test builds a loop device with ext4 and writes to it with
//! `dd oflag=direct` (direct I/O is charged to the writer's cgroup on v1 and v2 alike), from a
//! test cgroup or by pid; it measures the write rate by the file's growth, checks the cgroup
//! files before, while armed and after, and ends with `chaos list` empty and the oracle clean.

use std::{
    io::Read as _,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bpf_tests::{
    ChildProcess, LoopDevice, Oracle, TestCgroup,
    chaos::{Armed, Chaos},
    skip_on_err, skip_unless,
    world::{
        CgroupVersion, cgroup2_mount,
        io::{IoWorld as World, MIB, V1_FILES, mib_s, rate, size},
        unique_name,
    },
};

/// The rate `io slow` is asked for.
const LIMIT: u64 = 2 * MIB;
/// dd's block size.
const BLOCK: u64 = 64 << 10;

fn arm<'a>(chaos: &'a Chaos, args: &[&str]) -> Armed<'a> {
    let mut full = vec!["io"];
    full.extend_from_slice(args);
    chaos.arm(&full)
}

/// The limit files of `cg` (and on v2 its parent's `cgroup.subtree_control`), as text.
fn limit_state(cg: &Path, v2: bool) -> String {
    let read = |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| format!("<{e}>"));
    let mut out = String::new();
    let files: &[&str] = if v2 { &["io.max"] } else { &V1_FILES };
    for f in files {
        out += &format!("{f}: {:?}\n", read(cg.join(f)));
    }
    if v2 && let Some(parent) = cg.parent() {
        out += &format!(
            "parent subtree_control: {:?}\n",
            read(parent.join("cgroup.subtree_control"))
        );
    }
    out
}

/// `dd` writing `blocks` 64 KiB blocks of `src` to `dst` with O_DIRECT.
fn dd(src: &Path, dst: &Path, blocks: u64) -> Command {
    let mut c = Command::new("dd");
    c.arg(format!("if={}", src.display()))
        .arg(format!("of={}", dst.display()))
        .arg(format!("bs={BLOCK}"))
        .arg(format!("count={blocks}"))
        .arg("oflag=direct")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Like [`dd`] of zeros, but it waits for a line on its stdin ([`go`]) before it starts
/// writing, as the same process: a target whose pid is known before it does any I/O.
fn dd_gated(dst: &Path, blocks: u64, log: &Path) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("read go && exec dd if=/dev/zero of=\"$0\" bs=$1 count=$2 oflag=direct")
        .arg(dst)
        .arg(BLOCK.to_string())
        .arg(blocks.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("dd log"));
    c
}

/// Lets a [`dd_gated`] writer start.
fn go(writer: &mut ChildProcess) {
    use std::io::Write as _;
    let mut stdin = writer
        .child_mut()
        .stdin
        .take()
        .expect("gated writer's stdin");
    stdin.write_all(b"go\n").expect("start the writer");
}

/// Starts `cmd` in `cg`, or where this test runs.
fn start(cmd: Command, cg: Option<&TestCgroup>) -> ChildProcess {
    match cg {
        Some(cg) => ChildProcess::builder(cmd).cgroup(cg).spawn(),
        None => ChildProcess::spawn(cmd),
    }
    .expect("start dd")
}

/// The rate of a fresh writer of `mib` MiB of zeros in `cg`, run to its end.
fn full_speed(w: &World, cg: Option<&TestCgroup>, name: &str, mib: u64) -> f64 {
    let file = w.mnt().join(name);
    let mut writer = start(dd(Path::new("/dev/zero"), &file, mib * MIB / BLOCK), cg);
    let r = rate(&mut writer, &file, Duration::ZERO, Duration::from_secs(120));
    assert!(writer.wait().expect("wait").success(), "dd to {name}");
    std::fs::remove_file(&file).expect("remove");
    r
}

fn within(rate: f64, want: u64, tolerance: f64) -> bool {
    (rate - want as f64).abs() <= want as f64 * tolerance
}

/// The path of `pid`'s cgroup in the io (v2) or blkio (v1) hierarchy, from `/proc/PID/cgroup`.
fn cgroup_of(pid: u32, v2: bool) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("/proc/PID/cgroup");
    text.lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let ours = if v2 {
                controllers.is_empty()
            } else {
                controllers.split(',').any(|c| c == "blkio")
            };
            ours.then(|| path.to_owned())
        })
        .unwrap_or_else(|| panic!("no io cgroup for {pid} in {text}"))
}

/// `chaos list` is empty (waiting up to `patience` for a keeper to finish).
fn assert_nothing_armed(chaos: &Chaos, patience: Duration) {
    let start = Instant::now();
    loop {
        let list = chaos.list().expect("chaos list");
        if list.as_array().is_some_and(|a| a.is_empty()) {
            return;
        }
        assert!(start.elapsed() < patience, "faults left: {list}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `chaos args` and checks it fails with one line containing every `needle`.
fn rejects(chaos: &Chaos, args: &[&str], needles: &[&str]) -> String {
    let out = chaos.output(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "chaos {args:?} succeeded: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "chaos {args:?}: one line expected, got {stderr:?}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(
            stderr.contains(n),
            "chaos {args:?}: {n:?} missing from {stderr:?}"
        );
    }
    stderr
}

/// A file outside the loop device (pseudo-random bytes to write, a log), removed on drop.
struct Source(PathBuf);

impl Source {
    fn new(len: usize) -> Source {
        let path = std::env::temp_dir().join(unique_name());
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let data: Vec<u8> = (0..len / 8)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect();
        std::fs::write(&path, data).expect("write source");
        Source(path)
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Reads `file` back from the device (its cached pages dropped first).
fn read_back(file: &Path) -> Vec<u8> {
    let mut f = std::fs::File::open(file).expect("open");
    // SAFETY: a plain advice call on a descriptor we own.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let mut out = Vec::new();
    f.read_to_end(&mut out).expect("read back");
    out
}

#[test]
fn slow_holds_the_rate_and_speed_returns_after() {
    let w = skip_on_err!(World::new(128 * MIB));
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let files = limit_state(w.cg.path(), w.v2);
    let base = full_speed(&w, Some(&w.cg), "base", 32);
    println!("unthrottled: {}", mib_s(base));
    assert!(
        base >= 4.0 * LIMIT as f64,
        "direct writes here run at {}: too slow to tell a 2 MiB/s limit from no limit",
        mib_s(base)
    );
    let (dev, device, cgroup) = (w.dev(), w.device(), w.cgroup());
    let fault = arm(
        &w.chaos,
        &[
            "slow",
            "--device",
            &device,
            "--write-bps",
            "2mb",
            "--cgroup",
            &cgroup,
            "--duration",
            "60s",
        ],
    );
    let status = w.chaos.status(&fault.id).expect("status");
    assert_eq!(status["strategy"], w.strategy(), "{status}");
    let armed = limit_state(w.cg.path(), w.v2);
    let want = if w.v2 {
        format!("{dev} rbps=max wbps={LIMIT} riops=max wiops=max")
    } else {
        format!("{dev} {LIMIT}")
    };
    assert!(armed.contains(&want), "{want:?} not in {armed}");
    let file = w.mnt().join("slow");
    let mut writer = start(
        dd(Path::new("/dev/zero"), &file, 24 * MIB / BLOCK),
        Some(&w.cg),
    );
    let slow = rate(
        &mut writer,
        &file,
        Duration::from_secs(1),
        Duration::from_secs(4),
    );
    println!("io slow --write-bps 2mb: {}", mib_s(slow));
    assert!(within(slow, LIMIT, 0.2), "armed: {}", mib_s(slow));
    // The fault measures its device: the writes let through show in its status, charged to
    // the target cgroup. (Their latency starts when the request is made, after the throttle.)
    let status = w.chaos.status(&fault.id).expect("status");
    let io = &status["io"][0];
    let writes = io["by_cgroup"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["cgroup_id"].as_u64() == Some(w.cg.id().expect("cgroup id")))
        })
        .unwrap_or_else(|| panic!("no row for the target cgroup: {status}"));
    assert!(writes["ops"].as_u64() >= Some(8), "{writes}");
    writer.kill().expect("kill dd");
    std::fs::remove_file(&file).expect("remove");
    fault.recover();
    assert_eq!(limit_state(w.cg.path(), w.v2), files);
    let after = full_speed(&w, Some(&w.cg), "after", 32);
    println!("after recovery: {}", mib_s(after));
    assert!(
        after >= 4.0 * LIMIT as f64 && after >= base / 4.0,
        "after recovery {} (unthrottled before: {})",
        mib_s(after),
        mib_s(base)
    );
    assert_nothing_armed(&w.chaos, Duration::ZERO);
    oracle.assert_clean(&before);
}

#[test]
fn hang_stalls_writes_until_the_deadline_then_they_finish_intact() {
    let w = skip_on_err!(World::new(128 * MIB));
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let files = limit_state(w.cg.path(), w.v2);
    let src = Source::new(4 * MIB as usize);
    let (dev, device, cgroup) = (w.dev(), w.device(), w.cgroup());
    // Metadata the writer will need (the directory, the target's inode, block bitmaps) is read
    // now: under the hang the writer's own reads stall too, and this test's look at the file's
    // size would wait behind a directory or inode block the writer is waiting for.
    full_speed(&w, Some(&w.cg), "warm-up", 8);
    let file = w.mnt().join("data");
    std::fs::File::create(&file).expect("create the target file");
    // Ends by itself after 5 s: no chaos command undoes it.
    let fault = arm(
        &w.chaos,
        &[
            "hang",
            "--device",
            &device,
            "--cgroup",
            &cgroup,
            "--duration",
            "5s",
        ],
    );
    let remaining = w.chaos.status(&fault.id).expect("status")["remaining_ms"]
        .as_u64()
        .expect("remaining_ms");
    // At the latest (the status was read before this instant).
    let deadline = Instant::now() + Duration::from_millis(remaining);
    // The kernel took the lowest limits, 2 bytes and 2 operations per second.
    let armed = limit_state(w.cg.path(), w.v2);
    let want: Vec<String> = if w.v2 {
        vec![format!("{dev} rbps=2 wbps=2 riops=2 wiops=2")]
    } else {
        V1_FILES
            .iter()
            .map(|f| format!("{f}: \"{dev} 2\\n\""))
            .collect()
    };
    for line in &want {
        assert!(armed.contains(line), "{line:?} not in {armed}");
    }
    let mut writer = start(dd(&src.0, &file, 4 * MIB / BLOCK), Some(&w.cg));
    std::thread::sleep(Duration::from_millis(500));
    let s1 = size(&file);
    std::thread::sleep(Duration::from_millis(1500));
    let s2 = size(&file);
    let looked = Instant::now();
    assert!(
        looked + Duration::from_millis(300) < deadline,
        "too slow to look inside the 5 s hang ({:?} left)",
        deadline.saturating_duration_since(looked)
    );
    println!("while hung: {s1} then {s2} bytes written");
    assert_eq!(s1, s2, "writes went on under io hang");
    assert!(s2 <= BLOCK, "{s2} bytes written under io hang");
    assert_eq!(writer.try_wait().expect("try_wait"), None, "dd ended");
    // The deadline keeper lifts the limits; the stalled writes go through.
    let status = loop {
        if let Some(s) = writer.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(20),
            "writes still stalled 20 s after the deadline"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let done = Instant::now();
    println!(
        "writes finished {:?} after the deadline",
        done.saturating_duration_since(deadline)
    );
    assert!(status.success(), "dd: {status}");
    // The deadline was read late by as much as `chaos status` took.
    assert!(
        done + Duration::from_secs(1) >= deadline,
        "resumed {:?} before the deadline",
        deadline - done
    );
    let written = std::fs::read(&src.0).expect("source");
    let back = read_back(&file);
    assert_eq!(back.len(), written.len(), "file length");
    assert!(
        back == written,
        "the file read back differs from what was written"
    );
    assert_nothing_armed(&w.chaos, Duration::from_secs(5));
    assert_eq!(limit_state(w.cg.path(), w.v2), files);
    oracle.assert_clean(&before);
}

#[test]
fn pid_sharing_its_cgroup_is_moved_into_a_child_and_back() {
    let w = skip_on_err!(World::new(128 * MIB));
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let (device, cgroup) = (w.device(), w.cgroup());
    let sleeper = || {
        let mut c = Command::new("sleep");
        c.arg("1000");
        c
    };
    // Where the target and a bystander share a cgroup: the test cgroup on v1. On v2 a cgroup
    // with processes cannot enable io for a child, so chaos refuses that; the root can.
    let home: Option<&TestCgroup> = if w.v2 { None } else { Some(&w.cg) };
    let home_path = if w.v2 {
        let _a = start(sleeper(), Some(&w.cg));
        let b = start(sleeper(), Some(&w.cg));
        let pid = b.pid().to_string();
        rejects(
            &w.chaos,
            &[
                "inject",
                "io",
                "hang",
                "--device",
                &device,
                "--pid",
                &pid,
                "--duration",
                "10s",
            ],
            &["invalid pid", "shares cgroup", &cgroup],
        );
        skip_unless!(if cgroup_of(std::process::id(), true) == "/" {
            Ok(())
        } else {
            Err("cgroup v2: the test must run in the root cgroup to share it with a target")
        });
        cgroup2_mount().expect("cgroup2 mount")
    } else {
        w.cg.path().to_owned()
    };
    let state_before = limit_state(&home_path, w.v2);
    let _bystander = start(sleeper(), home);
    let file = w.mnt().join("target");
    let log = Source(std::env::temp_dir().join(unique_name()));
    let mut writer = start(dd_gated(&file, 40 * MIB / BLOCK, &log.0), home);
    let pid = writer.pid();
    let line_before = cgroup_of(pid, w.v2);
    let pid_text = pid.to_string();
    let fault = arm(
        &w.chaos,
        &[
            "slow",
            "--device",
            &device,
            "--write-bps",
            "2mb",
            "--pid",
            &pid_text,
            "--duration",
            "60s",
        ],
    );
    let child = home_path.join(format!("chaos-io-{}", fault.id));
    assert!(child.is_dir(), "{} not made", child.display());
    go(&mut writer);
    let line_during = cgroup_of(pid, w.v2);
    assert_eq!(
        Path::new(&line_during),
        Path::new(&line_before).join(format!("chaos-io-{}", fault.id)),
        "process {pid} while armed"
    );
    let slow = rate(
        &mut writer,
        &file,
        Duration::from_secs(1),
        Duration::from_secs(4),
    );
    println!("target while armed: {}", mib_s(slow));
    assert!(within(slow, LIMIT, 0.2), "target: {}", mib_s(slow));
    let other = full_speed(&w, home, "bystander", 16);
    println!("bystander in the same cgroup: {}", mib_s(other));
    assert!(other >= 4.0 * LIMIT as f64, "bystander: {}", mib_s(other));
    // The target's rate from the recovery on (the command's own time included: a fast writer
    // may finish before it returns).
    let (t0, s0) = (Instant::now(), size(&file));
    fault.recover();
    // Unthrottled, the writer may finish before the recovery command returns: an exited
    // process (a zombie until waited for) shows the root cgroups, and then only the removal of
    // the cgroup made for it (below) shows it was not left there.
    let exited = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    });
    if !exited {
        assert_eq!(cgroup_of(pid, w.v2), line_before, "process {pid} after");
    }
    assert!(!child.exists(), "{} left", child.display());
    assert_eq!(limit_state(&home_path, w.v2), state_before);
    let status = loop {
        if let Some(s) = writer.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "target still writing 60 s after recovery: {}",
            mib_s((size(&file) - s0) as f64 / t0.elapsed().as_secs_f64())
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let after = (size(&file) - s0) as f64 / t0.elapsed().as_secs_f64();
    println!("target after recovery: {}", mib_s(after));
    let said = std::fs::read_to_string(&log.0).unwrap_or_default();
    assert!(status.success(), "dd: {status}: {said}");
    assert_eq!(size(&file), 40 * MIB, "dd said {said:?}");
    assert!(
        after >= 4.0 * LIMIT as f64,
        "target after: {}",
        mib_s(after)
    );
    assert_nothing_armed(&w.chaos, Duration::ZERO);
    oracle.assert_clean(&before);
}

/// Sets `(key, value)` limits for `dev` in `cg` (v2 key names), as an administrator would.
fn set_limits(cg: &TestCgroup, v2: bool, dev: &str, limits: &[(&str, &str)]) {
    for (key, value) in limits {
        if v2 {
            cg.write("io.max", &format!("{dev} {key}={value}"))
                .expect("io.max");
        } else {
            let file = match *key {
                "rbps" => V1_FILES[0],
                "wbps" => V1_FILES[1],
                "riops" => V1_FILES[2],
                _ => V1_FILES[3],
            };
            let value = if *value == "max" { "0" } else { value };
            cg.write(file, &format!("{dev} {value}")).expect("v1 limit");
        }
    }
}

#[test]
fn limits_there_before_are_kept_and_restored_exactly() {
    let w = skip_on_err!(World::new(128 * MIB));
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let (dev, device, cgroup) = (w.dev(), w.device(), w.cgroup());
    set_limits(&w.cg, w.v2, &dev, &[("wbps", "3145728"), ("riops", "500")]);
    let files = limit_state(w.cg.path(), w.v2);
    let slow = |extra: &[&str]| {
        let mut args = vec!["slow", "--device", &device, "--cgroup", &cgroup];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--duration", "60s"]);
        arm(&w.chaos, &args)
    };
    let shows = |want: &[(&str, &str)]| {
        let now = limit_state(w.cg.path(), w.v2);
        for (key, value) in want {
            let line = if w.v2 {
                format!("{key}={value}")
            } else {
                let file = V1_FILES[["rbps", "wbps", "riops", "wiops"]
                    .iter()
                    .position(|k| k == key)
                    .expect("key")];
                format!("{file}: \"{dev} {value}\\n\"")
            };
            assert!(now.contains(&line), "{line:?} not in {now}");
        }
    };
    // Asked keys are set; the one already there and lower stays lower; the others are kept.
    let first = slow(&["--write-bps", "2mb", "--read-bps", "1mb"]);
    shows(&[("wbps", "2097152"), ("rbps", "1048576"), ("riops", "500")]);
    // A second throttle of the same cgroup and device composes (tests/overlap.rs): the hang
    // wins while armed, and recovering it brings back the first one's limits.
    let hang = arm(
        &w.chaos,
        &[
            "hang",
            "--device",
            &device,
            "--cgroup",
            &cgroup,
            "--duration",
            "10s",
        ],
    );
    shows(&[("wbps", "2"), ("rbps", "2"), ("riops", "2"), ("wiops", "2")]);
    hang.recover();
    shows(&[("wbps", "2097152"), ("rbps", "1048576"), ("riops", "500")]);
    first.recover();
    assert_eq!(limit_state(w.cg.path(), w.v2), files);
    // A looser limit than the one there does not loosen it.
    let looser = slow(&["--write-bps", "4mb"]);
    shows(&[("wbps", "3145728"), ("riops", "500")]);
    looser.recover();
    assert_eq!(limit_state(w.cg.path(), w.v2), files);
    let hang = arm(
        &w.chaos,
        &[
            "hang",
            "--device",
            &device,
            "--cgroup",
            &cgroup,
            "--duration",
            "60s",
        ],
    );
    shows(&[("wbps", "2"), ("rbps", "2"), ("riops", "2"), ("wiops", "2")]);
    hang.recover();
    assert_eq!(limit_state(w.cg.path(), w.v2), files);
    assert_nothing_armed(&w.chaos, Duration::ZERO);
    // Our own limits go before the oracle looks (it reports any in chaos-* cgroups).
    set_limits(&w.cg, w.v2, &dev, &[("wbps", "max"), ("riops", "max")]);
    oracle.assert_clean(&before);
}

#[test]
fn bad_targets_and_devices_are_one_line_and_change_nothing() {
    let w = skip_on_err!(World::new(128 * MIB));
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let files = limit_state(w.cg.path(), w.v2);
    let (device, cgroup) = (w.device(), w.cgroup());
    let slow = |dev: &str, target: &[&str]| {
        let mut args = vec![
            "inject",
            "io",
            "slow",
            "--device",
            dev,
            "--write-bps",
            "2mb",
        ];
        args.extend_from_slice(target);
        args.extend_from_slice(&["--duration", "10s"]);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let check = |args: Vec<String>, needles: &[&str]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let line = rejects(&w.chaos, &args, needles);
        println!("{}", line.trim());
        assert_nothing_armed(&w.chaos, Duration::ZERO);
        assert_eq!(limit_state(w.cg.path(), w.v2), files);
    };
    let in_cg = ["--cgroup", cgroup.as_str()];
    // A partition: limits apply to whole disks.
    let parted = LoopDevice::with_partition(16 * MIB).expect("partitioned loop device");
    let (pa, pb) = parted
        .partition_major_minor(1)
        .expect("the kernel shows the partition");
    let part = format!("{pa}:{pb}");
    check(
        slow(&part, &in_cg),
        &["invalid device", "partition", parted.name()],
    );
    let node = format!("{}p1", parted.device().display());
    if Path::new(&node).exists() {
        check(slow(&node, &in_cg), &["invalid device", "partition"]);
    }
    // No such device.
    check(
        slow("/dev/chaos-no-such-disk", &in_cg),
        &["invalid device", "no such device"],
    );
    check(
        slow("4095:1048575", &in_cg),
        &["invalid device", "no such device"],
    );
    // A target with no cgroup to throttle.
    let missing = format!("{cgroup}-missing");
    check(
        slow(&device, &["--cgroup", &missing]),
        &["invalid cgroup", "no cgroup"],
    );
    if std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd") {
        check(
            slow(&device, &["--pid", "2"]),
            &["invalid pid", "kernel thread"],
        );
    }
    let mut gone = ChildProcess::spawn(Command::new("true")).expect("true");
    let gone_pid = gone.pid().to_string();
    gone.wait().expect("wait");
    check(
        slow(&device, &["--pid", &gone_pid]),
        &["invalid pid", "no process"],
    );
    check(slow(&device, &[]), &["invalid pid", "needs a target"]);
    // Limits below what cgroup v2 takes.
    let mut low = slow(&device, &in_cg);
    low.splice(5..7, ["--write-iops".to_owned(), "1".to_owned()]);
    check(low, &["invalid write-iops", "below"]);
    if w.v2 {
        let root = cgroup2_mount()
            .expect("cgroup2 mount")
            .display()
            .to_string();
        check(
            slow(&device, &["--cgroup", &root, "--force"]),
            &["invalid cgroup", "root"],
        );
    }
    drop(parted);
    oracle.assert_clean(&before);
}

#[test]
fn v2_enables_io_for_the_parent_and_disables_it_after() {
    let w = skip_on_err!(World::new(128 * MIB));
    skip_unless!(if w.v2 {
        Ok(())
    } else {
        Err("cgroup v1 blkio here: io.max and cgroup.subtree_control are cgroup v2's")
    });
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let parent = TestCgroup::in_dir(w.cg.path(), CgroupVersion::V2).expect("parent");
    let child = TestCgroup::in_dir(parent.path(), CgroupVersion::V2).expect("child");
    // The test cgroup offers io to its children only if chaos asks: parent has none yet.
    w.cg.write("cgroup.subtree_control", "+io")
        .expect("io for the test cgroup's children");
    assert_eq!(parent.read("cgroup.subtree_control").unwrap().trim(), "");
    assert!(!child.path().join("io.max").exists());
    let files = limit_state(child.path(), true);
    let (dev, device) = (w.dev(), w.device());
    let target = child.path().display().to_string();
    let fault = arm(
        &w.chaos,
        &[
            "slow",
            "--device",
            &device,
            "--write-bps",
            "2mb",
            "--cgroup",
            &target,
            "--duration",
            "60s",
        ],
    );
    assert!(
        parent
            .read("cgroup.subtree_control")
            .unwrap()
            .contains("io"),
        "io not enabled for {}",
        parent.path().display()
    );
    let max = child.read("io.max").expect("io.max while armed");
    assert!(
        max.contains(&format!("{dev} rbps=max wbps={LIMIT}")),
        "{max}"
    );
    let file = w.mnt().join("nested");
    let mut writer = start(
        dd(Path::new("/dev/zero"), &file, 24 * MIB / BLOCK),
        Some(&child),
    );
    let slow = rate(
        &mut writer,
        &file,
        Duration::from_secs(1),
        Duration::from_secs(3),
    );
    println!("nested cgroup while armed: {}", mib_s(slow));
    assert!(within(slow, LIMIT, 0.2), "nested: {}", mib_s(slow));
    writer.kill().expect("kill dd");
    fault.recover();
    assert_eq!(limit_state(child.path(), true), files);
    assert!(!child.path().join("io.max").exists());
    // A process of the parent's: it can no longer enable io for its children, so chaos says
    // why instead of arming.
    let _resident = start(
        {
            let mut c = Command::new("sleep");
            c.arg("1000");
            c
        },
        Some(&parent),
    );
    rejects(
        &w.chaos,
        &[
            "inject",
            "io",
            "hang",
            "--device",
            &device,
            "--cgroup",
            &target,
            "--duration",
            "10s",
        ],
        &["processes of its own", &parent.path().display().to_string()],
    );
    assert_nothing_armed(&w.chaos, Duration::ZERO);
    drop(_resident);
    drop(child);
    drop(parent);
    w.cg.write("cgroup.subtree_control", "-io")
        .expect("io back off for the test cgroup's children");
    oracle.assert_clean(&before);
}
