//! Syscall faults on running processes, made in the kernel: kill and stop on call (raw
//! tracepoint `sys_enter` + `bpf_send_signal`, natively here), and errors (kprobe +
//! `bpf_override_return`, on kernels with function error injection: the test kernel). Every
//! target is a process the test starts (or the test itself, for errors it counts); every fault
//! is recovered, and the oracle must then find nothing of ours.

use std::{
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    process::Command,
    time::{Duration, Instant},
};

use bpf_tests::{
    ChildProcess, Oracle, TestCgroup,
    chaos::Chaos,
    skip_on_err, skip_unless,
    world::{InsideCgroup, cgroup2_mount, measure::within_binomial},
};

/// A fault recovered when the test ends, even by a panic.
struct Armed<'a> {
    chaos: &'a Chaos,
    id: String,
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        let _ = self.chaos.recover(&self.id);
    }
}

fn arm<'a>(chaos: &'a Chaos, args: &[&str]) -> Armed<'a> {
    let mut full = vec!["syscall"];
    full.extend_from_slice(args);
    let id = chaos
        .inject(&full)
        .unwrap_or_else(|f| panic!("chaos inject syscall {args:?}: {f}"));
    Armed { chaos, id }
}

/// Arms `chaos inject syscall ARGS` and returns it with its strategy; `Err` (a skip reason) when
/// this kernel has no strategy for it.
fn arm_or_skip<'a>(
    chaos: &'a Chaos,
    args: &[&str],
) -> Result<(Armed<'a>, serde_json::Value), String> {
    let mut full = vec!["syscall"];
    full.extend_from_slice(args);
    let id = chaos
        .inject(&full)
        .map_err(|f| f.stderr.trim().to_owned())?;
    let fault = Armed { chaos, id };
    let strategy = chaos.status(&fault.id).expect("status")["strategy"].clone();
    Ok((fault, strategy))
}

/// A chaos binary on a kernel where signals on call work; `Err` is a skip reason.
fn chaos_for(features: &[&str]) -> Result<Chaos, String> {
    bpf_tests::skip::require_root()?;
    let chaos = Chaos::from_env()?;
    for f in features {
        chaos.probe_row(f)?;
    }
    Ok(chaos)
}

/// A shell that forks and waits forever (`wait4` on every round).
fn busy_shell() -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", "while :; do /bin/true; done"]);
    c
}

/// Starts `cmd` in `cgroup`, or where this test runs.
fn spawn_in(cmd: Command, cgroup: Option<&TestCgroup>) -> std::io::Result<ChildProcess> {
    match cgroup {
        Some(cg) => ChildProcess::builder(cmd).cgroup(cg).spawn(),
        None => ChildProcess::spawn(cmd),
    }
}

/// Waits up to 10 s for `child` to exit.
fn exit_of(child: &mut ChildProcess) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "process {} still running after 10 s",
            child.pid()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The state letter of `/proc/PID/stat` (R, S, T...).
fn state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .and_then(|rest| rest.trim_start().chars().next())
        .unwrap_or('?')
}

