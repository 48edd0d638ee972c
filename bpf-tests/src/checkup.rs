//! What the `chaos checkup` tests on real servers share (`tests/checkup.rs` on Redis,
//! `tests/checkup_postgresql.rs` on PostgreSQL): the blkio v1 twin of the test's cgroup, a free
//! loopback port, one checkup run into a scratch report directory with its report read back and
//! its general shape checked, and the check that nothing of chaos is left at the end.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::ExitStatus,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    Oracle, Snapshot, TestCgroup,
    chaos::Chaos,
    oracle::{DEFAULT_STATE_DIR, STATE_DIR_ENV},
    world::{cgroup_v1_mount, unique_name},
};

/// The blkio v1 cgroup named as the test's v2 cgroup, where this machine throttles I/O through
/// v1: chaos finds a process's io cgroup by the same name in each hierarchy. Drop moves its
/// processes back to the root and removes it.
pub struct BlkioTwin(Option<PathBuf>);

impl BlkioTwin {
    /// The twin of `cg`; none where there is no blkio v1 hierarchy.
    pub fn new(cg: &TestCgroup) -> BlkioTwin {
        let Some(root) = cgroup_v1_mount("blkio") else {
            return BlkioTwin(None);
        };
        let dir = root.join(cg.path().file_name().expect("a cgroup name"));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        BlkioTwin(Some(dir))
    }

    /// Moves process `pid` into the twin.
    pub fn add(&self, pid: u32) {
        if let Some(dir) = &self.0 {
            std::fs::write(dir.join("cgroup.procs"), pid.to_string())
                .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", dir.display()));
        }
    }

