//! The probe's answer, kept between commands: probing loads and attaches a few dozen programs,
//! which is most of the time a `chaos inject` takes (about 250 ms here, seconds in an emulated
//! VM). The answer is reused only while nothing it depends on can have changed: the same boot,
//! the same chaos binary, the same kernel modules loaded (a qdisc module loaded later changes
//! the answer) and the same cgroup, bpffs and tracefs mounts and root cgroup controllers.
//! `chaos probe` always probes afresh and refreshes it. It lives in `/run` (gone at reboot) beside
//! the state directory, and describes the kernel, not a fault: `recover --all` leaves it.

use std::{
    hash::{Hash as _, Hasher as _},
    io::Write as _,
    os::unix::fs::MetadataExt as _,
    path::Path,
};

use serde::{Deserialize, Serialize};

use super::Report;

/// The file's content.
#[derive(Serialize, Deserialize)]
struct Cached {
    /// [`fingerprint`] when it was written.
    fingerprint: String,
    report: Report,
}

/// What the probe's answer depends on, as one string.
fn fingerprint() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut h = std::hash::DefaultHasher::new();
    read("/proc/sys/kernel/random/boot_id").hash(&mut h);
    if let Ok(m) = std::fs::metadata("/proc/self/exe") {
        (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()).hash(&mut h);
    }
    let mut modules: Vec<String> = read("/proc/modules")
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    modules.sort_unstable();
    modules.hash(&mut h);
    let mut mounts: Vec<String> = read("/proc/self/mounts")
        .lines()
        .filter(|l| {
            let fstype = l.split_whitespace().nth(2).unwrap_or_default();
            matches!(fstype, "cgroup" | "cgroup2" | "bpf" | "tracefs" | "debugfs")
        })
        .map(str::to_owned)
        .collect();
    mounts.sort_unstable();
    for m in &mounts {
        m.hash(&mut h);
        if let Some(dir) = m.split_whitespace().nth(1) {
            read(&format!("{dir}/cgroup.subtree_control")).hash(&mut h);
        }
    }
    format!("{:016x}", h.finish())
}

/// The cached answer at `path` if it still holds, else a fresh probe (then cached).
pub fn cached(path: &Path) -> Report {
    let now = fingerprint();
    let hit = std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Cached>(&bytes).ok())
        .filter(|c| c.fingerprint == now);
    match hit {
        Some(c) => c.report,
        None => {
            let report = super::run();
            store(path, &report);
            report
        }
    }
}

/// Keeps `report` at `path` (best effort: without it, the next command probes again).
pub fn store(path: &Path, report: &Report) {
    let cached = Cached {
        fingerprint: fingerprint(),
        report: report.clone(),
    };
    let Ok(json) = serde_json::to_vec(&cached) else {
        return;
    };
    let tmp = path.with_extension("tmp");
    let written = std::fs::File::create(&tmp).and_then(|mut f| f.write_all(&json));
    if written.is_err() || std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
        tracing::debug!("could not cache the probe at {}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_stable_and_a_stale_cache_is_not_used() {
        assert_eq!(fingerprint(), fingerprint());
        let path = std::env::temp_dir().join(format!("chaos-probe-{}.json", std::process::id()));
        let mut report = Report::unprobed();
        report.kernel = "from the cache".into();
        store(&path, &report);
        let text = std::fs::read_to_string(&path).unwrap();
        let back: Cached = serde_json::from_str(&text).unwrap();
        assert_eq!(back.report.kernel, "from the cache");
        assert_eq!(back.report.rows.len(), report.rows.len());
        // A cache written under another fingerprint is not trusted.
        let stale = text.replace(&back.fingerprint, "0000000000000000");
        std::fs::write(&path, stale).unwrap();
        let hit = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Cached>(&b).ok())
            .filter(|c| c.fingerprint == fingerprint());
        assert!(hit.is_none());
        std::fs::remove_file(&path).unwrap();
    }
}