/// Waits up to 5 s for `pid`'s state to satisfy `want`.
fn wait_state(pid: u32, want: impl Fn(char) -> bool) -> char {
    let start = Instant::now();
    loop {
        let s = state(pid);
        if want(s) || start.elapsed() > Duration::from_secs(5) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kill_on_call_exits_by_that_signal_and_spares_others() {
    let chaos = skip_on_err!(chaos_for(&["raw_tracepoint", "helper_send_signal"]));
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let mut target = ChildProcess::spawn(busy_shell()).expect("target");
    let mut bystander = ChildProcess::spawn(busy_shell()).expect("bystander");
    let pid = target.pid().to_string();
    let fault = arm(
        &chaos,
        &[
            "kill",
            "--syscall",
            "wait4",
            "--pid",
            &pid,
            "--duration",
            "60s",
        ],
    );
    let status = exit_of(&mut target);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let s = chaos.status(&fault.id).expect("status");
    assert_eq!(s["strategy"], "tracepoint-signal", "{s}");
    assert!(s["counters"]["acted"].as_u64() >= Some(1), "{s}");
    assert_eq!(
        bystander.try_wait().expect("try_wait"),
        None,
        "bystander lives"
    );
    // Another signal, by name without SIG.
    let mut second = ChildProcess::spawn(busy_shell()).expect("second target");
    let pid = second.pid().to_string();
    let usr1 = arm(
        &chaos,
        &[
            "kill",
            "--signal",
            "USR1",
            "--syscall",
            "wait4",
            "--pid",
            &pid,
            "--duration",
            "60s",
        ],
    );
    assert_eq!(exit_of(&mut second).signal(), Some(libc::SIGUSR1));
    drop((fault, usr1));
    bystander.kill().expect("kill bystander");
    oracle.assert_clean(&before);
}

#[test]
fn follow_children_reaches_processes_started_later() {
    let chaos = skip_on_err!(chaos_for(&[
        "raw_tracepoint",
        "tracepoint",
        "helper_send_signal"
    ]));
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    // The shell never calls execve itself; its children do, right after fork. A child killed
    // by the fault fails `true`, and the shell exits 3.
    let script = "while :; do /bin/true || exit 3; done";
    let mut parent = ChildProcess::spawn({
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    })
    .expect("parent");
    let mut alone = ChildProcess::spawn({
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    })
    .expect("parent without following");
    let pid = parent.pid().to_string();
    let alone_pid = alone.pid().to_string();
    let fault = arm(
        &chaos,
        &[
            "kill",
            "--syscall",
            "execve",
            "--pid",
            &pid,
            "--follow-children",
            "--duration",
            "60s",
        ],
    );
    let not_followed = arm(
        &chaos,
        &[
            "kill",
            "--syscall",
            "execve",
            "--pid",
            &alone_pid,
            "--duration",
            "60s",
        ],
    );
    assert_eq!(
        exit_of(&mut parent).code(),
        Some(3),
        "a child was killed at execve"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        alone.try_wait().expect("try_wait"),
        None,
        "without --follow-children the children are not targets"
    );
    drop((fault, not_followed));
    alone.kill().expect("kill");
    oracle.assert_clean(&before);
}

#[test]
fn stop_on_call_and_recovery_continues() {
    let chaos = skip_on_err!(chaos_for(&["raw_tracepoint", "helper_send_signal"]));
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let mut target = ChildProcess::spawn(busy_shell()).expect("target");
    let pid = target.pid();
    let fault = arm(
        &chaos,
        &[
            "stop",
            "--syscall",
            "wait4",
            "--pid",
            &pid.to_string(),
            "--duration",
            "60s",
        ],
    );
    assert_eq!(wait_state(pid, |s| s == 'T'), 'T', "stopped at its call");
    drop(fault);
    assert_ne!(
        wait_state(pid, |s| s != 'T'),
        'T',
        "recovery continues what the fault stopped"
    );
    assert_eq!(target.try_wait().expect("try_wait"), None, "still alive");
    target.kill().expect("kill");
    oracle.assert_clean(&before);
}

#[test]
fn kill_by_cgroup_and_by_name() {
    let chaos = skip_on_err!(chaos_for(&["raw_tracepoint", "helper_send_signal"]));
    skip_unless!(cgroup2_mount().ok_or("no cgroup v2"));
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    // By cgroup: a shell in a sub-cgroup of the target cgroup.
    let cg = skip_on_err!(TestCgroup::new_v2());
    let sub = TestCgroup::in_dir(cg.path(), bpf_tests::world::CgroupVersion::V2).expect("sub");
    let mut inside = ChildProcess::builder(busy_shell())
        .cgroup(&sub)
        .spawn()
        .expect("inside");
    let mut outside = ChildProcess::spawn(busy_shell()).expect("outside");
    let cgroup = cg.path().to_string_lossy().into_owned();
    let by_cgroup = arm(
        &chaos,
        &[
            "kill",
            "--syscall",
            "wait4",
            "--cgroup",
            &cgroup,
            "--duration",
            "60s",
        ],
    );
    assert_eq!(exit_of(&mut inside).signal(), Some(libc::SIGKILL));
    assert_eq!(outside.try_wait().expect("try_wait"), None, "outside lives");
    drop(by_cgroup);
    // By name: a copy of `sleep` under a name nothing else on the host has.
    let dir = tempdir();
    let name = format!("chz{}", std::process::id() % 1_000_000);
    let exe = dir.join(&name);
    std::fs::copy(std::fs::canonicalize(which("sleep")).expect("sleep"), &exe).expect("copy sleep");
    let by_name = arm(
        &chaos,
        &[
            "kill",
            "--syscall",
            "clock_nanosleep,nanosleep",
            "--comm",
            &name,
            "--duration",
            "60s",
        ],
    );
    let mut cmd = Command::new(&exe);
    // argv[0] "sleep" so that a busybox copy runs its sleep applet.
    cmd.arg0("sleep").arg("30");
    let mut named = ChildProcess::spawn(cmd).expect("named sleep");
    let mut plain = ChildProcess::spawn({
        let mut c = Command::new("sleep");
        c.arg("30");
        c
    })
    .expect("plain sleep");
    assert_eq!(exit_of(&mut named).signal(), Some(libc::SIGKILL));
    assert_eq!(
        plain.try_wait().expect("try_wait"),
        None,
        "other sleeps live"
    );
    drop(by_name);
    plain.kill().expect("kill");
    outside.kill().expect("kill");
    let _ = std::fs::remove_dir_all(&dir);
    oracle.assert_clean(&before);
}

#[test]
fn fail_with_errno_at_the_asked_rate() {
    let chaos = skip_on_err!(chaos_for(&["kprobe_override", "raw_tracepoint"]));
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let dir = tempdir();
    let file = std::fs::File::create(dir.join("data")).expect("file");
    use std::os::fd::AsRawFd as _;
    let fd = file.as_raw_fd();
    // This test process is the target: it counts the errors it sees itself.
    let pid = std::process::id().to_string();
    let fault = arm(
        &chaos,
        &[
            "fail",
            "--syscall",
            "fdatasync",
            "--errno",
            "EIO",
            "--percent",
            "30",
            "--pid",
            &pid,
            "--duration",
            "120s",
        ],
    );
    let n = 2000u64;
    let mut failed = 0u64;
    for _ in 0..n {
        // SAFETY: fdatasync on a descriptor this test owns.
        if unsafe { libc::fdatasync(fd) } != 0 {
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EIO),
                "the errno user space sees"
            );
            failed += 1;
        }
    }
    // Another process on the same file is not a target.
    let other = Command::new("sh")
        .args([
            "-c",
            "echo x >> \"$0\" && sync",
            &dir.join("data").to_string_lossy(),
        ])
        .status()
        .expect("sh");
    assert!(other.success());
    let s = chaos.status(&fault.id).expect("status");
    println!(
        "fdatasync failed {failed} of {n} at 30 %; {}",
        s["counters"]
    );
    assert_eq!(s["strategy"], "kprobe-override", "{s}");
    assert_eq!(s["counters"]["acted"].as_u64(), Some(failed), "{s}");
    assert!(within_binomial(n, 0.30, failed), "{failed} of {n}");
    drop(fault);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::fdatasync(fd) }, 0, "recovered");
    // Counting: after 10, every 5th, at most 3.
    let fault = arm(
        &chaos,
        &[
            "fail",
            "--syscall",
            "fdatasync",
            "--errno",
            "ENOSPC",
            "--after",
            "10",
            "--every",
            "5",
            "--max-count",
            "3",
            "--pid",
            &pid,
            "--duration",
            "120s",
        ],
    );
    let failed_at: Vec<u32> = (1..=40)
        // SAFETY: as above.
        .filter(|_| unsafe { libc::fdatasync(fd) } != 0)
        .collect();
    assert_eq!(
        failed_at,
        vec![11, 16, 21],
        "after 10, every 5th, 3 at most"
    );
    drop(fault);
    drop(file);
    let _ = std::fs::remove_dir_all(&dir);
    oracle.assert_clean(&before);
}

