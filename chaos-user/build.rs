//! Builds the kernel programs of `chaos-ebpf` for the BPF target with aya-build and leaves the
//! object in `OUT_DIR`, where `src/ebpf.rs` embeds it.
//!
//! `AYA_BUILD_SKIP=1` (set by `cargo xtask` for clippy and docs) writes an empty stub instead, so
//! analysis needs neither nightly nor bpf-linker; a binary built that way refuses to arm faults
//! and says why.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if skip {
        fs::write(out_dir.join("chaos-ebpf"), b"").context("writing the eBPF stub")?;
        return Ok(());
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let package = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "chaos-ebpf")
        .ok_or_else(|| anyhow!("chaos-ebpf package not found"))?;
    let root_dir = package
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", package.manifest_path))?;
    let toolchain = pinned_nightly(root_dir.as_std_path())?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: package.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}

/// The nightly `chaos-ebpf/rust-toolchain.toml` pins (its LLVM must not be newer than
/// bpf-linker's; the file says why).
fn pinned_nightly(ebpf_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = ebpf_dir.join("rust-toolchain.toml");
    println!("cargo:rerun-if-changed={}", path.display());
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let file: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    file.get("toolchain")
        .and_then(|t| t.get("channel"))
        .and_then(|c| c.as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{}: no [toolchain] channel", path.display()))
}
