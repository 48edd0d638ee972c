//! The block I/O test world: a loop device with ext4, a test cgroup where the io (v2) or blkio
//! (v1) controller applies, and the `chaos` binary, checked to agree on which hierarchy that is.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use super::{CgroupVersion, ChildProcess, LoopDevice, TestCgroup};
use crate::chaos::Chaos;

/// One mebibyte.
pub const MIB: u64 = 1 << 20;

/// The v1 throttle files, in the order tests show them.
pub const V1_FILES: [&str; 4] = [
    "blkio.throttle.read_bps_device",
    "blkio.throttle.write_bps_device",
    "blkio.throttle.read_iops_device",
    "blkio.throttle.write_iops_device",
];

/// A loop device with ext4, a test cgroup where io / blkio applies, and chaos.
pub struct IoWorld {
    /// The binary under test.
    pub chaos: Chaos,
    /// The test cgroup. Dropped before the loop device: its processes leave first.
    pub cg: TestCgroup,
    /// The loop device, formatted ext4 and mounted.
    pub lo: LoopDevice,
    /// Whether throttling goes through cgroup v2's io.max (else v1 blkio).
    pub v2: bool,
}

impl IoWorld {
    /// Builds the world with a loop device of `size` bytes once `dd` and loop devices exist and
    /// chaos can throttle I/O through a cgroup; `Err` is a skip reason.
    pub fn new(size: u64) -> Result<IoWorld, String> {
        crate::skip::require_loop()?;
        crate::skip::require_command("dd")?;
        let chaos = Chaos::from_env()?;
        let v2 = match (
            chaos.probe_row("cgroup_v2_io"),
            chaos.probe_row("cgroup_v1_blkio"),
        ) {
            (Ok(()), _) => true,
            (_, Ok(())) => false,
            (Err(a), Err(b)) => return Err(format!("no cgroup I/O throttling: {a}; {b}")),
        };
        let lo = match LoopDevice::with_ext4(size) {
            Ok(lo) => lo,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!("loop device with ext4: {e}"));
            }
            Err(e) => panic!("loop device with ext4: {e}"),
        };
        let cg = TestCgroup::new("blkio").expect("test cgroup");
        assert_eq!(
            cg.version() == CgroupVersion::V2,
            v2,
            "chaos and the test world disagree on the cgroup hierarchy of io"
        );
        Ok(IoWorld { chaos, cg, lo, v2 })
    }

    /// `MAJ:MIN` of the loop device.
    pub fn dev(&self) -> String {
        let (a, b) = self.lo.major_minor().expect("major:minor");
        format!("{a}:{b}")
    }

    /// The loop device's node, e.g. `/dev/loop3`.
    pub fn device(&self) -> String {
        self.lo.device().display().to_string()
    }

    /// Where its filesystem is mounted.
    pub fn mnt(&self) -> &Path {
        self.lo.mount_point().expect("mounted")
    }

    /// The test cgroup's directory.
    pub fn cgroup(&self) -> String {
        self.cg.path().display().to_string()
    }

    /// The strategy chaos reports for io slow / hang here.
    pub fn strategy(&self) -> &'static str {
        if self.v2 {
            "cgroup-io-max"
        } else {
            "cgroup-blkio-throttle"
        }
    }
}

/// Size of `file` in bytes (0 if it does not exist yet).
pub fn size(file: &Path) -> u64 {
    std::fs::metadata(file).map(|m| m.len()).unwrap_or(0)
}

/// A rate in MiB/s, for messages.
pub fn mib_s(rate: f64) -> String {
    format!("{:.2} MiB/s", rate / MIB as f64)
}

/// Bytes per second by which `file` (written by `writer`) grows, from `settle` after now for
/// `window`, or over the whole run if the writer finishes before `settle`.
pub fn rate(writer: &mut ChildProcess, file: &Path, settle: Duration, window: Duration) -> f64 {
    let start = Instant::now();
    let start_size = size(file);
    let mut first: Option<(Instant, u64)> = None;
    loop {
        let exited = writer.try_wait().expect("try_wait").is_some();
        let (now, s) = (Instant::now(), size(file));
        if first.is_none() && now - start >= settle {
            first = Some((now, s));
        }
        if exited || now - start >= settle + window {
            let (t0, s0) = match first {
                Some(f) if now - f.0 >= Duration::from_millis(200) => f,
                _ => (start, start_size),
            };
            return (s - s0) as f64 / (now - t0).as_secs_f64();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
