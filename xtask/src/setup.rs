//! `cargo xtask setup`: install what building and testing need on a fresh Debian 12, and do
//! nothing (in well under a second) when it is all there.
//!
//! Checks use `dpkg-query`, `rustup ... --installed` and `PATH`, never the network; `apt-get
//! update` runs only when a package is missing.
use std::{collections::BTreeSet, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::cmd;

/// Debian packages: LLVM 22 for bpf-linker, the tools the tests and the VM initramfs use,
/// QEMU, and the decompressors for kernel packages and modules.
pub const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libclang-22-dev",
    "clang-22",
    "bpftool",
    "iproute2",
    "qemu-system-x86",
    "busybox-static",
    "fio",
    "libelf-dev",
    "zlib1g-dev",
    "pkg-config",
    "libzstd-dev",
    "xz-utils",
    "zstd",
    "cpio",
    "kmod",
    "python3",
    // the venv that bpf-tests/tests/daemon_schema.rs runs schemathesis from
    "python3-venv",
    // objcopy, to strip debug info from binaries copied into the VM
    "binutils",
    // mkfs.ext4 for the block tests' loop devices
    "e2fsprogs",
    // headless browser that checks the experiment report page (bpf-tests/tests/report_page.rs)
    "chromium",
    // a real Redis for `chaos checkup --profile redis` (bpf-tests/tests/checkup.rs)
    "redis-server",
    "redis-tools",
    // a real PostgreSQL for `chaos checkup --profile postgresql`
    // (bpf-tests/tests/checkup_postgresql.rs): the server package (postgresql-15 on Debian 12)
    // ships initdb, postgres and pgbench, and pulls in the client (psql, pg_isready);
    // postgresql-contrib is not needed
    "postgresql",
];

/// rustup components needed on each toolchain: fmt and clippy on the default (stable) one, and
/// the eBPF crate needs the pinned nightly's (see [`nightly`]) `rust-src` (to build `core` for
/// the BPF target) and clippy.
const STABLE_COMPONENTS: &[&str] = &["rustfmt", "clippy"];
const NIGHTLY_COMPONENTS: &[&str] = &["rust-src", "clippy"];

const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// bpf-linker release built against [`LLVM_PREFIX`].
const BPF_LINKER_VERSION: &str = "0.13.0";

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Say what is already installed, too.
    Normal,
    /// Print only what gets installed.
    Quiet,
}

pub fn run(verbosity: Verbosity) -> Result<()> {
    apt_packages(verbosity)?;
    rust_toolchains(verbosity)?;
    bpf_linker(verbosity)?;
    schemathesis(verbosity)?;
    if verbosity == Verbosity::Normal {
        println!("setup: everything is installed");
    }
    Ok(())
}

/// Packages of `APT_PACKAGES` that dpkg does not report as installed.
fn missing_apt_packages() -> Result<Vec<&'static str>> {
    // dpkg-query exits 1 when a package is unknown but still prints the known ones.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Status}\\n"])
        .args(APT_PACKAGES)
        .output()
        .context("running dpkg-query (is this Debian?)")?;
    let installed: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, status) = l.split_once(' ')?;
            (status == "installed").then(|| name.split(':').next().unwrap_or(name).to_owned())
        })
        .collect();
    Ok(APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed.contains(*p))
        .collect())
}

fn apt_packages(verbosity: Verbosity) -> Result<()> {
    let missing = missing_apt_packages()?;
    if missing.is_empty() {
        if verbosity == Verbosity::Normal {
            println!("setup: apt packages installed");
        }
        return Ok(());
    }
    println!("setup: installing apt packages: {}", missing.join(" "));
    let sudo = !is_root();
    let apt = |args: &[&str]| {
        let mut c = if sudo {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        } else {
            Command::new("apt-get")
        };
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    cmd::run(&mut apt(&["update"]))?;
    let mut install = apt(&["install", "-y", "--no-install-recommends"]);
    install.args(&missing);
    cmd::run(&mut install)?;
    let still = missing_apt_packages()?;
    if !still.is_empty() {
        bail!(
            "apt packages still missing after install: {}",
            still.join(" ")
        );
    }
    Ok(())
}

fn installed_components(toolchain: Option<&str>) -> Result<Option<BTreeSet<String>>> {
    let mut c = Command::new("rustup");
    if let Some(t) = toolchain {
        c.arg(format!("+{t}"));
    }
    let out = c
        .args(["component", "list", "--installed"])
        .output()
        .context("running rustup (install it from https://rustup.rs)")?;
    if !out.status.success() {
        return Ok(None); // toolchain not installed
    }
    Ok(Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            // "clippy-x86_64-unknown-linux-gnu" -> "clippy"; "rust-src" stays.
            .map(|l| {
                l.trim()
                    .trim_end_matches("-x86_64-unknown-linux-gnu")
                    .to_owned()
            })
            .collect(),
    ))
}

