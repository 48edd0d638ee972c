//! Offsets into kernel structures, read from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`): the syscall programs' path filters follow `file -> dentry ->
//! inode` and `task -> files -> fdtable` with `bpf_probe_read_kernel`, and these layouts differ
//! between kernels. The loader hands the offsets to the programs as globals. The block programs
//! read `bio` and `request` the same way ([`block_offsets`]).

use libbpf_rs::btf::{
    Btf, BtfType, TypeId,
    types::{Composite, MemberAttr},
};

use crate::error::{Error, Result};
use chaos_common::{block::offsets as block, syscall::offsets};

/// Each global with the struct and the member path (dots into nested members) it holds.
const FIELDS: &[(&str, &str, &str)] = &[
    (offsets::FILE_DENTRY, "file", "f_path.dentry"),
    (offsets::DENTRY_PARENT, "dentry", "d_parent"),
    (offsets::DENTRY_INODE, "dentry", "d_inode"),
    (offsets::INODE_INO, "inode", "i_ino"),
    (offsets::INODE_SB, "inode", "i_sb"),
    (offsets::SB_DEV, "super_block", "s_dev"),
    (offsets::TASK_FILES, "task_struct", "files"),
    (offsets::FILES_FDT, "files_struct", "fdt"),
    (offsets::FDT_MAX_FDS, "fdtable", "max_fds"),
    (offsets::FDT_FD, "fdtable", "fd"),
];

/// The path-filter offset globals for this kernel, as `(global, byte offset)`.
pub fn path_offsets() -> Result<Vec<(&'static str, u32)>> {
    let problem = |what: String| Error::Unsupported {
        what: "filter syscalls by path in the kernel".into(),
        why: what,
    };
    let btf = Btf::from_vmlinux()
        .map_err(|e| problem(format!("the kernel's BTF could not be read: {e}")))?;
    FIELDS
        .iter()
        .map(|&(global, ty, path)| {
            offset_of(&btf, ty, path)
                .map(|off| (global, off))
                .ok_or_else(|| problem(format!("no {ty}.{path} in the kernel's BTF")))
        })
        .collect()
}

/// Block fields every block program needs: (global, struct, member path).
const BLOCK_FIELDS: &[(&str, &str, &str)] = &[
    (block::BIO_BDEV, "bio", "bi_bdev"),
    (block::BDEV_DEV, "block_device", "bd_dev"),
    (block::BIO_OPF, "bio", "bi_opf"),
    (block::BIO_SECTOR, "bio", "bi_iter.bi_sector"),
    (block::BIO_SIZE, "bio", "bi_iter.bi_size"),
    (block::RQ_BIO, "request", "bio"),
    (block::RQ_SECTOR, "request", "__sector"),
    (block::RQ_LEN, "request", "__data_len"),
    (block::RQ_START, "request", "start_time_ns"),
    (block::RQ_FLAGS, "request", "cmd_flags"),
    (block::RQ_Q, "request", "q"),
    (block::Q_DISK, "request_queue", "disk"),
    (block::DISK_MAJOR, "gendisk", "major"),
    (block::DISK_MINOR, "gendisk", "first_minor"),
];

/// The chain from a bio to its cgroup id, present only with `CONFIG_BLK_CGROUP`: all or none.
const BLOCK_CGROUP_FIELDS: &[(&str, &str, &str)] = &[
    (block::BIO_BLKG, "bio", "bi_blkg"),
    (block::BLKG_BLKCG, "blkcg_gq", "blkcg"),
    (block::BLKCG_CGROUP, "blkcg", "css.cgroup"),
    (block::CGROUP_KN, "cgroup", "kn"),
    (block::KN_ID, "kernfs_node", "id"),
];

/// The block programs' offset globals for this kernel, as `(global, byte offset)`.
///
/// Without `CONFIG_BLK_CGROUP` (no `bio.bi_blkg`) the cgroup chain is set to
/// [`block::ABSENT`] and the programs report cgroup id 0 (unknown); without `request.part`
/// (kernels before 5.11) [`block::RQ_PART`] is `ABSENT` and a request counts on its whole disk.
/// Any other missing field is [`Error::Unsupported`].
pub fn block_offsets() -> Result<Vec<(&'static str, u32)>> {
    let problem = |what: String| Error::Unsupported {
        what: "read block I/O requests in the kernel".into(),
        why: what,
    };
    let btf = Btf::from_vmlinux()
        .map_err(|e| problem(format!("the kernel's BTF could not be read: {e}")))?;
    let mut found = BLOCK_FIELDS
        .iter()
        .map(|&(global, ty, path)| {
            offset_of(&btf, ty, path)
                .map(|off| (global, off))
                .ok_or_else(|| problem(format!("no {ty}.{path} in the kernel's BTF")))
        })
        .collect::<Result<Vec<_>>>()?;
    let chain: Option<Vec<_>> = BLOCK_CGROUP_FIELDS
        .iter()
        .map(|&(global, ty, path)| offset_of(&btf, ty, path).map(|off| (global, off)))
        .collect();
    match chain {
        Some(chain) => found.extend(chain),
        None => found.extend(BLOCK_CGROUP_FIELDS.iter().map(|f| (f.0, block::ABSENT))),
    }
    found.push((
        block::RQ_PART,
        offset_of(&btf, "request", "part").unwrap_or(block::ABSENT),
    ));
    Ok(found)
}

