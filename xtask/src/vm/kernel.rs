//! The kernels the VM tests boot: Debian's newest 6.1 and 6.12 (bookworm and bookworm-backports
//! `-unsigned` images, fetched with apt and cached outside the repository), and the project's own
//! test kernel in `../shared/kernels` (every fault hook built in, no modules).
use std::{
    fmt, fs,
    path::{Path, PathBuf},
    process::Command,
    str::FromStr,
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cmd;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KernelName {
    Debian61,
    Debian612,
    Test,
}

impl KernelName {
    pub const ALL: [Self; 3] = [Self::Debian61, Self::Debian612, Self::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debian61 => "debian-6.1",
            Self::Debian612 => "debian-6.12",
            Self::Test => "test",
        }
    }
}

impl fmt::Display for KernelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KernelName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown kernel `{s}` (expected debian-6.1, debian-6.12 or test)")
            })
    }
}

/// Test binaries that check user-space logic only (specs, the CLI, the daemon's API, reports,
/// experiments, the catalog, the harness's own worlds), on fault paths the other binaries take on
/// every kernel. When `cargo xtask test` saw one pass natively with no test skipped, no VM runs
/// it again; else (`vm-test` alone, or a host that lacks something) only the `test` kernel does.
/// Under single-threaded TCG each binary costs five to ten times its native time, per kernel, and
/// CI has 90 minutes for everything.
pub const NATIVE_SUFFICES: &[&str] = &[
    "bad_specs",
    "cli_bad_input",
    "daemon_schema",
    "report_page",
    "daemon",
    "daemon_client",
    "daemon_drill",
    "catalog",
    // The checkups drive Redis and PostgreSQL servers, which the VM image does not have.
    "checkup",
    "checkup_postgresql",
    "traffic",
    "world_loop_cgroup",
    "world_measure",
    "world_netns",
    "world_sweep_skip",
    "world_two_hosts",
    "bpf_tests",
];

/// Test binaries that run on the `test` kernel only (it has every feature: error injection, BPF
/// LSM, netem, fq), unless named with `--only`: what they add on a VM kernel is the fault kinds
/// the host lacks, and those kinds' kernel side is checked on every kernel by the family
/// binaries (net_*, io_*, syscall_*, qdisc_backend, killed_controller...).
pub const TEST_KERNEL_ONLY: &[&str] = &[
    // Killing the controller at random points, two rounds per fault kind the kernel has (11 of
    // the test kernel's minutes under TCG).
    "torture",
    // The demo (the README's main job) and drills, with every fault of the demo armed.
    "drill",
    // Two faults of a family at once (350 s a kernel under TCG): how the controller composes
    // throttles, qdisc bands and fills.
    "overlap",
    // Filling a file system (fallocate, and the virtual fill through error injection).
    "disk_fill",
    // The sidecar's pod-scoped faults.
    "sidecar",
];

impl KernelName {
    /// Whether this kernel runs test binary `name` by default; `native_full`: the binaries that
    /// passed natively in this run with no test skipped.
    pub fn runs_by_default(self, name: &str, native_full: &[String]) -> bool {
        if NATIVE_SUFFICES.contains(&name) {
            self == Self::Test && !native_full.iter().any(|n| n == name)
        } else if TEST_KERNEL_ONLY.contains(&name) {
            self == Self::Test
        } else {
            true
        }
    }
}

/// A kernel ready to boot.
#[derive(Debug)]
pub struct Kernel {
    pub name: KernelName,
    /// bzImage / vmlinuz.
    pub image: PathBuf,
    /// `lib/modules/<version>` of the package, for modular kernels.
    pub modules: Option<ModulesDir>,
    /// Extra kernel command line arguments (e.g. `lsm=...,bpf`).
    pub cmdline: Vec<String>,
    /// Package name and version, or the file, for the logs.
    pub description: String,
}

#[derive(Debug)]
pub struct ModulesDir {
    pub version: String,
    pub dir: PathBuf,
}

