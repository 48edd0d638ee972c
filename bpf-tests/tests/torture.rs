//! Torture: rounds of `chaos inject` -> kill -9 of every process of ours at a random moment
//! (arming included) -> `chaos recover --all`, over every fault kind this kernel supports. After
//! every round the oracle finds nothing of ours, and the test world is as it was: traffic flows,
//! the target process runs, the test cgroup has no I/O limit, the filesystem has its space.
//!
//! `CHAOS_TORTURE_ROUNDS` sets the number of rounds (default 100; two per fault kind in a VM),
//! `CHAOS_TORTURE_SEED` the random seed (default: from the clock; printed, so a failing run can
//! be replayed).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bpf_tests::{
    ChildProcess, LoopDevice, Oracle, Snapshot, TestCgroup, TwoHosts, UdpSink,
    chaos::Chaos,
    skip_on_err, skip_unless, udp_blast,
    world::{CgroupVersion, cgroup2_mount},
};

/// Long enough that no fault ends by itself during a round: recover --all must do the work.
const FAULT_DURATION: &str = "60s";
const UDP_PORT: u16 = 47_321;
/// The probe's cached answer (beside the default state directory).
const PROBE_CACHE: &str = "/run/chaos.probe.json";

/// One fault kind of the rotation.
struct Kind {
    name: &'static str,
    args: Vec<String>,
    /// How long arming took when calibrated (no kill).
    arm_time: Duration,
    /// Rounds run, and how many of them killed the CLI while it was arming.
    rounds: u32,
    killed_arming: u32,
}

/// A small xorshift generator: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// The test world: two hosts, a loop device with ext4, a cgroup where block I/O limits apply,
/// a cgroup v2 for socket hooks, and a target process.
struct World {
    chaos: Chaos,
    hosts: TwoHosts,
    // Processes first, then their cgroups, then the disk.
    target: ChildProcess,
    /// A socket of this test process in A's namespace, so that `--pid` (which selects the
    /// sockets a process holds when armed) has one to select.
    _held: std::net::UdpSocket,
    io_cg: TestCgroup,
    sock_cg: Option<TestCgroup>,
    disk: LoopDevice,
    oracle: Oracle,
    before: Snapshot,
    limits_before: String,
    avail_before: u64,
}

impl World {
    fn new() -> Result<World, String> {
        bpf_tests::skip::require_root()?;
        bpf_tests::skip::require_loop()?;
        let chaos = Chaos::from_env()?;
        let hosts = TwoHosts::new().map_err(|e| format!("two hosts: {e}"))?;
        let disk = LoopDevice::with_ext4(64 << 20).map_err(|e| format!("ext4 on loop: {e}"))?;
        let io_cg = TestCgroup::new("blkio").map_err(|e| format!("io cgroup: {e}"))?;
        let sock_cg = cgroup2_mount().and_then(|_| TestCgroup::new_v2().ok());
        let mut sleeper = Command::new("sh");
        sleeper.args(["-c", "while :; do sleep 0.2; done"]);
        let target = ChildProcess::builder(sleeper)
            .cgroup(&io_cg)
            .spawn()
            .map_err(|e| format!("target process: {e}"))?;
        let held = hosts
            .a
            .ns
            .run(|| std::net::UdpSocket::bind((hosts.a.v4(), 0)))
            .map_err(|e| format!("socket in A: {e}"))?;
        let oracle = Oracle::new().with_netns(&hosts.netns_names());
        let before = oracle.snapshot();
        let mut w = World {
            chaos,
            hosts,
            target,
            _held: held,
            io_cg,
            sock_cg,
            disk,
            oracle,
            before,
            limits_before: String::new(),
            avail_before: 0,
        };
        w.limits_before = w.limits();
        w.avail_before = w.available();
        Ok(w)
    }

    fn mount(&self) -> &Path {
        self.disk.mount_point().expect("mounted")
    }