/// The nightly that builds the kernel programs, as `chaos-ebpf/rust-toolchain.toml` pins it
/// (its LLVM must not be newer than bpf-linker's LLVM 22; the file says why).
pub fn nightly() -> Result<String> {
    let path = cmd::workspace_root().join("chaos-ebpf/rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let file: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    file.get("toolchain")
        .and_then(|t| t.get("channel"))
        .and_then(|c| c.as_str())
        .map(str::to_owned)
        .with_context(|| format!("{}: no [toolchain] channel", path.display()))
}

fn rust_toolchains(verbosity: Verbosity) -> Result<()> {
    let nightly = nightly()?;
    for (toolchain, wanted) in [
        (None, STABLE_COMPONENTS),
        (Some(nightly.as_str()), NIGHTLY_COMPONENTS),
    ] {
        let name = toolchain.unwrap_or("default");
        let missing: Vec<&str> = match installed_components(toolchain)? {
            Some(have) => wanted
                .iter()
                .copied()
                .filter(|c| !have.contains(*c))
                .collect(),
            None => wanted.to_vec(),
        };
        if missing.is_empty() {
            if verbosity == Verbosity::Normal {
                println!("setup: {name} toolchain has {}", wanted.join(", "));
            }
            continue;
        }
        println!(
            "setup: installing {} on the {name} toolchain",
            missing.join(", ")
        );
        match toolchain {
            Some(t) => {
                let mut c = Command::new("rustup");
                c.args(["toolchain", "install", t, "--profile", "minimal"]);
                for comp in &missing {
                    c.args(["--component", comp]);
                }
                cmd::run(&mut c)?;
            }
            None => {
                let mut c = Command::new("rustup");
                c.args(["component", "add"]).args(&missing);
                cmd::run(&mut c)?;
            }
        }
    }
    Ok(())
}

fn bpf_linker(verbosity: Verbosity) -> Result<()> {
    // `main` put ~/.cargo/bin on PATH.
    if cmd::have("bpf-linker") {
        if verbosity == Verbosity::Normal {
            println!("setup: bpf-linker installed");
        }
        return Ok(());
    }
    println!("setup: building bpf-linker against LLVM 22 (takes a few minutes)");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![std::path::PathBuf::from(format!("{LLVM_PREFIX}/bin"))];
    dirs.extend(std::env::split_paths(&path));
    cmd::run(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                // The version verified with the pinned nightly (chaos-ebpf/rust-toolchain.toml)
                // and LLVM 22; a newer one may drop the llvm-22 feature.
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("PATH", std::env::join_paths(dirs)?)
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX),
    )?;
    if !cmd::have("bpf-linker") {
        bail!("bpf-linker installed but not found on PATH");
    }
    Ok(())
}

/// schemathesis (PyPI), pinned by `bpf-tests/schemathesis-requirements.txt`, in a venv under
/// target/ where `bpf-tests/tests/daemon_schema.rs` looks for it (and installs it itself when
/// missing, so this only moves the download to setup time).
fn schemathesis(verbosity: Verbosity) -> Result<()> {
    let root = cmd::workspace_root();
    let requirements = root.join("bpf-tests/schemathesis-requirements.txt");
    let pinned = std::fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let version = pinned
        .lines()
        .find_map(|l| l.trim().strip_prefix("schemathesis=="))
        .context("no schemathesis==VERSION in the requirements")?;
    let venv = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("schemathesis-venv");
    let exe = venv.join("bin/schemathesis");
    let have = Command::new(&exe)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(version));
    if have {
        if verbosity == Verbosity::Normal {
            println!("setup: schemathesis {version} installed");
        }
        return Ok(());
    }
    println!(
        "setup: installing schemathesis {version} into {}",
        venv.display()
    );
    cmd::run(
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )?;
    cmd::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements),
    )
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