/// Where downloaded kernels are kept between runs: `~/.cache/chaos-xtask/kernels`.
fn cache_dir() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache"),
    };
    Ok(base.join("chaos-xtask/kernels"))
}

pub fn prepare(name: KernelName) -> Result<Kernel> {
    match name {
        KernelName::Test => test_kernel(),
        KernelName::Debian61 => debian_kernel(name, r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$"),
        KernelName::Debian612 => {
            debian_kernel(name, r"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$")
        }
    }
}

fn test_kernel() -> Result<Kernel> {
    let dir = cmd::workspace_root().join("../shared/kernels");
    let image = dir.join("bzImage-6.12.117-faultinject");
    if !image.is_file() {
        bail!(
            "test kernel {} not found (it is expected in ../shared/kernels beside the repository)",
            image.display()
        );
    }
    let config = fs::read_to_string(dir.join("config-6.12.117-faultinject")).unwrap_or_default();
    Ok(Kernel {
        name: KernelName::Test,
        image: image.canonicalize()?,
        modules: None,
        cmdline: lsm_args(&config),
        description: "bzImage-6.12.117-faultinject".into(),
    })
}

/// If the kernel has the BPF LSM but does not enable it by default, enable it (after the
/// default LSMs) so that `lsm/*` programs can attach.
fn lsm_args(config: &str) -> Vec<String> {
    let has_bpf_lsm = config.lines().any(|l| l.trim() == "CONFIG_BPF_LSM=y");
    let lsms = config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_LSM="))
        .map(|v| v.trim_matches('"').to_owned());
    match (has_bpf_lsm, lsms) {
        (true, Some(lsms)) if !lsms.split(',').any(|l| l == "bpf") => {
            vec![format!("lsm={lsms},bpf")]
        }
        _ => Vec::new(),
    }
}

fn debian_kernel(name: KernelName, pattern: &str) -> Result<Kernel> {
    let cache = cache_dir()?;
    let (package, version) = match newest_package(pattern) {
        Ok(found) => found,
        Err(err) => {
            // Offline: use the newest package already cached, if any.
            let cached = newest_cached(&cache, pattern)
                .with_context(|| format!("no kernel for {name} found by apt: {err:#}"))?;
            eprintln!(
                "vm: {name}: apt lookup failed ({err:#}); using cached {}",
                cached.0
            );
            cached
        }
    };
    let dir = cache.join(&package);
    let root = dir.join("root");
    if !root.is_dir() {
        fetch_and_extract(&package, &version, &dir)?;
    }
    let image = first_match(&root.join("boot"), "vmlinuz-")
        .with_context(|| format!("no boot/vmlinuz-* in {package}"))?;
    let kver = image
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .context("vmlinuz name")?
        .to_owned();
    let modules = root.join("lib/modules").join(&kver);
    if !modules.join("modules.builtin").is_file() {
        bail!("no lib/modules/{kver} in {package}");
    }
    if !modules.join("modules.dep").is_file() {
        // Packages leave modules.dep to depmod at install time.
        cmd::run(Command::new("depmod").arg("-b").arg(&root).arg(&kver))?;
    }
    let config = fs::read_to_string(root.join(format!("boot/config-{kver}"))).unwrap_or_default();
    Ok(Kernel {
        name,
        image,
        modules: Some(ModulesDir {
            version: kver,
            dir: modules,
        }),
        cmdline: lsm_args(&config),
        description: format!("{package} {version}"),
    })
}

/// The newest (package, candidate version) among packages whose name matches `pattern`.
fn newest_package(pattern: &str) -> Result<(String, String)> {
    let mut found = candidates(pattern)?;
    if found.is_empty() {
        // Package lists may be missing on a fresh machine where every package was installed.
        eprintln!("vm: no package matches {pattern}; running apt-get update");
        cmd::run(Command::new("apt-get").arg("update"))?;
        found = candidates(pattern)?;
    }
    let mut best: Option<(String, String)> = None;
    for (package, version) in found {
        let newer = match &best {
            None => true,
            Some((_, v)) => version_gt(&version, v)?,
        };
        if newer {
            best = Some((package, version));
        }
    }
    best.ok_or_else(|| anyhow!("no package matches {pattern}"))
}

/// Packages matching `pattern` with their candidate versions, from `apt-cache`.
fn candidates(pattern: &str) -> Result<Vec<(String, String)>> {
    let names: Vec<String> =
        cmd::output(Command::new("apt-cache").args(["search", "--names-only", pattern]))?
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let policy = cmd::output(Command::new("apt-cache").arg("policy").args(&names))?;
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in policy.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            current = Some(line.trim_end_matches(':').to_owned());
        } else if let (Some(pkg), Some(v)) = (&current, line.trim().strip_prefix("Candidate: "))
            && v != "(none)"
        {
            out.push((pkg.clone(), v.to_owned()));
        }
    }
    Ok(out)
}

