//! schemathesis (PyPI) against the daemon's own OpenAPI document: every operation fed
//! generated input, valid and invalid, over TCP with the token; no answer may be a 5xx or differ
//! from the document, and nothing may be left armed.
//!
//! schemathesis is installed into a venv under the target directory when missing (pinned by
//! `bpf-tests/schemathesis-requirements.txt`; `cargo xtask setup` installs it too). The test is
//! skipped where there is no python3 with venv (the VM images).
//!
//! Generated fault specs are refused in practice (an `action` that is random text is invalid),
//! and a `recover --all` runs after the fuzzer whatever it did.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use bpf_tests::{
    chaos::Chaos,
    daemon::{Addr, Daemon, TempDir},
    skip::require_root,
    skip_on_err,
};
use serde_json::json;

/// The pinned schemathesis requirement (built in: the test binary may run far from the sources).
const REQUIREMENTS: &str = include_str!("../schemathesis-requirements.txt");

/// The venv: `$CARGO_TARGET_DIR/schemathesis-venv`, else `target/` of the workspace.
fn venv() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("schemathesis-venv")
}

/// The schemathesis executable, installed if missing; `Err` (a skip reason) without python3 and
/// its venv module.
fn schemathesis() -> Result<PathBuf, String> {
    let venv = venv();
    let exe = venv.join("bin/schemathesis");
    let version = REQUIREMENTS
        .lines()
        .find_map(|l| l.trim().strip_prefix("schemathesis=="))
        .expect("a pinned schemathesis version");
    if exe.is_file() {
        let out = Command::new(&exe).arg("--version").output();
        if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(version)) {
            return Ok(exe);
        }
    }
    let made = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .output()
        .map_err(|e| format!("no python3 ({e})"))?;
    if !made.status.success() {
        return Err(format!(
            "python3 -m venv failed (install python3-venv): {}",
            String::from_utf8_lossy(&made.stderr).trim()
        ));
    }
    println!("installing schemathesis {version} into {}", venv.display());
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("schemathesis=={version}"))
        .status()
        .expect("running pip");
    assert!(pip.success(), "pip install schemathesis=={version} failed");
    Ok(exe)
}

#[test]
fn schemathesis_finds_no_server_error() {
    skip_on_err!(require_root());
    let chaos = skip_on_err!(Chaos::from_env());
    let st = skip_on_err!(schemathesis());
    let dir = TempDir::new("daemon-schema");
    let token = "schemathesis-token";
    let daemon = Daemon::start(
        &chaos.env("CHAOS_TOKEN", token),
        &["--listen", "127.0.0.1:0"],
    );
    let Addr::Tcp(addr) = daemon.addr.clone() else {
        panic!("a TCP daemon")
    };
    let report = dir.0.join("report");
    let out = Command::new(&st)
        .arg("run")
        .arg(format!("http://{addr}/v1/openapi.json"))
        // Every check (no 5xx, status codes, content types and bodies as documented, auth
        // enforced, ...) but one: "a schema-valid body must be accepted" cannot hold, as the
        // spec's schema leaves each kind's fields free-form (docs/daemon.md) and the server
        // checks them as the CLI does.
        .args(["--checks", "all"])
        .args(["--exclude-checks", "positive_data_acceptance"])
        // A discovery holds its request for the seconds asked (up to 300, on any pid the
        // fuzzer picks, pid 1 included): bpf-tests/tests/discover.rs tests the route.
        .args(["--exclude-path", "/v1/discover"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "100"])
        .args(["--seed", "9"])
        .args(["--workers", "1"])
        .args(["--request-timeout", "60"])
        .arg("--report-dir")
        .arg(&report)
        .env("NO_COLOR", "1")
        // Its cache (.schemathesis/) goes there, not into the sources.
        .current_dir(&dir.0)
        .output()
        .expect("running schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Whatever it did, nothing of it stays armed.
    let recovered = chaos
        .env("CHAOS_SERVER", &format!("http://{addr}"))
        .env("CHAOS_TOKEN", token)
        .recover_all()
        .expect("recover --all through the daemon");
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "schemathesis found failures ({})",
        out.status
    );
    // "N generated, N passed": every case ran and passed.
    let counts = stdout
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or_else(|| panic!("no test case count in {stdout}"));
    let numbers: Vec<u64> = counts
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    println!("schemathesis: {}", counts.trim());
    assert!(
        numbers.len() == 2 && numbers[0] == numbers[1] && numbers[0] >= 100,
        "{counts}"
    );
    assert_eq!(recovered["faults"], json!([]), "the fuzzer armed a fault");
    assert_eq!(chaos.list().expect("list"), json!([]));
    daemon.stop();
}
