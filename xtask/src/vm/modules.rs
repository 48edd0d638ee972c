//! Choosing the kernel modules a Debian kernel needs for the tests, with their dependencies in
//! load order (from `modules.dep`).
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use anyhow::{Context as _, Result};

/// Modules the tests use (by module name, `-` and `_` equivalent). Missing ones are reported,
/// built-in ones need nothing.
pub const WANTED: &[&str] = &[
    // network worlds and qdisc-based strategies
    "veth",
    "dummy",
    "tun",
    "ifb",
    "sch_netem",
    "sch_fq",
    "sch_ingress",
    "sch_prio",
    "sch_htb",
    "sch_tbf",
    "cls_bpf",
    "cls_matchall",
    "cls_u32",
    "act_bpf",
    "act_mirred",
    "act_gact",
    // block worlds
    "null_blk",
    "loop",
    "dm_delay",
    "dm_flakey",
    "ext4",
    // ext4's metadata checksums: without them mounting fails ("Cannot load crc32c driver"), and
    // the VM has no working on-demand module loading.
    "crc32c_generic",
    "crc32c_intel",
];

/// A module file to put in the initramfs, in load order.
#[derive(Debug, Clone)]
pub struct ModuleFile {
    pub name: String,
    /// Path relative to `lib/modules/<version>`, as in `modules.dep` (possibly `.ko.xz`).
    pub rel_path: String,
    /// Its dependencies' paths, as in `modules.dep`.
    pub deps: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Selection {
    /// Modules and their dependencies, dependencies first.
    pub load_order: Vec<ModuleFile>,
    pub builtin: Vec<String>,
    pub missing: Vec<String>,
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Resolves `WANTED` against `dir` (a `lib/modules/<version>` directory).
pub fn select(dir: &Path) -> Result<Selection> {
    let dep_text = fs::read_to_string(dir.join("modules.dep"))
        .with_context(|| format!("reading {}/modules.dep", dir.display()))?;
    let builtin_text = fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    Ok(select_from(&dep_text, &builtin_text, WANTED))
}

fn select_from(dep_text: &str, builtin_text: &str, wanted: &[&str]) -> Selection {
    // name -> (path, dependency paths)
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in dep_text.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        deps.insert(
            module_name(path),
            (
                path.to_owned(),
                rest.split_whitespace().map(str::to_owned).collect(),
            ),
        );
    }
    let builtin: BTreeSet<String> = builtin_text.lines().map(module_name).collect();

    let mut sel = Selection::default();
    let mut seen = BTreeSet::new();
    for want in wanted {
        let want = want.replace('-', "_");
        if deps.contains_key(&want) {
            visit(&want, &deps, &mut seen, &mut sel.load_order);
        } else if builtin.contains(&want) {
            sel.builtin.push(want);
        } else {
            sel.missing.push(want);
        }
    }
    sel
}

/// Depth-first: dependencies before the module itself.
fn visit(
    name: &str,
    deps: &BTreeMap<String, (String, Vec<String>)>,
    seen: &mut BTreeSet<String>,
    out: &mut Vec<ModuleFile>,
) {
    if !seen.insert(name.to_owned()) {
        return;
    }
    let Some((path, dep_paths)) = deps.get(name) else {
        return;
    };
    for dep in dep_paths {
        visit(&module_name(dep), deps, seen, out);
    }
    out.push(ModuleFile {
        name: name.to_owned(),
        rel_path: path.clone(),
        deps: dep_paths.clone(),
    });
}

/// The path a module gets in the initramfs once decompressed (`.ko.xz` -> `.ko`).
pub fn decompressed_rel_path(rel_path: &str) -> String {
    for ext in [".xz", ".zst", ".gz"] {
        if let Some(p) = rel_path.strip_suffix(ext) {
            return p.to_owned();
        }
    }
    rel_path.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_come_first_once() {
        let dep = "kernel/drivers/md/dm-delay.ko.xz: kernel/drivers/md/dm-mod.ko.xz\n\
                   kernel/drivers/md/dm-flakey.ko.xz: kernel/drivers/md/dm-mod.ko.xz\n\
                   kernel/drivers/md/dm-mod.ko.xz: kernel/lib/a.ko.xz\n\
                   kernel/lib/a.ko.xz:\n\
                   kernel/net/sched/sch_netem.ko.xz:\n";
        let builtin = "kernel/drivers/block/loop.ko\n";
        let sel = select_from(dep, builtin, &["dm-delay", "dm_flakey", "loop", "nope"]);
        let names: Vec<_> = sel.load_order.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "dm_mod", "dm_delay", "dm_flakey"]);
        assert_eq!(sel.builtin, ["loop"]);
        assert_eq!(sel.missing, ["nope"]);
        assert_eq!(
            decompressed_rel_path(&sel.load_order[2].rel_path),
            "kernel/drivers/md/dm-delay.ko"
        );
    }
}
