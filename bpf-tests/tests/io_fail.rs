//! `chaos inject io fail`: block I/O errors in the block layer (a kprobe overriding
//! `should_fail_bio`, on kernels with function error injection: the test kernel), selected by
//! device, operation and the bio's own cgroup (writeback included), and the file-call form
//! (`--path`) that the syscall strategies serve. Every device is a loop device the test makes;
//! every fault is recovered, and the oracle must then find nothing of ours.

use std::{path::Path, process::Command};

use bpf_tests::{
    ChildProcess, LoopDevice, Oracle, TestCgroup,
    chaos::{Armed, Chaos},
    skip_on_err,
    world::{CgroupVersion, cgroup2_mount},
};

fn arm<'a>(chaos: &'a Chaos, args: &[&str]) -> Armed<'a> {
    let mut full = vec!["io", "fail"];
    full.extend_from_slice(args);
    chaos.arm(&full)
}

/// A chaos binary on a kernel that can fail bios; `Err` is a skip reason.
fn block_layer_chaos() -> Result<Chaos, String> {
    bpf_tests::skip::require_root()?;
    bpf_tests::skip::require_loop()?;
    let chaos = Chaos::from_env()?;
    for f in ["kprobe_override", "error_injection_bio", "btf", "bpffs"] {
        chaos.probe_row(f)?;
    }
    Ok(chaos)
}

/// An io-controller cgroup: bios its processes submit are charged to it.
fn io_cgroup() -> Result<TestCgroup, String> {
    TestCgroup::new("blkio").map_err(|e| format!("no io cgroup: {e}"))
}

/// Runs `sh -c script` in `cgroup` (or here) and returns (success, stderr).
fn sh(script: &str, cgroup: Option<&TestCgroup>) -> (bool, String) {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = match cgroup {
        Some(cg) => ChildProcess::builder(cmd).cgroup(cg).spawn(),
        None => ChildProcess::spawn(cmd),
    }
    .expect("spawn sh");
    let mut stderr = String::new();
    if let Some(mut pipe) = child.child_mut().stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr).expect("read stderr");
    }
    (child.wait().expect("wait sh").success(), stderr)
}

fn direct_read(dev: &Path) -> String {
    format!(
        "dd if={} of=/dev/null bs=4096 count=64 iflag=direct",
        dev.display()
    )
}

fn direct_write(dev: &Path) -> String {
    format!(
        "dd if=/dev/zero of={} bs=4096 count=16 oflag=direct",
        dev.display()
    )
}

#[test]
fn device_reads_fail_for_the_target_cgroup_only() {
    let chaos = skip_on_err!(block_layer_chaos());
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let lo = LoopDevice::new(16 << 20).expect("loop device");
    let cg = skip_on_err!(io_cgroup());
    let dev = lo.device();
    assert!(sh(&direct_read(dev), Some(&cg)).0, "reads work before");
    let fault = arm(
        &chaos,
        &[
            "--device",
            dev.to_str().unwrap(),
            "--op",
            "read",
            "--cgroup",
            cg.path().to_str().unwrap(),
            "--duration",
            "60s",
        ],
    );
    let (ok, err) = sh(&direct_read(dev), Some(&cg));
    assert!(!ok, "the target's read succeeded");
    assert!(
        err.contains("Input/output error") || err.contains("I/O error"),
        "{err}"
    );
    let (ok, err) = sh(&direct_read(dev), None);
    assert!(ok, "a read by another cgroup failed: {err}");
    let (ok, err) = sh(&direct_write(dev), Some(&cg));
    assert!(
        ok,
        "the target's write failed (only reads are selected): {err}"
    );
    let s = chaos.status(&fault.id).expect("status");
    assert_eq!(s["strategy"], "bio-kprobe-override", "{s}");
    let acted = s["counters"]["acted"].as_u64().unwrap_or(0);
    assert!(acted >= 1, "{s}");
    assert!(
        s["counters"]["seen"].as_u64() > s["counters"]["matched"].as_u64(),
        "{s}"
    );
    drop(fault);
    let (ok, err) = sh(&direct_read(dev), Some(&cg));
    assert!(ok, "reads work again after recovery: {err}");
    drop(lo);
    oracle.assert_clean(&before);
}

