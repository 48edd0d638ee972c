//! Benchmarks of the injector, run by `cargo xtask bench` through the `chaos-bench` binary.
//!
//! Each fault family has its own module (`net`, `syscall`, `io`) that measures
//! its rows in worlds it builds itself (namespaces, veth pairs, cgroups, processes: the
//! [`crate::world`] guards) and arms faults through the library ([`chaos_user::Injector`]),
//! holding every armed fault in a [`Faults`] guard that recovers it even on panic. The
//! controller's own costs (probe time, resident memory) are in `controller`.
//!
//! A measurement becomes a [`Row`]: a value with its unit, and, when the value is a cost, the
//! baseline it is compared with (measured in the same run) and their ratio. [`Bench::row`]
//! prints each row at once, as one line `CHAOS-BENCH-ROW <json>` on stdout, which is how xtask
//! collects rows both from a native run and from a VM's serial console.
//!
//! Noise: the machines are small and shared, so trials of a cost and of its baseline are
//! interleaved (baseline, armed, baseline, armed, ...), each armed trial is compared with the
//! baseline trial just before it, and rows report medians with the spread of the trials.
//!
//! Where a row runs: [`Place::Native`] rows need nothing beyond TC and cgroups (this project's
//! own machines); [`Place::Vm`] rows need qdiscs the host kernel may lack (fq, netem) and run
//! inside a VM kernel.

pub mod bpf;
pub mod controller;
pub mod io;
pub mod net;
pub mod proc;
pub mod stats;
pub mod syscall;

use std::{
    io::Write as _,
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use anyhow::{Result, bail};
use chaos_user::{Armed, FaultSpec, Injector};
use serde_json::{Value, json};

/// Prefix of the stdout line that carries one row as JSON.
pub const ROW_MARKER: &str = "CHAOS-BENCH-ROW ";
/// Prefix of the stdout line that reports a section that could not be measured.
pub const ERROR_MARKER: &str = "CHAOS-BENCH-ERROR ";

/// Where the bench runs, which decides the rows it measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// On this machine's kernel.
    Native,
    /// Inside a VM kernel booted by `cargo xtask bench` (fq and netem available).
    Vm,
}

impl Place {
    /// `native` or `vm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Place::Native => "native",
            Place::Vm => "vm",
        }
    }
}

/// How the bench was asked to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Fewer trials and shorter runs (`cargo xtask bench --quick`: within 15 minutes).
    pub quick: bool,
    /// Which rows to measure.
    pub place: Place,
    /// Only the families (`net`) or sections (`net.arm_latency`) listed (all when empty). A
    /// section listed narrows its family to the sections listed.
    pub only: Vec<String>,
}

impl Config {
    /// Whether family `name` runs.
    fn runs_family(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o.split('.').next() == Some(name))
    }

    /// Whether section `name` (`family.section`) runs.
    fn runs_section(&self, name: &str) -> bool {
        let family = name.split('.').next().unwrap_or(name);
        let mut narrowed = self
            .only
            .iter()
            .filter(|o| o.contains('.') && o.split('.').next() == Some(family))
            .peekable();
        narrowed.peek().is_none() || narrowed.any(|o| o == name)
    }
}

impl Config {
    /// `quick` when `--quick` was given, else `full`.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// What a goal compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoalOn {
    /// The row's value.
    Value,
    /// The row's ratio to its baseline.
    Ratio,
}

/// A goal a row should meet, e.g. `ratio >= 0.97`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Goal {
    /// What is compared.
    pub on: GoalOn,
    /// `true`: at most `target`; `false`: at least `target`.
    pub at_most: bool,
    /// The bound.
    pub target: f64,
}

impl Goal {
    /// `value <= target`.
    pub fn value_at_most(target: f64) -> Goal {
        Goal {
            on: GoalOn::Value,
            at_most: true,
            target,
        }
    }

    /// `ratio <= target`.
    pub fn ratio_at_most(target: f64) -> Goal {
        Goal {
            on: GoalOn::Ratio,
            at_most: true,
            target,
        }
    }

    /// `ratio >= target`.
    pub fn ratio_at_least(target: f64) -> Goal {
        Goal {
            on: GoalOn::Ratio,
            at_most: false,
            target,
        }
    }

    fn to_json(self) -> Value {
        json!({
            "on": match self.on { GoalOn::Value => "value", GoalOn::Ratio => "ratio" },
            "op": if self.at_most { "<=" } else { ">=" },
            "target": self.target,
        })
    }
}

