//! `chaos inject disk fill`, through the CLI, on ext4 filesystems of loop devices (never the
//! machine's own disks): the space left is the space asked (+-1 %, as statvfs shows it) and all
//! of it comes back on recovery, at the deadline with no command run, and after a crash; the
//! reserved blocks stay free for root; bad input arms nothing; and `--virtual` makes the
//! target's writes under the path fail with ENOSPC and takes no space (on kernels with
//! function error injection or BPF LSM; elsewhere it is refused in one clear line).

use std::{
    io::Write as _,
    os::unix::fs::{FileExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bpf_tests::{
    LoopDevice, Oracle, TestCgroup,
    chaos::{Armed, Chaos},
    oracle::STATE_DIR_ENV,
    skip_on_err,
    world::{InsideCgroup, cgroup2_mount},
};

/// Start of every fill file's name (the fault id follows).
const FILE_PREFIX: &str = ".chaos-fill-";

const MIB: u64 = 1 << 20;

/// Arms `chaos inject disk fill ARGS`, or panics with what chaos said.
fn fill<'a>(chaos: &'a Chaos, args: &[&str]) -> Armed<'a> {
    let mut full = vec!["disk", "fill"];
    full.extend_from_slice(args);
    chaos.arm(&full)
}

/// The chaos binary, as root; `Err` is a skip reason.
fn chaos() -> Result<Chaos, String> {
    bpf_tests::skip::require_root()?;
    bpf_tests::skip::require_loop()?;
    Chaos::from_env()
}

/// An ext4 filesystem of `size` bytes on a loop device; `Err` is a skip reason.
fn ext4(size: u64, options: &[&str]) -> Result<LoopDevice, String> {
    LoopDevice::with_ext4_options(size, options).map_err(|e| format!("ext4 on a loop device: {e}"))
}

/// Space of a filesystem as statvfs (and df) shows it, in bytes.
#[derive(Clone, Copy, Debug)]
struct Space {
    /// Free, reserved blocks included.
    free: u64,
    /// Available to unprivileged users.
    avail: u64,
    /// Used (size - free).
    used: u64,
    block: u64,
}

impl Space {
    fn of(path: &Path) -> Space {
        let v = nix::sys::statvfs::statvfs(path).expect("statvfs");
        let b = v.fragment_size();
        Space {
            free: v.blocks_free() * b,
            avail: v.blocks_available() * b,
            used: (v.blocks() - v.blocks_free()) * b,
            block: b,
        }
    }

    /// Usage as df's Use% shows it (unrounded).
    fn percent_used(&self) -> f64 {
        100.0 * self.used as f64 / (self.used + self.avail) as f64
    }
}

/// The fill files in `dir`.
fn fill_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(FILE_PREFIX))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Asserts `actual` is within `tol` of `want`.
fn assert_near(what: &str, actual: f64, want: f64, tol: f64) {
    assert!(
        (actual - want).abs() <= tol,
        "{what}: {actual} is not within {tol} of {want}"
    );
}

