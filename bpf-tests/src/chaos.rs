//! Driving the `chaos` binary from tests, as users do.
//!
//! The binary is `$CHAOS_BIN` (set by `cargo xtask` and inside the VM), or the `chaos` beside the
//! test binary's target directory.

use std::{
    path::PathBuf,
    process::{Command, Output},
    sync::OnceLock,
};

use serde_json::Value;

/// A way to run `chaos`, with extra environment.
#[derive(Clone, Debug)]
pub struct Chaos {
    bin: PathBuf,
    env: Vec<(String, String)>,
}

/// What a failed `chaos` run printed.
#[derive(Debug)]
pub struct Failure {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard error.
    pub stderr: String,
    /// Standard output.
    pub stdout: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chaos exited with {:?}: {}{}",
            self.code, self.stderr, self.stdout
        )
    }
}

/// A fault a test armed, recovered when it drops, even by a panic.
#[derive(Debug)]
pub struct Armed<'a> {
    chaos: &'a Chaos,
    /// The fault id.
    pub id: String,
}

impl Armed<'_> {
    /// `chaos recover ID`, which must succeed.
    pub fn recover(self) {
        self.chaos
            .recover(&self.id)
            .unwrap_or_else(|f| panic!("recover {}: {f}", self.id));
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        let _ = self.chaos.recover(&self.id);
    }
}

impl Chaos {
    /// `chaos inject ARGS`, recovered when the returned guard drops; panics with what chaos
    /// said if it fails.
    pub fn arm(&self, args: &[&str]) -> Armed<'_> {
        let id = self
            .inject(args)
            .unwrap_or_else(|f| panic!("chaos inject {}: {f}", args.join(" ")));
        Armed { chaos: self, id }
    }

    /// Finds the binary; `Err` is a skip reason.
    pub fn from_env() -> Result<Chaos, String> {
        let bin = match std::env::var_os("CHAOS_BIN") {
            Some(p) => PathBuf::from(p),
            None => {
                // target/debug/deps/<test> -> target/debug/chaos
                let exe = std::env::current_exe().map_err(|e| e.to_string())?;
                exe.parent()
                    .and_then(|deps| deps.parent())
                    .map(|dir| dir.join("chaos"))
                    .ok_or("cannot locate the chaos binary; set CHAOS_BIN")?
            }
        };
        if !bin.is_file() {
            return Err(format!(
                "{} not found; build it (cargo xtask build) or set CHAOS_BIN",
                bin.display()
            ));
        }
        Ok(Chaos {
            bin,
            env: Vec::new(),
        })
    }

    /// The binary's path (e.g. to start traffic workers from it).
    pub fn bin(&self) -> &std::path::Path {
        &self.bin
    }

    /// The same binary with `key=value` added to its environment.
    pub fn env(&self, key: &str, value: &str) -> Chaos {
        let mut c = self.clone();
        c.env.push((key.to_owned(), value.to_owned()));
        c
    }

    /// A `Command` for `chaos args...`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `chaos args...` and returns its output, whatever the exit code.
    pub fn output(&self, args: &[&str]) -> Output {
        let child = self
            .command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()));
        // A command of ours that takes this long is stuck somewhere: say where, for the log.
        let pid = child.id();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watching = done.clone();
        let what = args.join(" ");
        std::thread::spawn(move || {
            std::thread::sleep(STUCK_AFTER);
            if !watching.load(std::sync::atomic::Ordering::SeqCst) {
                eprintln!(
                    "chaos {what} (pid {pid}) still runs after {STUCK_AFTER:?}:\n{}",
                    stuck_report(pid)
                );
            }
        });
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.bin.display()));
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        out
    }

    /// Runs `chaos args...`; `Ok(stdout)` on success.
    pub fn run(&self, args: &[&str]) -> Result<String, Failure> {
        let out = self.output(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(Failure {
                code: out.status.code(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                stdout,
            })
        }
    }

    fn json(&self, args: &[&str]) -> Result<Value, Failure> {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.run(&args)?;
        Ok(serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("chaos {args:?} printed invalid JSON ({e}): {out}")))
    }

    /// `chaos inject <args> --json`; returns the fault id.
    pub fn inject(&self, args: &[&str]) -> Result<String, Failure> {
        let mut full = vec!["inject"];
        full.extend_from_slice(args);
        let v = self.json(&full)?;
        Ok(v["id"].as_str().expect("inject prints an id").to_owned())
    }

    /// `chaos status ID --json`.
    pub fn status(&self, id: &str) -> Result<Value, Failure> {
        self.json(&["status", id])
    }

    /// `chaos list --json`.
    pub fn list(&self) -> Result<Value, Failure> {
        self.json(&["list"])
    }

    /// `chaos recover ID`.
    pub fn recover(&self, id: &str) -> Result<Value, Failure> {
        self.json(&["recover", id])
    }

    /// `chaos recover --all`.
    pub fn recover_all(&self) -> Result<Value, Failure> {
        self.json(&["recover", "--all"])
    }

    /// `chaos probe --json`, run once per test binary.
    pub fn probe(&self) -> &'static Value {
        static PROBE: OnceLock<Value> = OnceLock::new();
        PROBE.get_or_init(|| {
            self.json(&["probe"])
                .unwrap_or_else(|f| panic!("probe: {f}"))
        })
    }

    /// The probe row for `feature` (snake_case, e.g. `tcx`, `tc_clsact`): `Ok` or why not.
    pub fn probe_row(&self, feature: &str) -> Result<(), String> {
        let rows = self.probe()["probe"]["rows"]
            .as_array()
            .expect("probe rows");
        let row = rows
            .iter()
            .find(|r| r["feature"] == feature)
            .unwrap_or_else(|| panic!("no probe row {feature}"));
        if row["ok"] == true {
            Ok(())
        } else {
            Err(format!(
                "{feature}: {}",
                row["detail"].as_str().unwrap_or("")
            ))
        }
    }

    /// Pids of every live process running this binary (controllers, keepers, supervisors).
    pub fn processes(&self) -> Vec<u32> {
        let bin = std::fs::canonicalize(&self.bin).unwrap_or_else(|_| self.bin.clone());
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == bin)
            })
            .collect()
    }

    /// Whether the probe found `feature`.
    pub fn probe_has(&self, feature: &str) -> bool {
        self.probe_row(feature).is_ok()
    }
}