/// One measured figure.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// `family.metric[.variant]`, e.g. `net.nonmatching_pps_ratio.64_rules`.
    pub name: String,
    /// The measured value (a median where there were several trials).
    pub value: f64,
    /// Its unit, e.g. `pkt/s`, `ns`, `ms`, `KiB`, `fraction`.
    pub unit: String,
    /// For a cost: the same figure without the thing whose cost it is, same run, same unit.
    pub baseline: Option<f64>,
    /// For a cost: value / baseline, or the median of per-trial ratios when trials were paired.
    pub ratio: Option<f64>,
    /// The kernel it was measured on.
    pub kernel: String,
    /// The goal, if the project has one for this figure.
    pub goal: Option<Goal>,
    /// Lowest and highest of the trials (of the ratio when there is one, else of the value),
    /// and how many trials.
    pub spread: Option<stats::Spread>,
    /// How it was measured, in a few words.
    pub note: Option<String>,
}

impl Row {
    /// A figure that is not compared with anything.
    pub fn value(name: &str, unit: &str, value: f64) -> Row {
        Row {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            baseline: None,
            ratio: None,
            kernel: String::new(),
            goal: None,
            spread: None,
            note: None,
        }
    }

    /// A cost: `value` against `baseline`, ratio `value / baseline` (none when the baseline is
    /// zero).
    pub fn cost(name: &str, unit: &str, value: f64, baseline: f64) -> Row {
        Row {
            baseline: Some(baseline),
            ratio: stats::ratio(value, baseline),
            ..Row::value(name, unit, value)
        }
    }

    /// A figure shown beside a reference (e.g. ours beside `tc netem`), with no ratio: for
    /// errors, whose ratio says little when the reference is near zero.
    pub fn beside(name: &str, unit: &str, value: f64, reference: f64) -> Row {
        Row {
            baseline: Some(reference),
            ..Row::value(name, unit, value)
        }
    }

    /// Replaces the ratio (e.g. with the median of paired per-trial ratios).
    pub fn with_ratio(mut self, ratio: f64) -> Row {
        self.ratio = Some(ratio);
        self
    }

    /// Sets the goal.
    pub fn goal(mut self, goal: Goal) -> Row {
        self.goal = Some(goal);
        self
    }

    /// Sets the spread.
    pub fn spread(mut self, spread: Option<stats::Spread>) -> Row {
        self.spread = spread;
        self
    }

    /// Sets the note.
    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = Some(note.into());
        self
    }

    /// The row as the JSON object xtask reads.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "value": finite(self.value),
            "unit": self.unit,
            "baseline": self.baseline.map(finite),
            "ratio": self.ratio.map(finite),
            "kernel": self.kernel,
        });
        if let Some(g) = self.goal {
            v["goal"] = g.to_json();
        }
        if let Some(s) = &self.spread {
            v["spread"] = s.to_json();
        }
        if let Some(n) = &self.note {
            v["note"] = json!(n);
        }
        v
    }
}

/// JSON has no NaN or infinity: those become null.
fn finite(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

/// The running bench: its configuration, the kernel label put on every row, and the rows and
/// errors so far.
pub struct Bench {
    config: Config,
    kernel: String,
    rows: Vec<Row>,
    errors: Vec<String>,
    interrupted: Arc<AtomicBool>,
}

impl Bench {
    /// A bench for `config`; rows are labelled with [`kernel_label`]. SIGINT and SIGTERM set a
    /// flag that [`Bench::check`] turns into an error, so that the guards of the section running
    /// then recover its faults and remove its worlds on the way out.
    pub fn new(config: Config) -> Result<Bench> {
        let interrupted = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, interrupted.clone())?;
        }
        Ok(Bench {
            config,
            kernel: kernel_label(),
            rows: Vec::new(),
            errors: Vec::new(),
            interrupted,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The kernel label.
    pub fn kernel(&self) -> &str {
        &self.kernel
    }

    /// Fails once SIGINT or SIGTERM arrived: call between trials.
    pub fn check(&self) -> Result<()> {
        if self.interrupted.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        Ok(())
    }

    /// Records `row` (labelled with the kernel) and prints it: the marker line for xtask, then a
    /// line for people.
    pub fn row(&mut self, mut row: Row) {
        row.kernel = self.kernel.clone();
        let mut out = std::io::stdout().lock();
        // One write per line, so that nothing interleaves with it on a console.
        let _ = out.write_all(format!("{ROW_MARKER}{}\n", row.to_json()).as_bytes());
        let _ = out.write_all(format!("  {}\n", stats::describe(&row)).as_bytes());
        let _ = out.flush();
        self.rows.push(row);
    }

    /// Runs one section (a group of rows that share a world). An error or a panic in it is
    /// reported (`CHAOS-BENCH-ERROR <section>: <why>`) and the bench goes on with the next
    /// section; the section's guards have cleaned up by then.
    pub fn section(&mut self, name: &str, f: impl FnOnce(&mut Bench) -> Result<()>) {
        if self.interrupted.load(Ordering::Relaxed) || !self.config.runs_section(name) {
            return;
        }
        println!("== {name}");
        let start = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(self)));
        let why = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(panic) => Some(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".to_owned()),
            ),
        };
        match why {
            None => println!("== {name}: done in {:.1?}", start.elapsed()),
            Some(why) => {
                let why = why.replace('\n', " ");
                println!("{ERROR_MARKER}{name}: {why}");
                self.errors.push(format!("{name}: {why}"));
            }
        }
    }

    /// Rows so far.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// Sections that failed, as `section: why`.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }
}