    /// Every fault kind to try; those this kernel refuses are left out at calibration.
    fn kinds(&self) -> Vec<Kind> {
        let a = &self.hosts.a;
        let b = &self.hosts.b;
        let on_a = |action: &str, extra: &[&str]| {
            let mut v = vec!["net".to_owned(), action.to_owned()];
            v.extend(extra.iter().map(|s| s.to_string()));
            v.extend(
                ["--interface", &a.ifname, "--netns", a.ns.name()]
                    .iter()
                    .map(|s| s.to_string()),
            );
            v
        };
        let pid = self.target.pid().to_string();
        let me = std::process::id().to_string();
        let dev = self.disk.device().display().to_string();
        let mnt = self.mount().display().to_string();
        let io_cg = self.io_cg.path().display().to_string();
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut kinds = vec![
            (
                "net loss",
                on_a("loss", &["--percent", "50", "--direction", "both"]),
            ),
            (
                "net partition",
                on_a("partition", &["--dst", &format!("{}/32", b.v4())]),
            ),
            ("net corrupt", on_a("corrupt", &["--percent", "5"])),
            ("net duplicate", on_a("duplicate", &["--percent", "5"])),
            (
                "net delay",
                on_a("delay", &["--latency", "20ms", "--jitter", "5ms"]),
            ),
            ("net rate", on_a("rate", &["--rate", "1mbit"])),
            (
                "net loss by pid",
                on_a("loss", &["--percent", "30", "--pid", &me]),
            ),
            (
                "syscall stop",
                words(&["syscall", "stop", "--syscall", "wait4", "--pid", &pid]),
            ),
            (
                "syscall delay",
                words(&[
                    "syscall",
                    "delay",
                    "--latency",
                    "10ms",
                    "--syscall",
                    "wait4",
                    "--pid",
                    &pid,
                ]),
            ),
            (
                "syscall fail",
                words(&[
                    "syscall",
                    "fail",
                    "--syscall",
                    "openat",
                    "--errno",
                    "EACCES",
                    "--pid",
                    &pid,
                ]),
            ),
            (
                "io slow",
                words(&[
                    "io",
                    "slow",
                    "--device",
                    &dev,
                    "--write-bps",
                    "1mb",
                    "--cgroup",
                    &io_cg,
                ]),
            ),
            (
                "io hang",
                words(&["io", "hang", "--device", &dev, "--cgroup", &io_cg]),
            ),
            (
                "io fail",
                words(&["io", "fail", "--device", &dev, "--cgroup", &io_cg]),
            ),
            (
                "disk fill",
                words(&["disk", "fill", "--path", &mnt, "--percent", "90"]),
            ),
            (
                "disk fill --virtual",
                words(&["disk", "fill", "--virtual", "--path", &mnt, "--pid", &pid]),
            ),
        ];
        if let Some(cg) = &self.sock_cg {
            let cg = cg.path().display().to_string();
            kinds.push((
                "net loss by cgroup",
                on_a("loss", &["--percent", "30", "--cgroup", &cg]),
            ));
            kinds.push((
                "syscall fail connect",
                words(&[
                    "syscall",
                    "fail",
                    "--syscall",
                    "connect",
                    "--errno",
                    "ECONNREFUSED",
                    "--cgroup",
                    &cg,
                ]),
            ));
        }
        kinds
            .into_iter()
            .map(|(name, mut args)| {
                args.extend(["--duration".to_owned(), FAULT_DURATION.to_owned()]);
                Kind {
                    name,
                    args,
                    arm_time: Duration::ZERO,
                    rounds: 0,
                    killed_arming: 0,
                }
            })
            .collect()
    }

