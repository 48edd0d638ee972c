//! `chaos recover --all` beyond the store: what the kernel itself shows of ours, for the cases
//! the store lost track of (a damaged record purged, the state directory deleted, a record
//! never written). Everything of ours carries a mark an independent observer can read:
//!
//! * tc filters run programs named `chaos_*` (names the kernel keeps);
//! * roots of ours carry fixed handles (`qdisc::is_our_root`);
//! * ifb devices are named `chifb*`;
//! * cgroups made for a moved process are named `chaos-io-*`.
//!
//! Pins are removed by the caller (the whole pin root). Fill files and limits written into a
//! user's cgroup carry no mark visible from outside; those only the store can undo.
//!
//! Every network namespace is visited: the named ones and those of every process.

use std::{collections::HashSet, os::unix::fs::MetadataExt as _};

use serde_json::Value;

use super::{
    qdisc::{self, IFB_PREFIX, is_our_root},
    throttle::CHILD_PREFIX,
};
use crate::{
    mounts::CgroupMounts,
    netns::{self, NetNs},
};

/// Prefix of our program names, as the kernel keeps them.
const PROG_PREFIX: &str = "chaos_";

/// Removes every trace of ours the kernel shows and returns what was removed.
pub fn sweep() -> Vec<String> {
    let programs_loaded = our_programs_loaded();
    let mut removed = Vec::new();
    for (label, ns) in namespaces() {
        let found = netns::run_in(ns.as_ref(), move || Ok(sweep_here(programs_loaded)));
        removed.extend(
            found
                .unwrap_or_default()
                .into_iter()
                .map(|what| format!("{what} in netns {label}")),
        );
    }
    removed.extend(sweep_moved());
    for r in &removed {
        tracing::info!("recover --all: removed {r}, which no record named");
    }
    removed
}

/// Whether any program named `chaos_*` is loaded (no filter of ours can exist otherwise).
fn our_programs_loaded() -> bool {
    aya::programs::loaded_programs()
        .flatten()
        .any(|p| p.name_as_str().is_some_and(|n| n.starts_with(PROG_PREFIX)))
}

/// The host's namespace (`None`) and every other network namespace a name or a process holds,
/// once each.
fn namespaces() -> Vec<(String, Option<NetNs>)> {
    let mut seen = HashSet::new();
    let mut out = vec![("host".to_owned(), None)];
    if let Ok(m) = std::fs::metadata("/proc/self/ns/net") {
        seen.insert((m.dev(), m.ino()));
    }
    let named = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    let of_processes = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .map(|e| e.path().join("ns/net"));
    for path in named.chain(of_processes) {
        let Ok(m) = std::fs::metadata(&path) else {
            continue;
        };
        if !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        if let Ok(ns) = NetNs::resolve(&path.to_string_lossy(), "netns") {
            out.push((path.display().to_string(), Some(ns)));
        }
    }
    out
}

/// Runs `tc`/`ip` with `args` in the calling thread's namespace and parses its JSON (nothing when
/// it fails: that namespace or interface is gone, or shows nothing).
fn json(program: &str, args: &[&str]) -> Vec<Value> {
    match qdisc::run(program, args) {
        Ok(Ok(out)) => serde_json::from_str(out.trim()).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Runs `tc`/`ip` with `args`; whether it succeeded.
fn run(program: &str, args: &[&str]) -> bool {
    matches!(qdisc::run(program, args), Ok(Ok(_)))
}

/// Sweeps the calling thread's namespace.
fn sweep_here(programs_loaded: bool) -> Vec<String> {
    let mut removed = Vec::new();
    let links = json("ip", &["-j", "link", "show"]);
    let names: Vec<String> = links
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect();
    if programs_loaded {
        for dev in &names {
            let mut any = false;
            for dir in ["ingress", "egress"] {
                for f in json("tc", &["-j", "filter", "show", "dev", dev, dir]) {
                    if !is_our_filter(&f) {
                        continue;
                    }
                    let Some(pref) = f["pref"].as_u64() else {
                        continue;
                    };
                    let pref = pref.to_string();
                    if run("tc", &["filter", "del", "dev", dev, dir, "pref", &pref]) {
                        removed.push(format!("tc {dir} filter pref {pref} on {dev}"));
                        any = true;
                    }
                }
            }
            if any && !super::net::has_filters(dev) {
                super::net::del_clsact(dev);
                removed.push(format!("clsact qdisc on {dev} (left empty)"));
            }
        }
    }
    for q in json("tc", &["-j", "qdisc", "show"]) {
        let (Some(dev), Some(kind), Some(handle)) =
            (q["dev"].as_str(), q["kind"].as_str(), q["handle"].as_str())
        else {
            continue;
        };
        let is_root = q["root"].as_bool() == Some(true);
        if is_root && is_our_root(kind, handle) && run("tc", &["qdisc", "del", "dev", dev, "root"])
        {
            removed.push(format!("{kind} root qdisc {handle} on {dev}"));
        }
    }
    for dev in names.iter().filter(|n| n.starts_with(IFB_PREFIX)) {
        if run("ip", &["link", "del", dev]) {
            removed.push(format!("ifb device {dev}"));
        }
    }
    removed
}

/// Cgroups made for a moved process (`chaos-io-*`) that no record named: their processes go
/// back to the parent, the cgroup they came from, and the cgroup (with its limits) goes.
fn sweep_moved() -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if !e.file_name().to_string_lossy().starts_with(CHILD_PREFIX) {
                walk(&path, out);
                continue;
            }
            let procs = std::fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.split_whitespace() {
                let _ = std::fs::write(dir.join("cgroup.procs"), pid);
            }
            // An exiting process leaves asynchronously.
            for _ in 0..50 {
                if std::fs::remove_dir(&path).is_ok() {
                    out.push(format!(
                        "cgroup {} (its processes moved back)",
                        path.display()
                    ));
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(m) = CgroupMounts::read() {
        for root in m.v2.iter().chain(m.v1.values()) {
            walk(root, &mut out);
        }
    }
    out
}

/// Whether a `tc -j filter show` entry runs one of our programs.
fn is_our_filter(f: &Value) -> bool {
    let o = &f["options"];
    [&o["bpf_name"], &o["prog"]["name"]]
        .iter()
        .any(|v| v.as_str().is_some_and(|n| n.starts_with(PROG_PREFIX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks() {
        let ours: Value = serde_json::json!({"pref": 49152, "options": {"bpf_name": "chaos_tc_egress", "prog": {"id": 7}}});
        let by_prog: Value = serde_json::json!({"pref": 1, "options": {"bpf_name": "obj.o:[tc]", "prog": {"name": "chaos_tc_ingres"}}});
        let theirs: Value = serde_json::json!({"pref": 1, "options": {"bpf_name": "cilium", "prog": {"name": "cil_from"}}});
        assert!(is_our_filter(&ours));
        assert!(is_our_filter(&by_prog));
        assert!(!is_our_filter(&theirs));
        assert!(is_our_root("prio", "c4a0:"));
        assert!(is_our_root("fq", "c4a1:"));
        assert!(!is_our_root("fq", "1:"));
        assert!(!is_our_root("netem", "c4a0:"));
        assert!(!is_our_root("noqueue", "0:"));
    }
}
