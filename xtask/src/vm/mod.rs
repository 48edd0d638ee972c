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
    sync::Mutex,
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
const RUN_MARKER: &str = "CHAOS-VM-RUN ";
const EXIT_MARKER: &str = "CHAOS-VM-EXIT ";
const END_MARKER: &str = "CHAOS-VM-END";

#[derive(Args, Clone, Debug)]
pub struct VmArgs {
    /// Kernels to boot (repeatable or comma separated): debian-6.1, debian-6.12, test.
    #[arg(long = "kernel", value_delimiter = ',', default_values = ["debian-6.1", "debian-6.12", "test"])]
    pub kernels: Vec<KernelName>,
    /// Minutes allowed per kernel for boot and tests before QEMU is killed. Under TCG on a
    /// 2-core host (2026-11-27), `cargo xtask test`'s runs took 12.5 minutes on each Debian
    /// kernel and 31 on the test kernel (drill 395 s, overlap 334 s, torture 221 s).
    #[arg(long, default_value_t = 45, env = "CHAOS_VM_TIMEOUT_MINUTES")]
    pub timeout_minutes: u64,
    /// Accelerator: auto uses KVM when it works (falls back to TCG if the guest shows no sign
    /// of life), else TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto, env = "CHAOS_VM_ACCEL")]
    pub accel: AccelChoice,
    /// Guest memory in MiB. The initramfs (every test binary, ~350 MB) is unpacked into it,
    /// while the archive itself is still in memory: 1 GiB ran out (ENOSPC at boot). With ~370
    /// MB of binaries, 2 GiB left the demo's disk fill short of room on /tmp (ENOSPC).
    #[arg(long, default_value_t = 3072)]
    pub memory: u32,
    /// Run only these test binaries in the VMs (repeatable or comma separated, e.g.
    /// net_shaping); all by default.
    #[arg(long = "only", value_delimiter = ',')]
    pub only: Vec<String>,
    /// TCG threading. `single` (one host thread per VM) by default: with QEMU 7.2's
    /// multi-threaded TCG, guests sporadically executed a stale `int3` from kernel text
    /// patching (static keys flipped when a tracepoint or TC hook is attached) and oopsed in
    /// `syscall_trace_enter`; 2 of 11 runs of syscall_faults on the test kernel, none of 26 single.
    #[arg(long, value_enum, default_value_t = TcgThreads::Single, env = "CHAOS_VM_TCG_THREAD")]
    pub tcg_threads: TcgThreads,
    /// Test binaries that passed natively with no test skipped, in this `cargo xtask test` run.
    #[arg(skip)]
    pub native_full: Vec<String>,
    /// Kernels booted at once; by default as many as the host has cores for (a single-threaded
    /// TCG guest takes one core, a KVM or multi-threaded guest one per vCPU).
    #[arg(long, env = "CHAOS_VM_JOBS")]
    pub jobs: Option<usize>,
}

/// QEMU's `-accel tcg,thread=` choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TcgThreads {
    Single,
    Multi,
}

