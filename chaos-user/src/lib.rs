//! The chaos fault injector's controller, as a library.
#![deny(missing_docs)]

/// The embedded kernel object.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/chaos-ebpf"));
