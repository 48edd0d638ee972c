//! Tests of the oracle itself: it must see programs, maps, links, pins, tc state, cgroup limits
//! and state files made without the injector, and see nothing once they are gone.

use bpf_tests::oracle::testing::{
    TempBpffs, create_array_map, link_cgroup_ingress, load_cgroup_skb, load_socket_filter, pin,
};
use bpf_tests::skip::{require_bpf, require_loop};
use bpf_tests::world::cgroup2_mount;
use bpf_tests::{LeftoverKind, LoopDevice, Oracle, TestCgroup, skip_on_err, skip_unless};

fn kinds(oracle: &Oracle, before: &bpf_tests::Snapshot) -> Vec<(LeftoverKind, String)> {
    oracle
        .leftovers(before)
        .into_iter()
        .map(|l| (l.kind, l.description))
        .collect()
}

fn has(found: &[(LeftoverKind, String)], kind: LeftoverKind, needle: &str) -> bool {
    found.iter().any(|(k, d)| *k == kind && d.contains(needle))
}

#[test]
fn program_is_seen_while_its_fd_is_open_only() {
    skip_unless!(require_bpf());
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let prog = load_socket_filter("chaos_oracletst").unwrap();
    // A program not named chaos_* is not ours.
    let other = load_socket_filter("notchaos_t").unwrap();
    let found = kinds(&oracle, &before);
    assert!(
        has(&found, LeftoverKind::Program, "chaos_oracletst"),
        "{found:?}"
    );
    assert!(
        !found.iter().any(|(_, d)| d.contains("notchaos")),
        "{found:?}"
    );
    drop(prog);
    drop(other);
    oracle.assert_clean(&before);
}

#[test]
fn long_names_are_matched_after_truncation() {
    skip_unless!(require_bpf());
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let _prog = load_socket_filter("chaos_a_very_long_program_name").unwrap();
    let _map = create_array_map("CHAOS_A_VERY_LONG_MAP_NAME").unwrap();
    let found = kinds(&oracle, &before);
    assert!(
        has(&found, LeftoverKind::Program, "chaos_a_very_lo"),
        "{found:?}"
    );
    assert!(
        has(&found, LeftoverKind::Map, "CHAOS_A_VERY_LO"),
        "{found:?}"
    );
}

#[test]
fn map_and_pin_are_seen_until_unpinned() {
    skip_unless!(require_bpf());
    let fs = skip_on_err!(TempBpffs::new());
    let root = fs.path().join("chaos");
    std::fs::create_dir(&root).unwrap();
    let oracle = Oracle::new().with_pin_root(&root);
    let before = oracle.snapshot();
    let map = create_array_map("CHAOS_ORACLE_T").unwrap();
    pin(&map, &root.join("CHAOS_ORACLE_T")).unwrap();
    drop(map);
    // The pin keeps the map alive after its last descriptor closed.
    let found = kinds(&oracle, &before);
    assert!(
        has(&found, LeftoverKind::Map, "CHAOS_ORACLE_T"),
        "{found:?}"
    );
    assert!(
        has(&found, LeftoverKind::Pin, "CHAOS_ORACLE_T"),
        "{found:?}"
    );
    std::fs::remove_file(root.join("CHAOS_ORACLE_T")).unwrap();
    oracle.assert_clean(&before);
}

#[test]
fn cgroup_link_is_seen_and_keeps_its_program_alive() {
    skip_unless!(require_bpf());
    skip_unless!(cgroup2_mount().map(drop).ok_or("no cgroup2 mount"));
    let cg = TestCgroup::new_v2().unwrap();
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let prog = load_cgroup_skb("chaos_cg_t").unwrap();
    let link = link_cgroup_ingress(&prog, cg.path()).unwrap();
    drop(prog);
    let found = kinds(&oracle, &before);
    assert!(
        has(&found, LeftoverKind::Program, "chaos_cg_t"),
        "{found:?}"
    );
    assert!(has(&found, LeftoverKind::Link, "cgroup"), "{found:?}");
    drop(link);
    oracle.assert_clean(&before);
}

#[test]
fn state_files_are_listed() {
    let dir = std::env::temp_dir().join(bpf_tests::world::unique_name());
    let oracle = Oracle::new().without_host_netns().with_state_dir(&dir);
    let before = oracle.snapshot();
    // A missing directory is empty.
    assert!(
        !oracle
            .leftovers(&before)
            .iter()
            .any(|l| l.kind == LeftoverKind::StateFile)
    );
    std::fs::create_dir_all(dir.join("faults")).unwrap();
    std::fs::write(dir.join("faults/net-1.json"), "{}").unwrap();
    let found = kinds(&oracle, &before);
    assert!(
        has(&found, LeftoverKind::StateFile, "net-1.json"),
        "{found:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        !oracle
            .leftovers(&before)
            .iter()
            .any(|l| l.kind == LeftoverKind::StateFile)
    );
}

#[test]
fn cgroup_io_limits_are_seen_until_reset() {
    skip_unless!(require_loop());
    let cg = skip_on_err!(TestCgroup::new("blkio"));
    let lo = LoopDevice::new(8 << 20).unwrap();
    let (ma, mi) = lo.major_minor().unwrap();
    let oracle = Oracle::new().without_host_netns();
    let before = oracle.snapshot();
    let (file, set, reset) = match cg.version() {
        bpf_tests::world::CgroupVersion::V1 => (
            "blkio.throttle.write_iops_device",
            format!("{ma}:{mi} 10"),
            format!("{ma}:{mi} 0"),
        ),
        bpf_tests::world::CgroupVersion::V2 => (
            "io.max",
            format!("{ma}:{mi} wiops=10"),
            format!("{ma}:{mi} wiops=max"),
        ),
    };
    cg.write(file, &set).unwrap();
    let found = kinds(&oracle, &before);
    assert!(
        has(&found, LeftoverKind::CgroupLimit, &format!("{ma}:{mi}")),
        "{found:?}"
    );
    cg.write(file, &reset).unwrap();
    oracle.assert_clean(&before);
}