    /// The I/O limit files of the test cgroup, as one text.
    fn limits(&self) -> String {
        let files: &[&str] = match self.io_cg.version() {
            CgroupVersion::V1 => &[
                "blkio.throttle.read_bps_device",
                "blkio.throttle.write_bps_device",
                "blkio.throttle.read_iops_device",
                "blkio.throttle.write_iops_device",
            ],
            CgroupVersion::V2 => &["io.max"],
        };
        files
            .iter()
            .map(|f| format!("{f}: {}", self.io_cg.read(f).unwrap_or_default().trim()))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Bytes available on the test filesystem.
    fn available(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(self.mount()).expect("statvfs");
        st.blocks_available() * st.fragment_size()
    }

    /// Files of ours on the test filesystem.
    fn fill_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.mount())
            .expect("read the mount")
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".chaos-fill"))
            })
            .collect()
    }

    /// Whether the target process is stopped (state T).
    fn target_state(&self) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.target.pid()))
            .expect("the target process is alive");
        stat.rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .expect("state")
    }

    /// Datagrams from A to B that arrive, of `n`.
    fn udp(&self, n: u64) -> u64 {
        let to: IpAddr = self.hosts.b.v4();
        let sink = UdpSink::bind(&self.hosts.b.ns, to, UDP_PORT).expect("sink");
        let sent = udp_blast(&self.hosts.a.ns, to, UDP_PORT, n, 64).expect("blast");
        assert_eq!(sent, n, "the sender itself loses nothing");
        sink.count_expecting(n, Duration::from_secs(10))
    }

    /// Panics with everything that is not as before.
    fn assert_as_before(&self, round: u32, kind: &str) {
        let mut wrong = Vec::new();
        let left = self
            .oracle
            .leftovers_settled(&self.before, bpf_tests::oracle::SETTLE);
        wrong.extend(left.iter().map(|l| format!("oracle: {l}")));
        let limits = self.limits();
        if limits != self.limits_before {
            wrong.push(format!(
                "I/O limits {limits:?}, before {:?}",
                self.limits_before
            ));
        }
        let fills = self.fill_files();
        if !fills.is_empty() {
            wrong.push(format!("fill files left: {fills:?}"));
        }
        let avail = self.available();
        if avail + (4 << 20) < self.avail_before {
            wrong.push(format!(
                "{} bytes available, {} before",
                avail, self.avail_before
            ));
        }
        // A target stopped by a `stop` fault may be seen stopped for a moment after SIGCONT.
        let started = Instant::now();
        while self.target_state() == 'T' && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.target_state() == 'T' {
            wrong.push("the target process is still stopped".into());
        }
        let got = self.udp(50);
        if got != 50 {
            wrong.push(format!("{got} of 50 datagrams from A to B arrived"));
        }
        // A keeper that was not killed finds nothing left to keep and exits within its idle
        // time (1 s; more on a busy host).
        let started = Instant::now();
        let mut stray = self.chaos.processes();
        while !stray.is_empty() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
            stray = self.chaos.processes();
        }
        if !stray.is_empty() {
            wrong.push(format!("chaos processes still running: {stray:?}"));
        }
        assert!(
            wrong.is_empty(),
            "round {round} ({kind}): the world is not as before:\n  {}",
            wrong.join("\n  ")
        );
    }
}