/// Waits up to `timeout` for the space of `mnt` to come back to `before` (+- 2 blocks: the
/// filesystem may keep an extent block or a directory block it grew).
fn assert_given_back(mnt: &Path, before: Space, timeout: Duration) -> Space {
    let start = Instant::now();
    loop {
        let now = Space::of(mnt);
        if now.avail.abs_diff(before.avail) <= 2 * now.block || start.elapsed() > timeout {
            assert!(
                now.avail.abs_diff(before.avail) <= 2 * now.block,
                "space not given back: {now:?}, before {before:?}"
            );
            assert!(fill_files(mnt).is_empty(), "{:?}", fill_files(mnt));
            return now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `chaos list --json` is empty.
fn assert_nothing_listed(chaos: &Chaos) {
    let list = chaos.list().expect("chaos list");
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
}

/// The fill record of fault `id` (`block` in `chaos status --json`).
fn fill_record(chaos: &Chaos, id: &str) -> serde_json::Value {
    let s = chaos.status(id).expect("status");
    assert_eq!(s["strategy"], "fallocate", "{s}");
    assert_eq!(s["block"]["type"], "fill", "{s}");
    s["block"].clone()
}

#[test]
fn fill_leaves_the_space_asked_and_gives_it_back() {
    let chaos = skip_on_err!(chaos());
    let lo = skip_on_err!(ext4(256 * MIB, &[]));
    let mnt = lo.mount_point().expect("mounted").to_owned();
    let path = mnt.to_string_lossy().into_owned();
    let oracle = Oracle::new();
    let snapshot = oracle.snapshot();
    // Some data of someone else's first, so that "used" is not just metadata.
    std::fs::write(mnt.join("data"), vec![7u8; 20 * MIB as usize]).expect("data");
    nix::unistd::sync();
    for (amount, value) in [("--percent", "95"), ("--bytes", "100M"), ("--free", "10M")] {
        let before = Space::of(&mnt);
        let started = Instant::now();
        let fault = fill(
            &chaos,
            &["--path", &path, amount, value, "--duration", "120s"],
        );
        let took = started.elapsed();
        let now = Space::of(&mnt);
        let record = fill_record(&chaos, &fault.id);
        let taken = before.avail - now.avail;
        match amount {
            "--percent" => assert_near("Use%", now.percent_used(), 95.0, 0.95),
            "--bytes" => assert_near("bytes taken", taken as f64, 100.0 * MIB as f64, MIB as f64),
            _ => assert_near(
                "bytes free",
                now.avail as f64,
                10.0 * MIB as f64,
                0.1 * MIB as f64,
            ),
        }
        assert_near(
            "taken, as recorded",
            record["taken"].as_u64().expect("taken") as f64,
            taken as f64,
            taken as f64 / 100.0,
        );
        assert_eq!(record["avail_after"].as_u64(), Some(now.avail), "{record}");
        assert_eq!(record["method"], "fallocate", "{record}");
        let files = fill_files(&mnt);
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(
            files[0].ends_with(format!("{FILE_PREFIX}{}", fault.id)),
            "{files:?}"
        );
        println!(
            "{amount} {value}: took {taken} bytes in {took:?}; free {} (Use% {:.3}), was {} \
             (Use% {:.3}); block {}",
            now.avail,
            now.percent_used(),
            before.avail,
            before.percent_used(),
            now.block
        );
        let id = fault.id.clone();
        drop(fault);
        let back = assert_given_back(&mnt, before, Duration::from_secs(5));
        println!(
            "  recovered {id}: free {} ({} bytes off)",
            back.avail,
            back.avail.abs_diff(before.avail)
        );
    }
    assert_nothing_listed(&chaos);
    oracle.assert_clean(&snapshot);
}

/// Writes `len` bytes to a new file `path` (and fsyncs it) as user and group 65534 from a
/// child process; the errno of the first call that failed, or 0.
fn write_as_nobody(path: &Path, len: usize) -> i32 {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
    let data = vec![5u8; len];
    // SAFETY: the child makes only raw syscalls on data prepared before the fork, then _exits.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => unsafe {
            let errno = || *libc::__errno_location();
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                libc::_exit(255);
            }
            let fd = libc::open(
                c_path.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                0o644,
            );
            if fd < 0 {
                libc::_exit(errno());
            }
            let mut done = 0;
            while done < data.len() {
                let n = libc::write(fd, data[done..].as_ptr().cast(), data.len() - done);
                if n < 0 {
                    libc::_exit(errno());
                }
                done += n as usize;
            }
            libc::_exit(if libc::fsync(fd) != 0 { errno() } else { 0 })
        },
        nix::unistd::ForkResult::Parent { child } => {
            match nix::sys::wait::waitpid(child, None).expect("waitpid") {
                nix::sys::wait::WaitStatus::Exited(_, code) => {
                    assert_ne!(code, 255, "setuid 65534 failed");
                    code
                }
                other => panic!("writer as nobody: {other:?}"),
            }
        }
    }
}

