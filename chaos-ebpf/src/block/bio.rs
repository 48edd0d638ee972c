//! Reading `struct bio` and `struct request`: device, operation, first sector, size and the
//! cgroup that owns the I/O.
//!
//! Offsets come from the kernel's BTF through load-time globals (`chaos_common::block::offsets`,
//! set by the loader from `chaos_user::btf::block_offsets`), and every field is read with
//! `bpf_probe_read_kernel`, so one object serves every kernel's layout. A field that cannot be
//! read reads as zero. A request's first bytes are read at once ([`Request`]).
//!
//! The cgroup is the bio's own (`bio -> bi_blkg -> blkcg -> css.cgroup -> kn -> id`), not the
//! current task's: writeback bios are submitted by kworkers but carry the blkg of the cgroup
//! that dirtied the pages. It is the cgroup of the io controller's hierarchy: the cgroup v2 id,
//! or on a cgroup v1 machine the inode number of the blkio hierarchy's directory.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, generated},
    macros::map,
    maps::PerCpuArray,
};
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
    CHAOS_OFF_RQ_START,
    CHAOS_OFF_RQ_FLAGS,
    CHAOS_OFF_RQ_PART,
    CHAOS_OFF_RQ_Q,
    CHAOS_OFF_Q_DISK,
    CHAOS_OFF_DISK_MAJOR,
    CHAOS_OFF_DISK_MINOR,
);

/// What a bio is about.
#[allow(dead_code, reason = "for the io fail programs (should_fail_bio)")]
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
#[allow(dead_code, reason = "for the io fail programs (should_fail_bio)")]
pub(crate) fn bio_dev(bio: *const u8) -> u32 {
    bdev_dev(read_ptr(bio, off(&CHAOS_OFF_BIO_BDEV)))
}

/// The operation of `bio` (`op` values).
#[inline(always)]
#[allow(dead_code, reason = "for the io fail programs (should_fail_bio)")]
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
#[allow(dead_code, reason = "for the io fail programs (should_fail_bio)")]
pub(crate) fn read_bio(bio: *const u8) -> BioInfo {
    BioInfo {
        dev: bio_dev(bio),
        op: bio_op(bio),
        sector: read(bio, off(&CHAOS_OFF_BIO_SECTOR)),
        bytes: read(bio, off(&CHAOS_OFF_BIO_SIZE)),
        cgroup_id: bio_cgroup_id(bio),
    }
}

/// 8-byte words of a `struct request` read at once (it is larger on every kernel): the fields
/// the measurement needs lie within them, so one helper call replaces one per field.
const RQ_WORDS: usize = 16;

