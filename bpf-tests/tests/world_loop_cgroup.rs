//! Tests of the loop device and cgroup guards.

use std::path::Path;

use bpf_tests::skip::{require_loop, require_root};
use bpf_tests::world::{CgroupVersion, cgroup_v1_mount, cgroup2_mount};
use bpf_tests::{ChildProcess, LoopDevice, TestCgroup, skip_on_err, skip_unless};

fn backing_of(name: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
        .ok()
        .map(|s| s.trim().to_owned())
}

#[test]
fn loop_device_attach_and_detach() {
    skip_unless!(require_loop());
    let lo = LoopDevice::new(16 << 20).unwrap();
    let name = lo.name().to_owned();
    let backing = lo.backing_file().to_owned();
    assert_eq!(
        backing_of(&name).as_deref(),
        Some(backing.to_str().unwrap())
    );
    let (major, _minor) = lo.major_minor().unwrap();
    assert_eq!(major, 7);
    let size: u64 = std::fs::read_to_string(format!("/sys/block/{name}/size"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(size * 512, 16 << 20);
    drop(lo);
    assert_ne!(
        backing_of(&name).as_deref(),
        Some(backing.to_str().unwrap())
    );
    assert!(!backing.exists());
}

#[test]
fn loop_device_ext4_mount_and_cleanup_after_panic() {
    skip_unless!(require_loop());
    skip_unless!(bpf_tests::skip::require_command("mkfs.ext4"));
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lo = skip_on_err!(LoopDevice::with_ext4(32 << 20));
        let mnt = lo.mount_point().unwrap().to_owned();
        std::fs::write(mnt.join("hello"), b"world").unwrap();
        seen = Some((lo.name().to_owned(), mnt));
        panic!("boom with a mounted loop device");
    }));
    assert!(result.is_err());
    let (name, mnt) = seen.unwrap();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(mnt.to_str().unwrap()),
        "{} still mounted",
        mnt.display()
    );
    assert!(backing_of(&name).is_none_or(|b| !b.contains("chaos-t-")));
    assert!(!mnt.parent().unwrap().exists());
}

#[test]
fn cgroup_create_add_and_remove() {
    skip_unless!(require_root());
    let cg = skip_on_err!(TestCgroup::new("blkio"));
    let path = cg.path().to_owned();
    assert!(
        path.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("chaos-t-")
    );
    let child = ChildProcess::builder({
        let mut c = std::process::Command::new("sleep");
        c.arg("1000");
        c
    })
    .cgroup(&cg)
    .spawn()
    .unwrap();
    assert_eq!(cg.pids().unwrap(), vec![child.pid()]);
    let other = ChildProcess::spawn({
        let mut c = std::process::Command::new("sleep");
        c.arg("1000");
        c
    })
    .unwrap();
    cg.add_pid(other.pid()).unwrap();
    let mut pids = cg.pids().unwrap();
    pids.sort();
    let mut want = vec![child.pid(), other.pid()];
    want.sort();
    assert_eq!(pids, want);
    drop(cg);
    assert!(!path.exists());
    // The processes went back to the parent, still alive.
    let parent_procs =
        std::fs::read_to_string(path.parent().unwrap().join("cgroup.procs")).unwrap();
    assert!(parent_procs.lines().any(|l| l == other.pid().to_string()));
}

#[test]
fn cgroup_v2_id_is_its_inode() {
    skip_unless!(require_root());
    skip_unless!(cgroup2_mount().map(drop).ok_or("no cgroup2 mount"));
    let cg = TestCgroup::new_v2().unwrap();
    assert_eq!(cg.version(), CgroupVersion::V2);
    let child = ChildProcess::builder(std::process::Command::new("cat"))
        .cgroup(&cg)
        .spawn()
        .unwrap();
    // /proc/<pid>/cgroup names our cgroup on the unified line.
    let line = std::fs::read_to_string(format!("/proc/{}/cgroup", child.pid())).unwrap();
    let name = cg.path().file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        line.lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&name)),
        "{line}"
    );
    assert_ne!(cg.id().unwrap(), 0);
    let path = cg.path().to_owned();
    drop(cg);
    assert!(!path.exists());
}

#[test]
fn cgroup_v1_blkio_throttle_file_is_writable() {
    skip_unless!(require_loop());
    skip_unless!(
        cgroup_v1_mount("blkio")
            .map(drop)
            .ok_or("no cgroup v1 blkio hierarchy")
    );
    let cg = TestCgroup::new_v1("blkio").unwrap();
    let lo = LoopDevice::new(8 << 20).unwrap();
    let (ma, mi) = lo.major_minor().unwrap();
    cg.write(
        "blkio.throttle.read_bps_device",
        &format!("{ma}:{mi} 1048576"),
    )
    .unwrap();
    assert!(
        cg.read("blkio.throttle.read_bps_device")
            .unwrap()
            .contains(&format!("{ma}:{mi} 1048576"))
    );
    assert!(Path::new(cg.path()).exists());
}
