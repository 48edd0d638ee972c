//! `chaos checkup --profile redis` on a real Redis from Debian's packages (`redis-server`,
//! `redis-tools`; skipped where they are not installed, as in the VMs).
//!
//! The test starts its own redis-server on a free loopback port, with `appendonly yes` and
//! `appendfsync always`, its data directory on an ext4 loop device of the test's own (so the io
//! drills slow and fail a device nobody else uses), in a cgroup v2 of the test's own (and a
//! blkio v1 cgroup of the same name where the machine throttles I/O through v1). A redis-cli
//! loop writes during every drill (`--traffic`). Then:
//!
//! - the checkup completes and writes report.json (`chaos.checkup/v1`), report.html and each
//!   drill's own report;
//! - Redis's AOF risk is found with its real effect: Redis 7 with `appendfsync always` exits
//!   (status 1) at the first append or fsync of the AOF that fails, logging `Can't persist AOF
//!   for fsync error` (fsync EIO) or `Can't recover from AOF write error` (ENOSPC), so writes
//!   fail from then on and, with nothing to restart it, it does not recover: the worst finding,
//!   and the checkup stops there. `redis-aof-fsync-eio` needs a kernel that can fail syscalls
//!   (kprobes with function error injection, or BPF LSM); where it cannot, admission refuses it
//!   with that reason and `redis-aof-disk-full` (a real fill of the test's loop device, any
//!   kernel) is the drill that takes Redis down;
//! - the score is below 100, the findings are ranked worst first, and the scenario that needs
//!   the clients' addresses is skipped with the reason;
//! - restarted as a supervisor would, Redis loads its AOF (the key written before the checkup
//!   is there) and serves (PING, a write); nothing of chaos is left (faults, processes, kernel
//!   objects: the oracle).

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bpf_tests::{
    ChildProcess, LoopDevice, Oracle, TestCgroup,
    chaos::Chaos,
    skip_on_err,
    world::{cgroup_v1_mount, unique_name},
};
use serde_json::Value;

/// The blkio v1 cgroup named as the test's v2 cgroup, where this machine throttles I/O through
/// v1: chaos finds a process's io cgroup by the same name in each hierarchy. Drop moves its
/// processes back to the root and removes it.
struct BlkioTwin(Option<PathBuf>);

impl BlkioTwin {
    fn new(cg: &TestCgroup) -> BlkioTwin {
        let Some(root) = cgroup_v1_mount("blkio") else {
            return BlkioTwin(None);
        };
        let dir = root.join(cg.path().file_name().expect("a cgroup name"));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        BlkioTwin(Some(dir))
    }

    fn add(&self, pid: u32) {
        if let Some(dir) = &self.0 {
            std::fs::write(dir.join("cgroup.procs"), pid.to_string())
                .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", dir.display()));
        }
    }
}

impl Drop for BlkioTwin {
    fn drop(&mut self) {
        let Some(dir) = &self.0 else { return };
        let root = dir.parent().expect("the hierarchy's root");
        for pid in std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
        {
            let _ = std::fs::write(root.join("cgroup.procs"), pid);
        }
        let _ = std::fs::remove_dir(dir);
    }
}

/// A scratch directory for the reports, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("running redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// redis-server on `port` with its data in `dir`, in `cg` (and `twin`), answering PING.
fn start_redis(dir: &Path, port: u16, cg: &TestCgroup, twin: &BlkioTwin) -> ChildProcess {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--daemonize", "no", "--bind", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .arg("--dir")
        .arg(dir)
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ])
        .args(["--logfile", "redis.log"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let redis = ChildProcess::builder(cmd)
        .cgroup(cg)
        .spawn()
        .expect("starting redis-server");
    twin.add(redis.pid());
    let start = Instant::now();
    while redis_cli(port, &["PING"]) != "PONG" {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "redis-server did not answer PING in 20 s; its log:\n{}",
            std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    redis
}

fn finding<'a>(report: &'a Value, id: &str) -> Option<&'a Value> {
    report["findings"]
        .as_array()?
        .iter()
        .find(|f| f["scenario"] == id)
}

fn skipped<'a>(report: &'a Value, id: &str) -> Option<&'a Value> {
    report["skipped"]
        .as_array()?
        .iter()
        .find(|f| f["scenario"] == id)
}