#[test]
fn full_keeps_the_reserved_blocks_for_root() {
    let chaos = skip_on_err!(chaos());
    let lo = skip_on_err!(ext4(256 * MIB, &["-m", "5"]));
    let mnt = lo.mount_point().expect("mounted").to_owned();
    let public = mnt.join("public");
    std::fs::create_dir(&public).expect("public dir");
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let oracle = Oracle::new();
    let snapshot = oracle.snapshot();
    let before = Space::of(&mnt);
    let reserved = before.free - before.avail;
    assert!(reserved >= 10 * MIB, "-m 5 of 256 MiB: {before:?}");
    let fault = fill(
        &chaos,
        &[
            "--path",
            &mnt.to_string_lossy(),
            "--percent",
            "100",
            "--duration",
            "120s",
        ],
    );
    let now = Space::of(&mnt);
    println!("before {before:?}, filled {now:?}, reserved {reserved}");
    assert_eq!(now.avail, 0, "{now:?}");
    assert_near(
        "free (reserved) blocks",
        now.free as f64,
        reserved as f64,
        2.0 * now.block as f64,
    );
    // An unprivileged writer finds the disk full...
    assert_eq!(
        write_as_nobody(&public.join("user"), MIB as usize),
        libc::ENOSPC,
        "nobody writing 1 MiB"
    );
    // ... root still has its reserved blocks.
    let root_file = mnt.join("root");
    let mut f = std::fs::File::create(&root_file).expect("root's file");
    f.write_all(&vec![1u8; MIB as usize])
        .and_then(|()| f.sync_all())
        .expect("root writes into the reserved blocks");
    drop(f);
    std::fs::remove_file(&root_file).expect("rm");
    let _ = std::fs::remove_file(public.join("user"));
    drop(fault);
    assert_given_back(&mnt, before, Duration::from_secs(5));
    assert_nothing_listed(&chaos);
    oracle.assert_clean(&snapshot);
}

#[test]
fn fill_writes_where_fallocate_is_unsupported() {
    let chaos = skip_on_err!(chaos());
    // Block-mapped files (no extents): ext4 refuses fallocate with EOPNOTSUPP.
    let lo = skip_on_err!(ext4(128 * MIB, &["-O", "^extent,^64bit"]));
    let mnt = lo.mount_point().expect("mounted").to_owned();
    let oracle = Oracle::new();
    let snapshot = oracle.snapshot();
    let before = Space::of(&mnt);
    let fault = fill(
        &chaos,
        &[
            "--path",
            &mnt.to_string_lossy(),
            "--free",
            "10M",
            "--duration",
            "120s",
        ],
    );
    let now = Space::of(&mnt);
    let record = fill_record(&chaos, &fault.id);
    println!("before {before:?}, filled {now:?}: {record}");
    assert_eq!(record["method"], "write", "{record}");
    assert_near(
        "bytes free",
        now.avail as f64,
        10.0 * MIB as f64,
        0.1 * MIB as f64,
    );
    drop(fault);
    assert_given_back(&mnt, before, Duration::from_secs(5));
    assert_nothing_listed(&chaos);
    oracle.assert_clean(&snapshot);
}

