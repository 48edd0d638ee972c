//! `chaos-bench`: measures the injector's rows (see `bpf_tests::bench`) and prints each as a
//! `CHAOS-BENCH-ROW <json>` line for `cargo xtask bench`, which builds and runs it natively and
//! inside a VM, merges the rows and writes `target/bench/summary.json`.
//!
//! ```text
//! chaos-bench [--quick] [--place native|vm] [--only FAMILY|FAMILY.SECTION]...
//! ```
//!
//! `--place` defaults to `vm` when `CHAOS_IN_VM` is set (the VM's init sets it) and to `native`
//! otherwise. The VM's init runs every binary of its list as a libtest binary, with
//! `--test-threads=1 --nocapture`: those two are accepted and ignored. Exits non-zero when a
//! section could not be measured. Needs root; `CHAOS_BIN` names the `chaos` binary for the
//! controller rows.
use std::process::ExitCode;

use anyhow::{Result, bail};
use bpf_tests::bench::{self, Config, Place};

fn usage() -> &'static str {
    "usage: chaos-bench [--quick] [--place native|vm] [--only FAMILY|FAMILY.SECTION]..."
}

fn parse(args: impl Iterator<Item = String>) -> Result<Config> {
    let in_vm = std::env::var_os("CHAOS_IN_VM").is_some_and(|v| !v.is_empty());
    let mut config = Config {
        quick: false,
        place: if in_vm { Place::Vm } else { Place::Native },
        only: Vec::new(),
    };
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => config.quick = true,
            "--place" => {
                config.place = match args.next().as_deref() {
                    Some("native") => Place::Native,
                    Some("vm") => Place::Vm,
                    other => bail!("--place takes native or vm, not {other:?}; {}", usage()),
                }
            }
            "--only" => match args.next() {
                Some(f)
                    if bench::FAMILIES
                        .iter()
                        .any(|(n, _)| f.split('.').next() == Some(*n)) =>
                {
                    config.only.push(f)
                }
                other => {
                    let names: Vec<&str> = bench::FAMILIES.iter().map(|(n, _)| *n).collect();
                    bail!(
                        "--only takes a family ({}) or one of its sections (net.arm_latency), \
                         not {other:?}",
                        names.join(", ")
                    )
                }
            },
            "--nocapture" => {}
            _ if a.starts_with("--test-threads") => {
                if !a.contains('=') {
                    args.next();
                }
            }
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            _ => bail!("unknown argument {a:?}; {}", usage()),
        }
    }
    Ok(config)
}

fn main() -> ExitCode {
    // Internal: run a command and report its resource usage (see `bench::proc::run_measured`).
    let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if argv.first().is_some_and(|a| a == bench::proc::RUSAGE_ARG) {
        return bench::proc::rusage_main(&argv[1..]);
    }
    // Internal: one timed syscall loop in a process of its own (see `bench::syscall`).
    if argv.first().is_some_and(|a| a == bench::syscall::LOOP_ARG) {
        return bench::syscall::loop_main(&argv[1..]);
    }
    let config = match parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chaos-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    let mode = match (config.place, config.quick) {
        // The VM rows do not depend on --quick (and the VM's init could not pass it).
        (Place::Vm, _) => "",
        (_, true) => ", quick",
        (_, false) => ", full",
    };
    println!(
        "chaos-bench: {} rows{mode}, kernel {}",
        config.place.as_str(),
        bench::kernel_label()
    );
    match bench::run(config) {
        Ok(b) => {
            println!(
                "chaos-bench: {} rows, {} sections failed",
                b.rows().len(),
                b.errors().len()
            );
            for e in b.errors() {
                println!("  failed: {e}");
            }
            if b.errors().is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("chaos-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
