//! Small helpers for running external commands with useful error messages.
use std::{
    env,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// The workspace root (the directory holding the root `Cargo.toml`).
pub fn workspace_root() -> &'static Path {
    // xtask lives at <root>/xtask.
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `~/.cargo/bin`, where rustup and `cargo install` put their binaries.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    if let Some(cargo_home) = env::var_os("CARGO_HOME") {
        return Some(PathBuf::from(cargo_home).join("bin"));
    }
    env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin"))
}

/// Puts `~/.cargo/bin` on this process's `PATH` (inherited by every child), so that a
/// freshly installed `bpf-linker` is found by aya-build.
pub fn ensure_cargo_bin_on_path() {
    let Some(bin) = cargo_bin_dir() else { return };
    let path = env::var_os("PATH").unwrap_or_default();
    if env::split_paths(&path).any(|p| p == bin) {
        return;
    }
    let mut dirs = vec![bin];
    dirs.extend(env::split_paths(&path));
    if let Ok(joined) = env::join_paths(dirs) {
        // SAFETY: called first thing in `main`, before xtask starts any thread, so nothing can
        // read the environment concurrently.
        unsafe { env::set_var("PATH", joined) };
    }
}

/// A printable form of a command line, for logs and errors.
pub fn display(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), v?.to_string_lossy())))
        .collect();
    parts.push(cmd.get_program().to_string_lossy().into_owned());
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` with inherited stdio and fails unless it exits successfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!("`{}` failed: {status}", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` with inherited stdio and returns its exit status.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    eprintln!("$ {}", display(cmd));
    cmd.status()
        .with_context(|| format!("failed to start `{}`", display(cmd)))
}

/// Runs `cmd` and returns its stdout; fails (with its stderr) unless it exits successfully.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to start `{}`", display(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}\n{}",
            display(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{}`: non-UTF-8 output", display(cmd)))
}

/// Runs `cmd`, echoing its stdout line by line and handing each line to `on_line`; stderr is
/// inherited.
pub fn stream_stdout(cmd: &mut Command, mut on_line: impl FnMut(&str)) -> Result<ExitStatus> {
    eprintln!("$ {}", display(cmd));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start `{}`", display(cmd)))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        println!("{line}");
        on_line(line);
    }
    child
        .wait()
        .with_context(|| format!("waiting for `{}`", display(cmd)))
}

/// Is `program` on `PATH`?
pub fn have(program: &str) -> bool {
    which::which(program).is_ok()
}
