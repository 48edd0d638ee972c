//! `cargo xtask test`: everything CI checks, in order, with a per-stage table and one final
//! `N passed, N failed, N skipped` line (unit + native + VM tests). Every stage runs even when
//! an earlier one failed (except those needing a build that failed), so one CI run shows all
//! problems; the exit status is non-zero if anything failed.
use std::{
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::Args;

use crate::{
    cargo::{self, TestBinary},
    cmd, setup,
    summary::{Counts, LibtestParser},
    vm::{self, VmArgs},
};

#[derive(Args, Debug)]
pub struct TestArgs {
    /// Do not run the VM tests.
    #[arg(long)]
    no_vm: bool,
    #[command(flatten)]
    vm: VmArgs,
}

enum Status {
    Ok,
    Failed(String),
    Skipped(String),
}

struct Stage {
    name: String,
    status: Status,
    /// Test counts, for the stages that run tests.
    counts: Option<Counts>,
    duration: Duration,
}

impl Stage {
    fn failed(&self) -> bool {
        matches!(self.status, Status::Failed(_))
            || self.counts.as_ref().is_some_and(|c| c.failed > 0)
    }
}

struct Stages(Vec<Stage>);

impl Stages {
    fn banner(name: &str) {
        println!("\n==> {name}");
    }

    /// A stage that passes when `cmd` exits successfully.
    fn command(&mut self, name: &str, mut command: Command) {
        Self::banner(name);
        let start = Instant::now();
        let status = match cmd::status(&mut command) {
            Ok(s) if s.success() => Status::Ok,
            Ok(s) => Status::Failed(format!("exited with {s}")),
            Err(e) => Status::Failed(format!("{e:#}")),
        };
        self.push(name, status, None, start.elapsed());
    }

    fn push(&mut self, name: &str, status: Status, counts: Option<Counts>, duration: Duration) {
        self.0.push(Stage {
            name: name.to_owned(),
            status,
            counts,
            duration,
        });
    }

    fn skip(&mut self, name: &str, why: &str) {
        self.push(name, Status::Skipped(why.to_owned()), None, Duration::ZERO);
    }
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(cmd::workspace_root());
    c
}

pub fn run(args: &TestArgs) -> Result<ExitCode> {
    let total = Instant::now();
    let mut stages = Stages(Vec::new());

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    stages.command("fmt", fmt);

    // Host crates: the eBPF object is stubbed (AYA_BUILD_SKIP) so clippy needs no bpf-linker.
    let mut clippy = cargo();
    clippy
        .args([
            "clippy",
            "--workspace",
            "--exclude",
            "chaos-ebpf",
            "--all-targets",
        ])
        .args(["--", "-D", "warnings"])
        .env("AYA_BUILD_SKIP", "1");
    stages.command("clippy (host)", clippy);

    // The eBPF crate on its own, as aya-template does: the pinned nightly, and panic=abort for
    // its tests.
    let mut clippy_ebpf = Command::new("cargo");
    clippy_ebpf
        .current_dir(cmd::workspace_root())
        .arg(format!("+{}", crate::setup::nightly()?))
        .args(["clippy", "--package", "chaos-ebpf", "--all-targets"])
        .args([
            "--",
            "-D",
            "warnings",
            "-C",
            "panic=abort",
            "-Zpanic_abort_tests",
        ]);
    stages.command("clippy (ebpf)", clippy_ebpf);

    // The library's documentation: no broken or private intra-doc links, no undocumented public
    // item (`#![deny(missing_docs)]`). Its doc examples compile with the unit tests.
    let mut doc = cargo();
    doc.args(["doc", "--no-deps", "--package", "chaos-user"])
        .env("RUSTDOCFLAGS", "-D warnings")
        .env("AYA_BUILD_SKIP", "1");
    stages.command("doc", doc);

    Stages::banner("build");
    let start = Instant::now();
    let built = cargo::build_chaos().and_then(|chaos| Ok((chaos, cargo::build_bpf_tests()?)));
    let built = match built {
        Ok(b) => {
            stages.push("build", Status::Ok, None, start.elapsed());
            Some(b)
        }
        Err(e) => {
            eprintln!("build failed: {e:#}");
            stages.push(
                "build",
                Status::Failed(format!("{e:#}")),
                None,
                start.elapsed(),
            );
            None
        }
    };

    unit_tests(&mut stages);

    let mut vm_args = args.vm.clone();
    match &built {
        Some((chaos, tests)) => vm_args.native_full = native_tests(&mut stages, chaos, tests),
        None => stages.skip("native tests", "build failed"),
    }

    if args.no_vm {
        stages.skip("vm", "--no-vm");
    } else if let Some((chaos, tests)) = &built {
        Stages::banner("vm tests");
        let start = Instant::now();
        match vm::run_kernels(&vm_args, chaos, tests) {
            Ok(runs) => {
                for r in runs {
                    let status = match &r.error {
                        Some(e) => Status::Failed(e.clone()),
                        None => Status::Ok,
                    };
                    stages.push(
                        &format!("vm {}", r.name),
                        status,
                        Some(r.counts),
                        r.duration,
                    );
                }
            }
            Err(e) => stages.push(
                "vm",
                Status::Failed(format!("{e:#}")),
                None,
                start.elapsed(),
            ),
        }
    } else {
        stages.skip("vm", "build failed");
    }

    Ok(report(&stages.0, total.elapsed()))
}

fn unit_tests(stages: &mut Stages) {
    let name = "unit tests";
    Stages::banner(name);
    let start = Instant::now();
    let mut c = cargo();
    c.args([
        "test",
        "--workspace",
        "--exclude",
        "chaos-ebpf",
        "--exclude",
    ])
    .arg(cargo::BPF_TESTS_PACKAGE);
    let mut parser = LibtestParser::new();
    let (status, counts) = match cmd::stream_stdout(&mut c, |l| parser.feed(l)) {
        Ok(s) => {
            parser.finish_binary_with_status("cargo test", s.success());
            let status = if s.success() {
                Status::Ok
            } else {
                Status::Failed(format!("exited with {s}"))
            };
            (status, parser.finish())
        }
        Err(e) => (Status::Failed(format!("{e:#}")), parser.finish()),
    };
    stages.push(name, status, Some(counts), start.elapsed());
}

/// The bpf-tests binaries on this machine's kernel, as root, one test at a time. Returns the
/// binaries that passed with no test skipped.
fn native_tests(stages: &mut Stages, chaos: &std::path::Path, tests: &[TestBinary]) -> Vec<String> {
    let name = "native tests";
    Stages::banner(name);
    if !setup::is_root() {
        println!("warning: not root; tests needing privileges will fail or skip");
    }
    let start = Instant::now();
    let mut parser = LibtestParser::new();
    let mut status = Status::Ok;
    let mut full = Vec::new();
    for t in tests {
        let (skipped, failed) = (parser.skipped(), parser.failed());
        let mut c = Command::new(&t.path);
        c.args(["--test-threads=1", "--nocapture"])
            .current_dir(cmd::workspace_root().join(cargo::BPF_TESTS_PACKAGE))
            .env("CHAOS_BIN", chaos)
            .env("RUST_BACKTRACE", "1");
        match cmd::stream_stdout(&mut c, |l| parser.feed(l)) {
            Ok(s) => parser.finish_binary_with_status(&t.name, s.success()),
            Err(e) => {
                status = Status::Failed(format!("{}: {e:#}", t.name));
                parser.finish_binary_with_status(&t.name, false);
            }
        }
        if (parser.skipped(), parser.failed()) == (skipped, failed) {
            full.push(t.name.clone());
        }
    }
    stages.push(name, status, Some(parser.finish()), start.elapsed());
    full
}

/// Prints the table and the final line; returns the exit code.
fn report(stages: &[Stage], elapsed: Duration) -> ExitCode {
    println!("\n==> summary ({:.0?})", elapsed);
    println!(
        "{:<18} {:<8} {:>7} {:>7} {:>8} {:>8}",
        "stage", "result", "passed", "failed", "skipped", "time"
    );
    let mut total = Counts::default();
    for s in stages {
        let result = match (&s.status, s.failed()) {
            (Status::Skipped(_), _) => "skipped",
            (_, true) => "FAILED",
            (Status::Ok, false) => "ok",
            (Status::Failed(_), false) => "FAILED",
        };
        let (p, f, k) = match &s.counts {
            Some(c) => (
                c.passed.to_string(),
                c.failed.to_string(),
                c.skipped.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<18} {:<8} {:>7} {:>7} {:>8} {:>7.0}s",
            s.name,
            result,
            p,
            f,
            k,
            s.duration.as_secs_f64()
        );
        match &s.status {
            Status::Failed(why) | Status::Skipped(why) => {
                println!("    {}", why.lines().next().unwrap_or(""));
            }
            Status::Ok => {}
        }
        if let Some(c) = &s.counts {
            for f in &c.failures {
                println!("    FAILED {f}");
            }
            total += c;
        }
    }
    let failed = stages.iter().any(Stage::failed);
    println!("{total}");
    total.print_failure_output();
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
