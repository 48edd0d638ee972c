//! System rows: BTF, bpffs, tracefs, cgroups, qdiscs, seccomp.

use std::process::Command;

use super::{Feature, Rows, sys};
use crate::{mounts, netns};

pub(super) fn probe(rows: &mut Rows, btf: &Result<aya::Btf, String>) {
    match btf {
        Ok(_) => rows.yes(Feature::Btf, "parsed /sys/kernel/btf/vmlinux"),
        Err(e) => rows.no(
            Feature::Btf,
            format!("no usable kernel BTF ({e}); fentry, fmod_ret and LSM programs need it"),
        ),
    }
    match mounts::ensure_bpffs() {
        Ok(true) => rows.yes(Feature::Bpffs, "mounted it on /sys/fs/bpf"),
        Ok(false) => rows.yes(Feature::Bpffs, "mounted on /sys/fs/bpf"),
        Err(e) => rows.no(Feature::Bpffs, e.to_string()),
    }
    match mounts::ensure_tracefs() {
        Ok(root) => rows.yes(Feature::Tracefs, format!("at {}", root.display())),
        Err(e) => rows.no(Feature::Tracefs, e.to_string()),
    }
    cgroups(rows);
    qdiscs(rows);
    match sys::seccomp_user_notif() {
        Ok(()) => rows.yes(
            Feature::SeccompUserNotif,
            "SECCOMP_RET_USER_NOTIF is available",
        ),
        Err(e) => rows.no(
            Feature::SeccompUserNotif,
            format!("SECCOMP_GET_ACTION_AVAIL: {}", sys::errno_name(&e)),
        ),
    }
}

fn cgroups(rows: &mut Rows) {
    let mounts = match mounts::CgroupMounts::read() {
        Ok(m) => m,
        Err(e) => {
            for f in [
                Feature::CgroupV2,
                Feature::CgroupV2Io,
                Feature::CgroupV1Blkio,
            ] {
                rows.no(f, e.to_string());
            }
            return;
        }
    };
    match &mounts.v2 {
        Some(path) => {
            let controllers = mounts.v2_controllers();
            rows.yes(
                Feature::CgroupV2,
                format!(
                    "mounted at {} (controllers: {})",
                    path.display(),
                    if controllers.is_empty() {
                        "none".to_owned()
                    } else {
                        controllers.join(" ")
                    }
                ),
            );
            if controllers.iter().any(|c| c == "io") {
                rows.yes(
                    Feature::CgroupV2Io,
                    format!("io listed in {}", path.display()),
                );
            } else {
                rows.no(
                    Feature::CgroupV2Io,
                    format!("io is not among {}'s controllers", path.display()),
                );
            }
        }
        None => {
            rows.no(
                Feature::CgroupV2,
                "no cgroup2 mount in /proc/self/mountinfo",
            );
            rows.no(Feature::CgroupV2Io, "no cgroup2 mount");
        }
    }
    match mounts.v1.get("blkio") {
        Some(path) if path.join("blkio.throttle.read_bps_device").exists() => rows.yes(
            Feature::CgroupV1Blkio,
            format!("blkio.throttle.* at {}", path.display()),
        ),
        Some(path) => rows.no(
            Feature::CgroupV1Blkio,
            format!(
                "blkio at {} has no throttle files (CONFIG_BLK_DEV_THROTTLING off)",
                path.display()
            ),
        ),
        None => rows.no(Feature::CgroupV1Blkio, "no cgroup v1 blkio mount"),
    }
}

/// Adds each qdisc to `lo` of a scratch network namespace with `tc`.
fn qdiscs(rows: &mut Rows) {
    let result = netns::run_in_scratch(|| {
        Ok(
            [("fq", Feature::QdiscFq), ("netem", Feature::QdiscNetem)].map(|(kind, feature)| {
                let out = Command::new("tc")
                    .args(["qdisc", "add", "dev", "lo", "root", kind])
                    .output();
                let answer = match out {
                    Ok(o) if o.status.success() => Ok(format!("tc qdisc add {kind} worked")),
                    Ok(o) => Err(format!(
                        "tc qdisc add {kind}: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    )),
                    Err(e) => Err(format!("cannot run tc (install iproute2): {e}")),
                };
                (feature, answer)
            }),
        )
    });
    match result {
        Ok(answers) => {
            for (feature, answer) in answers {
                match answer {
                    Ok(d) => rows.yes(feature, d),
                    Err(d) => rows.no(feature, d),
                }
            }
        }
        Err(e) => {
            rows.no(Feature::QdiscFq, e.to_string());
            rows.no(Feature::QdiscNetem, e.to_string());
        }
    }
}
