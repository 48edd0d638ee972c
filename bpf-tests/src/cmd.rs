//! Running external commands (`ip`, `tc`, `mkfs.ext4`) with useful errors.

use std::ffi::OsStr;
use std::io;
use std::process::{Command, Output};

/// Describes a command for error messages: program and arguments separated by spaces.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion and returns its stdout; a non-zero exit becomes an error that quotes
/// the command and its stderr. A missing program gives an error of kind
/// [`io::ErrorKind::NotFound`], so callers can turn it into a skip.
pub fn run(cmd: &mut Command) -> io::Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`{}` failed ({}): {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` to completion and returns its output whatever its exit status.
pub fn output(cmd: &mut Command) -> io::Result<Output> {
    cmd.stdin(std::process::Stdio::null());
    cmd.output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot run `{}`: {e}", cmd.get_program().to_string_lossy()),
        )
    })
}

/// Builds a [`Command`] from a program and its arguments.
pub fn command<S: AsRef<OsStr>>(program: impl AsRef<OsStr>, args: &[S]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd
}

/// Whether `program` can be found on `PATH` (or is an existing path).
pub fn have(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}