#[test]
fn connect_fails_for_the_target_cgroup_only() {
    let chaos = skip_on_err!(chaos_for(&["bpffs"]));
    skip_unless!(cgroup2_mount().ok_or("no cgroup v2"));
    skip_unless!(
        ["/bin/bash", "/usr/bin/bash"]
            .iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or("no bash (for /dev/tcp)")
    );
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let cg = skip_on_err!(TestCgroup::new_v2());
    let cgroup = cg.path().to_string_lossy().into_owned();
    let refused = chaos.inject(&[
        "syscall",
        "fail",
        "--syscall",
        "connect",
        "--errno",
        "ETIMEDOUT",
        "--cgroup",
        &cgroup,
        "--duration",
        "60s",
    ]);
    if let Err(f) = &refused {
        // Neither kprobe override nor cgroup hooks with bpf_set_retval: said clearly.
        assert!(f.stderr.contains("cannot syscall fail"), "{f}");
    }
    let id = skip_on_err!(refused.map_err(|f| f.stderr.trim().to_owned()));
    let fault = Armed { chaos: &chaos, id };
    let strategy = chaos.status(&fault.id).expect("status")["strategy"].clone();
    let connect = |inside: bool| {
        let mut cmd = Command::new("bash");
        cmd.args([
            "-c",
            &format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected"),
        ]);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = spawn_in(cmd, inside.then_some(&cg)).expect("bash");
        let status = exit_of(&mut child);
        let mut out = String::new();
        use std::io::Read as _;
        let c = child.child_mut();
        let _ = c.stdout.take().expect("stdout").read_to_string(&mut out);
        let _ = c.stderr.take().expect("stderr").read_to_string(&mut out);
        (status.success(), out)
    };
    let (ok, out) = connect(true);
    assert!(
        !ok && out.contains("Connection timed out"),
        "inside ({strategy}): {out}"
    );
    let (ok, out) = connect(false);
    assert!(ok && out.contains("connected"), "outside: {out}");
    drop(fault);
    let (ok, out) = connect(true);
    assert!(ok && out.contains("connected"), "recovered: {out}");
    drop(listener);
    oracle.assert_clean(&before);
}

