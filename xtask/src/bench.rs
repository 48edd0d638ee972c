//! `cargo xtask bench [--quick]`: build `chaos` and `chaos-bench` (release), run the bench
//! natively, then inside a VM kernel for the rows the host kernel cannot give (delay and jitter
//! beside `tc netem`: no fq or netem here), merge the rows, print the table and write
//! `target/bench/summary.json`.
//!
//! Rows travel as `CHAOS-BENCH-ROW <json>` lines: from the native run's stdout, and from the VM's
//! serial console, the way `vm-test` gets test results out of the guest (the VM runs
//! `chaos-bench` as its only "test binary"; it finds `CHAOS_IN_VM` set and measures the VM rows).
//! The VM rows are the same with and without `--quick`: they are few, and short enough for TCG.
mod summary;

use std::{
    fs,
    io::BufReader,
    path::PathBuf,
    process::{Command, ExitCode, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use cargo_metadata::Message;
use clap::Args;

use self::summary::{Collector, Summary};
use crate::{
    cargo::TestBinary,
    cmd,
    vm::{self, AccelChoice, KernelName, VmArgs},
};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Fewer trials and shorter runs: done within 15 minutes on a 2-core machine, VM included.
    #[arg(long)]
    quick: bool,
    /// Skip the VM rows (delay and jitter beside tc netem, their CPU cost).
    #[arg(long, conflicts_with = "no_native")]
    no_vm: bool,
    /// Skip the native rows (only the VM rows).
    #[arg(long)]
    no_native: bool,
    /// The kernel booted for the VM rows (it needs fq and netem).
    #[arg(long, default_value = "debian-6.12")]
    vm_kernel: KernelName,
    /// Accelerator for the VM: auto uses KVM when it works, else TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto, env = "CHAOS_VM_ACCEL")]
    accel: AccelChoice,
    /// Minutes allowed for the VM (boot and rows) before QEMU is killed.
    #[arg(long, default_value_t = 10)]
    vm_timeout_minutes: u64,
    /// Only these fault families (repeatable): net, syscall, io, controller; or sections of
    /// them (net.arm_latency), which narrow their family to the sections named.
    #[arg(long)]
    only: Vec<String>,
}

fn out_dir() -> PathBuf {
    cmd::workspace_root().join("target/bench")
}

/// The console log `vm::run_kernels` writes for `kernel` (see `vm::out_dir`).
fn vm_log(kernel: KernelName) -> PathBuf {
    cmd::workspace_root()
        .join("target/vm-test")
        .join(format!("{kernel}.log"))
}

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    let start = Instant::now();
    let (chaos, bench) = build_release()?;
    let mut collector = Collector::default();

    if args.no_native {
        println!("\n==> bench: native rows skipped");
    } else {
        println!("\n==> bench: native ({})", kernel_release());
        let mut c = Command::new(&bench);
        c.args(["--place", "native"])
            .env("CHAOS_BIN", &chaos)
            .env("RUST_BACKTRACE", "1");
        if args.quick {
            c.arg("--quick");
        }
        for f in &args.only {
            c.args(["--only", f]);
        }
        let status = cmd::stream_stdout(&mut c, |line| collector.feed("native", line))?;
        if !status.success() {
            collector
                .errors
                .push(format!("native: chaos-bench exited with {status}"));
        }
    }

    // The VM measures the net family's delay sections.
    let vm_wanted = args.only.is_empty()
        || args
            .only
            .iter()
            .any(|f| f == "net" || f == "net.delay" || f == "net.delay_cpu");
    if args.no_vm || !vm_wanted {
        println!("\n==> bench: VM rows skipped");
    } else {
        println!("\n==> bench: VM {}", args.vm_kernel);
        let vm_args = VmArgs {
            kernels: vec![args.vm_kernel],
            timeout_minutes: args.vm_timeout_minutes,
            accel: args.accel,
            memory: 1024,
            only: Vec::new(),
            tcg_threads: vm::TcgThreads::Single,
            jobs: None,
            native_full: Vec::new(),
        };
        let binary = TestBinary {
            name: "chaos-bench".to_owned(),
            path: bench.clone(),
        };
        let origin = format!("vm {}", args.vm_kernel);
        for run in vm::run_kernels(&vm_args, &chaos, &[binary])? {
            let log = vm_log(run.name);
            match fs::read_to_string(&log) {
                Ok(text) => text.lines().for_each(|l| collector.feed(&origin, l)),
                Err(e) => collector
                    .errors
                    .push(format!("{origin}: reading {}: {e}", log.display())),
            }
            if let Some(e) = &run.error {
                collector.errors.push(format!("{origin}: {e}"));
            }
            if run.counts.failed > 0 {
                collector
                    .errors
                    .push(format!("{origin}: chaos-bench exited non-zero"));
            }
        }
    }

    let elapsed = start.elapsed();
    let dir = out_dir();
    fs::create_dir_all(&dir)?;
    let path = dir.join("summary.json");
    let summary = Summary {
        rows: &collector.rows,
        errors: &collector.errors,
        quick: args.quick,
        machine: machine(),
        elapsed_s: elapsed.as_secs_f64(),
    };
    fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;

    println!("\n==> bench summary ({})", summary.machine);
    print!("{}", summary::table(&collector.rows));
    println!();
    print!("{}", summary::notes(&collector.rows));
    for e in &collector.errors {
        println!("not measured: {e}");
    }
    let goals = collector.rows.iter().filter(|r| r.goal.is_some()).count();
    let missed = collector
        .rows
        .iter()
        .filter(|r| r.met == Some(false))
        .count();
    println!(
        "\n{} rows ({goals} with goals, {missed} missed), {} not measured, in {:.0?}; wrote {}",
        collector.rows.len(),
        collector.errors.len(),
        elapsed,
        path.display()
    );
    Ok(if collector.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Builds `chaos` (with the eBPF object) and `chaos-bench` in release mode: the bench measures
/// per-packet costs, and a debug build's own overhead would dilute them. Returns their paths.
fn build_release() -> Result<(PathBuf, PathBuf)> {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(cmd::workspace_root())
        .args(["build", "--release"])
        .args(["--package", "chaos-user", "--bin", "chaos"])
        .args(["--package", "bpf-tests", "--bin", "chaos-bench"])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    eprintln!("$ {}", cmd::display(&c));
    let mut child = c.spawn().context("starting cargo build")?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let (mut chaos, mut bench) = (None, None);
    for message in Message::parse_stream(BufReader::new(stdout)) {
        if let Message::CompilerArtifact(a) = message.context("reading cargo messages")? {
            let exe = a.executable.map(PathBuf::from);
            match a.target.name.as_str() {
                "chaos" => chaos = exe.or(chaos),
                "chaos-bench" => bench = exe.or(bench),
                _ => {}
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`{}` failed: {status}", cmd::display(&c));
    }
    Ok((
        chaos.context("cargo did not report the chaos executable")?,
        bench.context("cargo did not report the chaos-bench executable")?,
    ))
}

fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown kernel".to_owned())
}

/// `<cpu model>, <n> CPUs, <memory> GiB, Linux <release>`.
fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!(
        "{model}, {cpus} CPUs, {mem_gib:.0} GiB, Linux {}",
        kernel_release()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_log_is_where_vm_test_writes_it() {
        let log = vm_log(KernelName::Debian612);
        assert!(log.ends_with("target/vm-test/debian-6.12.log"), "{log:?}");
    }
}
