//! Block I/O. `bio` reads the kernel's `bio` and `request` structures (device, operation,
//! sectors, size, cgroup) for every block program.

#[allow(
    dead_code,
    reason = "the readers serve the block programs (measurement, io fail) that use them"
)]
mod bio;
mod fail;
