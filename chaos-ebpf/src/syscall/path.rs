//! Path filters: is a file under one of the directories a rule names? The file's dentry is
//! walked up through `d_parent`, and each ancestor's (file system, inode) is looked up in
//! `CHAOS_SYS_PATH`. The controller also enters the root of every mount below a rule's
//! directory, since the walk stops at the root of the file's own file system.
//!
//! Struct offsets come from the kernel's BTF through load-time globals, and every field is read
//! with `bpf_probe_read_kernel`, so one object serves every kernel layout.

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel},
    macros::map,
    maps::{Array, HashMap},
};
use chaos_common::syscall::{MAX_PATH_DEPTH, SysPathKey};

/// (file system, inode) of a rule's directory or of a mount root below it -> rule slots.
#[map(name = "CHAOS_SYS_PATH")]
static CHAOS_SYS_PATH: HashMap<SysPathKey, u64> = HashMap::pinned(1024, 0);

/// Index 0: the rule slots that filter by path (written by the controller).
#[map(name = "CHAOS_SYS_PATHS")]
static CHAOS_SYS_PATHS: Array<u64> = Array::pinned(1, 0);

/// Declares the load-time offset globals (see `chaos_common::syscall::offsets`).
macro_rules! offsets {
    ($($name:ident),+ $(,)?) => {
        $(
            #[unsafe(no_mangle)]
            static $name: u32 = 0;
        )+
    };
}
offsets!(
    CHAOS_OFF_FILE_DENTRY,
    CHAOS_OFF_DENTRY_PARENT,
    CHAOS_OFF_DENTRY_INODE,
    CHAOS_OFF_INODE_INO,
    CHAOS_OFF_INODE_SB,
    CHAOS_OFF_SB_DEV,
    CHAOS_OFF_TASK_FILES,
    CHAOS_OFF_FILES_FDT,
    CHAOS_OFF_FDT_MAX_FDS,
    CHAOS_OFF_FDT_FD,
);

/// A load-time global (volatile, so the loader's value is used rather than the initial 0).
fn off(global: &'static u32) -> usize {
    // SAFETY: reading a plain static.
    unsafe { core::ptr::read_volatile(global) as usize }
}

/// Reads a `T` at `base + offset` in kernel memory; zero for a null base or a failed read.
/// (Zero, not an `Option`: LLVM leaves the payload of a `None` undefined, carries it in a
/// register anyway, and the verifier refuses to read an uninitialised register.)
fn read<T: Default>(base: *const u8, offset: usize) -> T {
    if base.is_null() {
        return T::default();
    }
    // SAFETY: the helper checks the address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset) as *const T) }.unwrap_or_default()
}

/// Reads a kernel pointer at `base + offset` (null if unreadable).
fn read_ptr(base: *const u8, offset: usize) -> *const u8 {
    read::<u64>(base, offset) as *const u8
}

/// The rule slots that filter by path.
pub(super) fn path_rules() -> u64 {
    CHAOS_SYS_PATHS.get(0).copied().unwrap_or(0)
}

/// The dentry of `file` (`struct file *`), or null.
pub(super) fn file_dentry(file: *const u8) -> *const u8 {
    read_ptr(file, off(&CHAOS_OFF_FILE_DENTRY))
}

/// The dentry of the calling process's descriptor `fd`, or null.
pub(super) fn fd_dentry(fd: u64) -> *const u8 {
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let files = read_ptr(task, off(&CHAOS_OFF_TASK_FILES));
    let fdt = read_ptr(files, off(&CHAOS_OFF_FILES_FDT));
    let max: u32 = read(fdt, off(&CHAOS_OFF_FDT_MAX_FDS));
    if fd >= u64::from(max) {
        return core::ptr::null();
    }
    let fds = read_ptr(fdt, off(&CHAOS_OFF_FDT_FD));
    file_dentry(read_ptr(fds, fd as usize * 8))
}

/// The rule slots (among `wanted`) whose directories are ancestors of `dentry` (or it).
pub(super) fn bits(dentry: *const u8, wanted: u64) -> u64 {
    let mut found = 0u64;
    let mut d = dentry;
    let mut level = 0;
    while level < MAX_PATH_DEPTH && !d.is_null() && found & wanted != wanted {
        // A negative dentry (a name being created) has no inode: only its parents count.
        let inode = read_ptr(d, off(&CHAOS_OFF_DENTRY_INODE));
        if !inode.is_null() {
            let sb = read_ptr(inode, off(&CHAOS_OFF_INODE_SB));
            let key = SysPathKey {
                dev: u64::from(read::<u32>(sb, off(&CHAOS_OFF_SB_DEV))),
                ino: read(inode, off(&CHAOS_OFF_INODE_INO)),
            };
            // SAFETY: plain key.
            found |= unsafe { CHAOS_SYS_PATH.get(key) }.copied().unwrap_or(0);
        }
        let parent = read_ptr(d, off(&CHAOS_OFF_DENTRY_PARENT));
        // A file system's root is its own parent.
        d = if parent == d {
            core::ptr::null()
        } else {
            parent
        };
        level += 1;
    }
    found & wanted
}
