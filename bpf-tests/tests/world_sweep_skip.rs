//! Tests of `sweep_stale` and of the skip convention.

use std::path::Path;
use std::process::Command;

use bpf_tests::skip::require_netns;
use bpf_tests::world::{cgroup_v1_mount, cgroup2_mount, sweep_stale};
use bpf_tests::{skip_on_err, skip_unless};

/// A pid that can never be running (above the kernel's maximum).
const DEAD: &str = "chaos-t-999999999-7";

#[test]
fn sweep_removes_leftovers_of_dead_runs_only() {
    skip_unless!(require_netns());
    // What a crashed run would leave: a namespace, cgroups, a temporary directory.
    let out = Command::new("ip")
        .args(["netns", "add", DEAD])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cgroups = Vec::new();
    for root in [cgroup_v1_mount("blkio"), cgroup2_mount()]
        .into_iter()
        .flatten()
    {
        let dir = root.join(DEAD);
        std::fs::create_dir(&dir).unwrap();
        cgroups.push(dir);
    }
    let tmp = std::env::temp_dir().join(DEAD);
    std::fs::create_dir_all(&tmp).unwrap();
    // And a live one of ours, which must survive.
    let live = bpf_tests::NetNs::new().unwrap();

    let removed = sweep_stale();
    assert!(!Path::new("/run/netns").join(DEAD).exists(), "{removed:?}");
    for c in &cgroups {
        assert!(!c.exists(), "{} survived: {removed:?}", c.display());
    }
    assert!(!tmp.exists());
    assert!(live.path().exists(), "a live namespace was swept");
    assert!(removed.iter().any(|r| r.contains(DEAD)));
}

#[test]
fn test_name_comes_from_the_thread() {
    assert_eq!(
        bpf_tests::skip::test_name("world_sweep_skip::x::__chaos_here"),
        "test_name_comes_from_the_thread"
    );
}

#[test]
fn test_name_falls_back_to_the_function_path() {
    let name = std::thread::Builder::new()
        .name("main".into())
        .spawn(|| {
            bpf_tests::skip::test_name(
                "world_sweep_skip::tests::my_test::{{closure}}::__chaos_here",
            )
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(name, "tests::my_test");
}

fn skips(flag: &mut bool) {
    skip_unless!(Err::<(), _>("the kernel lacks a thing"));
    *flag = true;
}

fn skips_on_err(flag: &mut bool) -> u32 {
    let v: u32 = skip_on_err!(Err::<u32, _>("nope"), 7);
    *flag = true;
    v
}

#[test]
fn skip_macros_return_early() {
    let mut reached = false;
    bpf_tests::skip::quietly(|| skips(&mut reached));
    assert!(!reached);
    assert_eq!(bpf_tests::skip::quietly(|| skips_on_err(&mut reached)), 7);
    assert!(!reached);
}