    /// Moves every process of `cg` into the twin (a server that forked its workers before it
    /// could be moved; those it forks later follow their parent).
    pub fn add_all(&self, cg: &TestCgroup) {
        for pid in cg.pids().expect("the cgroup's processes") {
            // One that exited since the read cannot be moved, and need not be.
            if Path::new(&format!("/proc/{pid}")).exists() {
                self.add(pid);
            }
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

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Waits, up to `within`, until a server just started `serves()`; panics with its log
/// otherwise.
pub fn wait_serving(
    what: &str,
    within: Duration,
    mut serves: impl FnMut() -> bool,
    log: impl Fn() -> String,
) {
    let start = Instant::now();
    while !serves() {
        assert!(
            start.elapsed() < within,
            "{what} did not serve within {within:?}; its log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a checkup test checks at its end was there at its start: the oracle's view of the
/// kernel, and whether chaos's state directory existed (chaos must leave none it did not find,
/// an empty one included).
pub struct NothingLeft {
    oracle: Oracle,
    before: Snapshot,
    state_dir: PathBuf,
    state_dir_existed: bool,
}

impl NothingLeft {
    /// The machine as it is now.
    pub fn now() -> NothingLeft {
        let oracle = Oracle::new();
        let before = oracle.snapshot();
        let state_dir = std::env::var_os(STATE_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let state_dir_existed = state_dir.exists();
        NothingLeft {
            oracle,
            before,
            state_dir,
            state_dir_existed,
        }
    }

    /// Panics if anything of chaos is left: a fault, a process, a kernel object
    /// ([`crate::demo::assert_clean`]), or a state directory that was not there.
    pub fn assert(&self, chaos: &Chaos) {
        crate::demo::assert_clean(chaos, &self.oracle, &self.before);
        if self.state_dir_existed {
            return;
        }
        let left: Vec<String> = std::fs::read_dir(&self.state_dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            !self.state_dir.exists(),
            "{} is left behind, holding {left:?}",
            self.state_dir.display()
        );
    }
}

/// One `chaos checkup` run: `--json`, its reports in a scratch directory removed on drop.
pub struct Checkup {
    /// report.json.
    pub report: Value,
    /// The JSON lines of stdout.
    pub stdout: String,
    /// The terminal summary.
    pub stderr: String,
    /// How chaos exited.
    pub status: ExitStatus,
    /// How long it took.
    pub took: Duration,
    dir: PathBuf,
}

impl Checkup {
    /// Runs `chaos checkup ARGS --json --report-dir SCRATCH` and reads its report.json;
    /// panics, with what chaos printed, when there is none.
    pub fn run(chaos: &Chaos, args: &[&str]) -> Checkup {
        let dir = std::env::temp_dir().join(unique_name());
        let started = Instant::now();
        let out = chaos
            .command(&[&["checkup"], args, &["--json", "--report-dir"]].concat())
            .arg(&dir)
            .output()
            .expect("running chaos checkup");
        let took = started.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!(
            "chaos checkup took {took:?}, exit {:?}\n{stderr}",
            out.status.code()
        );
        let Some(report) = std::fs::read(dir.join("report.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        else {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("no report.json; stdout:\n{stdout}\nstderr:\n{stderr}");
        };
        let checkup = Checkup {
            report,
            stdout,
            stderr,
            status: out.status,
            took,
            dir,
        };
        for (drill, took) in checkup.drill_times() {
            eprintln!("  {drill}: {took:?}");
        }
        checkup
    }

    /// Each drill that ran (refused ones included), in order, with how long it took.
    pub fn drill_times(&self) -> Vec<(String, Duration)> {
        let mut drills: Vec<(String, Duration)> = std::fs::read_dir(self.dir.join("drills"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let report: Value =
                    serde_json::from_slice(&std::fs::read(e.path().join("report.json")).ok()?)
                        .ok()?;
                let ms = report["ended_unix_ms"].as_u64()? - report["started_unix_ms"].as_u64()?;
                Some((
                    e.file_name().to_string_lossy().into_owned(),
                    Duration::from_millis(ms),
                ))
            })
            .collect();
        drills.sort();
        drills
    }

    /// The report directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The summary and the report, for assertion messages.
    pub fn context(&self) -> String {
        format!("{}\n{:#}", self.stderr, self.report)
    }

    /// The finding of scenario `id`.
    pub fn finding(&self, id: &str) -> Option<&Value> {
        entry(&self.report["findings"], id)
    }

    /// The skipped entry of scenario `id`.
    pub fn skipped(&self, id: &str) -> Option<&Value> {
        entry(&self.report["skipped"], id)
    }

    /// Panics unless scenario `id` was skipped with a reason that contains `because`.
    pub fn assert_skipped(&self, id: &str, because: &str) {
        let s = self
            .skipped(id)
            .unwrap_or_else(|| panic!("{id} is not skipped: {}", self.context()));
        assert!(
            s["reason"].as_str().is_some_and(|r| r.contains(because)),
            "{id} is not skipped for `{because}`: {s}"
        );
    }

    /// Checks what every completed checkup that found a risk shows, and returns its score: the
    /// schema, the verdict in the exit code, a score below 100, the `done` event, the findings
    /// ranked worst first (`min_findings` of them at least) with each drill's own report
    /// written, and report.html with the score.
    pub fn assert_scored(&self, min_findings: usize) -> u64 {
        let context = self.context();
        let report = &self.report;
        assert_eq!(report["schema"], "chaos.checkup/v1", "{context}");
        let score = report["score"].as_u64().expect("a score");
        let expected_code = if report["passed"] == true { 0 } else { 1 };
        assert_eq!(self.status.code(), Some(expected_code), "{context}");
        assert!(score < 100, "score {score}: {context}");
        assert!(
            self.stdout
                .lines()
                .any(|l| l.contains("\"event\":\"done\"")),
            "{}",
            self.stdout
        );
        let findings = report["findings"].as_array().expect("findings");
        assert!(findings.len() >= min_findings, "{context}");
        for (i, pair) in findings.windows(2).enumerate() {
            assert_eq!(pair[0]["rank"], i + 1);
            assert!(
                pair[0]["risk_points"].as_f64() >= pair[1]["risk_points"].as_f64(),
                "not ranked: {context}"
            );
        }
        for f in findings {
            let page = self.dir.join(f["report_html"].as_str().unwrap());
            assert!(page.is_file(), "{} missing", page.display());
            assert!(self.dir.join(f["report"].as_str().unwrap()).is_file());
        }
        let page = std::fs::read_to_string(self.dir.join("report.html")).expect("report.html");
        assert!(
            page.contains(&format!(">{score}<")),
            "no score in report.html"
        );
        score
    }
}

impl Drop for Checkup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn entry<'a>(list: &'a Value, id: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|f| f["scenario"] == id)
}
