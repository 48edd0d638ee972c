//! Reading `struct bio` and `struct request`: device, operation, first sector, size and the
//! cgroup that owns the I/O.
//!
//! Offsets come from the kernel's BTF through load-time globals (`chaos_common::block::offsets`,
//! set by the loader from `chaos_user::btf::block_offsets`), and every field is read with
//! `bpf_probe_read_kernel`, so one object serves every kernel's layout. A field that cannot be
//! read reads as zero.
//!
//! The cgroup is the bio's own (`bio -> bi_blkg -> blkcg -> css.cgroup -> kn -> id`), not the
//! current task's: writeback bios are submitted by kworkers but carry the blkg of the cgroup
//! that dirtied the pages. It is the cgroup of the io controller's hierarchy: the cgroup v2 id,
//! or on a cgroup v1 machine the inode number of the blkio hierarchy's directory.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use chaos_common::block::{kernel_dev, offsets::ABSENT, op};

/// Declares the load-time offset globals (see `chaos_common::block::offsets`).
macro_rules! offsets {
    ($($name:ident),+ $(,)?) => {
        $(
            #[unsafe(no_mangle)]
            pub(crate) static $name: u32 = 0;
        )+
    };
}
offsets!(
    CHAOS_OFF_BIO_BDEV,
    CHAOS_OFF_BDEV_DEV,
    CHAOS_OFF_BIO_OPF,
    CHAOS_OFF_BIO_SECTOR,
    CHAOS_OFF_BIO_SIZE,
    CHAOS_OFF_BIO_BLKG,
    CHAOS_OFF_BLKG_BLKCG,
    CHAOS_OFF_BLKCG_CGROUP,
    CHAOS_OFF_CGROUP_KN,
    CHAOS_OFF_KN_ID,
    CHAOS_OFF_RQ_BIO,
    CHAOS_OFF_RQ_SECTOR,
    CHAOS_OFF_RQ_LEN,
    CHAOS_OFF_RQ_FLAGS,
    CHAOS_OFF_RQ_PART,
    CHAOS_OFF_RQ_Q,
    CHAOS_OFF_Q_DISK,
    CHAOS_OFF_DISK_MAJOR,
    CHAOS_OFF_DISK_MINOR,
);

/// What a bio (or a request, through its first bio) is about.
#[derive(Clone, Copy, Default)]
pub(crate) struct BioInfo {
    /// The kernel's `dev_t` (`major << 20 | minor`) of the partition (or whole disk) it is for.
    pub dev: u32,
    /// The operation: `chaos_common::block::op` values (`bi_opf & op::MASK`).
    pub op: u32,
    /// First 512-byte sector.
    pub sector: u64,
    /// Bytes.
    pub bytes: u32,
    /// Id of the cgroup it is charged to; 0 when unknown (no `CONFIG_BLK_CGROUP`, no blkg).
    pub cgroup_id: u64,
}

/// A load-time global (volatile, so the loader's value is used rather than the initial 0).
#[inline(always)]
pub(crate) fn off(global: &'static u32) -> u32 {
    // SAFETY: reading a plain static.
    unsafe { core::ptr::read_volatile(global) }
}

/// Reads a `T` at `base + offset` in kernel memory; zero for a null base, an absent field or a
/// failed read. (Zero, not an `Option`: LLVM leaves the payload of a `None` undefined, carries
/// it in a register anyway, and the verifier refuses to read an uninitialised register.)
#[inline(always)]
pub(crate) fn read<T: Default>(base: *const u8, offset: u32) -> T {
    if base.is_null() || offset == ABSENT {
        return T::default();
    }
    // SAFETY: the helper checks the address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T) }
        .unwrap_or_default()
}

/// Reads a kernel pointer at `base + offset` (null if unreadable).
#[inline(always)]
pub(crate) fn read_ptr(base: *const u8, offset: u32) -> *const u8 {
    read::<u64>(base, offset) as *const u8
}