#[test]
fn a_redis_checkup_finds_the_aof_fsync_risk_and_leaves_nothing_behind() {
    skip_on_err!(bpf_tests::skip::require_command("redis-server"));
    skip_on_err!(bpf_tests::skip::require_command("redis-cli"));
    skip_on_err!(bpf_tests::skip::require_loop());
    let chaos = skip_on_err!(Chaos::from_env());
    // No blocks reserved for root: redis-server runs as root here, and the disk-full drill fills
    // the filesystem as df counts it.
    let lo =
        LoopDevice::with_ext4_options(128 << 20, &["-m", "0"]).expect("a loop device with ext4");
    let cg = TestCgroup::new_v2().expect("a cgroup v2");
    let twin = BlkioTwin::new(&cg);
    let data = lo.mount_point().expect("mounted").join("redis");
    std::fs::create_dir(&data).expect("redis's data directory");
    let port = free_port();
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let mut redis = start_redis(&data, port, &cg, &twin);
    assert_eq!(redis_cli(port, &["SET", "checkup:before", "kept"]), "OK");

    let scratch = Scratch(std::env::temp_dir().join(unique_name()));
    let traffic = format!(
        "while :; do redis-cli -p {port} SET checkup:traffic x >/dev/null 2>&1; sleep 0.1; done"
    );
    let probe = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let out = chaos
        .command(&[
            "checkup",
            "--profile",
            "redis",
            "--pid",
            &redis.pid().to_string(),
            "--probe",
            &probe,
            "--traffic",
            &traffic,
            "--set",
            "window=10s",
            "--json",
            "--report-dir",
        ])
        .arg(&scratch.0)
        .output()
        .expect("running chaos checkup");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "chaos checkup took {:?}, exit {:?}\n{stderr}",
        started.elapsed(),
        out.status.code()
    );
    let report: Value = std::fs::read(scratch.0.join("report.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("no report.json; stdout:\n{stdout}\nstderr:\n{stderr}"));
    let context = format!("{stderr}\n{report:#}");

    // The checkup completed, with the verdict in its exit code.
    assert_eq!(report["schema"], "chaos.checkup/v1");
    let score = report["score"].as_u64().expect("a score");
    let expected_code = if report["passed"] == true { 0 } else { 1 };
    assert_eq!(out.status.code(), Some(expected_code), "{context}");
    assert!(score < 100, "score {score}: {context}");
    assert!(
        stdout.lines().any(|l| l.contains("\"event\":\"done\"")),
        "{stdout}"
    );

    // Redis's AOF risks, with their real effect: at the first append or fsync of the AOF that
    // fails, Redis with `appendfsync always` exits; nothing restarts it, so the drill's recovery
    // fails, the finding is the worst and the checkup stops there. The fsync EIO drill needs a
    // kernel that can fail syscalls (kprobes + function error injection, or BPF LSM); where it
    // cannot, admission refuses it with the reason, and the disk-full drill (a real fill, no
    // kernel support needed) shows the same exit.
    let (worst, log_line) = match finding(&report, "redis-aof-fsync-eio") {
        Some(f) => (f, "Can't persist AOF for fsync error"),
        None => {
            let refused = skipped(&report, "redis-aof-fsync-eio")
                .unwrap_or_else(|| panic!("the AOF fsync drill is nowhere: {context}"));
            assert!(
                refused["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("cannot syscall fail")),
                "{refused}"
            );
            let full = finding(&report, "redis-aof-disk-full")
                .unwrap_or_else(|| panic!("the AOF disk-full drill is not a finding: {context}"));
            (full, "Can't recover from AOF write error")
        }
    };
    assert_eq!(worst["outcome"], "did_not_recover", "{worst:#}");
    assert_eq!(worst["rank"], 1, "{worst:#}");
    let ev = &worst["evidence"];
    let writes = &ev["traffic"][0];
    assert_eq!(writes["name"], "writes", "{ev:#}");
    assert!(writes["errors"].as_u64() > Some(0), "{writes:#}");
    assert_eq!(writes["baseline_errors"], 0, "{writes:#}");
    assert!(
        ev["expectations"][0]["verdict"] == "pass"
            && ev["expectations"][0]["measured"].as_f64() >= Some(50.0),
        "writes were not refused while the AOF could not be written: {ev:#}"
    );
    assert_eq!(ev["recovery"], "fail", "{ev:#}");
    assert!(
        worst["prevention"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
            && worst["emergency"].as_array().is_some_and(|p| !p.is_empty())
    );
    let scenario = worst["scenario"].as_str().unwrap();
    assert!(
        report["stopped"]
            .as_str()
            .is_some_and(|s| s.contains(scenario)),
        "{context}"
    );
    let status = redis.try_wait().expect("redis's status");
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "redis-server did not exit"
    );
    let log = std::fs::read_to_string(data.join("redis.log")).unwrap_or_default();
    assert!(
        log.contains(log_line),
        "{log_line} not in redis's log:\n{log}"
    );

    // Ranked worst first, the drills' own reports written, the unfillable scenario skipped.
    let findings = report["findings"].as_array().unwrap();
    assert!(findings.len() >= 2, "{context}");
    for (i, pair) in findings.windows(2).enumerate() {
        assert_eq!(pair[0]["rank"], i + 1);
        assert!(
            pair[0]["risk_points"].as_f64() >= pair[1]["risk_points"].as_f64(),
            "not ranked: {context}"
        );
    }
    for f in findings {
        let page = scratch.0.join(f["report_html"].as_str().unwrap());
        assert!(page.is_file(), "{} missing", page.display());
        assert!(scratch.0.join(f["report"].as_str().unwrap()).is_file());
    }
    let delay = skipped(&report, "redis-client-network-delay")
        .unwrap_or_else(|| panic!("the delay scenario is not skipped: {context}"));
    assert!(
        delay["reason"].as_str().unwrap().contains("--set clients="),
        "{delay}"
    );
    let page = std::fs::read_to_string(scratch.0.join("report.html")).expect("report.html");
    assert!(page.contains("redis-aof-fsync-eio") && page.contains(&format!(">{score}<")));

    // Restarted as a supervisor would: the AOF loads and Redis serves.
    drop(redis);
    let redis = start_redis(&data, port, &cg, &twin);
    assert_eq!(redis_cli(port, &["GET", "checkup:before"]), "kept");
    assert_eq!(redis_cli(port, &["SET", "checkup:after", "1"]), "OK");

    // Nothing of chaos is left.
    bpf_tests::demo::assert_clean(&chaos, &oracle, &before);
    drop(redis);
    drop(twin);
    drop(cg);
}
