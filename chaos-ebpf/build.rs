//! Rebuild the programs when the `bpf-linker` binary changes (an undeclared build dependency; see
//! aya-template's note on artifact dependencies).
fn main() {
    if let Ok(bpf_linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", bpf_linker.display());
    }
}
