//! `chaos checkup --profile postgresql` on a real PostgreSQL from Debian's packages
//! (`postgresql`: the server, pgbench, psql and pg_isready; skipped where they are not
//! installed, as in the VMs).
//!
//! The test makes its own cluster with initdb, as the `postgres` user: the data directory on an
//! ext4 loop device of the test's own, pg_wal on a second one (`initdb --waldir`: the WAL on a
//! filesystem of its own, as the catalog advises, so the WAL drill fills only that), with 1 MiB
//! WAL segments so that pgbench needs a new segment every second or two. The postmaster listens
//! on a free loopback port with `fsync=on`, in a cgroup v2 of the test's own (and its blkio v1
//! twin). pgbench, rate-limited, writes during every drill (`--traffic`). Then:
//!
//! - the checkup completes, with a score below 100 and its findings ranked worst first, each
//!   drill's own report written; the data directory and the port were found by the checkup
//!   itself (`/proc/PID/cwd`, `--probe`); the scenarios that need a standby or the application
//!   are skipped with the reason;
//! - `postgresql-fsync-eio` needs a kernel that can fail syscalls (kprobes with function error
//!   injection, or BPF LSM); where it cannot, admission refuses it with that reason;
//! - `postgresql-wal-dir-full` (a real fill of pg_wal's filesystem) takes PostgreSQL down as it
//!   really goes: writing into a WAL segment already made needs no space, but at the next
//!   segment the backend PANICs (`could not write to file "pg_wal/xlogtemp.N": No space left
//!   on device`), the postmaster ends every session and starts crash recovery, which needs a
//!   new segment too: the startup process fails the same way and the postmaster shuts down
//!   (`shutting down due to startup process failure`). Nothing restarts it, so the drill's
//!   recovery fails: the worst finding, and the checkup stops there;
//! - restarted as a supervisor would, PostgreSQL replays its WAL and serves: `SELECT 1`, and
//!   pgbench's tables hold every row and balance as TPC-B requires (the accounts', tellers' and
//!   branches' balances each sum to the history's deltas: no committed transaction was lost or
//!   half kept); nothing of chaos is left (faults, processes, kernel objects: the oracle; nor a
//!   state directory `/run/chaos` that was not there before).