#[test]
fn a_crash_mid_fill_is_undone_by_recover_all() {
    let chaos = skip_on_err!(chaos());
    // Written, not allocated: slow enough to be killed in the middle.
    let lo = skip_on_err!(ext4(256 * MIB, &["-O", "^extent,^64bit"]));
    let mnt = lo.mount_point().expect("mounted").to_owned();
    let oracle = Oracle::new();
    let snapshot = oracle.snapshot();
    let before = Space::of(&mnt);
    let mut inject = chaos.command(&[
        "inject",
        "disk",
        "fill",
        "--path",
        &mnt.to_string_lossy(),
        "--percent",
        "100",
        "--duration",
        "120s",
        "--json",
    ]);
    inject.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = inject.spawn().expect("chaos inject");
    let start = Instant::now();
    let killed_at = loop {
        let files = fill_files(&mnt);
        let size = files
            .first()
            .and_then(|f| std::fs::metadata(f).ok())
            .map_or(0, |m| m.len());
        if size > 0 {
            let alive = child.try_wait().expect("try_wait").is_none();
            child.kill().expect("kill -9 chaos inject");
            assert!(alive, "chaos inject ended before it could be killed");
            break size;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            let mut stderr = String::new();
            let _ = std::io::Read::read_to_string(
                &mut child.stderr.take().expect("stderr"),
                &mut stderr,
            );
            panic!("chaos inject ended ({status}) before a fill file was seen: {stderr}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no fill file appeared in 20 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    child.wait().expect("reap");
    let files = fill_files(&mnt);
    let left = Space::of(&mnt);
    println!(
        "killed at {killed_at} bytes: {} file(s) left, {} bytes taken",
        files.len(),
        before.avail - left.avail
    );
    assert!(!files.is_empty(), "a crash mid-fill leaves its files");
    let list = chaos.list().expect("list");
    assert_eq!(
        list[0]["state"], "arming",
        "the record was written first: {list}"
    );
    chaos.recover_all().expect("recover --all");
    assert_given_back(&mnt, before, Duration::from_secs(5));
    assert_nothing_listed(&chaos);
    oracle.assert_clean(&snapshot);
}

#[test]
fn fill_ends_at_its_deadline_with_no_command_run() {
    let chaos = skip_on_err!(chaos());
    let lo = skip_on_err!(ext4(128 * MIB, &[]));
    let mnt = lo.mount_point().expect("mounted").to_owned();
    let oracle = Oracle::new();
    let snapshot = oracle.snapshot();
    let before = Space::of(&mnt);
    let armed_at = Instant::now();
    let fault = fill(
        &chaos,
        &[
            "--path",
            &mnt.to_string_lossy(),
            "--bytes",
            "50M",
            "--duration",
            "3s",
        ],
    );
    assert_eq!(fill_files(&mnt).len(), 1);
    let start = Instant::now();
    while !fill_files(&mnt).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the fill outlived its 3 s deadline by 12 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ended = armed_at.elapsed();
    println!("3 s fill removed after {ended:?}");
    assert!(
        ended >= Duration::from_millis(2900),
        "ended early: {ended:?}"
    );
    assert_given_back(&mnt, before, Duration::from_secs(5));
    // Recovered by the deadline keeper: nothing is left to recover.
    std::mem::forget(fault);
    assert_nothing_listed(&chaos);
    // The keeper exits once nothing needs it, removing its pid file and the state directory.
    let pid_file = state_dir().join("deadline-keeper.pid");
    let start = Instant::now();
    while pid_file.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the deadline keeper still runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    oracle.assert_clean(&snapshot);
}

/// The state directory chaos uses (as the oracle sees it).
fn state_dir() -> PathBuf {
    std::env::var_os(STATE_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(bpf_tests::oracle::DEFAULT_STATE_DIR))
}

#[test]
fn recover_all_removes_the_files_when_the_deadline_keeper_died() {
    let chaos = skip_on_err!(chaos());
    let lo = skip_on_err!(ext4(128 * MIB, &[]));
    let mnt = lo.mount_point().expect("mounted").to_owned();
    let oracle = Oracle::new();
    let snapshot = oracle.snapshot();
    let before = Space::of(&mnt);
    let fault = fill(
        &chaos,
        &[
            "--path",
            &mnt.to_string_lossy(),
            "--free",
            "20M",
            "--duration",
            "120s",
        ],
    );
    let pid_file = state_dir().join("deadline-keeper.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()))
        .trim()
        .parse()
        .expect("a pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the keeper runs");
    assert!(
        String::from_utf8_lossy(&cmdline).contains("keep-deadlines"),
        "{cmdline:?}"
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)
        .expect("kill -9 the deadline keeper");
    let start = Instant::now();
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    }) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "keeper {pid} lives"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(fill_files(&mnt).len(), 1, "the files stay until recovered");
    assert!(Space::of(&mnt).avail < 21 * MIB);
    let out = chaos.recover_all().expect("recover --all");
    println!("recover --all: {out}");
    std::mem::forget(fault);
    assert_given_back(&mnt, before, Duration::from_secs(5));
    assert_nothing_listed(&chaos);
    oracle.assert_clean(&snapshot);
}

/// Runs `chaos args` and checks that it fails with one line containing every `needle`.
fn rejects(chaos: &Chaos, args: &[&str], needles: &[&str]) -> String {
    let out = chaos.output(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "chaos {args:?} succeeded: {stderr}");
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
            "chaos {args:?}: {n:?} missing from {stderr:?}"
        );
    }
    stderr
}

/// `inject disk fill EXTRA --duration 30s`.
fn fill_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["inject", "disk", "fill"];
    v.extend_from_slice(extra);
    v.extend_from_slice(&["--duration", "30s"]);
    v
}