#[test]
fn a_share_of_a_sector_range_fails() {
    let chaos = skip_on_err!(block_layer_chaos());
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let lo = LoopDevice::new(16 << 20).expect("loop device");
    let dev = lo.device();
    // Sectors 0-2047 are the first MiB: reads beyond it are never selected.
    let fault = arm(
        &chaos,
        &[
            "--device",
            dev.to_str().unwrap(),
            "--sector-range",
            "0-2047",
            "--percent",
            "50",
            "--duration",
            "60s",
        ],
    );
    let beyond = format!(
        "dd if={} of=/dev/null bs=4096 skip=512 count=256 iflag=direct",
        dev.display()
    );
    let (ok, err) = sh(&beyond, None);
    assert!(ok, "a read past the range failed: {err}");
    // 256 single-block reads in the range: about half fail.
    let mut failed = 0;
    for block in 0..256 {
        let one = format!(
            "dd if={} of=/dev/null bs=4096 skip={block} count=1 iflag=direct",
            dev.display()
        );
        failed += usize::from(!sh(&one, None).0);
    }
    assert!(
        (80..=176).contains(&failed),
        "{failed} of 256 failed, asked 50%"
    );
    let s = chaos.status(&fault.id).expect("status");
    assert_eq!(s["counters"]["acted"].as_u64(), Some(failed as u64), "{s}");
    drop(fault);
    drop(lo);
    oracle.assert_clean(&before);
}

#[test]
fn writeback_charged_to_the_target_cgroup_fails_too() {
    let chaos = skip_on_err!(block_layer_chaos());
    let lo = skip_on_err!(LoopDevice::with_ext4(64 << 20).map_err(|e| e.to_string()));
    let cg = skip_on_err!(io_cgroup());
    if cg.version() == CgroupVersion::V2 {
        // Writeback is charged to the cgroup that dirtied the pages only when memory and io
        // are both enabled for it (cgroup writeback).
        let root = cgroup2_mount().expect("cgroup2");
        let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
        skip_on_err!(
            cg.read("memory.current")
                .map(drop)
                .map_err(|e| format!("no memory controller for cgroup writeback: {e}"))
        );
    }
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let mnt = lo.mount_point().expect("mounted").to_owned();
    let fault = arm(
        &chaos,
        &[
            "--device",
            lo.device().to_str().unwrap(),
            "--op",
            "write",
            "--cgroup",
            cg.path().to_str().unwrap(),
            "--duration",
            "60s",
        ],
    );
    // Buffered writes succeed: the page cache takes them.
    let file = mnt.join("dirty");
    let (ok, err) = sh(
        &format!("dd if=/dev/zero of={} bs=4096 count=256", file.display()),
        Some(&cg),
    );
    assert!(ok, "buffered write: {err}");
    // The flusher writes them back (kworkers, not the target), charged to the target's cgroup.
    assert!(sh("sync", None).0);
    let s = chaos.status(&fault.id).expect("status");
    assert!(s["counters"]["acted"].as_u64() >= Some(1), "{s}");
    // A non-target's writeback is untouched.
    let other = mnt.join("other");
    let (ok, err) = sh(
        &format!(
            "dd if=/dev/zero of={} bs=4096 count=64 conv=fsync",
            other.display()
        ),
        None,
    );
    assert!(ok, "a non-target's fsync'd write failed: {err}");
    drop(fault);
    drop(lo);
    oracle.assert_clean(&before);
}

#[test]
fn path_form_fails_file_calls_with_the_errno_asked() {
    bpf_tests::skip::require_root().ok();
    let chaos = skip_on_err!(Chaos::from_env());
    skip_on_err!(
        chaos
            .probe_row("kprobe_override")
            .or_else(|_| chaos.probe_row("lsm"))
    );
    skip_on_err!(chaos.probe_row("btf"));
    let lo = skip_on_err!(LoopDevice::with_ext4(32 << 20).map_err(|e| e.to_string()));
    let cg = skip_on_err!(TestCgroup::new_v2().map_err(|e| e.to_string()));
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let mnt = lo.mount_point().expect("mounted").to_owned();
    let fault = arm(
        &chaos,
        &[
            "--path",
            mnt.to_str().unwrap(),
            "--op",
            "write",
            "--errno",
            "ENOSPC",
            "--cgroup",
            cg.path().to_str().unwrap(),
            "--duration",
            "60s",
        ],
    );
    let write = format!("echo data > {}/f", mnt.display());
    let (ok, err) = sh(&write, Some(&cg));
    assert!(!ok && err.contains("No space left"), "{ok} {err}");
    assert!(sh(&write, None).0, "a non-target's write failed");
    let s = chaos.status(&fault.id).expect("status");
    assert!(
        s["strategy"] == "kprobe-override" || s["strategy"] == "bpf-lsm",
        "{s}"
    );
    drop(fault);
    assert!(sh(&write, Some(&cg)).0, "writes work again after recovery");
    drop(lo);
    oracle.assert_clean(&before);
}