/// vCPUs of every guest.
const VM_CPUS: u32 = 2;

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
    for r in runs {
        r.counts.print_failure_output();
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
    // A renamed binary would silently run everywhere again.
    for stale in kernel::TEST_KERNEL_ONLY
        .iter()
        .chain(kernel::NATIVE_SUFFICES)
        .filter(|n| !tests.iter().any(|t| &t.name == *n))
        .filter(|_| args.only.is_empty())
    {
        println!("xtask: kernel::TEST_KERNEL_ONLY names {stale}, which is no test binary");
    }
    let dir = out_dir();
    fs::create_dir_all(&dir)?;
    let staging = dir.join("staging");
    let base = dir.join("base.cpio");
    image::write_base(&base, &staging, chaos, tests).context("writing the initramfs")?;

    let mut kernels = args.kernels.clone();
    let mut seen = Vec::new();
    kernels.retain(|k| {
        let first = !seen.contains(k);
        seen.push(*k);
        first
    });
    // Fetching kernels and writing their images share `staging`: one kernel at a time.
    let mut runs: Vec<Option<KernelRun>> = Vec::new();
    let mut ready = Vec::new();
    for (i, name) in kernels.iter().copied().enumerate() {
        let start = std::time::Instant::now();
        // Without --only, each kernel runs what it can tell more about than the native run
        // (kernel::NATIVE_SUFFICES, kernel::TEST_KERNEL_ONLY).
        let kernel_tests: Vec<TestBinary> = tests
            .iter()
            .filter(|t| !args.only.is_empty() || name.runs_by_default(&t.name, &args.native_full))
            .cloned()
            .collect();
        match prepare_kernel(name, &base, &staging, kernel_tests) {
            Ok(prepared) => {
                runs.push(None);
                ready.push((i, prepared));
            }
            Err(err) => runs.push(Some(failed_run(name, &err, start))),
        }
    }

    let accel = Mutex::new(match args.accel {
        AccelChoice::Tcg => qemu::Accel::Tcg {
            multi_threaded: args.tcg_threads == TcgThreads::Multi,
        },
        AccelChoice::Kvm => qemu::Accel::Kvm,
        AccelChoice::Auto if qemu::kvm_usable() => qemu::Accel::Kvm,
        AccelChoice::Auto => qemu::Accel::Tcg {
            multi_threaded: args.tcg_threads == TcgThreads::Multi,
        },
    });
    // How many kernels may boot at once under `accel`: a single-threaded TCG guest takes one
    // host core, a KVM or multi-threaded guest one per vCPU. Under `auto`, KVM may turn out not
    // to work on the first boot (the guest shows no sign of life) and TCG takes over: the
    // workers beyond KVM's share then join in.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let allowed = |accel: &qemu::Accel| {
        args.jobs.unwrap_or_else(|| {
            let host_threads_per_vm = match accel {
                qemu::Accel::Tcg {
                    multi_threaded: false,
                } => 1,
                _ => VM_CPUS as usize,
            };
            (cores / host_threads_per_vm).max(1)
        })
    };
    let workers = args.jobs.unwrap_or(cores).max(1);
    if workers > 1 && ready.len() > 1 {
        println!(
            "xtask: booting up to {} kernels at a time now ({cores} host cores; {workers} under \
             single-threaded TCG)",
            allowed(&accel.lock().expect("accel lock"))
        );
    }
    // The kernel with the most binaries (the test kernel, which runs every one) boots first, so
    // the shorter runs share the other cores meanwhile instead of all waiting before it.
    ready.sort_by_key(|(_, p)| std::cmp::Reverse(p.tests.len()));
    let queue = Mutex::new(ready.into_iter().collect::<std::collections::VecDeque<_>>());
    let done = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for worker in 0..workers {
            let (queue, done, accel, allowed) = (&queue, &done, &accel, &allowed);
            scope.spawn(move || {
                loop {
                    if worker >= allowed(&accel.lock().expect("accel lock")) {
                        if queue.lock().expect("queue lock").is_empty() {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_secs(1));
                        continue;
                    }
                    let Some((i, prepared)) = queue.lock().expect("queue lock").pop_front() else {
                        break;
                    };
                    let start = std::time::Instant::now();
                    let name = prepared.name;
                    let run = boot_kernel(args, &prepared, accel)
                        .unwrap_or_else(|err| failed_run(name, &err, start));
                    done.lock().expect("done lock").push((i, run));
                }
            });
        }
    });
    for (i, run) in done.into_inner().expect("done lock") {
        runs[i] = Some(run);
    }
    Ok(runs.into_iter().flatten().collect())
}

/// A kernel whose run could not start or finish, with why.
fn failed_run(name: KernelName, err: &anyhow::Error, start: std::time::Instant) -> KernelRun {
    println!("[{name}] xtask: {err:#}");
    KernelRun {
        name,
        counts: Counts::default(),
        error: Some(format!("{err:#}")),
        duration: start.elapsed(),
    }
}

/// A kernel fetched, with its initramfs written and its command line.
struct PreparedKernel {
    name: KernelName,
    kernel: kernel::Kernel,
    initrd: PathBuf,
    append: String,
    /// The test binaries it runs.
    tests: Vec<TestBinary>,
}

