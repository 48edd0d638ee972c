//! Project automation, run as `cargo xtask <command>`.
//!
//! - `setup`: install the toolchains and system packages the project needs (idempotent, fast when
//!   everything is present).
//! - `build`: build the `chaos` binary (and, through its build script, the eBPF object).
//! - `vm-test`: boot Debian and test kernels in QEMU and run the `bpf-tests` binaries inside.
//! - `test`: everything CI checks: fmt, clippy, unit, native and VM tests, with one summary line.
//! - `demo`: build `chaos` and run `chaos demo`.
//! - `bench`: measure the injector's costs and accuracy (natively and in a VM kernel), print the
//!   table and write `target/bench/summary.json`.
//!
//! Every command but `setup` runs setup first, quietly.
mod bench;
mod cargo;
mod cmd;
mod setup;
mod summary;
mod test;
mod vm;

use std::{os::unix::process::CommandExt as _, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Project automation for chaos")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install system packages, the nightly toolchain and bpf-linker (idempotent).
    Setup,
    /// Build the `chaos` binary and print its path.
    Build,
    /// Boot kernels in QEMU and run the bpf-tests binaries inside them.
    VmTest(vm::VmArgs),
    /// Run fmt, clippy, unit, native and VM tests; print one summary line.
    Test(test::TestArgs),
    /// Measure costs and accuracy, print the table, write target/bench/summary.json.
    Bench(bench::BenchArgs),
    /// Build `chaos` and run `chaos demo`, passing the remaining arguments (even `--help`)
    /// through.
    #[command(disable_help_flag = true)]
    Demo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    cmd::ensure_cargo_bin_on_path();
    match cli.command {
        Command::Setup => {
            setup::run(setup::Verbosity::Normal)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Build => {
            setup::run(setup::Verbosity::Quiet)?;
            let chaos = cargo::build_chaos()?;
            println!("{}", chaos.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::VmTest(args) => {
            setup::run(setup::Verbosity::Quiet)?;
            vm::run_command(&args)
        }
        Command::Test(args) => {
            setup::run(setup::Verbosity::Quiet)?;
            test::run(&args)
        }
        Command::Bench(args) => {
            setup::run(setup::Verbosity::Quiet)?;
            bench::run(&args)
        }
        Command::Demo { args } => {
            setup::run(setup::Verbosity::Quiet)?;
            let chaos = cargo::build_chaos()?;
            let mut cmd = std::process::Command::new(&chaos);
            cmd.arg("demo").args(&args);
            // The report goes under target/ unless asked elsewhere.
            if !args.iter().any(|a| a.starts_with("--report-dir")) {
                cmd.arg("--report-dir")
                    .arg(cmd::workspace_root().join("target/chaos-demo"));
            }
            let err = cmd.exec();
            Err(err).with_context(|| format!("exec {} demo", chaos.display()))
        }
    }
}