/// The kernel `dev_t` of a `struct block_device *` (0 for null).
#[inline(always)]
pub(crate) fn bdev_dev(bdev: *const u8) -> u32 {
    read(bdev, off(&CHAOS_OFF_BDEV_DEV))
}

/// The kernel `dev_t` of the partition (or whole disk) `bio` (`struct bio *`) is for.
#[inline(always)]
pub(crate) fn bio_dev(bio: *const u8) -> u32 {
    bdev_dev(read_ptr(bio, off(&CHAOS_OFF_BIO_BDEV)))
}

/// The operation of `bio` (`op` values).
#[inline(always)]
pub(crate) fn bio_op(bio: *const u8) -> u32 {
    read::<u32>(bio, off(&CHAOS_OFF_BIO_OPF)) & op::MASK
}

/// The id of the cgroup `bio` is charged to (its blkg's), 0 when unknown.
#[inline(always)]
pub(crate) fn bio_cgroup_id(bio: *const u8) -> u64 {
    let blkg = read_ptr(bio, off(&CHAOS_OFF_BIO_BLKG));
    let blkcg = read_ptr(blkg, off(&CHAOS_OFF_BLKG_BLKCG));
    let cgroup = read_ptr(blkcg, off(&CHAOS_OFF_BLKCG_CGROUP));
    let kn = read_ptr(cgroup, off(&CHAOS_OFF_CGROUP_KN));
    read(kn, off(&CHAOS_OFF_KN_ID))
}

/// Everything about `bio` (`struct bio *`).
#[inline(always)]
pub(crate) fn read_bio(bio: *const u8) -> BioInfo {
    BioInfo {
        dev: bio_dev(bio),
        op: bio_op(bio),
        sector: read(bio, off(&CHAOS_OFF_BIO_SECTOR)),
        bytes: read(bio, off(&CHAOS_OFF_BIO_SIZE)),
        cgroup_id: bio_cgroup_id(bio),
    }
}

/// The kernel `dev_t` of the partition `rq` (`struct request *`) is for; the whole disk's when
/// it has none (flushes, passthrough) or the kernel does not say.
#[inline(always)]
pub(crate) fn request_dev(rq: *const u8) -> u32 {
    let part = read_ptr(rq, off(&CHAOS_OFF_RQ_PART));
    if !part.is_null() {
        return bdev_dev(part);
    }
    let queue = read_ptr(rq, off(&CHAOS_OFF_RQ_Q));
    let disk = read_ptr(queue, off(&CHAOS_OFF_Q_DISK));
    if disk.is_null() {
        return 0;
    }
    let major: u32 = read(disk, off(&CHAOS_OFF_DISK_MAJOR));
    let minor: u32 = read(disk, off(&CHAOS_OFF_DISK_MINOR));
    kernel_dev(major, minor)
}

/// The operation of `rq` (`op` values).
#[inline(always)]
pub(crate) fn request_op(rq: *const u8) -> u32 {
    read::<u32>(rq, off(&CHAOS_OFF_RQ_FLAGS)) & op::MASK
}

/// Bytes left in `rq` (all of it until it starts completing).
#[inline(always)]
pub(crate) fn request_bytes(rq: *const u8) -> u32 {
    read(rq, off(&CHAOS_OFF_RQ_LEN))
}

/// The cgroup `rq` is charged to: its first bio's; 0 without a bio (flushes) or when unknown.
#[inline(always)]
pub(crate) fn request_cgroup_id(rq: *const u8) -> u64 {
    bio_cgroup_id(read_ptr(rq, off(&CHAOS_OFF_RQ_BIO)))
}

/// Everything about `rq` (`struct request *`), in the terms of a bio.
#[inline(always)]
pub(crate) fn read_request(rq: *const u8) -> BioInfo {
    BioInfo {
        dev: request_dev(rq),
        op: request_op(rq),
        sector: read(rq, off(&CHAOS_OFF_RQ_SECTOR)),
        bytes: request_bytes(rq),
        cgroup_id: request_cgroup_id(rq),
    }
}