#[test]
fn bad_input_is_one_line_and_applies_nothing() {
    let chaos = skip_on_err!(chaos());
    let lo = skip_on_err!(ext4(128 * MIB, &[]));
    let mnt = lo.mount_point().expect("mounted").to_owned();
    let path = mnt.to_string_lossy().into_owned();
    // About 16 % used.
    std::fs::write(mnt.join("data"), vec![7u8; 20 * MIB as usize]).expect("data");
    nix::unistd::sync();
    let tmp = mnt.join("tmpfs");
    std::fs::create_dir(&tmp).expect("mount point");
    let oracle = Oracle::new();
    let snapshot = oracle.snapshot();
    let before = Space::of(&mnt);
    let more_than_free = format!("{}", before.avail + MIB);
    let missing = format!("{path}/missing");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            fill_args(&["--path", &path, "--percent", "5"]),
            vec!["invalid percent", "already", "full"],
        ),
        (
            fill_args(&["--path", &path, "--bytes", "10G"]),
            vec!["invalid bytes", "larger than the filesystem"],
        ),
        (
            fill_args(&["--path", &path, "--bytes", &more_than_free]),
            vec!["invalid bytes", "more than is free"],
        ),
        (
            fill_args(&["--path", &path, "--free", "1G"]),
            vec!["invalid free"],
        ),
        (
            fill_args(&["--path", &path]),
            vec!["invalid percent", "no amount", "--bytes"],
        ),
        (
            fill_args(&["--path", &path, "--percent", "95", "--free", "10M"]),
            vec!["invalid percent", "more than one amount"],
        ),
        (
            fill_args(&["--path", &path, "--percent", "101"]),
            vec!["invalid percent"],
        ),
        (
            fill_args(&["--path", &path, "--bytes", "12Q"]),
            vec!["invalid bytes"],
        ),
        (
            fill_args(&["--path", &path, "--free", "10M", "--pid", "1"]),
            vec!["invalid pid", "--virtual"],
        ),
        (
            fill_args(&["--path", "relative/dir", "--free", "10M"]),
            vec!["invalid path"],
        ),
        (
            fill_args(&["--path", &missing, "--free", "10M"]),
            vec!["invalid path"],
        ),
        // The guards: 1 MiB, so that even a broken guard would take little.
        (
            fill_args(&["--path", "/", "--bytes", "1M"]),
            vec!["invalid path", "root filesystem", "--force"],
        ),
    ];
    for (args, needles) in &cases {
        let line = rejects(&chaos, args, needles);
        print!("{line}");
        assert!(fill_files(&mnt).is_empty(), "{args:?} left files");
        assert!(
            fill_files(Path::new("/")).is_empty(),
            "{args:?} left files in /"
        );
    }
    // A tmpfs takes the host's memory: refused without --force.
    nix::mount::mount(
        Some("tmpfs"),
        &tmp,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=8m"),
    )
    .expect("mount tmpfs");
    let tmp_path = tmp.to_string_lossy().into_owned();
    let line = rejects(
        &chaos,
        &fill_args(&["--path", &tmp_path, "--bytes", "1M"]),
        &["invalid path", "tmpfs", "--force"],
    );
    print!("{line}");
    assert!(fill_files(&tmp).is_empty());
    nix::mount::umount(&tmp).expect("umount tmpfs");
    let after = Space::of(&mnt);
    assert_eq!(after.avail, before.avail, "space taken by refused fills");
    assert_nothing_listed(&chaos);
    oracle.assert_clean(&snapshot);
}

/// The errno of each kind of write this process makes under `dir` (0: it went through):
/// write on a file opened before, create + write, pwrite, fallocate.
fn write_errnos(dir: &Path, open: &std::fs::File) -> [i32; 4] {
    let errno = |r: std::io::Result<()>| r.err().map_or(0, |e| e.raw_os_error().unwrap_or(-1));
    let mut f = open;
    [
        errno(f.write_all(b"w").map(drop)),
        errno(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("new"))
                .and_then(|mut g| g.write_all(b"n")),
        ),
        errno(open.write_at(b"p", 0).map(drop)),
        errno(
            nix::fcntl::fallocate(open, nix::fcntl::FallocateFlags::empty(), 0, 4096)
                .map_err(std::io::Error::from),
        ),
    ]
}

/// Writes a line to `file` from another process; whether it succeeded.
fn bystander_writes(file: &Path) -> bool {
    Command::new("sh")
        .args(["-c", "echo bystander >> \"$0\""])
        .arg(file)
        .status()
        .expect("sh")
        .success()
}

