//! Bit tricks the verifier accepts.

/// Index of the lowest set bit of `x` (non-zero), by halving: BPF has no count-trailing-zeros.
pub fn lowest_bit(x: u64) -> u32 {
    let mut x = x;
    let mut n = 0;
    for shift in [32u32, 16, 8, 4, 2, 1] {
        let mask = (1u64 << shift) - 1;
        if x & mask == 0 {
            n += shift;
            x >>= shift;
        }
    }
    n
}
