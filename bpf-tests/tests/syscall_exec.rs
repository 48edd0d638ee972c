//! `chaos exec`: syscall faults on a command chaos starts, through seccomp user notification,
//! checked with real programs (coreutils or busybox `cat` and `sh`, and python3 where it exists).
//! Every file lives in a temporary directory of the test; every process is one the test starts,
//! in its own process group, killed with the group if the test fails.

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Output},
    time::{Duration, Instant},
};

use bpf_tests::{chaos::Chaos, skip_on_err, skip_unless, world::measure::within_binomial};

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(bpf_tests::world::unique_name());
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    /// Writes `text` to `rel` (creating directories), returns its path.
    fn file(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
        p
    }

    fn path(&self, rel: &str) -> String {
        self.0.join(rel).to_str().expect("utf-8 path").to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `chaos exec` started in its own process group; drop SIGKILLs the group and reaps chaos.
struct Running(Option<Child>);

impl Running {
    fn pid(&self) -> i32 {
        self.0.as_ref().expect("running").id() as i32
    }

    fn wait(mut self) -> Output {
        self.0
            .take()
            .expect("running")
            .wait_with_output()
            .expect("wait for chaos")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            // SAFETY: signals the process group this test made for chaos and its command.
            unsafe { libc::killpg(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

/// `chaos exec` with a fault on `mkdir`, which the commands of these tests never call; the
/// command follows.
const MKDIR_EIO: [&str; 8] = [
    "exec",
    "syscall",
    "fail",
    "--syscall",
    "mkdir",
    "--errno",
    "EIO",
    "--",
];

/// `Ok` when `chaos exec` can run here (seccomp user notification, pidfd_getfd).
fn require_exec(chaos: &Chaos) -> Result<(), String> {
    let out = chaos.output(&[&MKDIR_EIO[..], &["true"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(())
    } else if stderr.contains("this kernel cannot") || stderr.contains("needs Linux") {
        Err(stderr.trim().to_owned())
    } else {
        panic!("chaos exec ... -- true failed: {stderr}")
    }
}

/// Runs `chaos args` (in `cwd` if given) to the end.
fn exec(chaos: &Chaos, cwd: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = chaos.command(args);
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    cmd.process_group(0);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn chaos");
    Running(Some(child)).wait()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `chaos exec` summary's counters: `(seen, matched, acted)`.
fn counters(stderr: &str) -> (u64, u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("chaos exec:"))
        .unwrap_or_else(|| panic!("no summary in {stderr:?}"));
    let after = |key: &str| -> u64 {
        let rest = &line[line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {line}"))
    };
    (after("seen "), after("matched "), after("acted "))
}

#[test]
fn openat_fails_only_under_the_prefix() {
    let chaos = skip_on_err!(Chaos::from_env());
    skip_unless!(bpf_tests::skip::require_command("cat"));
    skip_unless!(require_exec(&chaos));
    let dir = TempDir::new();
    dir.file("data/f", "under\n");
    dir.file("dataxy/h", "beside\n");
    dir.file("other/g", "elsewhere\n");
    let prefix = dir.path("data");
    let fail = |errno: &str, cwd: Option<&Path>, file: &str| {
        exec(
            &chaos,
            cwd,
            &[
                "exec",
                "syscall",
                "fail",
                "--syscall",
                "openat",
                "--errno",
                errno,
                "--path-prefix",
                &prefix,
                "--",
                "cat",
                file,
            ],
        )
    };

    let out = fail("EACCES", None, &dir.path("data/f"));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(text(&out.stdout).is_empty());
    let (seen, matched, acted) = counters(&stderr);
    assert_eq!((matched, acted), (1, 1), "{stderr}");
    assert!(seen >= 1, "{stderr}");

    // Relative to the working directory, through `..`: the same file, the same fault.
    let out = fail("EIO", Some(&dir.0.join("other")), "../data/f");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Input/output error"), "{stderr}");

    // Elsewhere, and in a directory whose name merely starts with the prefix's: untouched.
    for (file, content) in [("other/g", "elsewhere\n"), ("dataxy/h", "beside\n")] {
        let out = fail("EIO", None, &dir.path(file));
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{file}: {stderr}");
        assert_eq!(text(&out.stdout), content);
        let (_, matched, acted) = counters(&stderr);
        assert_eq!((matched, acted), (0, 0), "{file}: {stderr}");
    }
}

/// Python that opens `path` `n` times and prints how many opens failed.
const OPEN_LOOP: &str = r#"
import sys
path, n = sys.argv[1], int(sys.argv[2])
failed = []
for i in range(n):
    try:
        open(path).close()
    except OSError:
        failed.append(i)
print(len(failed))
print(",".join(map(str, failed)))
"#;

#[test]
fn percent_lands_in_the_binomial_interval() {
    let chaos = skip_on_err!(Chaos::from_env());
    skip_unless!(bpf_tests::skip::require_command("python3"));
    skip_unless!(require_exec(&chaos));
    let dir = TempDir::new();
    let file = dir.file("data/f", "x");
    let n = 2000u64;
    let out = exec(
        &chaos,
        None,
        &[
            "exec",
            "--json",
            "syscall",
            "fail",
            "--syscall",
            "openat",
            "--errno",
            "EIO",
            "--percent",
            "30",
            "--path-prefix",
            &dir.path("data"),
            "--",
            "python3",
            "-c",
            OPEN_LOOP,
            file.to_str().expect("utf-8"),
            &n.to_string(),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let (first, json) = stdout.split_once('\n').expect("python's count, then JSON");
    let failed: u64 = first.trim().parse().expect("failure count");
    let json = json.split_once('\n').map_or("", |(_, j)| j);
    let report: serde_json::Value = serde_json::from_str(json).expect("report JSON");
    assert_eq!(report["strategy"], "seccomp-notify");
    assert_eq!(report["counters"]["matched"], n, "{report}");
    assert_eq!(report["counters"]["acted"], failed, "{report}");
    assert!(
        within_binomial(n, 0.30, failed),
        "{failed} of {n} opens failed at 30 %"
    );
    println!("percent 30: {failed} of {n} failed");
}

#[test]
fn after_every_and_max_count_are_exact() {
    let chaos = skip_on_err!(Chaos::from_env());
    skip_unless!(bpf_tests::skip::require_command("python3"));
    skip_unless!(require_exec(&chaos));
    let dir = TempDir::new();
    let file = dir.file("data/f", "x");
    let out = exec(
        &chaos,
        None,
        &[
            "exec",
            "syscall",
            "fail",
            "--syscall",
            "openat",
            "--errno",
            "ENOSPC",
            "--after",
            "2",
            "--every",
            "3",
            "--max-count",
            "3",
            "--path-prefix",
            &dir.path("data"),
            "--",
            "python3",
            "-c",
            OPEN_LOOP,
            file.to_str().expect("utf-8"),
            "20",
        ],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Matched calls 1-2 pass, then 3, 6, 9 fail (0-based opens 2, 5, 8), then the cap holds.
    assert_eq!(text(&out.stdout), "3\n2,5,8\n", "{stderr}");
    let (_, matched, acted) = counters(&stderr);
    assert_eq!((matched, acted), (20, 3), "{stderr}");
}

#[test]
fn fsync_delay_is_felt_and_the_command_succeeds() {
    let chaos = skip_on_err!(Chaos::from_env());
    skip_unless!(bpf_tests::skip::require_command("python3"));
    skip_unless!(require_exec(&chaos));
    let dir = TempDir::new();
    let script = r#"
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
os.write(fd, b"x")
t = time.monotonic()
os.fsync(fd)
print(f"{(time.monotonic() - t) * 1000:.1f}")
os.close(fd)
"#;
    let out = exec(
        &chaos,
        None,
        &[
            "exec",
            "syscall",
            "delay",
            "--syscall",
            "fsync",
            "--latency",
            "200ms",
            "--",
            "python3",
            "-c",
            script,
            &dir.path("w"),
        ],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let ms: f64 = text(&out.stdout).trim().parse().expect("fsync time");
    assert!(ms >= 200.0, "fsync took {ms} ms under a 200ms delay");
    assert_eq!(std::fs::read(dir.path("w")).expect("written"), b"x");
    assert_eq!(counters(&stderr).2, 1, "{stderr}");
    println!("fsync under 200ms delay: {ms} ms");
}

#[test]
fn the_fault_ends_at_its_deadline() {
    let chaos = skip_on_err!(Chaos::from_env());
    skip_unless!(bpf_tests::skip::require_command("python3"));
    skip_unless!(require_exec(&chaos));
    let dir = TempDir::new();
    let file = dir.file("data/f", "x");
    // The deadline counts from before the command starts, so the first open (at python's start)
    // falls inside it and the second (3.5 s later) after it, however slow the machine.
    let script = r#"
import sys, time
def ok():
    try:
        open(sys.argv[1]).close()
        return "ok"
    except OSError:
        return "failed"
first = ok()
time.sleep(3.5)
print(first, ok())
"#;
    let out = exec(
        &chaos,
        None,
        &[
            "exec",
            "--duration",
            "3s",
            "syscall",
            "fail",
            "--syscall",
            "openat",
            "--errno",
            "EIO",
            "--path-prefix",
            &dir.path("data"),
            "--",
            "python3",
            "-c",
            script,
            file.to_str().expect("utf-8"),
        ],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(text(&out.stdout), "failed ok\n", "{stderr}");
}

#[test]
fn exit_codes_and_signals_pass_through() {
    let chaos = skip_on_err!(Chaos::from_env());
    skip_unless!(bpf_tests::skip::require_command("sh"));
    skip_unless!(require_exec(&chaos));
    let base = MKDIR_EIO;
    let run = |script: &str| {
        let mut args = base.to_vec();
        args.extend(["sh", "-c", script]);
        exec(&chaos, None, &args)
    };
    assert_eq!(run("exit 7").status.code(), Some(7));
    // Killed by a signal: 128 + the signal, as a shell reports it.
    assert_eq!(
        run("kill -TERM $$").status.code(),
        Some(128 + libc::SIGTERM)
    );

    // A SIGTERM sent to chaos reaches the command, which exits 9 from its trap.
    let dir = TempDir::new();
    let ready = dir.path("ready");
    let script = format!("trap 'exit 9' TERM; : > '{ready}'; while :; do sleep 0.05; done");
    let mut args = base.to_vec();
    args.extend(["sh", "-c", &script]);
    let mut cmd = chaos.command(&args);
    cmd.process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let running = Running(Some(cmd.spawn().expect("spawn chaos")));
    // Wait for the trap to be set (a bound against a hung test, not a timing assertion).
    let start = Instant::now();
    while !Path::new(&ready).exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the command never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: signals the chaos process this test started.
    assert_eq!(unsafe { libc::kill(running.pid(), libc::SIGTERM) }, 0);
    let out = running.wait();
    assert_eq!(out.status.code(), Some(9), "{}", text(&out.stderr));
}

/// Runs `chaos args`, expects `code` and one line on stderr holding every needle.
fn rejects(chaos: &Chaos, args: &[&str], code: i32, needles: &[&str]) {
    let out = chaos.output(args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "chaos {args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "chaos {args:?}: one line expected: {stderr:?}"
    );
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(
            lines[0].contains(n),
            "chaos {args:?}: {n:?} missing: {stderr:?}"
        );
    }
    assert!(out.stdout.is_empty(), "chaos {args:?} printed to stdout");
}

#[test]
fn bad_input_is_one_line_and_runs_nothing() {
    let chaos = skip_on_err!(Chaos::from_env());
    let dir = TempDir::new();
    let marker = dir.path("ran");
    let touch = format!(": > '{marker}'");
    let with = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = ["exec", "syscall", "fail", "--syscall", "openat"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cmd = ["--", "sh", "-c"];
    let cases: Vec<(Vec<String>, i32, Vec<&str>)> = vec![
        (
            {
                let mut v = with(&["--errno", "EIO"]);
                v[4] = "fsyncc".into();
                v
            },
            1,
            vec!["invalid syscall", "fsyncc"],
        ),
        (with(&["--errno", "EFOO"]), 1, vec!["invalid errno", "EFOO"]),
        (with(&["--errno", "0"]), 1, vec!["invalid errno"]),
        (with(&[]), 1, vec!["invalid errno", "--errno"]),
        (
            with(&["--errno", "EIO", "--pid", "1"]),
            1,
            vec!["invalid pid", "drop --pid"],
        ),
        (
            with(&["--errno", "EIO", "--percent", "101"]),
            1,
            vec!["invalid percent"],
        ),
        (
            with(&["--errno", "EIO", "--path-prefix", "rel/dir"]),
            1,
            vec!["invalid path-prefix"],
        ),
        (
            with(&["--errno", "EIO", "--every", "0"]),
            1,
            vec!["invalid every"],
        ),
    ];
    for (args, code, needles) in cases {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.extend(cmd);
        args.push(&touch);
        rejects(&chaos, &args, code, &needles);
        assert!(
            !Path::new(&marker).exists(),
            "chaos {args:?} ran the command"
        );
    }
    // No command at all: the command line is wrong (clap, exit 2).
    rejects(
        &chaos,
        &[
            "exec",
            "syscall",
            "fail",
            "--syscall",
            "openat",
            "--errno",
            "EIO",
        ],
        2,
        &["CMD"],
    );
    let missing = dir.path("no-such-program");
    rejects(
        &chaos,
        &[
            "exec",
            "syscall",
            "fail",
            "--syscall",
            "openat",
            "--errno",
            "EIO",
            "--",
            &missing,
        ],
        1,
        &["invalid command", "no-such-program"],
    );
    rejects(
        &chaos,
        &[
            "exec",
            "syscall",
            "delay",
            "--syscall",
            "fsync",
            "--latency",
            "2m",
            "--",
            "true",
        ],
        1,
        &["invalid latency"],
    );
}

/// A supervisor killed -9 takes its command with it: the kernel cannot remove the command's
/// seccomp filter, so left alone it would keep failing its planned calls (ENOSYS) past the end
/// of the fault.
#[test]
fn the_command_dies_with_a_killed_supervisor() {
    let chaos = skip_on_err!(Chaos::from_env());
    skip_unless!(bpf_tests::skip::require_command("sh"));
    skip_unless!(require_exec(&chaos));
    let dir = TempDir::new();
    let pid_file = dir.path("pid");
    let script = format!(
        "echo $$ > '{pid_file}.tmp'; mv '{pid_file}.tmp' '{pid_file}'; while :; do sleep 0.05; done"
    );
    let mut cmd = chaos.command(&[&MKDIR_EIO[..], &["sh", "-c", &script]].concat());
    cmd.process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let running = Running(Some(cmd.spawn().expect("spawn chaos")));
    let start = Instant::now();
    let command: i32 = loop {
        if let Ok(text) = std::fs::read_to_string(&pid_file) {
            break text.trim().parse().expect("the command's pid");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the command never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    // SAFETY: signals the chaos process this test started.
    assert_eq!(unsafe { libc::kill(running.pid(), libc::SIGKILL) }, 0);
    let killed = Instant::now();
    // The command is chaos's child: once chaos is gone it is reparented and reaped by init (or
    // a subreaper); its /proc entry goes when it dies.
    while Path::new(&format!("/proc/{command}")).exists()
        && std::fs::read_to_string(format!("/proc/{command}/stat"))
            .is_ok_and(|s| !s.contains(") Z"))
    {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the command outlived its killed supervisor"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "the command died {} ms after its supervisor was killed -9",
        killed.elapsed().as_millis()
    );
    drop(running);
}