/// `chaos inject ARGS` started, and every process of ours killed -9 `after` later. Returns
/// whether the inject command was still running when killed.
fn inject_and_kill(chaos: &Chaos, args: &[String], after: Duration) -> bool {
    let mut full = vec!["inject"];
    full.extend(args.iter().map(String::as_str));
    let mut cli = chaos
        .command(&full)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chaos inject");
    std::thread::sleep(after);
    let running = cli.try_wait().expect("poll chaos inject").is_none();
    let _ = cli.kill();
    let _ = cli.wait();
    // Whatever it started: deadline keepers, delay keepers.
    for pid in chaos.processes() {
        // SAFETY: kill(2) on a pid running our binary; gone already is ESRCH.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    running
}

#[test]
fn inject_kill_recover_rounds_leave_nothing() {
    let w = skip_on_err!(World::new());
    // 100 rounds natively; in a VM under TCG (5-10 s a round) two per kind, one killed while
    // arming and one after (the odd and even rounds), so the VM suite stays within CI's time.
    let asked: Option<u32> = std::env::var("CHAOS_TORTURE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok());
    let in_vm = std::env::var_os("CHAOS_IN_VM").is_some_and(|v| !v.is_empty());
    let seed: u64 = std::env::var("CHAOS_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as u64
                | 1
        });
    println!("torture: seed {seed} (CHAOS_TORTURE_SEED replays it)");
    let mut rng = Rng(seed);

    // Calibration: each kind armed and recovered once, uninterrupted, to learn how long arming
    // takes; the kinds this kernel refuses are left out with its reason.
    let mut kinds = Vec::new();
    let mut refused = BTreeMap::new();
    for mut k in w.kinds() {
        let mut full = vec!["inject"];
        full.extend(k.args.iter().map(String::as_str));
        full.push("--json");
        let start = Instant::now();
        match w.chaos.run(&full) {
            Ok(_) => {
                k.arm_time = start.elapsed();
                w.chaos
                    .recover_all()
                    .expect("recover --all after calibration");
                w.assert_as_before(0, k.name);
                kinds.push(k);
            }
            Err(f) if f.stderr.contains("this kernel cannot") => {
                refused.insert(k.name, f.stderr.trim().to_owned());
            }
            Err(f) => panic!("calibrating {}: {f}", k.name),
        }
    }
    for (name, why) in &refused {
        println!("torture: {name} not on this kernel: {why}");
    }
    assert!(!kinds.is_empty(), "no fault kind is supported here");
    println!(
        "torture: {} kinds: {}",
        kinds.len(),
        kinds
            .iter()
            .map(|k| format!("{} ({} ms to arm)", k.name, k.arm_time.as_millis()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let rounds = asked.unwrap_or(if in_vm { 2 * kinds.len() as u32 } else { 100 });
    let started = Instant::now();
    for round in 1..=rounds {
        let n = kinds.len();
        let k = &mut kinds[(round as usize - 1) % n];
        // Half the kills are aimed inside the arming time, half inside the next arming time
        // (when the fault is armed and only the keepers run), alternating by pass over the
        // kinds so that each kind gets both; arming takes more or less time than calibrated,
        // so where each one lands is counted, not assumed.
        let second_half = (round as usize - 1) / n % 2 == 1;
        let arm = k.arm_time.as_micros() as u64;
        let after = Duration::from_micros(rng.below(arm + 1) + if second_half { arm } else { 0 });
        // Every third round probes the kernel afresh, so kills also land while probing.
        if round % 3 == 0 {
            let _ = std::fs::remove_file(PROBE_CACHE);
        }
        let arming = inject_and_kill(&w.chaos, &k.args, after);
        k.rounds += 1;
        k.killed_arming += u32::from(arming);
        let recovered = w.chaos.recover_all();
        assert!(
            recovered.is_ok(),
            "round {round} ({}, killed at {after:?}): recover --all failed: {}",
            k.name,
            recovered.unwrap_err()
        );
        w.assert_as_before(round, k.name);
        if round % 10 == 0 {
            println!(
                "torture: {round}/{rounds} rounds, {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }

    // The world works: a full-speed direct write from the test cgroup, traffic both ways.
    let file = w.mount().join("after-torture");
    let mut dd = Command::new("dd");
    dd.args([
        "if=/dev/zero",
        &format!("of={}", file.display()),
        "bs=64k",
        "count=64",
        "oflag=direct",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let t = Instant::now();
    let mut writer = ChildProcess::builder(dd)
        .cgroup(&w.io_cg)
        .spawn()
        .expect("dd");
    assert!(writer.wait().expect("dd").success(), "a 4 MiB write works");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "a 4 MiB write took {:?}",
        t.elapsed()
    );
    std::fs::remove_file(&file).expect("remove the test file");
    let sock: SocketAddr = (w.hosts.a.v4(), UDP_PORT).into();
    let sink = UdpSink::bind(&w.hosts.a.ns, sock.ip(), UDP_PORT).expect("sink on A");
    let sent = udp_blast(&w.hosts.b.ns, sock.ip(), UDP_PORT, 200, 64).expect("blast B to A");
    assert_eq!(
        sink.count_expecting(sent, Duration::from_secs(10)),
        sent,
        "traffic from B to A flows"
    );
    assert_eq!(w.udp(200), 200, "traffic from A to B flows");

    let arming: u32 = kinds.iter().map(|k| k.killed_arming).sum();
    println!(
        "torture: {rounds} rounds in {:.0} s over {} kinds; killed while arming {arming}, \
         after arming {}; recover --all every time; the oracle found nothing, the world works",
        started.elapsed().as_secs_f64(),
        kinds.len(),
        rounds - arming
    );
    for k in &kinds {
        println!(
            "torture:   {:<22} {:>3} rounds, {:>3} killed while arming",
            k.name, k.rounds, k.killed_arming
        );
    }
}

/// `recover --all` with the store gone (the state directory deleted, as a careless cleanup or a
/// tmpfs remount would): what the kernel shows of ours is found by its marks and removed.
#[test]
fn recover_all_sweeps_what_no_record_names() {
    let w = skip_on_err!(World::new());
    // tc filters through netlink (a TCX link would be pinned, and go with the pins).
    let chaos = w.chaos.env("CHAOS_TC_ATTACH", "clsact");
    skip_unless!(chaos.probe_row("tc_clsact"));
    let a = &w.hosts.a;
    let mut armed = Vec::new();
    for args in [
        vec!["net", "loss", "--percent", "100", "--direction", "both"],
        vec!["net", "delay", "--latency", "20ms"],
    ] {
        let mut full: Vec<&str> = args.clone();
        full.extend([
            "--interface",
            &a.ifname,
            "--netns",
            a.ns.name(),
            "--duration",
            "60s",
        ]);
        match chaos.inject(&full) {
            Ok(id) => armed.push((args.join(" "), id)),
            Err(f) if f.stderr.contains("this kernel cannot") => {
                println!("sweep: {} not on this kernel", args.join(" "));
            }
            Err(f) => panic!("{args:?}: {f}"),
        }
    }
    // A process sharing its cgroup with the target: `io slow --pid` moves it into a cgroup of
    // its own, which the sweep must undo.
    let mut other = Command::new("sleep");
    other.arg("600");
    let _other = ChildProcess::builder(other)
        .cgroup(&w.io_cg)
        .spawn()
        .expect("second process");
    let pid = w.target.pid().to_string();
    let dev = w.disk.device().display().to_string();
    match chaos.inject(&[
        "io",
        "slow",
        "--device",
        &dev,
        "--write-bps",
        "1mb",
        "--pid",
        &pid,
        "--duration",
        "60s",
    ]) {
        Ok(id) => armed.push(("io slow --pid".into(), id)),
        // On cgroup v2 a process cannot get a cgroup of its own below one that holds others.
        Err(f) => println!("sweep: io slow --pid refused here: {}", f.stderr.trim()),
    }
    assert!(!armed.is_empty(), "nothing could be armed");
    assert_eq!(w.udp(20), 0, "the loss is armed");
    // The store is lost.
    std::fs::remove_dir_all(bpf_tests::oracle::DEFAULT_STATE_DIR).expect("delete the state dir");
    let out = chaos.output(&["recover", "--all", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let swept = report["swept"].as_array().cloned().unwrap_or_default();
    println!(
        "sweep: armed {:?}, deleted the state directory; recover --all removed {} trace(s) no record named: {}",
        armed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        swept.len(),
        swept
            .iter()
            .filter_map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    );
    assert!(!swept.is_empty(), "the sweep found nothing: {report}");
    w.assert_as_before(0, "lost store");
    assert!(
        w.io_cg.pids().expect("pids").contains(&w.target.pid()),
        "the moved process is back in its cgroup"
    );
}
