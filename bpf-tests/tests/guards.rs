//! The blast-radius guards, in one place: each refuses with one line that names the field, says
//! why and says `--force`, and `--force` lifts it (checked with `--dry-run`); nothing is armed. Also: a fault without `--duration` lasts the
//! default 10 minutes. (The port-22 and default-route guards act on traffic and are tested with
//! traffic in `net_faults`.)

use std::{
    io::BufRead as _,
    process::Stdio,
    time::{Duration, Instant},
};

use bpf_tests::{
    Oracle, TwoHosts,
    chaos::Chaos,
    skip_on_err, skip_unless,
    world::{cgroup_v1_mount, cgroup2_mount},
};

/// Runs `chaos inject ARGS` and checks it is refused with one line holding every needle.
fn refused(chaos: &Chaos, args: &[&str], needles: &[&str]) -> String {
    let mut full = vec!["inject"];
    full.extend_from_slice(args);
    let out = chaos.output(&full);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "chaos {full:?} was armed: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{n:?} missing from {stderr:?}");
    }
    stderr
}

/// Runs `chaos inject --dry-run ARGS --force`: the guard lifts (the plan is made, or the kernel
/// lacks a strategy, which is decided after the guards), and nothing is armed.
fn lifted(chaos: &Chaos, args: &[&str]) {
    let mut full = vec!["inject", "--dry-run"];
    full.extend_from_slice(args);
    full.push("--force");
    let out = chaos.output(&full);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || stderr.contains("this kernel cannot"),
        "chaos {full:?}: --force did not lift the guard: {stderr}"
    );
}

/// Recovers everything when dropped, so a guard that failed to refuse leaves nothing armed.
struct RecoverAll<'a>(&'a Chaos);

impl Drop for RecoverAll<'_> {
    fn drop(&mut self) {
        let _ = self.0.recover_all();
    }
}

#[test]
fn each_guard_refuses_with_one_line_naming_the_field_and_force() {
    skip_unless!(bpf_tests::skip::require_root());
    let chaos = skip_on_err!(Chaos::from_env());
    let world = TwoHosts::new().expect("two hosts");
    let oracle = Oracle::new().with_netns(&world.netns_names());
    let before = oracle.snapshot();
    let a = &world.a;
    let _cleanup = RecoverAll(&chaos);

    // A controller of ours: `inject --foreground` holds a fault (a network one on the test
    // world) and stays.
    let mut holder = chaos
        .command(&[
            "inject",
            "--foreground",
            "net",
            "loss",
            "--percent",
            "1",
            "--interface",
            &a.ifname,
            "--netns",
            a.ns.name(),
            "--duration",
            "60s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start chaos inject --foreground");
    let mut out = std::io::BufReader::new(holder.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("armed line");
    assert!(first.contains("armed"), "{first}");
    // Its live counters keep coming: read them, so it does not die of a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let holder_pid = holder.id().to_string();

    let mut lines = Vec::new();
    for (args, needles) in [
        (
            vec!["syscall", "stop", "--syscall", "wait4", "--pid", "1"],
            vec!["invalid pid", "init", "--force"],
        ),
        (
            vec![
                "syscall",
                "stop",
                "--syscall",
                "wait4",
                "--pid",
                &holder_pid,
            ],
            vec!["invalid pid", "chaos itself", "--force"],
        ),
        (
            vec!["disk", "fill", "--path", "/", "--bytes", "1M"],
            vec!["invalid path", "root filesystem", "--force"],
        ),
    ] {
        lines.push(refused(&chaos, &args, &needles));
        lifted(&chaos, &args);
    }
    if cgroup2_mount().is_some() {
        let args = [
            "syscall",
            "fail",
            "--syscall",
            "connect",
            "--errno",
            "EPERM",
            "--cgroup",
            "/",
        ];
        lines.push(refused(
            &chaos,
            &args,
            &["invalid cgroup", "root", "--force"],
        ));
        lifted(&chaos, &args);
    }
    if let Some(blkio) = cgroup_v1_mount("blkio").or_else(cgroup2_mount) {
        let root = blkio.display().to_string();
        let lo = bpf_tests::LoopDevice::new(8 << 20).expect("loop device");
        let dev = lo.device().display().to_string();
        // On v1 a guard (--force lifts it); the v2 root takes no io.max at all.
        let v1 = cgroup_v1_mount("blkio").is_some();
        let needles: &[&str] = if v1 {
            &["invalid cgroup", "root", "--force"]
        } else {
            &["invalid cgroup", "root"]
        };
        let args = ["io", "hang", "--device", &dev, "--cgroup", &root];
        lines.push(refused(&chaos, &args, needles));
        if v1 {
            lifted(&chaos, &args);
        }
    }
    for l in &lines {
        print!("guard: {l}");
    }
    println!(
        "guards: {} refusals, each one line naming the field; --force lifts each guard (--dry-run)",
        lines.len()
    );

    holder.kill().expect("kill the holder");
    holder.wait().expect("reap the holder");
    chaos.recover_all().expect("recover --all");
    oracle.assert_clean(&before);
}

#[test]
fn a_fault_without_duration_lasts_ten_minutes() {
    skip_unless!(bpf_tests::skip::require_root());
    let chaos = skip_on_err!(Chaos::from_env());
    let world = TwoHosts::new().expect("two hosts");
    let oracle = Oracle::new().with_netns(&world.netns_names());
    let before = oracle.snapshot();
    let a = &world.a;
    let armed = chaos.arm(&[
        "net",
        "loss",
        "--percent",
        "1",
        "--interface",
        &a.ifname,
        "--netns",
        a.ns.name(),
    ]);
    let start = Instant::now();
    let status = chaos.status(&armed.id).expect("status");
    let remaining = Duration::from_millis(status["remaining_ms"].as_u64().expect("remaining_ms"));
    println!("a fault armed without --duration: {remaining:?} left");
    assert!(
        remaining <= Duration::from_secs(600)
            && remaining + start.elapsed() + Duration::from_secs(5) >= Duration::from_secs(600),
        "{remaining:?} left, not 10 minutes"
    );
    armed.recover();
    oracle.assert_clean(&before);
}