/// Whether a delay keeper process runs.
fn keeper_runs() -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"keep-delays"))
        })
}

#[test]
fn delay_freezes_the_caller_for_the_latency() {
    let chaos = skip_on_err!(chaos_for(&["raw_tracepoint", "helper_send_signal"]));
    skip_unless!(cgroup2_mount().ok_or("no cgroup v2"));
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let cg = skip_on_err!(TestCgroup::new_v2());
    let cgroup = cg.path().to_string_lossy().into_owned();
    // uname: a call the shell and the uname command make a few times, nothing else here does.
    let run = |inside: bool| {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "uname >/dev/null; uname >/dev/null; uname >/dev/null"]);
        let start = Instant::now();
        let mut child = spawn_in(cmd, inside.then_some(&cg)).expect("sh");
        let status = exit_of(&mut child);
        assert!(status.success(), "{status:?}");
        start.elapsed()
    };
    let quick = run(true);
    let fault = arm(
        &chaos,
        &[
            "delay",
            "--syscall",
            "uname",
            "--latency",
            "200ms",
            "--cgroup",
            &cgroup,
            "--duration",
            "60s",
        ],
    );
    let slow = run(true);
    let outside = run(false);
    let s = chaos.status(&fault.id).expect("status");
    let acted = s["counters"]["acted"].as_u64().expect("acted");
    println!(
        "3 x uname: {quick:?} before, {slow:?} under a 200 ms delay ({acted} calls delayed), \
         {outside:?} outside the cgroup; {}",
        s["strategy"]
    );
    assert_eq!(s["strategy"], "tracepoint-freeze", "{s}");
    assert!(acted >= 3, "{s}");
    // Each delayed call holds its process 200 ms; the calls come one after another.
    let want = Duration::from_millis(200 * acted);
    assert!(
        slow >= want.mul_f64(0.95) && slow <= want + quick + Duration::from_millis(1500),
        "{slow:?} for {acted} delayed calls"
    );
    assert!(
        outside < Duration::from_millis(200) + quick * 4,
        "{outside:?}"
    );
    drop(fault);
    let start = Instant::now();
    while keeper_runs() && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !keeper_runs(),
        "the delay keeper outlived the last delay fault"
    );
    let after = run(true);
    assert!(
        after < Duration::from_millis(200) + quick * 4,
        "recovered: {after:?}"
    );
    oracle.assert_clean(&before);
}

/// How many of `n` rounds of `call` failed, asserting that every failure is EIO.
fn eio_count(n: u64, mut call: impl FnMut() -> std::io::Result<()>) -> u64 {
    (0..n)
        .filter(|_| match call() {
            Ok(()) => false,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
                true
            }
        })
        .count() as u64
}

