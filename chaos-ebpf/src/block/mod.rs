//! Block I/O. `bio` reads the kernel's `bio` and `request` structures (device, operation,
//! sectors, size, cgroup) for every block program; `iostat` measures latency, operations and
//! bytes per device, cgroup and operation from the block tracepoints.

mod bio;
mod iostat;