fn version_gt(a: &str, b: &str) -> Result<bool> {
    Ok(Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .context("running dpkg --compare-versions")?
        .success())
}

/// The newest cached package whose name matches `pattern` (versions recorded at download).
fn newest_cached(cache: &Path, pattern: &str) -> Result<(String, String)> {
    // The patterns are simple: a literal prefix up to the first regex metacharacter is enough
    // to pick the right family, and the version file decides between them.
    let prefix: String = pattern
        .trim_start_matches('^')
        .replace(r"\.", ".")
        .chars()
        .take_while(|c| !matches!(c, '[' | '+' | '\\' | '$'))
        .collect();
    let suffix = if pattern.contains("deb12") {
        "+deb12-amd64-unsigned"
    } else {
        "-amd64-unsigned"
    };
    let mut best: Option<(String, String)> = None;
    for entry in fs::read_dir(cache)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&prefix)
            || !name.ends_with(suffix)
            || name.contains("-cloud-")
            || name.contains("-rt-")
            || !entry.path().join("root").is_dir()
        {
            continue;
        }
        let version = fs::read_to_string(entry.path().join("version")).unwrap_or_default();
        let version = version.trim().to_owned();
        let newer = match &best {
            None => true,
            Some((_, v)) => version_gt(&version, v)?,
        };
        if newer {
            best = Some((name, version));
        }
    }
    best.ok_or_else(|| anyhow!("nothing cached in {}", cache.display()))
}

fn fetch_and_extract(package: &str, version: &str, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    let deb = match first_match(dir, &format!("{package}_")) {
        Some(deb) => deb,
        None => {
            eprintln!("vm: downloading {package} {version}");
            cmd::run(
                Command::new("apt-get")
                    .args(["download", &format!("{package}={version}")])
                    .current_dir(dir),
            )?;
            first_match(dir, &format!("{package}_"))
                .with_context(|| format!("apt-get download left no {package}_*.deb"))?
        }
    };
    let tmp = dir.join("root.tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
    fs::write(dir.join("version"), version)?;
    // Only a complete extraction gets the final name, so an interrupted run starts over.
    fs::rename(&tmp, dir.join("root"))?;
    Ok(())
}

/// The first entry of `dir` whose file name starts with `prefix` (sorted, so deterministic).
fn first_match(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && !n.ends_with(".tmp"))
        })
        .collect();
    names.sort();
    names.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsm_added_when_bpf_lsm_is_built_but_not_enabled() {
        let cfg = "CONFIG_BPF_LSM=y\nCONFIG_LSM=\"landlock,lockdown,yama,apparmor\"\n";
        assert_eq!(
            lsm_args(cfg),
            vec!["lsm=landlock,lockdown,yama,apparmor,bpf"]
        );
        let cfg = "CONFIG_BPF_LSM=y\nCONFIG_LSM=\"capability,bpf\"\n";
        assert!(lsm_args(cfg).is_empty());
        let cfg = "# CONFIG_BPF_LSM is not set\nCONFIG_LSM=\"yama\"\n";
        assert!(lsm_args(cfg).is_empty());
    }
}