#[test]
fn file_calls_fail_under_a_path_for_the_target_cgroup() {
    use std::io::{Read as _, Seek as _};
    let chaos = skip_on_err!(chaos_for(&["bpffs", "btf"]));
    let lsm = chaos.probe_row("lsm").is_ok();
    let kprobe = chaos.probe_row("kprobe_override").is_ok();
    skip_unless!(
        (lsm || kprobe)
            .then_some(())
            .ok_or("neither BPF LSM nor function error injection")
    );
    skip_unless!(cgroup2_mount().ok_or("no cgroup v2"));
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let dir = tempdir();
    let (data, other) = (dir.join("data"), dir.join("other"));
    std::fs::create_dir_all(data.join("deeper")).expect("data dir");
    std::fs::create_dir_all(&other).expect("other dir");
    let target = data.join("deeper/table");
    let outside = other.join("table");
    for f in [&target, &outside] {
        std::fs::write(f, b"0123456789").expect("file");
    }
    let cg = skip_on_err!(TestCgroup::new_v2());
    let cgroup = cg.path().to_string_lossy().into_owned();
    let prefix = data.to_string_lossy().into_owned();
    let fault = |calls: &str| {
        arm(
            &chaos,
            &[
                "fail",
                "--syscall",
                calls,
                "--errno",
                "EIO",
                "--percent",
                "30",
                "--path-prefix",
                &prefix,
                "--cgroup",
                &cgroup,
                "--duration",
                "120s",
            ],
        )
    };
    // openat has no descriptor for a kprobe to read the file from: BPF LSM (file_open) or none.
    let file_fault = lsm.then(|| fault("openat,read,write"));
    // fsync passes no LSM hook: the kprobe, on kernels with error injection.
    let fsync_fault = kprobe.then(|| fault("fsync"));
    let strategy = |f: &Option<Armed<'_>>| {
        f.as_ref()
            .map(|f| chaos.status(&f.id).expect("status")["strategy"].clone())
    };
    println!(
        "strategies: openat/read/write {:?}, fsync {:?}",
        strategy(&file_fault),
        strategy(&fsync_fault)
    );
    let n = 600u64;
    let open = |p: &std::path::Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .map(drop)
    };
    let mut target_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&target)
        .expect("target file");
    let mut outside_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&outside)
        .expect("outside file");
    let (mut opened, mut read, mut written, mut synced) = (0, 0, 0, 0);
    {
        let _inside = InsideCgroup::enter(&cg);
        if file_fault.is_some() {
            opened = eio_count(n, || open(&target));
            read = eio_count(n, || {
                target_file.seek(std::io::SeekFrom::Start(0))?;
                target_file.read(&mut [0u8; 4]).map(drop)
            });
            written = eio_count(n, || target_file.write_at_start(b"ab"));
        }
        if fsync_fault.is_some() {
            synced = eio_count(n, || target_file.sync_all());
        }
        // Outside the prefix, the same process's calls all succeed.
        for _ in 0..200 {
            open(&outside).expect("open outside the prefix");
            outside_file
                .write_at_start(b"cd")
                .expect("write outside the prefix");
            outside_file.sync_all().expect("fsync outside the prefix");
        }
    }
    println!("failed of {n}: openat {opened}, read {read}, write {written}, fsync {synced}");
    if file_fault.is_some() {
        for (call, failed) in [("openat", opened), ("read", read), ("write", written)] {
            assert!(within_binomial(n, 0.30, failed), "{call}: {failed} of {n}");
        }
        assert_eq!(strategy(&file_fault).unwrap(), "bpf-lsm");
    }
    if fsync_fault.is_some() {
        assert!(within_binomial(n, 0.30, synced), "fsync: {synced} of {n}");
        assert_eq!(strategy(&fsync_fault).unwrap(), "kprobe-override");
    }
    // A process outside the cgroup, on the same file, while the faults are armed.
    let status = Command::new("sh")
        .args([
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do cat \"$0\" >/dev/null && echo x >>\"$0\" && sync || exit 1; done",
            &target.to_string_lossy(),
        ])
        .status()
        .expect("sh");
    assert!(status.success(), "a non-target process failed on the file");
    drop(file_fault);
    drop(fsync_fault);
    {
        let _inside = InsideCgroup::enter(&cg);
        for _ in 0..100 {
            open(&target).expect("open after recovery");
            target_file
                .write_at_start(b"ef")
                .expect("write after recovery");
            target_file.sync_all().expect("fsync after recovery");
        }
    }
    drop((target_file, outside_file));
    let _ = std::fs::remove_dir_all(&dir);
    oracle.assert_clean(&before);
}

/// Writes at the start of a file (so the loops do not grow it).
trait WriteAtStart {
    fn write_at_start(&mut self, bytes: &[u8]) -> std::io::Result<()>;
}

impl WriteAtStart for std::fs::File {
    fn write_at_start(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::{Seek as _, Write as _};
        self.seek(std::io::SeekFrom::Start(0))?;
        self.write(bytes).map(drop)
    }
}

