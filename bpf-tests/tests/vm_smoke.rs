//! Smoke tests of the test environment itself: what `cargo xtask vm-test`'s init promises the
//! other tests (file systems mounted, loopback up, `chaos` shipped). In a VM (`CHAOS_IN_VM` set)
//! a missing piece is a failure of the harness; on the host these tests skip, since the host's
//! setup is not ours to assert.
use std::{fs, os::unix::fs::PermissionsExt as _, path::Path};

use bpf_tests::skip_unless;

fn in_vm() -> Result<String, String> {
    std::env::var("CHAOS_IN_VM").map_err(|_| "not in a cargo xtask vm-test VM".to_owned())
}

fn mounts() -> Vec<(String, String)> {
    fs::read_to_string("/proc/mounts")
        .expect("/proc is mounted")
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let _source = f.next()?;
            Some((f.next()?.to_owned(), f.next()?.to_owned()))
        })
        .collect()
}

#[test]
fn vm_file_systems_are_mounted() {
    skip_unless!(in_vm());
    let mounts = mounts();
    for (dir, fstype) in [
        ("/proc", "proc"),
        ("/sys", "sysfs"),
        ("/dev", "devtmpfs"),
        ("/tmp", "tmpfs"),
        ("/sys/fs/bpf", "bpf"),
        ("/sys/fs/cgroup", "cgroup2"),
        ("/sys/kernel/debug", "debugfs"),
        ("/sys/kernel/tracing", "tracefs"),
        ("/sys/kernel/security", "securityfs"),
    ] {
        assert!(
            mounts.iter().any(|(d, t)| d == dir && t == fstype),
            "{fstype} not mounted on {dir}; mounts: {mounts:?}"
        );
    }
}

#[test]
fn vm_loopback_is_up() {
    skip_unless!(in_vm());
    let flags = fs::read_to_string("/sys/class/net/lo/flags").expect("lo exists");
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).expect("hex flags");
    assert_ne!(
        flags & libc::IFF_UP as u32,
        0,
        "lo is down (flags {flags:#x})"
    );
}

#[test]
fn vm_kernel_has_btf() {
    skip_unless!(in_vm());
    assert!(
        Path::new("/sys/kernel/btf/vmlinux").exists(),
        "no /sys/kernel/btf/vmlinux: CO-RE programs cannot load"
    );
}

#[test]
fn chaos_binary_is_executable() {
    let bin = std::env::var("CHAOS_BIN");
    skip_unless!(bin.as_ref().map_err(|_| "CHAOS_BIN not set"));
    let bin = bin.expect("checked");
    let meta = fs::metadata(&bin).unwrap_or_else(|e| panic!("CHAOS_BIN={bin}: {e}"));
    assert!(
        meta.is_file() && meta.permissions().mode() & 0o111 != 0,
        "{bin} is not executable"
    );
}

fn run(args: &[&str]) {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The devices and modules the fault tests build their worlds from (loaded by init on Debian
/// kernels, built into the test kernel). Not tun: the test kernel does not have it.
#[test]
fn vm_devices_and_network_modules_work() {
    skip_unless!(in_vm());
    for dev in ["/dev/nullb0", "/dev/loop-control", "/dev/mapper/control"] {
        assert!(Path::new(dev).exists(), "{dev} missing");
    }
    run(&["ip", "link", "add", "smoke0", "type", "dummy"]);
    run(&[
        "tc", "qdisc", "add", "dev", "smoke0", "root", "netem", "delay", "1ms",
    ]);
    run(&["tc", "qdisc", "replace", "dev", "smoke0", "root", "fq"]);
    run(&["tc", "qdisc", "add", "dev", "smoke0", "clsact"]);
    run(&["ip", "link", "del", "smoke0"]);
    run(&[
        "ip", "link", "add", "smoke1", "type", "veth", "peer", "name", "smoke2",
    ]);
    run(&["ip", "link", "del", "smoke1"]);
    run(&["ip", "link", "add", "smoke3", "type", "ifb"]);
    run(&["ip", "link", "del", "smoke3"]);
}