use std::{
    fs::OpenOptions,
    os::unix::fs::{PermissionsExt, chown},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bpf_tests::{
    ChildProcess, LoopDevice, TestCgroup,
    chaos::Chaos,
    checkup::{BlkioTwin, Checkup, NothingLeft, free_port, wait_serving},
    skip_on_err,
};
use nix::unistd::User;

/// pgbench's scale: 100 000 accounts.
const SCALE: u64 = 1;

/// The newest PostgreSQL server installed (`/usr/lib/postgresql/N/bin`, as Debian lays it out).
fn server_bin() -> Result<PathBuf, String> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no PostgreSQL server installed (/usr/lib/postgresql: {e})"))?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file())
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no initdb and postgres under /usr/lib/postgresql/*/bin".into())
}

/// A cluster of the test's own, run as the `postgres` user.
struct Cluster {
    bin: PathBuf,
    user: User,
    data: PathBuf,
    sockets: PathBuf,
    log: PathBuf,
    port: u16,
}

impl Cluster {
    /// A directory owned by the cluster's user, mode 0700 (as PostgreSQL wants its own).
    fn own_dir(&self, dir: &Path) {
        std::fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        chown(
            dir,
            Some(self.user.uid.as_raw()),
            Some(self.user.gid.as_raw()),
        )
        .unwrap_or_else(|e| panic!("chown {}: {e}", dir.display()));
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
    }

    /// `program ARGS` as the cluster's user, in the same process (setpriv execs it, so a pid
    /// taken of it is the program's).
    fn as_user(&self, program: &Path) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.user.uid))
            .arg(format!("--regid={}", self.user.gid))
            .args(["--init-groups", "--"])
            .arg(program);
        cmd
    }

    /// initdb, with pg_wal in `wal` and 1 MiB WAL segments.
    fn init(&self, wal: &Path) {
        let out = self
            .as_user(&self.bin.join("initdb"))
            .arg("-D")
            .arg(&self.data)
            .arg(format!("--waldir={}", wal.display()))
            .args(["--wal-segsize=1", "--auth=trust", "--username=postgres"])
            .output()
            .expect("running initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The postmaster, in `cg` (and `twin`), serving; its log appended to `self.log`.
    fn start(&self, cg: &TestCgroup, twin: &BlkioTwin) -> Postmaster {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("postgres's log");
        let mut cmd = self.as_user(&self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.sockets)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=on"])
            // No checkpoint while the test runs: a checkpoint recycles old segments as the
            // next ones, which would spare the WAL drill the segment it must make.
            .args(["-c", "checkpoint_timeout=1h"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log again"))
            .stderr(log);
        let postmaster = Postmaster(
            ChildProcess::builder(cmd)
                .cgroup(cg)
                .spawn()
                .expect("starting postgres"),
        );
        wait_serving(
            "postgres",
            Duration::from_secs(60),
            || self.psql("SELECT 1").as_deref() == Ok("1"),
            || self.log_text(),
        );
        // Its background processes were forked before it could be moved.
        twin.add_all(cg);
        postmaster
    }

    /// `sql`'s result, unaligned, tuples only.
    fn psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-XAtq", "-c", sql])
            .output()
            .expect("running psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    fn pgbench(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("pgbench");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
        ])
        .args(args)
        .arg("postgres");
        cmd
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The postmaster; drop shuts it down at once (SIGQUIT: it ends its children and exits) and
/// reaps it.
struct Postmaster(ChildProcess);

impl Drop for Postmaster {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_some() {
            return;
        }
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.0.pid() as i32, libc::SIGQUIT) };
        let start = Instant::now();
        while self.0.try_wait().ok().flatten().is_none()
            && start.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The position of `needle` in `log` at or after `from`, or a panic naming `what`.
fn after(log: &str, from: usize, needle: &str, what: &str) -> usize {
    log[from..]
        .find(needle)
        .map(|i| from + i)
        .unwrap_or_else(|| panic!("{what} (`{needle}`) not in postgres's log:\n{log}"))
}

#[test]
fn a_postgresql_checkup_finds_the_wal_risk_and_leaves_nothing_behind() {
    skip_on_err!(bpf_tests::skip::require_loop());
    let bin = skip_on_err!(server_bin());
    for program in ["pgbench", "psql", "pg_isready", "setpriv"] {
        skip_on_err!(bpf_tests::skip::require_command(program));
    }
    let user = skip_on_err!(
        User::from_name("postgres")
            .ok()
            .flatten()
            .ok_or("no `postgres` user")
    );
    let chaos = skip_on_err!(Chaos::from_env());

    let data_disk = LoopDevice::with_ext4(128 << 20).expect("a loop device with ext4");
    let wal_disk = LoopDevice::with_ext4(256 << 20).expect("a second loop device with ext4");
    let data_mount = data_disk.mount_point().expect("mounted");
    let cluster = Cluster {
        bin,
        user,
        data: data_mount.join("data"),
        sockets: data_mount.join("sockets"),
        log: data_mount.join("postgres.log"),
        port: free_port(),
    };
    cluster.own_dir(&cluster.data);
    cluster.own_dir(&cluster.sockets);
    let wal = wal_disk.mount_point().expect("mounted").join("pg_wal");
    cluster.own_dir(&wal);
    let started = Instant::now();
    cluster.init(&wal);
    let cg = TestCgroup::new_v2().expect("a cgroup v2");
    let twin = BlkioTwin::new(&cg);
    let nothing_left = NothingLeft::now();
    let mut postmaster = cluster.start(&cg, &twin);
    let init = cluster
        .pgbench(&["-i", "-q", "-s", &SCALE.to_string()])
        .output()
        .expect("running pgbench -i");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    eprintln!("cluster made and loaded in {:?}", started.elapsed());

    // 500 transactions a second write about 230 kB of WAL a second (measured: 26 kB/s at 50,
    // 560 kB/s unthrottled at about 1200): a new 1 MiB segment every 4-5 s, so the WAL drill's
    // 10 s window needs at least one.
    let traffic = format!(
        "pgbench -h 127.0.0.1 -p {} -U postgres -n -c 2 -R 500 -T 600 postgres",
        cluster.port
    );
    let probe = format!("127.0.0.1:{}", cluster.port);
    let wal_dir = format!("wal_dir={}", cluster.data.join("pg_wal").display());
    let checkup = Checkup::run(
        &chaos,
        &[
            "--profile",
            "postgresql",
            "--pid",
            &postmaster.0.pid().to_string(),
            "--probe",
            &probe,
            "--traffic",
            &traffic,
            "--set",
            &wal_dir,
            "--set",
            "window=10s",
        ],
    );
    let context = checkup.context();
    let score = checkup.assert_scored(2);
    let outcomes: Vec<String> = checkup.report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{} {} ({})", f["scenario"], f["outcome"], f["headline"]))
        .collect();
    eprintln!(
        "score {score} in {:?}; findings: {outcomes:#?}",
        checkup.took
    );

    // What the checkup found by itself: the data directory (the postmaster's working
    // directory) and the port (the probe).
    let facts = &checkup.report["facts"];
    assert_eq!(
        facts["data_dir"]["value"],
        cluster.data.display().to_string(),
        "{context}"
    );
    assert_eq!(facts["port"]["value"], cluster.port.to_string());
    checkup.assert_skipped("postgresql-replication-partition", "--set standby_addr=");
    checkup.assert_skipped("postgresql-connections-refused", "--set app_addr=");

    // fsync EIO needs a kernel that can fail syscalls (kprobes with function error injection,
    // or BPF LSM); where it cannot, admission refuses the drill with that reason. Where it can,
    // PostgreSQL PANICs at the failed fsync (data_sync_retry=off) and stops serving.
    let log = cluster.log_text();
    match checkup.finding("postgresql-fsync-eio") {
        Some(f) => {
            let ev = &f["evidence"]["expectations"];
            assert!(
                ev.as_array()
                    .is_some_and(|e| e.iter().all(|x| x["verdict"] == "pass")),
                "{f:#}"
            );
            after(&log, 0, "PANIC:  could not fsync file", "the fsync PANIC");
        }
        None => checkup.assert_skipped("postgresql-fsync-eio", "cannot syscall fail"),
    }

    // The WAL drill (unless the fsync drill took PostgreSQL down for good first): PostgreSQL
    // stopped serving, and nothing restarted it, so the drill's recovery failed: the worst
    // finding, and the checkup stopped there.
    if let Some(wal) = checkup.finding("postgresql-wal-dir-full") {
        assert_eq!(wal["outcome"], "did_not_recover", "{wal:#}");
        assert_eq!(wal["rank"], 1, "{wal:#}");
        let ev = &wal["evidence"];
        assert_eq!(ev["faults"][0]["status"], "recovered", "{ev:#}");
        assert_eq!(
            ev["expectations"][0]["verdict"], "pass",
            "PostgreSQL kept serving: {ev:#}"
        );
        assert_eq!(ev["recovery"], "fail", "{ev:#}");
        assert!(
            wal["prevention"].as_array().is_some_and(|p| !p.is_empty())
                && wal["emergency"].as_array().is_some_and(|p| !p.is_empty())
        );
        assert!(
            checkup.report["stopped"]
                .as_str()
                .is_some_and(|s| s.contains("postgresql-wal-dir-full")),
            "{context}"
        );
        let status = postmaster.0.try_wait().expect("its status");
        assert!(status.is_some(), "the postmaster still runs: {context}");
        // As it really goes: the backend PANICs at the next segment, the postmaster ends every
        // session and starts crash recovery, the recovery meets the full disk too, and the
        // postmaster shuts down.
        let panicked = after(
            &log,
            0,
            "PANIC:  could not write to file \"pg_wal/xlogtemp.",
            "the WAL PANIC",
        );
        assert!(
            log[panicked..]
                .lines()
                .next()
                .is_some_and(|l| l.ends_with("No space left on device")),
            "{log}"
        );
        let reinit = after(
            &log,
            panicked,
            "all server processes terminated; reinitializing",
            "the crash recovery",
        );
        let down = after(
            &log,
            reinit,
            "shutting down due to startup process failure",
            "the failed crash recovery",
        );
        let line = |at: usize| {
            log[log[..at].rfind('\n').map_or(0, |i| i + 1)..]
                .lines()
                .next()
        };
        eprintln!(
            "postgres's log:\n  {:?}\n  {:?}\nthe postmaster exited: {status:?}",
            line(panicked),
            line(down)
        );
    } else {
        assert!(
            checkup.report["stopped"]
                .as_str()
                .is_some_and(|s| s.contains("postgresql-fsync-eio")),
            "the WAL drill did not run: {context}"
        );
    }

    // Restarted as a supervisor would, if down: crash recovery replays the WAL and PostgreSQL
    // serves, with every committed transaction whole.
    let postmaster = if postmaster.0.try_wait().expect("its status").is_some() {
        drop(postmaster);
        let restarted = Instant::now();
        let postmaster = cluster.start(&cg, &twin);
        eprintln!("restarted and serving in {:?}", restarted.elapsed());
        assert!(
            cluster.log_text()[log.len()..].contains("database system was not properly shut down"),
            "the restart did not replay the WAL"
        );
        postmaster
    } else {
        postmaster
    };
    assert_eq!(cluster.psql("SELECT 1").as_deref(), Ok("1"));
    let counts = cluster
        .psql(
            "SELECT (SELECT count(*) FROM pgbench_accounts) || ' ' || \
             (SELECT count(*) FROM pgbench_history) || ' ' || \
             (SELECT coalesce(sum(delta), 0) FROM pgbench_history) || ' ' || \
             (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || \
             (SELECT sum(tbalance) FROM pgbench_tellers) || ' ' || \
             (SELECT sum(bbalance) FROM pgbench_branches)",
        )
        .expect("pgbench's tables");
    let n: Vec<i64> = counts
        .split(' ')
        .map(|x| x.parse().expect("a number"))
        .collect();
    eprintln!("accounts, history rows, sum of deltas, of balances: {n:?}");
    assert_eq!(n[0], 100_000 * SCALE as i64, "accounts lost");
    assert!(n[1] > 0, "no pgbench transaction was kept");
    assert!(
        n[3] == n[2] && n[4] == n[2] && n[5] == n[2],
        "balances differ from the history: {n:?}"
    );

    // Nothing of chaos is left.
    nothing_left.assert(&chaos);
    drop(postmaster);
    drop(twin);
    drop(cg);
}
