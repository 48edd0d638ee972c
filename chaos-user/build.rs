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
    aya_build::build_ebpf(
        [aya_build::Package {
            name: package.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