#[test]
fn udp_send_and_setsockopt_fail_for_the_target_cgroup_only() {
    let chaos = skip_on_err!(chaos_for(&["bpffs"]));
    skip_unless!(cgroup2_mount().ok_or("no cgroup v2"));
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("receiver");
    let to = receiver.local_addr().expect("addr");
    let cg = skip_on_err!(TestCgroup::new_v2());
    let cgroup = cg.path().to_string_lossy().into_owned();
    let (fault, strategy) = skip_on_err!(arm_or_skip(
        &chaos,
        &[
            "fail",
            "--syscall",
            "sendto,setsockopt",
            "--errno",
            "ENETUNREACH",
            "--cgroup",
            &cgroup,
            "--duration",
            "60s",
        ],
    ));
    let calls = || {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("sender");
        let sent = socket.send_to(b"x", to).map(drop);
        let set = socket.set_broadcast(true);
        let got = socket.broadcast().map(drop);
        (sent, set, got)
    };
    let errno = |r: &std::io::Result<()>| r.as_ref().err().and_then(|e| e.raw_os_error());
    let (sent, set, got) = {
        let _inside = InsideCgroup::enter(&cg);
        calls()
    };
    println!("inside ({strategy}): send {sent:?}, setsockopt {set:?}, getsockopt {got:?}");
    assert_eq!(
        errno(&sent),
        Some(libc::ENETUNREACH),
        "send inside ({strategy})"
    );
    assert_eq!(
        errno(&set),
        Some(libc::ENETUNREACH),
        "setsockopt inside ({strategy})"
    );
    assert!(got.is_ok(), "getsockopt is not armed: {got:?}");
    let (sent, set, _) = calls();
    assert!(sent.is_ok() && set.is_ok(), "outside: {sent:?} {set:?}");
    drop(fault);
    let (sent, set, _) = {
        let _inside = InsideCgroup::enter(&cg);
        calls()
    };
    assert!(sent.is_ok() && set.is_ok(), "recovered: {sent:?} {set:?}");
    drop(receiver);
    oracle.assert_clean(&before);
}

#[test]
fn sysctl_writes_fail_under_a_subtree_for_the_target_cgroup() {
    let chaos = skip_on_err!(chaos_for(&["bpffs"]));
    skip_unless!(cgroup2_mount().ok_or("no cgroup v2"));
    skip_unless!(
        ["/usr/bin/unshare", "/bin/unshare", "/sbin/unshare"]
            .iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or("no unshare")
    );
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let cg = skip_on_err!(TestCgroup::new_v2());
    let cgroup = cg.path().to_string_lossy().into_owned();
    let (fault, strategy) = skip_on_err!(arm_or_skip(
        &chaos,
        &[
            "fail",
            "--syscall",
            "write",
            "--errno",
            "EACCES",
            "--path-prefix",
            "/proc/sys/net/ipv4",
            "--cgroup",
            &cgroup,
            "--duration",
            "60s",
        ],
    ));
    // Each write goes to the sysctls of a network namespace of its own, never the machine's.
    let write = |inside: bool, sysctl: &str| {
        let mut cmd = Command::new("unshare");
        cmd.args([
            "-n",
            "sh",
            "-c",
            // dd, not the shell's echo: it says which error the write got.
            &format!("cat /proc/sys/{sysctl} >/dev/null && echo 1 | dd of=/proc/sys/{sysctl}"),
        ]);
        cmd.stderr(std::process::Stdio::piped());
        let mut child = spawn_in(cmd, inside.then_some(&cg)).expect("unshare");
        let status = exit_of(&mut child);
        let mut err = String::new();
        use std::io::Read as _;
        let _ = child
            .child_mut()
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err);
        (status.success(), err)
    };
    let (ok, err) = write(true, "net/ipv4/ip_forward");
    println!("inside ({strategy}): {ok} {err:?}");
    assert!(
        !ok && err.contains("Permission denied"),
        "inside ({strategy}): {err}"
    );
    let (ok, err) = write(true, "net/core/somaxconn");
    assert!(ok, "outside the subtree ({strategy}): {err}");
    let (ok, err) = write(false, "net/ipv4/ip_forward");
    assert!(ok, "outside the cgroup: {err}");
    drop(fault);
    let (ok, err) = write(true, "net/ipv4/ip_forward");
    assert!(ok, "recovered: {err}");
    oracle.assert_clean(&before);
}

/// A fresh directory under the temp dir.
fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "chaos-syscall-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// `prog`'s path on `PATH`.
fn which(prog: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(prog))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{prog} not on PATH"))
}