fn prepare_kernel(
    name: KernelName,
    base: &Path,
    staging: &Path,
    tests: Vec<TestBinary>,
) -> Result<PreparedKernel> {
    let kernel = kernel::prepare(name)?;
    println!("[{name}] kernel: {}", kernel.description);
    let initrd = out_dir().join(format!("{name}.cpio"));
    let names: Vec<&str> = tests.iter().map(|t| t.name.as_str()).collect();
    for note in image::write_for_kernel(base, &initrd, &kernel, staging, &names)? {
        println!("[{name}] note: {note}");
    }
    let mut append = String::from("console=ttyS0 panic=-1 quiet");
    for a in &kernel.cmdline {
        append.push(' ');
        append.push_str(a);
    }
    Ok(PreparedKernel {
        name,
        kernel,
        initrd,
        append,
        tests,
    })
}

/// Boots one prepared kernel and counts its tests. `accel` is shared: a KVM that shows no
/// life switches every later boot to TCG.
fn boot_kernel(
    args: &VmArgs,
    prepared: &PreparedKernel,
    accel: &Mutex<qemu::Accel>,
) -> Result<KernelRun> {
    let PreparedKernel {
        name,
        kernel,
        initrd,
        append,
        tests,
    } = prepared;
    let name = *name;
    let dir = out_dir();
    loop {
        let current = *accel.lock().expect("accel lock");
        let boot = qemu::Boot {
            label: name.as_str(),
            kernel: &kernel.image,
            initrd,
            append: append.clone(),
            accel: current,
            memory_mb: args.memory,
            smp: VM_CPUS,
            timeout: Duration::from_secs(args.timeout_minutes * 60),
            // KVM reaches init in seconds (TCG in about five); one that has not after 30 s is not working.
            life_timeout: (args.accel == AccelChoice::Auto && current == qemu::Accel::Kvm)
                .then(|| Duration::from_secs(30)),
            life_marker: INIT_MARKER,
            end_marker: END_MARKER,
            log: dir.join(format!("{name}.log")),
        };
        let mut parser = LibtestParser::new();
        let mut exited = Vec::new();
        // Each binary's wall time in the guest, printed as it ends: the figures that decide
        // which binaries a kernel can afford within CI's time.
        let mut running: Option<(String, std::time::Instant)> = None;
        let mut times: Vec<(String, Duration)> = Vec::new();
        let outcome = qemu::boot(&boot, |line| {
            if let Some(bin) = line.strip_prefix(RUN_MARKER) {
                running = Some((bin.trim().to_owned(), std::time::Instant::now()));
                parser.feed(line);
            } else if let Some(rest) = line.strip_prefix(EXIT_MARKER) {
                let (bin, code) = rest.rsplit_once(' ').unwrap_or((rest, "?"));
                if let Some((_, started)) = running.take().filter(|(b, _)| b == bin) {
                    let took = started.elapsed();
                    println!("[{name}] {bin} took {:.0?}", took);
                    times.push((bin.to_owned(), took));
                }
                exited.push(bin.to_owned());
                parser.finish_binary_with_status(bin, code.trim() == "0");
            } else {
                parser.feed(line);
            }
        })?;
        // Under auto, a KVM guest that never reached init (silent for 30 s, or QEMU gone at
        // once: on some hosts /dev/kvm opens and makes VMs but QEMU dies setting the vCPU's
        // MSRs) hands over to TCG.
        let kvm_failed =
            args.accel == AccelChoice::Auto && current == qemu::Accel::Kvm && !outcome.saw_life;
        if outcome.no_life || kvm_failed {
            println!(
                "[{name}] xtask: no sign of life from the guest under KVM; using TCG from now on"
            );
            *accel.lock().expect("accel lock") = qemu::Accel::Tcg {
                multi_threaded: args.tcg_threads == TcgThreads::Multi,
            };
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
        times.sort_by_key(|t| std::cmp::Reverse(t.1));
        let slowest: Vec<String> = times
            .iter()
            .take(8)
            .map(|(bin, took)| format!("{bin} {:.0}s", took.as_secs_f64()))
            .collect();
        if !slowest.is_empty() {
            println!("[{name}] slowest binaries: {}", slowest.join(", "));
        }
        return Ok(KernelRun {
            name,
            counts,
            error,
            duration: outcome.duration,
        });
    }
}
