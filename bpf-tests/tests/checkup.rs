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
//!   objects: the oracle; nor a state directory `/run/chaos` that was not there before).

use bpf_tests::{
    LoopDevice, TestCgroup,
    chaos::Chaos,
    checkup::{BlkioTwin, Checkup, NothingLeft, free_port},
    redis::{redis_cli, start_redis},
    skip_on_err,
};

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
    let nothing_left = NothingLeft::now();
    let mut redis = start_redis(&data, port, &cg, &twin);
    assert_eq!(redis_cli(port, &["SET", "checkup:before", "kept"]), "OK");

    let traffic = format!(
        "while :; do redis-cli -p {port} SET checkup:traffic x >/dev/null 2>&1; sleep 0.1; done"
    );
    let probe = format!("127.0.0.1:{port}");
    let checkup = Checkup::run(
        &chaos,
        &[
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
        ],
    );
    let report = &checkup.report;
    let context = checkup.context();

    // The checkup completed, with the verdict in its exit code, a score below 100 and its
    // findings ranked worst first, each with the drill's own report.
    checkup.assert_scored(2);

    // Redis's AOF risks, with their real effect: at the first append or fsync of the AOF that
    // fails, Redis with `appendfsync always` exits; nothing restarts it, so the drill's recovery
    // fails, the finding is the worst and the checkup stops there. The fsync EIO drill needs a
    // kernel that can fail syscalls (kprobes + function error injection, or BPF LSM); where it
    // cannot, admission refuses it with the reason, and the disk-full drill (a real fill, no
    // kernel support needed) shows the same exit.
    let (worst, log_line) = match checkup.finding("redis-aof-fsync-eio") {
        Some(f) => (f, "Can't persist AOF for fsync error"),
        None => {
            checkup.assert_skipped("redis-aof-fsync-eio", "cannot syscall fail");
            let full = checkup
                .finding("redis-aof-disk-full")
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

    // The scenario that needs the clients' addresses is skipped with the reason.
    checkup.assert_skipped("redis-client-network-delay", "--set clients=");
    let page = std::fs::read_to_string(checkup.dir().join("report.html")).expect("report.html");
    assert!(page.contains("redis-aof-fsync-eio"));

    // Restarted as a supervisor would: the AOF loads and Redis serves.
    drop(redis);
    let redis = start_redis(&data, port, &cg, &twin);
    assert_eq!(redis_cli(port, &["GET", "checkup:before"]), "kept");
    assert_eq!(redis_cli(port, &["SET", "checkup:after", "1"]), "OK");

    // Nothing of chaos is left.
    nothing_left.assert(&chaos);
    drop(redis);
    drop(twin);
    drop(cg);
}
