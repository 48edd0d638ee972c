//! ABI shared by the kernel programs in `chaos-ebpf` and the controller in `chaos-user`.
//!
//! Every type here is `#[repr(C)]` and lives in a BPF map, so its layout is the contract between
//! the two sides. One fault family per module, named the same on both sides.
#![no_std]
#![deny(missing_docs)]

pub mod block;
pub mod discover;
pub mod net;
pub mod syscall;

/// Probability scale: a rule fires when `bpf_get_prandom_u32() < threshold`, with the threshold in
/// `0..=PROBABILITY_ONE`. `PROBABILITY_ONE` (2^32) means always; 0 means never.
pub const PROBABILITY_ONE: u64 = 1 << 32;

/// Converts a percentage (0.0..=100.0) into a probability threshold on the
/// [`PROBABILITY_ONE`] scale.
pub fn percent_to_threshold(percent: f64) -> u64 {
    let clamped = if percent.is_nan() {
        0.0
    } else {
        percent.clamp(0.0, 100.0)
    };
    // `as` saturates and the value is within 0..=2^32, which f64 holds exactly.
    ((clamped / 100.0) * PROBABILITY_ONE as f64 + 0.5) as u64
}

/// Directory under the BPF filesystem where the controller pins the maps, programs and links that
/// must outlive one `chaos` process.
pub const PIN_ROOT: &str = "/sys/fs/bpf/chaos";

/// Prefix of every BPF program name the injector loads, so that tools (and the tests' oracle) can
/// tell ours apart. Kernel program names are limited to 15 characters.
pub const PROG_PREFIX: &str = "chaos_";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_bounds() {
        assert_eq!(percent_to_threshold(0.0), 0);
        assert_eq!(percent_to_threshold(100.0), PROBABILITY_ONE);
        assert_eq!(percent_to_threshold(50.0), PROBABILITY_ONE / 2);
        assert_eq!(percent_to_threshold(f64::NAN), 0);
        assert_eq!(percent_to_threshold(150.0), PROBABILITY_ONE);
    }
}
