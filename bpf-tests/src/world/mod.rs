//! RAII test worlds: every guard here removes what it made in `Drop`, even when the test panics.
//!
//! Everything is named `chaos-t-<pid>-<n>` ([`unique_name`]) so that parallel test binaries do not
//! collide and [`sweep_stale`] can find what crashed runs left behind.

pub(crate) mod cgroup;
pub mod io;
mod loopdev;
pub mod measure;
mod netns;
mod process;
mod sweep;
mod traffic;
mod veth;

use std::sync::atomic::{AtomicU32, Ordering};

pub use cgroup::{CgroupVersion, InsideCgroup, TestCgroup, cgroup_v1_mount, cgroup2_mount};
pub use loopdev::LoopDevice;
pub use measure::{
    Arrival, BulkReport, LatencyStats, SinkStats, TcpSink, UdpEcho, UdpProbeSink, snmp, tcp_bulk,
    tcp_bulk_report, udp_rtt, udp_rtt_with, udp_send_seq,
};
pub use netns::{NETNS_RUN_DIR, NetNs, NetNsGuard, command_in_netns};
pub use process::ChildProcess;
pub use sweep::sweep_stale;
pub use traffic::{
    DRAIN_QUIET, SOCKET_BUFFER, TcpEcho, UdpSink, big_receive_buffer, send_retrying, tcp_check,
    udp_blast,
};
pub use veth::{Host, TwoHosts, VethPair};

/// Prefix of every namespace, cgroup, temporary directory and file the worlds make.
pub const TEST_PREFIX: &str = "chaos-t-";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique on this machine while this process lives: `chaos-t-<pid>-<n>`.
pub fn unique_name() -> String {
    format!(
        "{TEST_PREFIX}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The pid encoded in a name made by [`unique_name`] (which may be followed by more text).
pub(crate) fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(TEST_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Whether a name made by [`unique_name`] belongs to a process that no longer runs.
pub(crate) fn is_stale(name: &str) -> bool {
    match owner_pid(name) {
        Some(pid) => {
            pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        None => false,
    }
}

/// Retries `f` until it succeeds or `timeout` passes, sleeping `step` between tries; returns the
/// last result.
pub(crate) fn retry<T, E>(
    timeout: std::time::Duration,
    step: std::time::Duration,
    mut f: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let start = std::time::Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= timeout => return Err(e),
            Err(_) => std::thread::sleep(step),
        }
    }
}
