//! The classic-BPF seccomp program of `chaos exec`: on x86_64, each planned syscall goes to the
//! supervisor (`SECCOMP_RET_USER_NOTIF`); every other call, and every call made through another
//! ABI (i386 `int 0x80`, whose numbers differ), runs untouched (`SECCOMP_RET_ALLOW`).
//!
//! ```text
//! 0      ld  [arch]
//! 1      jeq AUDIT_ARCH_X86_64, 0, -> allow
//! 2      ld  [nr]
//! 3..    jeq nr_i, -> notify, 0          (one per planned syscall)
//! allow: ret SECCOMP_RET_ALLOW
//! notify: ret SECCOMP_RET_USER_NOTIF
//! ```
//!
//! x32 calls (`nr | 0x4000_0000`) carry the x86_64 audit arch but never equal a planned number,
//! so they are allowed too.

use crate::error::{Error, Result};

/// `AUDIT_ARCH_X86_64` (`EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`).
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

/// Most syscalls one filter can name: a conditional jump reaches at most 255 instructions ahead.
pub const MAX_SYSCALLS: usize = 250;

/// Offset of `seccomp_data.nr`.
const OFFSET_NR: u32 = 0;
/// Offset of `seccomp_data.arch`.
const OFFSET_ARCH: u32 = 4;

// Classic BPF opcodes (linux/bpf_common.h).
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS (0x20)
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: BPF_JMP_JEQ_K,
        jt,
        jf,
        k,
    }
}

/// Builds the program for the syscall numbers `nrs` (x86_64; duplicates are dropped).
pub fn build(nrs: &[u32]) -> Result<Vec<libc::sock_filter>> {
    let mut unique: Vec<u32> = Vec::with_capacity(nrs.len());
    for nr in nrs {
        if !unique.contains(nr) {
            unique.push(*nr);
        }
    }
    if unique.is_empty() || unique.len() > MAX_SYSCALLS {
        return Err(Error::invalid(
            "syscall",
            format!(
                "{} system calls named; chaos exec takes 1 to {MAX_SYSCALLS}",
                unique.len()
            ),
            "name fewer calls in --syscall",
        ));
    }
    let n = unique.len();
    let mut prog = Vec::with_capacity(n + 5);
    prog.push(stmt(BPF_LD_W_ABS, OFFSET_ARCH));
    // Not x86_64: skip the load and the n comparisons, to `allow`.
    prog.push(jump(AUDIT_ARCH_X86_64, 0, (n + 1) as u8));
    prog.push(stmt(BPF_LD_W_ABS, OFFSET_NR));
    for (i, nr) in unique.iter().enumerate() {
        // Equal: skip the comparisons after this one and `allow`, to `notify`.
        prog.push(jump(*nr, (n - i) as u8, 0));
    }
    prog.push(stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
    prog.push(stmt(BPF_RET_K, libc::SECCOMP_RET_USER_NOTIF));
    Ok(prog)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `prog` on a `seccomp_data` with `arch` and `nr`: the three opcodes the builder uses.
    fn run(prog: &[libc::sock_filter], arch: u32, nr: u32) -> u32 {
        let mut pc = 0;
        let mut acc = 0u32;
        loop {
            let ins = prog[pc];
            match ins.code {
                BPF_LD_W_ABS => {
                    acc = match ins.k {
                        OFFSET_NR => nr,
                        OFFSET_ARCH => arch,
                        k => panic!("load at offset {k}"),
                    };
                    pc += 1;
                }
                BPF_JMP_JEQ_K => {
                    pc += 1 + usize::from(if acc == ins.k { ins.jt } else { ins.jf });
                }
                BPF_RET_K => return ins.k,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn notifies_only_planned_x86_64_calls() {
        let prog = build(&[257, 74, 257]).unwrap();
        assert_eq!(prog.len(), 7, "duplicates dropped");
        let notify = libc::SECCOMP_RET_USER_NOTIF;
        let allow = libc::SECCOMP_RET_ALLOW;
        assert_eq!(run(&prog, AUDIT_ARCH_X86_64, 257), notify);
        assert_eq!(run(&prog, AUDIT_ARCH_X86_64, 74), notify);
        assert_eq!(run(&prog, AUDIT_ARCH_X86_64, 0), allow);
        assert_eq!(run(&prog, AUDIT_ARCH_X86_64, 257 | 0x4000_0000), allow);
        // i386: the same numbers mean other calls.
        assert_eq!(run(&prog, 0x4000_0003, 257), allow);
    }

    #[test]
    fn longest_filter_jumps_stay_in_range() {
        let nrs: Vec<u32> = (0..MAX_SYSCALLS as u32).collect();
        let prog = build(&nrs).unwrap();
        for nr in [0, 1, MAX_SYSCALLS as u32 - 1] {
            assert_eq!(
                run(&prog, AUDIT_ARCH_X86_64, nr),
                libc::SECCOMP_RET_USER_NOTIF
            );
        }
        assert_eq!(run(&prog, AUDIT_ARCH_X86_64, 400), libc::SECCOMP_RET_ALLOW);
        assert_eq!(run(&prog, 3, 0), libc::SECCOMP_RET_ALLOW);
        let too_many: Vec<u32> = (0..=MAX_SYSCALLS as u32).collect();
        assert!(build(&too_many).is_err());
    }
}
