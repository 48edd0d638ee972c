//! Errors from BPF LSM hooks (kernels with `bpf` among their LSMs, e.g. Debian's 6.x): the hook
//! refuses the operation with `-errno`, and the syscall returns it. A hook does not know which
//! syscall reached it, so each program reads the number from the task's saved user registers
//! and the rules are keyed by syscall number as everywhere else.

use aya_ebpf::{
    helpers::{bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_task_pt_regs},
    macros::lsm,
    programs::LsmContext,
};
use chaos_common::syscall::via;

use super::{CHAOS_SYS_RULES, PT_REGS_ORIG_AX, current_tgid, judge, path};

/// The number of the syscall the current task is in (`u64::MAX` if unreadable).
fn current_nr() -> u64 {
    // SAFETY: helpers on the current task; the register read is checked by the helper.
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
        bpf_probe_read_kernel(regs.wrapping_add(PT_REGS_ORIG_AX) as *const u64).unwrap_or(u64::MAX)
    }
}

/// 0, read so that the compiler cannot fold it; the verifier knows it (read-only data is frozen).
#[unsafe(no_mangle)]
static CHAOS_LSM_ZERO: i32 = 0;

/// `-errno` in a form the verifier can bound to [-4095, 0], the range 6.12+ demands of LSM
/// programs: a subtraction from a known zero (a negation would lose the bounds), of a masked
/// value. Errnos are validated below 4096, so the mask changes none.
fn neg_errno(errno: i32) -> i32 {
    // SAFETY: reading a plain static.
    let zero = unsafe { core::ptr::read_volatile(&CHAOS_LSM_ZERO) };
    zero - (errno & 0xfff)
}

/// The hook's verdict: the previous BPF LSM program's refusal (argument `nargs`) stands;
/// otherwise `-errno` of the acting rule, or 0. `dentry` gives the file a path filter checks.
///
/// Inlined: the verifier lets an LSM program read its context only at a constant offset from
/// the context pointer in the program's own frame; in a called function LLVM adds the offset to
/// the pointer first ("dereference of modified ctx ptr", refused by 6.1 and 6.12).
#[inline(always)]
fn verdict(ctx: &LsmContext, nargs: usize, dentry: impl FnOnce() -> *const u8) -> i32 {
    let previous: i32 = ctx.arg(nargs);
    if previous != 0 {
        return neg_errno(previous.wrapping_neg());
    }
    let Some(tgid) = current_tgid() else {
        return 0;
    };
    judge(current_nr() as u32, via::LSM, tgid, true, dentry)
        .and_then(|slot| CHAOS_SYS_RULES.get(slot))
        .map_or(0, |rule| neg_errno(rule.errno))
}

/// The dentry of the hook's `struct file *` argument `n` (inlined, as [`verdict`]).
#[inline(always)]
fn file_arg(ctx: &LsmContext, n: usize) -> *const u8 {
    path::file_dentry(ctx.arg(n))
}

/// open, openat, openat2, creat.
#[lsm(hook = "file_open")]
pub fn chaos_lsm_file_open(ctx: LsmContext) -> i32 {
    verdict(&ctx, 1, || file_arg(&ctx, 0))
}

/// read, write and their vector and positioned forms.
#[lsm(hook = "file_permission")]
pub fn chaos_lsm_file_permission(ctx: LsmContext) -> i32 {
    verdict(&ctx, 2, || file_arg(&ctx, 0))
}

/// mmap (anonymous maps have no file: path rules never match them).
#[lsm(hook = "mmap_file")]
pub fn chaos_lsm_mmap_file(ctx: LsmContext) -> i32 {
    verdict(&ctx, 4, || file_arg(&ctx, 0))
}

/// socket; sockets the kernel makes for itself are left alone.
#[lsm(hook = "socket_create")]
pub fn chaos_lsm_socket_create(ctx: LsmContext) -> i32 {
    let kern: i32 = ctx.arg(3);
    if kern != 0 {
        return neg_errno(ctx.arg::<i32>(4).wrapping_neg());
    }
    verdict(&ctx, 4, core::ptr::null)
}

/// connect.
#[lsm(hook = "socket_connect")]
pub fn chaos_lsm_socket_connect(ctx: LsmContext) -> i32 {
    verdict(&ctx, 3, core::ptr::null)
}

/// bind.
#[lsm(hook = "socket_bind")]
pub fn chaos_lsm_socket_bind(ctx: LsmContext) -> i32 {
    verdict(&ctx, 3, core::ptr::null)
}

/// sendto, sendmsg, sendmmsg.
#[lsm(hook = "socket_sendmsg")]
pub fn chaos_lsm_socket_sendmsg(ctx: LsmContext) -> i32 {
    verdict(&ctx, 3, core::ptr::null)
}

/// recvfrom, recvmsg, recvmmsg.
#[lsm(hook = "socket_recvmsg")]
pub fn chaos_lsm_socket_recvmsg(ctx: LsmContext) -> i32 {
    verdict(&ctx, 4, core::ptr::null)
}

/// fork, vfork, clone, clone3 (the caller is the parent).
#[lsm(hook = "task_alloc")]
pub fn chaos_lsm_task_alloc(ctx: LsmContext) -> i32 {
    verdict(&ctx, 2, core::ptr::null)
}

/// unlink, unlinkat (the dentry being removed is argument 1).
#[lsm(hook = "inode_unlink")]
pub fn chaos_lsm_inode_unlink(ctx: LsmContext) -> i32 {
    verdict(&ctx, 2, || ctx.arg(1))
}

/// mkdir, mkdirat (the new, still negative, dentry is argument 1).
#[lsm(hook = "inode_mkdir")]
pub fn chaos_lsm_inode_mkdir(ctx: LsmContext) -> i32 {
    verdict(&ctx, 3, || ctx.arg(1))
}
