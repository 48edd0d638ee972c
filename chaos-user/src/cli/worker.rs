//! `chaos __traffic-worker` (hidden): runs one traffic generator of a drill, started by the
//! runner ([`chaos_user::experiment::traffic::TrafficRun`]), which gives it the generator as JSON
//! on stdin and reads its operations, one line each, from stdout.

use std::process::ExitCode;

/// Runs the worker until the runner stops it (SIGTERM) or goes away (stdin closed).
pub fn run() -> anyhow::Result<ExitCode> {
    chaos_user::experiment::traffic::worker_main()?;
    Ok(ExitCode::SUCCESS)
}