/// The extra load-time globals of the `io fail` program (`chaos_common::block::fail_globals`):
/// `block_device.bd_disk`, the kernfs parent link (renamed `__parent` in 6.15), and the
/// `REQ_PREFLUSH` / `REQ_FUA` bits of `bi_opf`, whose positions move between kernels.
pub fn bio_fail_globals() -> Result<Vec<(&'static str, u32)>> {
    use chaos_common::block::fail_globals as g;
    let problem = |what: String| Error::Unsupported {
        what: "fail block I/O in the kernel".into(),
        why: what,
    };
    let btf = Btf::from_vmlinux()
        .map_err(|e| problem(format!("the kernel's BTF could not be read: {e}")))?;
    let field = |ty: &str, names: &[&str]| {
        names
            .iter()
            .find_map(|n| offset_of(&btf, ty, n))
            .ok_or_else(|| problem(format!("no {ty}.{} in the kernel's BTF", names[0])))
    };
    let flag = |name: &str| -> Result<u32> {
        let e: libbpf_rs::btf::types::Enum<'_> = btf
            .type_by_name("req_flag_bits")
            .ok_or_else(|| problem("no enum req_flag_bits in the kernel's BTF".into()))?;
        let bit = e
            .iter()
            .find(|m| m.name.is_some_and(|n| n == name))
            .map(|m| m.value)
            .ok_or_else(|| problem(format!("no {name} in enum req_flag_bits")))?;
        u32::try_from(bit)
            .ok()
            .filter(|b| *b < 32)
            .map(|b| 1u32 << b)
            .ok_or_else(|| problem(format!("{name} is bit {bit}, outside bi_opf")))
    };
    Ok(vec![
        (g::BDEV_DISK, field("block_device", &["bd_disk"])?),
        (g::KN_PARENT, field("kernfs_node", &["parent", "__parent"])?),
        (g::PREFLUSH_FLAG, flag("__REQ_PREFLUSH")?),
        (g::FUA_FLAG, flag("__REQ_FUA")?),
    ])
}

/// Byte offset of member `path` (`a.b.c`) in struct `ty`.
fn offset_of(btf: &Btf<'_>, ty: &str, path: &str) -> Option<u32> {
    let mut composite: Composite<'_> = btf.type_by_name(ty)?;
    let mut total = 0;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let (off, member_ty) = member(btf, &composite, part)?;
        total += off;
        if parts.peek().is_some() {
            composite = composite_of(btf, member_ty)?;
        }
    }
    Some(total)
}

/// Byte offset and type of member `name` of `composite`, looking through anonymous structs and
/// unions.
fn member(btf: &Btf<'_>, composite: &Composite<'_>, name: &str) -> Option<(u32, TypeId)> {
    for m in composite.iter() {
        let bits = match m.attr {
            MemberAttr::Normal { offset } | MemberAttr::BitField { offset, .. } => offset,
        };
        match m.name.and_then(|n| n.to_str()).filter(|n| !n.is_empty()) {
            Some(n) if n == name => return Some((bits / 8, m.ty)),
            Some(_) => {}
            None => {
                if let Some(inner) = composite_of(btf, m.ty)
                    && let Some((off, ty)) = member(btf, &inner, name)
                {
                    return Some((bits / 8 + off, ty));
                }
            }
        }
    }
    None
}

/// The struct or union type `id` names, through typedefs and qualifiers.
fn composite_of<'b>(btf: &'b Btf<'_>, id: TypeId) -> Option<Composite<'b>> {
    let ty: BtfType<'_> = btf.type_by_id(id)?;
    Composite::try_from(ty.skip_mods_and_typedefs()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_of_this_kernel() {
        let Ok(offsets) = path_offsets() else {
            eprintln!("no kernel BTF here");
            return;
        };
        assert_eq!(offsets.len(), FIELDS.len());
        // d_parent and d_inode are near the start of struct dentry on every kernel.
        let get = |g: &str| offsets.iter().find(|(n, _)| *n == g).unwrap().1;
        assert!(get(offsets::DENTRY_PARENT) < 64, "{offsets:?}");
        assert!(get(offsets::DENTRY_INODE) < 64, "{offsets:?}");
        assert_ne!(get(offsets::DENTRY_PARENT), get(offsets::DENTRY_INODE));
        assert!(get(offsets::FILE_DENTRY) > 0);
    }

    #[test]
    fn block_offsets_of_this_kernel() {
        let Ok(offsets) = block_offsets() else {
            eprintln!("no kernel BTF here");
            return;
        };
        assert_eq!(
            offsets.len(),
            BLOCK_FIELDS.len() + BLOCK_CGROUP_FIELDS.len() + 1
        );
        let get = |g: &str| offsets.iter().find(|(n, _)| *n == g).unwrap().1;
        // bi_bdev follows bi_next; the sector and size are the start of bi_iter.
        assert_eq!(get(block::BIO_BDEV), 8, "{offsets:?}");
        assert_eq!(
            get(block::BIO_SIZE),
            get(block::BIO_SECTOR) + 8,
            "{offsets:?}"
        );
        // `request.q` is its first member; `css` is the first member of `blkcg`, `cgroup` the
        // first of `css`.
        assert_eq!(get(block::RQ_Q), 0);
        if get(block::BIO_BLKG) != block::ABSENT {
            assert_eq!(get(block::BLKCG_CGROUP), 0);
        }
    }
}