/// How long a `chaos` command may run before [`Chaos::output`] reports where it is stuck.
const STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// The kernel stacks of process `pid`, of every process running chaos and of every task in
/// uninterruptible sleep: where a stuck command waits, and on whom.
fn stuck_report(pid: u32) -> String {
    let mut out = String::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let proc_dir = entry.path();
        let stat = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .unwrap_or('?');
        let cmdline = std::fs::read(proc_dir.join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        if state != 'D' && name != pid.to_string() && !cmdline.contains("chaos") {
            continue;
        }
        out.push_str(&format!("  pid {name} state {state}: {cmdline}\n"));
        for task in std::fs::read_dir(proc_dir.join("task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let stack = std::fs::read_to_string(task.path().join("stack")).unwrap_or_default();
            for line in stack.lines() {
                out.push_str(&format!("    {}\n", line));
            }
        }
    }
    out
}

/// Whether the kernel can attach TC programs in `mode` (`tcx`, `clsact` or `any`).
pub fn tc_requirement(chaos: &Chaos, mode: &str) -> Result<(), String> {
    match mode {
        "tcx" => chaos.probe_row("tcx"),
        "clsact" => chaos.probe_row("tc_clsact"),
        "clsact-tcx" => chaos
            .probe_row("tc_clsact")
            .and_then(|()| chaos.probe_row("tcx")),
        _ => chaos
            .probe_row("tcx")
            .or_else(|_| chaos.probe_row("tc_clsact")),
    }
}
