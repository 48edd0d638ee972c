//! Block I/O. `bio` reads the kernel's `bio` and `request` structures (device, operation,
//! sectors, size, cgroup) for every block program; `fail` fails bios at `should_fail_bio`;
//! `iostat` measures latency, operations and bytes per device, cgroup and operation from the
//! block tracepoints.

mod bio;
mod fail;
mod iostat;