#[test]
fn virtual_fill_fails_the_target_s_writes_only() {
    let chaos = skip_on_err!(chaos());
    let lo = skip_on_err!(ext4(64 * MIB, &[]));
    let mnt = lo.mount_point().expect("mounted").to_owned();
    let dir = mnt.join("data");
    std::fs::create_dir(&dir).expect("data dir");
    let dir_arg = dir.to_string_lossy().into_owned();
    let me = std::process::id().to_string();
    let oracle = Oracle::new();
    let snapshot = oracle.snapshot();
    let kernel = ["bpffs", "btf", "raw_tracepoint"]
        .iter()
        .try_for_each(|f| chaos.probe_row(f))
        .and_then(|()| {
            chaos
                .probe_row("kprobe_override")
                .or_else(|k| chaos.probe_row("lsm").map_err(|l| format!("{k}; {l}")))
        });
    let pid_args = fill_args_virtual(&dir_arg, &["--pid", &me]);
    if let Err(lacking) = kernel {
        // No kprobe override and no BPF LSM (this host): refused in one line, nothing armed.
        let line = rejects(
            &chaos,
            &pid_args,
            &["cannot fill a disk virtually", "ENOSPC", "chaos exec"],
        );
        println!("{lacking}\n{line}");
        assert!(fill_files(&dir).is_empty());
        assert_nothing_listed(&chaos);
        oracle.assert_clean(&snapshot);
        return;
    }
    let before = Space::of(&mnt);
    let target_file = dir.join("target");
    let open = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&target_file)
        .expect("target's file");
    assert_eq!(write_errnos(&dir, &open), [0; 4], "before the fault");
    // This process is the target.
    let fault = chaos.arm(&pid_args[1..]);
    let status = chaos.status(&fault.id).expect("status");
    println!("strategy {}", status["strategy"]);
    assert_eq!(
        write_errnos(&dir, &open),
        [libc::ENOSPC; 4],
        "the target's writes"
    );
    std::fs::write(mnt.join("outside"), b"o").expect("the target writes outside the path");
    assert!(
        bystander_writes(&dir.join("other")),
        "another process's write"
    );
    let acted = chaos.status(&fault.id).expect("status")["counters"]["acted"].as_u64();
    assert!(acted >= Some(4), "acted {acted:?}");
    let during = Space::of(&mnt);
    assert!(
        during.used.abs_diff(before.used) <= 8 * during.block,
        "a virtual fill took space: {before:?} -> {during:?}"
    );
    assert!(fill_files(&dir).is_empty() && fill_files(&mnt).is_empty());
    drop(fault);
    assert_eq!(write_errnos(&dir, &open), [0; 4], "after recovery");
    // The same by cgroup, where there is cgroup v2.
    if cgroup2_mount().is_some() {
        let cg = TestCgroup::new_v2().expect("test cgroup");
        let cg_path = cg.path().to_string_lossy().into_owned();
        let cg_args = fill_args_virtual(&dir_arg, &["--cgroup", &cg_path]);
        let fault = chaos.arm(&cg_args[1..]);
        {
            let _inside = InsideCgroup::enter(&cg);
            assert_eq!(
                write_errnos(&dir, &open),
                [libc::ENOSPC; 4],
                "in the cgroup"
            );
        }
        assert_eq!(write_errnos(&dir, &open), [0; 4], "out of the cgroup");
        assert!(
            bystander_writes(&dir.join("other")),
            "another process's write"
        );
        drop(fault);
        let _inside = InsideCgroup::enter(&cg);
        assert_eq!(
            write_errnos(&dir, &open),
            [0; 4],
            "in the cgroup, recovered"
        );
    } else {
        println!("no cgroup v2: --cgroup not tried");
    }
    drop(open);
    assert_nothing_listed(&chaos);
    oracle.assert_clean(&snapshot);
}

/// `inject disk fill --virtual` arguments for `dir` and a target.
fn fill_args_virtual<'a>(dir: &'a str, target: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["inject", "disk", "fill", "--path", dir, "--virtual"];
    v.extend_from_slice(target);
    v.extend_from_slice(&["--duration", "60s"]);
    v
}