/// A fault family's entry point: measures its rows for `bench.config().place`.
pub type FamilyFn = fn(&mut Bench);

/// Every family, in the order they run. A new family adds its module and one line here.
pub const FAMILIES: &[(&str, FamilyFn)] = &[
    ("net", net::run),
    ("syscall", syscall::run),
    ("io", io::run),
    ("controller", controller::run),
];

/// Runs the families `config` selects and returns the bench with its rows and errors.
pub fn run(config: Config) -> Result<Bench> {
    let mut bench = Bench::new(config)?;
    for line in crate::world::sweep_stale() {
        println!("removed a leftover of an earlier run: {line}");
    }
    for (name, family) in FAMILIES {
        if bench.config.runs_family(name) {
            family(&mut bench);
        }
    }
    Ok(bench)
}

/// `uname -r`, and inside a VM made by xtask (`CHAOS_IN_VM` set by its init) the VM kernel's
/// name too: `6.12.57+deb12-amd64 (vm debian-6.12)`.
pub fn kernel_label() -> String {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    match std::env::var("CHAOS_IN_VM") {
        Ok(vm) if !vm.is_empty() => format!("{release} (vm {vm})"),
        _ => release,
    }
}

/// How long [`Faults`] waits for an unreadable state file to go away.
const STORE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `f` again while it fails because the shared state store holds a record this build
/// cannot read (a newer `chaos` armed it, e.g. a test of another worktree on the same machine):
/// such records are short-lived, and the store has to be shared (the rule maps are). Gives up
/// after [`STORE_PATIENCE`].
fn patient<T>(mut f: impl FnMut() -> chaos_user::Result<T>) -> chaos_user::Result<T> {
    let start = Instant::now();
    let mut told = false;
    loop {
        match f() {
            Err(chaos_user::Error::Store { path, problem }) if start.elapsed() < STORE_PATIENCE => {
                if !told {
                    println!(
                        "  waiting for state file {} to go ({problem})",
                        path.display()
                    );
                    told = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

/// Faults armed through the library; dropping the guard recovers every one of them, also while
/// a panic unwinds. Recovery is per id: faults of other users of the machine are never touched.
pub struct Faults<'a> {
    injector: &'a Injector,
    ids: Vec<String>,
}

impl<'a> Faults<'a> {
    /// An empty guard.
    pub fn new(injector: &'a Injector) -> Self {
        Faults {
            injector,
            ids: Vec::new(),
        }
    }

    /// Arms `spec` and keeps its id, then hands its attachments over as `chaos inject` does
    /// after reporting the fault armed ([`Injector::hand_over`]).
    pub fn arm(&mut self, spec: &FaultSpec) -> Result<Armed> {
        let armed = patient(|| self.injector.arm(spec))?;
        self.ids.push(armed.id.clone());
        self.injector.hand_over()?;
        Ok(armed)
    }

    /// The ids armed and not yet recovered, oldest first.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Recovers fault `id` (armed through this guard).
    pub fn recover(&mut self, id: &str) -> Result<()> {
        self.ids.retain(|i| i != id);
        patient(|| self.injector.recover(id))?;
        Ok(())
    }

    /// Recovers every fault of this guard, newest first; the first error is returned after
    /// trying them all.
    pub fn recover_all(&mut self) -> Result<()> {
        let mut first = None;
        while let Some(id) = self.ids.pop() {
            if let Err(e) = patient(|| self.injector.recover(&id)) {
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

impl Drop for Faults<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.recover_all() {
            eprintln!("chaos-bench: recovering faults: {e:#}");
        }
    }
}
