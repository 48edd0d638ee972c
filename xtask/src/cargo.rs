//! Building the workspace's binaries and finding them through cargo's JSON messages.
use std::{
    io::BufReader,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use cargo_metadata::{Artifact, Message};

use crate::cmd;

/// The package holding the tests that need a kernel (run natively as root and inside VMs).
pub const BPF_TESTS_PACKAGE: &str = "bpf-tests";

/// A test executable built by cargo.
#[derive(Clone, Debug)]
pub struct TestBinary {
    /// e.g. `vm_smoke` or `bpf_tests` (the lib's unit tests).
    pub name: String,
    pub path: PathBuf,
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(cmd::workspace_root());
    c
}

/// Runs a cargo command with `--message-format=json-render-diagnostics` and returns the
/// artifacts it reports (compiler diagnostics are rendered to stderr as usual).
fn artifacts(mut command: Command) -> Result<Vec<Artifact>> {
    command
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    eprintln!("$ {}", cmd::display(&command));
    let mut child = command
        .spawn()
        .with_context(|| format!("failed to start `{}`", cmd::display(&command)))?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut found = Vec::new();
    for message in Message::parse_stream(BufReader::new(stdout)) {
        if let Message::CompilerArtifact(artifact) = message.context("reading cargo messages")? {
            found.push(artifact);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`{}` failed: {status}", cmd::display(&command));
    }
    Ok(found)
}

/// Builds the `chaos` binary (package chaos-user; its build script builds the eBPF object with
/// aya-build, which needs nightly and bpf-linker) and returns its path.
pub fn build_chaos() -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "--package", "chaos-user", "--bin", "chaos"]);
    artifacts(c)?
        .into_iter()
        .filter(|a| a.target.name == "chaos")
        .find_map(|a| a.executable)
        .map(PathBuf::from)
        .context("cargo did not report the `chaos` executable")
}

/// Builds the test executables of `bpf-tests` (its lib's unit tests and every integration test)
/// without running them.
pub fn build_bpf_tests() -> Result<Vec<TestBinary>> {
    let mut c = cargo();
    c.args(["test", "--package", BPF_TESTS_PACKAGE, "--no-run"]);
    let mut bins: Vec<TestBinary> = artifacts(c)?
        .into_iter()
        .filter(|a| a.profile.test)
        .filter_map(|a| {
            Some(TestBinary {
                name: a.target.name.clone(),
                path: a.executable?.into(),
            })
        })
        .collect();
    bins.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(bins)
}
