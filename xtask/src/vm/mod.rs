//! `cargo xtask vm-test`: run the bpf-tests binaries inside QEMU on several kernels.
//!
//! For each kernel: fetch it (`kernel`), write an initramfs (`image`, `initramfs`, `modules`),
//! boot it (`qemu`) and count the libtest results on the console (`crate::summary`).
mod image;
mod initramfs;
pub mod kernel;
mod modules;
mod qemu;

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, Result};
use clap::{Args, ValueEnum};

pub use self::kernel::KernelName;
use crate::{
    cargo::{self, TestBinary},
    cmd,
    summary::{Counts, LibtestParser},
};

/// Console markers printed by `init.sh`.
const INIT_MARKER: &str = "CHAOS-VM-INIT";
const EXIT_MARKER: &str = "CHAOS-VM-EXIT ";
const END_MARKER: &str = "CHAOS-VM-END";

#[derive(Args, Clone, Debug)]
pub struct VmArgs {
    /// Kernels to boot (repeatable or comma separated): debian-6.1, debian-6.12, test.
    #[arg(long = "kernel", value_delimiter = ',', default_values = ["debian-6.1", "debian-6.12", "test"])]
    pub kernels: Vec<KernelName>,
    /// Minutes allowed per kernel for boot and tests before QEMU is killed.
    #[arg(long, default_value_t = 20, env = "CHAOS_VM_TIMEOUT_MINUTES")]
    pub timeout_minutes: u64,
    /// Accelerator: auto uses KVM when it works (falls back to TCG if the guest shows no sign
    /// of life), else TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto, env = "CHAOS_VM_ACCEL")]
    pub accel: AccelChoice,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
    /// Run only these test binaries in the VMs (repeatable or comma separated, e.g.
    /// net_shaping); all by default.
    #[arg(long = "only", value_delimiter = ',')]
    pub only: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AccelChoice {
    Auto,
    Kvm,
    Tcg,
}

/// What happened on one kernel.
#[derive(Debug)]
pub struct KernelRun {
    pub name: KernelName,
    pub counts: Counts,
    /// Why the VM run as a whole failed (no boot, panic, timeout, missing end marker).
    pub error: Option<String>,
    pub duration: Duration,
}

impl KernelRun {
    pub fn failed(&self) -> bool {
        self.error.is_some() || self.counts.failed > 0
    }
}

/// `cargo xtask vm-test`: build, run, print per-kernel counts.
pub fn run_command(args: &VmArgs) -> Result<ExitCode> {
    let chaos = cargo::build_chaos()?;
    let mut tests = cargo::build_bpf_tests()?;
    if !args.only.is_empty() {
        if let Some(unknown) = args
            .only
            .iter()
            .find(|o| !tests.iter().any(|t| &t.name == *o))
        {
            let names: Vec<&str> = tests.iter().map(|t| t.name.as_str()).collect();
            anyhow::bail!("no test binary {unknown}; there are: {}", names.join(", "));
        }
        tests.retain(|t| args.only.contains(&t.name));
    }
    let runs = run_kernels(args, &chaos, &tests)?;
    println!();
    print_runs(&runs);
    Ok(if runs.iter().any(KernelRun::failed) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub fn print_runs(runs: &[KernelRun]) {
    for r in runs {
        println!(
            "vm {:<12} {}{} ({:.0?})",
            r.name.as_str(),
            r.counts,
            r.error
                .as_ref()
                .map(|e| format!(", VM error: {e}"))
                .unwrap_or_default(),
            r.duration
        );
        for f in &r.counts.failures {
            println!("    FAILED {f}");
        }
    }
}

fn out_dir() -> PathBuf {
    cmd::workspace_root().join("target/vm-test")
}

/// Boots each kernel in turn; a kernel that cannot be fetched or booted is reported in its
/// `KernelRun`, not as an error, so the others still run.
pub fn run_kernels(args: &VmArgs, chaos: &Path, tests: &[TestBinary]) -> Result<Vec<KernelRun>> {
    if let Some(unknown) = args
        .only
        .iter()
        .find(|o| !tests.iter().any(|t| &t.name == *o))
    {
        let names: Vec<&str> = tests.iter().map(|t| t.name.as_str()).collect();
        anyhow::bail!("no test binary {unknown}; there are: {}", names.join(", "));
    }
    let selected: Vec<TestBinary> = tests
        .iter()
        .filter(|t| args.only.is_empty() || args.only.contains(&t.name))
        .cloned()
        .collect();
    let tests = &selected[..];
    let dir = out_dir();
    fs::create_dir_all(&dir)?;
    let staging = dir.join("staging");
    let base = dir.join("base.cpio");
    image::write_base(&base, &staging, chaos, tests).context("writing the initramfs")?;

    let mut accel = match args.accel {
        AccelChoice::Tcg => qemu::Accel::Tcg,
        AccelChoice::Kvm => qemu::Accel::Kvm,
        AccelChoice::Auto if qemu::kvm_usable() => qemu::Accel::Kvm,
        AccelChoice::Auto => qemu::Accel::Tcg,
    };
    let mut kernels = args.kernels.clone();
    let mut seen = Vec::new();
    kernels.retain(|k| {
        let first = !seen.contains(k);
        seen.push(*k);
        first
    });
    let mut runs = Vec::new();
    for name in kernels {
        let start = std::time::Instant::now();
        let result = run_kernel(args, name, &base, &staging, &mut accel, tests);
        runs.push(match result {
            Ok(run) => run,
            Err(err) => {
                println!("[{name}] xtask: {err:#}");
                KernelRun {
                    name,
                    counts: Counts::default(),
                    error: Some(format!("{err:#}")),
                    duration: start.elapsed(),
                }
            }
        });
    }
    Ok(runs)
}

fn run_kernel(
    args: &VmArgs,
    name: KernelName,
    base: &Path,
    staging: &Path,
    accel: &mut qemu::Accel,
    tests: &[TestBinary],
) -> Result<KernelRun> {
    let kernel = kernel::prepare(name)?;
    println!("[{name}] kernel: {}", kernel.description);
    let dir = out_dir();
    let initrd = dir.join(format!("{name}.cpio"));
    for note in image::write_for_kernel(base, &initrd, &kernel, staging)? {
        println!("[{name}] note: {note}");
    }
    let mut append = String::from("console=ttyS0 panic=-1 quiet");
    for a in &kernel.cmdline {
        append.push(' ');
        append.push_str(a);
    }
    loop {
        let boot = qemu::Boot {
            label: name.as_str(),
            kernel: &kernel.image,
            initrd: &initrd,
            append: append.clone(),
            accel: *accel,
            memory_mb: args.memory,
            smp: 2,
            timeout: Duration::from_secs(args.timeout_minutes * 60),
            // KVM reaches init in seconds (TCG in about five); one that has not after 30 s is not working.
            life_timeout: (args.accel == AccelChoice::Auto && *accel == qemu::Accel::Kvm)
                .then(|| Duration::from_secs(30)),
            life_marker: INIT_MARKER,
            end_marker: END_MARKER,
            log: dir.join(format!("{name}.log")),
        };
        let mut parser = LibtestParser::new();
        let mut exited = Vec::new();
        let outcome = qemu::boot(&boot, |line| {
            if let Some(rest) = line.strip_prefix(EXIT_MARKER) {
                let (bin, code) = rest.rsplit_once(' ').unwrap_or((rest, "?"));
                exited.push(bin.to_owned());
                parser.finish_binary_with_status(bin, code.trim() == "0");
            } else {
                parser.feed(line);
            }
        })?;
        if outcome.no_life {
            println!(
                "[{name}] xtask: no sign of life from the guest under KVM; using TCG from now on"
            );
            *accel = qemu::Accel::Tcg;
            continue;
        }
        let counts = parser.finish();
        let error = if let Some(line) = outcome.kernel_error {
            Some(format!("kernel error: {line}"))
        } else if outcome.timed_out {
            Some(format!("timed out after {} minutes", args.timeout_minutes))
        } else if !outcome.saw_life {
            Some("init never started".to_owned())
        } else if !outcome.saw_end {
            Some(format!("no {END_MARKER} marker (init died?)"))
        } else {
            let missing: Vec<&str> = tests
                .iter()
                .map(|t| t.name.as_str())
                .filter(|n| !exited.iter().any(|e| e == n))
                .collect();
            (!missing.is_empty())
                .then(|| format!("test binaries that never ran: {}", missing.join(", ")))
        };
        println!(
            "[{name}] done in {:.0?}: {counts}{}",
            outcome.duration,
            error.as_ref().map(|e| format!("; {e}")).unwrap_or_default()
        );
        return Ok(KernelRun {
            name,
            counts,
            error,
            duration: outcome.duration,
        });
    }
}
