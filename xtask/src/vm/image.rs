//! What goes into the VM's initramfs: the part shared by every kernel (init, busybox, tools,
//! `chaos`, the test binaries) and each kernel's layer (its modules and name).
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use super::{
    initramfs::{self, Archive},
    kernel::Kernel,
    modules,
};
use crate::{cargo::TestBinary, cmd};

const INIT: &str = include_str!("init.sh");

/// Host tools copied with their libraries when installed (setup installs them): path in the VM
/// is the host path, so `PATH` order puts them before busybox's applets of the same name.
const TOOLS: &[&str] = &["ip", "tc", "bpftool", "fio", "mkfs.ext4", "losetup"];

/// mkfs.ext4's defaults (feature sets per file system size).
const MKE2FS_CONF: &str = "/etc/mke2fs.conf";

/// iproute2's data (netem delay distributions) lives here on Debian.
const TC_DATA: &str = "/usr/lib/x86_64-linux-gnu/tc";

/// Builds the shared archive at `out`, staging stripped binaries under `staging`.
pub fn write_base(out: &Path, staging: &Path, chaos: &Path, tests: &[TestBinary]) -> Result<()> {
    let mut a = Archive::new();
    for d in [
        "/proc", "/sys", "/dev", "/run", "/tmp", "/root", "/mnt", "/etc", "/var",
    ] {
        a.dir(d);
    }
    a.symlink("/var/run", "../run");
    a.symlink("/var/tmp", "../tmp");
    a.data("/init", INIT, 0o755);
    a.data(
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        0o644,
    );
    a.data("/etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644);
    a.data("/etc/hosts", "127.0.0.1 localhost\n::1 localhost\n", 0o644);

    // Real tools first, so that busybox applets do not take their paths.
    for tool in TOOLS {
        match which::which(tool) {
            Ok(path) => {
                let real = fs::canonicalize(&path)?;
                a.executable(&path.to_string_lossy(), &real)?;
            }
            Err(_) => eprintln!("vm: {tool} not installed; the VM will not have it"),
        }
    }
    if Path::new(MKE2FS_CONF).is_file() {
        a.file(MKE2FS_CONF, Path::new(MKE2FS_CONF))?;
    }
    if let Ok(dir) = fs::read_dir(TC_DATA) {
        for entry in dir.flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "dist") {
                a.file(&p.to_string_lossy(), &p)?;
            }
        }
    }

    let busybox = which::which("busybox")
        .ok()
        .filter(|p| p.starts_with("/bin") || p.starts_with("/usr/bin"))
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"));
    a.file("/bin/busybox", &busybox)?;
    let applets = cmd::output(Command::new(&busybox).arg("--list-full"))
        .context("listing busybox applets (is busybox-static installed?)")?;
    for applet in applets.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = format!("/{applet}");
        if !a.contains(&path) && path != "/bin/busybox" {
            a.symlink(&path, "/bin/busybox");
        }
    }

    let chaos_staged = staging.join("chaos");
    initramfs::strip_debug(chaos, &chaos_staged)?;
    a.executable("/bin/chaos", &chaos_staged)?;
    let mut names = String::new();
    for t in tests {
        let staged = staging.join("tests").join(&t.name);
        initramfs::strip_debug(&t.path, &staged)?;
        a.executable(&format!("/tests/{}", t.name), &staged)?;
        names.push_str(&t.name);
        names.push('\n');
    }
    a.data("/etc/chaos-tests", names, 0o644);
    a.write(out, false)
}

/// Writes `out` = the base archive followed by `kernel`'s layer: its name for the tests, the
/// test binaries it runs (`/etc/chaos-tests`, replacing the base's list) and, for Debian kernels, the decompressed modules, their load order and a `modules.dep` for
/// busybox modprobe. Returns notes to print (missing modules).
pub fn write_for_kernel(
    base: &Path,
    out: &Path,
    kernel: &Kernel,
    staging: &Path,
    tests: &[&str],
) -> Result<Vec<String>> {
    fs::copy(base, out)
        .with_context(|| format!("copying {} to {}", base.display(), out.display()))?;
    let mut notes = Vec::new();
    let mut a = Archive::new();
    a.data(
        "/etc/chaos-vm.env",
        format!("CHAOS_IN_VM={}\n", kernel.name),
        0o644,
    );
    let mut names = tests.join("\n");
    names.push('\n');
    a.data("/etc/chaos-tests", names, 0o644);
    if let Some(mods) = &kernel.modules {
        let sel = modules::select(&mods.dir)?;
        if !sel.missing.is_empty() {
            notes.push(format!(
                "modules not in this kernel: {}",
                sel.missing.join(" ")
            ));
        }
        let vm_dir = format!("/lib/modules/{}", mods.version);
        let mod_staging = staging.join("modules").join(&mods.version);
        let mut order = String::new();
        let mut dep = String::new();
        for m in &sel.load_order {
            let rel = modules::decompressed_rel_path(&m.rel_path);
            let staged = mod_staging.join(&rel);
            decompress(&mods.dir.join(&m.rel_path), &staged)?;
            a.file(&format!("{vm_dir}/{rel}"), &staged)?;
            order.push_str(&format!("{vm_dir}/{rel}\n"));
        }
        // modules.dep restricted to what is present, for tests that modprobe with parameters.
        for m in &sel.load_order {
            dep.push_str(&modules::decompressed_rel_path(&m.rel_path));
            dep.push(':');
            for d in &m.deps {
                dep.push(' ');
                dep.push_str(&modules::decompressed_rel_path(d));
            }
            dep.push('\n');
        }
        let names: Vec<&str> = sel.load_order.iter().map(|m| m.name.as_str()).collect();
        notes.push(format!("modules to load: {}", names.join(" ")));
        if !sel.builtin.is_empty() {
            notes.push(format!("built in: {}", sel.builtin.join(" ")));
        }
        a.data("/etc/chaos-modules", order, 0o644);
        a.data(&format!("{vm_dir}/modules.dep"), dep, 0o644);
        for f in ["modules.builtin", "modules.order"] {
            let p = mods.dir.join(f);
            if p.is_file() {
                a.file(&format!("{vm_dir}/{f}"), &p)?;
            }
        }
    }
    a.write(out, true)?;
    Ok(notes)
}

/// Decompresses a `.ko.xz` / `.ko.zst` / `.ko.gz` module to `dst` (copies a plain `.ko`),
/// reusing an earlier result.
fn decompress(src: &Path, dst: &Path) -> Result<()> {
    if dst.is_file() {
        return Ok(());
    }
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent)?;
    }
    let tool = match src.extension().and_then(|e| e.to_str()) {
        Some("xz") => Some("xz"),
        Some("zst") => Some("zstd"),
        Some("gz") => Some("gzip"),
        _ => None,
    };
    let tmp = dst.with_extension("ko.tmp");
    match tool {
        Some(tool) => {
            let out = Command::new(tool)
                .args(["-d", "-c"])
                .arg(src)
                .output()
                .with_context(|| format!("running {tool}"))?;
            if !out.status.success() {
                anyhow::bail!(
                    "{tool} -d {}: {}",
                    src.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            fs::write(&tmp, out.stdout)?;
        }
        None => {
            fs::copy(src, &tmp)?;
        }
    }
    fs::rename(&tmp, dst)?;
    Ok(())
}
