//! The demo's workload ([`chaos_user::demo::World`]) for the drill tests: an echo server in a
//! network namespace behind a veth pair whose host end the test made, a loop device with ext4, a
//! cgroup; with the chaos binary and the oracle's view from before the drill.

use chaos_user::demo::World;

use crate::{Oracle, Snapshot, chaos::Chaos};

/// Builds the demo's world, or says why this machine cannot (network namespaces, loop devices,
/// tc): the tests skip then.
pub fn world() -> Result<(Chaos, World, Oracle, Snapshot), String> {
    crate::skip::require_netns()?;
    crate::skip::require_loop()?;
    let chaos = Chaos::from_env()?;
    crate::chaos::tc_requirement(&chaos, "any")?;
    let world = World::new().map_err(|e| format!("building the workload: {e}"))?;
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    Ok((chaos, world, oracle, before))
}

/// Nothing of chaos left after a drill: no fault listed, no chaos process, no kernel object the
/// oracle finds that was not there `before`, no drill lock directory.
pub fn assert_clean(chaos: &Chaos, oracle: &Oracle, before: &Snapshot) {
    let list = chaos.list().expect("chaos list");
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(0),
        "faults left: {list}"
    );
    assert_eq!(chaos.processes(), Vec::<u32>::new(), "chaos processes left");
    oracle.assert_clean(before);
    assert!(
        !std::path::Path::new("/run/chaos/drills").exists(),
        "the drills' lock directory is left"
    );
}
