//! Kernel programs of the chaos fault injector. One fault family per module; the ABI they share
//! with user space lives in `chaos-common`.
#![no_std]
// BPF has atomic fetch-and-add, but the BPF target has no Rust atomic types: the intrinsic is
// the way to it (syscall rule counts must be exact across CPUs).
#![allow(internal_features)]
#![feature(core_intrinsics)]
#![no_main]

mod bits;
mod block;
mod discover;
mod net;
mod syscall;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL-compatible: `bpf_send_signal`, `bpf_override_return` and friends are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