/// The start of the request being looked at, one per CPU (a program does not nest on its CPU).
/// In a map rather than on the stack, so the compiled code neither zeroes nor copies it (it did,
/// byte by byte: a thousand instructions per request).
#[map(name = "CHAOS_IO_RQ")]
static CHAOS_IO_RQ: PerCpuArray<[u64; RQ_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// A `struct request`, its first [`RQ_WORDS`] words read.
pub(crate) struct Request {
    base: *const u8,
    /// The words read (null if the scratch map could not be looked up).
    head: *const [u64; RQ_WORDS],
}

impl Request {
    /// Reads the start of `rq` (`struct request *`).
    #[inline(always)]
    pub(crate) fn read(rq: *const u8) -> Request {
        let head = CHAOS_IO_RQ.get_ptr_mut(0).unwrap_or(core::ptr::null_mut());
        if !head.is_null() {
            // SAFETY: `head` is this CPU's map value of the size given; the helper checks the
            // source address and zeroes the destination when it cannot read it.
            unsafe {
                generated::bpf_probe_read_kernel(
                    head.cast(),
                    core::mem::size_of::<[u64; RQ_WORDS]>() as u32,
                    rq.cast(),
                )
            };
        }
        Request { base: rq, head }
    }

    /// Whether the field at `offset`, of `size` bytes, lies aligned in the words read. The
    /// offsets are constants to the verifier (the loader freezes them), so the checks cost
    /// nothing at run time. (A bool, not an `Option` of the word: see `read`.)
    #[inline(always)]
    fn in_head(&self, offset: u32, size: u32) -> bool {
        offset != ABSENT
            && offset.is_multiple_of(size)
            && ((offset / 8) as usize) < RQ_WORDS
            && !self.head.is_null()
    }

    /// The word holding `offset`, which [`Request::in_head`] accepted.
    #[inline(always)]
    fn word(&self, offset: u32) -> u64 {
        // SAFETY: a map value of RQ_WORDS words, and the index is below RQ_WORDS.
        unsafe { (*self.head)[(offset / 8) as usize % RQ_WORDS] }
    }

    /// The pointer or u64 at `offset`.
    #[inline(always)]
    fn u64_at(&self, offset: u32) -> u64 {
        if self.in_head(offset, 8) {
            self.word(offset)
        } else {
            read(self.base, offset)
        }
    }

    /// The u32 at `offset`.
    #[inline(always)]
    fn u32_at(&self, offset: u32) -> u32 {
        if !self.in_head(offset, 4) {
            return read(self.base, offset);
        }
        let w = self.word(offset);
        if offset.is_multiple_of(8) {
            w as u32
        } else {
            (w >> 32) as u32
        }
    }

    /// The kernel `dev_t` of the partition it is for; the whole disk's when it has none
    /// (flushes, passthrough) or the kernel does not say.
    #[inline(always)]
    pub(crate) fn dev(&self) -> u32 {
        let part = self.u64_at(off(&CHAOS_OFF_RQ_PART)) as *const u8;
        if !part.is_null() {
            return bdev_dev(part);
        }
        let queue = self.u64_at(off(&CHAOS_OFF_RQ_Q)) as *const u8;
        let disk = read_ptr(queue, off(&CHAOS_OFF_Q_DISK));
        if disk.is_null() {
            return 0;
        }
        let major: u32 = read(disk, off(&CHAOS_OFF_DISK_MAJOR));
        let minor: u32 = read(disk, off(&CHAOS_OFF_DISK_MINOR));
        kernel_dev(major, minor)
    }

    /// Its operation (`op` values).
    #[inline(always)]
    pub(crate) fn op(&self) -> u32 {
        self.u32_at(off(&CHAOS_OFF_RQ_FLAGS)) & op::MASK
    }

    /// Bytes left in it (all of them until it starts completing).
    #[inline(always)]
    pub(crate) fn bytes(&self) -> u32 {
        self.u32_at(off(&CHAOS_OFF_RQ_LEN))
    }

    /// The cgroup it is charged to: its first bio's; 0 without a bio (flushes) or when unknown.
    #[inline(always)]
    pub(crate) fn cgroup_id(&self) -> u64 {
        bio_cgroup_id(self.u64_at(off(&CHAOS_OFF_RQ_BIO)) as *const u8)
    }

    /// When the block layer made it (`ktime_get_ns`), 0 if it keeps no time for it.
    #[inline(always)]
    pub(crate) fn start(&self) -> u64 {
        self.u64_at(off(&CHAOS_OFF_RQ_START))
    }

    /// Its first 512-byte sector.
    #[inline(always)]
    #[allow(dead_code, reason = "for the block fault programs")]
    pub(crate) fn sector(&self) -> u64 {
        self.u64_at(off(&CHAOS_OFF_RQ_SECTOR))
    }
}

/// Reads through BTF-typed pointers: a `tp_btf` program's arguments and the pointers loaded
/// from them. Plain loads, which the verifier checks against the kernel's BTF (the offsets are
/// constants to it) and the JIT guards against faults, instead of a helper call per field.
pub(crate) mod typed {
    use chaos_common::block::{kernel_dev, offsets::ABSENT, op};

    use super::{
        CHAOS_IO_RQ, CHAOS_OFF_BDEV_DEV, CHAOS_OFF_BIO_BLKG, CHAOS_OFF_BLKCG_CGROUP,
        CHAOS_OFF_BLKG_BLKCG, CHAOS_OFF_CGROUP_KN, CHAOS_OFF_DISK_MAJOR, CHAOS_OFF_DISK_MINOR,
        CHAOS_OFF_KN_ID, CHAOS_OFF_Q_DISK, CHAOS_OFF_RQ_BIO, CHAOS_OFF_RQ_FLAGS, CHAOS_OFF_RQ_LEN,
        CHAOS_OFF_RQ_PART, CHAOS_OFF_RQ_Q, CHAOS_OFF_RQ_START, off,
    };

    /// The `T` at `base + offset`; zero for a null base or an absent field. (A faulting
    /// address reads as zero too: the JIT's exception table.)
    #[inline(always)]
    fn load<T: Copy + Default>(base: *const u8, offset: u32) -> T {
        if base.is_null() || offset == ABSENT {
            return T::default();
        }
        // SAFETY: a BTF-typed kernel pointer: the verifier checks the field at this offset,
        // and a bad address reads as zero instead of faulting.
        unsafe { core::ptr::read_volatile(base.add(offset as usize).cast::<T>()) }
    }

    /// The pointer at `base + offset` (still typed for the verifier).
    #[inline(always)]
    fn load_ptr(base: *const u8, offset: u32) -> *const u8 {
        load::<u64>(base, offset) as *const u8
    }

    /// The address `p` as a number. The verifier forbids arithmetic other than adding
    /// constants on a typed pointer (hashing it, for one), so it goes through this CPU's
    /// scratch map value and comes back as a plain scalar. 0 if the scratch is missing.
    #[inline(always)]
    pub(crate) fn address(p: *const u8) -> u64 {
        let Some(scratch) = CHAOS_IO_RQ.get_ptr_mut(0) else {
            return 0;
        };
        let word = scratch.cast::<u64>();
        // SAFETY: this CPU's map value, at least 8 bytes.
        unsafe {
            core::ptr::write_volatile(word, p as u64);
            core::ptr::read_volatile(word)
        }
    }

    /// The kernel `dev_t` of the partition `rq` is for (see `super::Request::dev`).
    #[inline(always)]
    pub(crate) fn request_dev(rq: *const u8) -> u32 {
        let part = load_ptr(rq, off(&CHAOS_OFF_RQ_PART));
        if !part.is_null() {
            return load(part, off(&CHAOS_OFF_BDEV_DEV));
        }
        let queue = load_ptr(rq, off(&CHAOS_OFF_RQ_Q));
        let disk = load_ptr(queue, off(&CHAOS_OFF_Q_DISK));
        if disk.is_null() {
            return 0;
        }
        let major: u32 = load(disk, off(&CHAOS_OFF_DISK_MAJOR));
        let minor: u32 = load(disk, off(&CHAOS_OFF_DISK_MINOR));
        kernel_dev(major, minor)
    }

    /// The operation of `rq` (`op` values).
    #[inline(always)]
    pub(crate) fn request_op(rq: *const u8) -> u32 {
        load::<u32>(rq, off(&CHAOS_OFF_RQ_FLAGS)) & op::MASK
    }

    /// Bytes left in `rq`.
    #[inline(always)]
    pub(crate) fn request_bytes(rq: *const u8) -> u32 {
        load(rq, off(&CHAOS_OFF_RQ_LEN))
    }

    /// When the block layer made `rq`, 0 if it keeps no time for it.
    #[inline(always)]
    pub(crate) fn request_start(rq: *const u8) -> u64 {
        load(rq, off(&CHAOS_OFF_RQ_START))
    }

    /// The cgroup `rq` is charged to: its first bio's; 0 when unknown.
    #[inline(always)]
    pub(crate) fn request_cgroup_id(rq: *const u8) -> u64 {
        let bio = load_ptr(rq, off(&CHAOS_OFF_RQ_BIO));
        let blkg = load_ptr(bio, off(&CHAOS_OFF_BIO_BLKG));
        let blkcg = load_ptr(blkg, off(&CHAOS_OFF_BLKG_BLKCG));
        let cgroup = load_ptr(blkcg, off(&CHAOS_OFF_BLKCG_CGROUP));
        let kn = load_ptr(cgroup, off(&CHAOS_OFF_CGROUP_KN));
        load(kn, off(&CHAOS_OFF_KN_ID))
    }
}