#[test]
fn without_error_injection_a_device_fails_through_its_files() {
    let chaos = skip_on_err!(Chaos::from_env());
    skip_on_err!(bpf_tests::skip::require_root());
    if chaos.probe_has("error_injection_bio") {
        skip_on_err!(Err::<(), _>(
            "this kernel fails the device's bios; the file form is for kernels that cannot"
                .to_owned()
        ));
    }
    skip_on_err!(chaos.probe_row("lsm"));
    skip_on_err!(chaos.probe_row("btf"));
    let lo = skip_on_err!(LoopDevice::with_ext4(32 << 20).map_err(|e| e.to_string()));
    let cg = skip_on_err!(TestCgroup::new_v2().map_err(|e| e.to_string()));
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let mnt = lo.mount_point().expect("mounted").to_owned();
    let fault = arm(
        &chaos,
        &[
            "--device",
            lo.device().to_str().unwrap(),
            "--op",
            "write",
            "--cgroup",
            cg.path().to_str().unwrap(),
            "--duration",
            "60s",
        ],
    );
    let s = chaos.status(&fault.id).expect("status");
    assert_eq!(s["strategy"], "bpf-lsm", "{s}");
    let write = format!("echo data > {}/f", mnt.display());
    let (ok, err) = sh(&write, Some(&cg));
    assert!(!ok && err.contains("Input/output error"), "{ok} {err}");
    assert!(sh(&write, None).0, "a non-target's write failed");
    let read = format!("cat {}/f", mnt.display());
    assert!(
        sh(&read, Some(&cg)).0,
        "the target's read failed (only writes are selected)"
    );
    drop(fault);
    assert!(sh(&write, Some(&cg)).0, "writes work again after recovery");
    drop(lo);
    oracle.assert_clean(&before);
}

#[test]
fn without_a_strategy_io_fail_says_why_and_arms_nothing() {
    let chaos = skip_on_err!(Chaos::from_env());
    skip_on_err!(bpf_tests::skip::require_root());
    skip_on_err!(bpf_tests::skip::require_loop());
    if chaos.probe_has("error_injection_bio")
        || chaos.probe_has("kprobe_override")
        || chaos.probe_has("lsm")
    {
        skip_on_err!(Err::<(), _>(
            "this kernel can fail I/O; the refusal is for kernels that cannot".to_owned()
        ));
    }
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let lo = LoopDevice::new(8 << 20).expect("loop device");
    let f = chaos
        .inject(&[
            "io",
            "fail",
            "--device",
            lo.device().to_str().unwrap(),
            "--duration",
            "10s",
        ])
        .expect_err("io fail armed without a strategy");
    assert_eq!(f.code, Some(1), "{f}");
    assert!(f.stderr.contains("should_fail_bio"), "{f}");
    assert_eq!(f.stderr.trim().lines().count(), 1, "{f}");
    oracle.assert_clean(&before);
}

#[test]
fn bad_devices_get_one_clear_line() {
    let chaos = skip_on_err!(Chaos::from_env());
    skip_on_err!(bpf_tests::skip::require_root());
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    for (args, needle) in [
        (
            &["--device", "/dev/no-such-disk", "--duration", "5s"][..],
            "no such device",
        ),
        (
            &["--device", "/dev/null", "--duration", "5s"],
            "character device",
        ),
        (
            &["--device", "/proc", "--duration", "5s"],
            "no block device",
        ),
        (
            &[
                "--device",
                "7:0",
                "--sector-range",
                "9-1",
                "--duration",
                "5s",
            ],
            "sector-range",
        ),
        (
            &["--path", "relative/dir", "--duration", "5s"],
            "invalid path",
        ),
        (&["--duration", "5s"], "needs --device or --path"),
    ] {
        let mut full = vec!["io", "fail"];
        full.extend_from_slice(args);
        let f = chaos.inject(&full).expect_err("a bad io fail armed");
        assert_eq!(f.code, Some(1), "{args:?}: {f}");
        assert!(f.stderr.contains(needle), "{args:?}: {f}");
        assert_eq!(f.stderr.trim().lines().count(), 1, "{args:?}: {f}");
    }
    oracle.assert_clean(&before);
}
