//! The embedded kernel object and where its maps and links are pinned.
//!
//! Every program instance is loaded from the same object with its maps pinned by name under
//! [`MAP_PIN_DIR`], so all instances and every `chaos` process share one set of rule maps;
//! arming a fault is a map update.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData},
};
use chaos_common::PIN_ROOT;

use crate::{
    error::{Error, IoContext, Result},
    mounts,
};

/// The kernel programs, built by `build.rs` (empty in `AYA_BUILD_SKIP` builds).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/chaos-ebpf"));

/// Directory of the pinned maps.
pub const MAP_PIN_DIR: &str = "/sys/fs/bpf/chaos/maps";
/// Directory of the pinned links.
pub const LINK_PIN_DIR: &str = "/sys/fs/bpf/chaos/links";
/// Directory of the pinned programs (the shared TC instances).
pub const PROG_PIN_DIR: &str = "/sys/fs/bpf/chaos/progs";

/// Whether this binary carries its kernel programs.
pub fn has_object() -> bool {
    !EBPF_OBJECT.is_empty()
}

/// Loads the object with its maps pinned (created on first use, reused after) and globals set.
pub fn load(globals: &[(&str, u32)]) -> Result<Ebpf> {
    if !has_object() {
        return Err(Error::NoEbpfObject);
    }
    mounts::ensure_bpffs()?;
    for dir in [MAP_PIN_DIR, LINK_PIN_DIR, PROG_PIN_DIR] {
        std::fs::create_dir_all(dir).ctx(|| format!("creating {dir}"))?;
    }
    check_pinned_maps()?;
    let pidns = pid_namespace()?;
    let mut loader = EbpfLoader::new();
    // The kernel's BTF serves only CO-RE relocations here, which the object has none of so far:
    // skip that pass. (aya's `EbpfLoader::new` has parsed it already, ~15 ms; programs that
    // attach by BTF type name take [`vmlinux_btf`], parsed once per process.)
    loader.btf(if facts()?.btf_relocations {
        Some(vmlinux_btf()?)
    } else {
        None
    });
    loader.default_map_pin_directory(MAP_PIN_DIR);
    for (name, value) in globals.iter().chain(&pidns) {
        loader.override_global(name, value, true);
    }
    loader
        .load(EBPF_OBJECT)
        .map_err(|e| Error::bpf("loading the chaos eBPF object", e))
}

/// Inode of the initial pid namespace (`PROC_PID_INIT_INO`, fixed by the kernel).
const INIT_PID_NS_INO: u64 = 0xEFFF_FFFC;

/// Whether this process runs in a pid namespace other than the machine's (a container, a pod).
pub fn in_child_pid_namespace() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").is_ok_and(|m| m.ino() != INIT_PID_NS_INO)
}

/// The globals naming this process's pid namespace to the syscall programs: zeros in the
/// machine's initial namespace (ids as the kernel's own), its device and inode otherwise (in a
/// pod: rules use the pod's ids and reach only the pod's processes).
pub fn pid_namespace() -> Result<[(&'static str, u32); 2]> {
    use std::os::unix::fs::MetadataExt;

    use chaos_common::syscall::{PIDNS_DEV_GLOBAL, PIDNS_INO_GLOBAL};

    let path = "/proc/self/ns/pid";
    let meta = std::fs::metadata(path).ctx(|| format!("reading {path}"))?;
    let (dev, ino) = if meta.ino() == INIT_PID_NS_INO {
        (0, 0)
    } else {
        // The helper compares with the kernel's own encoding: major << 20 | minor.
        let dev = (libc::major(meta.dev()) << 20) | libc::minor(meta.dev());
        let fit = |v: u64| {
            u32::try_from(v).map_err(|_| {
                Error::io(
                    format!("{path}: namespace id {v} does not fit 32 bits"),
                    std::io::ErrorKind::Unsupported.into(),
                )
            })
        };
        (fit(u64::from(dev))?, fit(meta.ino())?)
    };
    Ok([(PIDNS_DEV_GLOBAL, dev), (PIDNS_INO_GLOBAL, ino)])
}

/// Refuses to reuse pinned maps whose shape differs from this build's (another chaos version's
/// faults are armed): aya would reuse them as they are, and the programs would then fail the
/// verifier with an error that says nothing of the cause.
fn check_pinned_maps() -> Result<()> {
    for (name, ours) in &facts()?.shapes {
        let Some(pinned) = pinned_map(name)? else {
            continue;
        };
        let info = pinned
            .info()
            .map_err(|e| Error::bpf(format!("reading pinned map {name}"), e))?;
        let ours = *ours;
        let theirs = (info.key_size(), info.value_size(), info.max_entries());
        if ours != theirs {
            return Err(Error::Unsupported {
                what: "load the chaos programs".into(),
                why: format!(
                    "map {name} pinned under {MAP_PIN_DIR} has another shape (key, value, \
                     entries {theirs:?}; this build {ours:?}): another chaos version has faults \
                     armed; recover them with that version (chaos recover --all) first"
                ),
            });
        }
    }
    Ok(())
}

/// A map's key size, value size and entries.
type Shape = (u32, u32, u32);

/// What loading needs to know of the embedded object, read from it once per process.
struct ObjectFacts {
    /// Every map's name and shape.
    shapes: Vec<(String, Shape)>,
    /// Whether it has CO-RE relocations (which need the kernel's BTF at load time).
    btf_relocations: bool,
}

fn facts() -> Result<&'static ObjectFacts> {
    static FACTS: OnceLock<ObjectFacts> = OnceLock::new();
    if let Some(f) = FACTS.get() {
        return Ok(f);
    }
    let object = aya_obj::Object::parse(EBPF_OBJECT)
        .map_err(|e| Error::bpf("parsing the chaos eBPF object", e))?;
    let shapes = object
        .maps
        .iter()
        .map(|(name, m)| {
            (
                name.clone(),
                (m.key_size(), m.value_size(), m.max_entries()),
            )
        })
        .collect();
    Ok(FACTS.get_or_init(|| ObjectFacts {
        shapes,
        btf_relocations: object.has_btf_relocations(),
    }))
}

/// The running kernel's BTF (`/sys/kernel/btf/vmlinux`), read and parsed once per process: it
/// takes ~15 ms, and a daemon or an experiment attaches many programs that need it.
pub fn vmlinux_btf() -> Result<&'static aya::Btf> {
    static BTF: OnceLock<aya::Btf> = OnceLock::new();
    if let Some(b) = BTF.get() {
        return Ok(b);
    }
    let btf = aya::Btf::from_sys_fs().map_err(|e| Error::bpf("reading the kernel's BTF", e))?;
    Ok(BTF.get_or_init(|| btf))
}

/// The pinned map `name`, if it exists.
pub fn pinned_map(name: &str) -> Result<Option<MapData>> {
    let path = Path::new(MAP_PIN_DIR).join(name);
    if !path.exists() {
        return Ok(None);
    }
    MapData::from_pin(&path)
        .map(Some)
        .map_err(|e| Error::bpf(format!("opening pinned map {}", path.display()), e))
}

/// Opens pinned map `name` as a typed map `T` (e.g. `Array<MapData, NetRule>`), built with `wrap`
/// from the generic [`Map`] variant.
pub fn typed_map<T>(name: &str, wrap: fn(MapData) -> Map) -> Result<Option<T>>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    pinned_map(name)?
        .map(|data| T::try_from(wrap(data)).map_err(|e| Error::bpf(format!("map {name}"), e)))
        .transpose()
}

/// Every slot of an array map, in order. One `BPF_MAP_LOOKUP_BATCH` call where the kernel has
/// it (5.6 on), which reads a 256-slot table in one system call instead of 256; slot by slot
/// otherwise.
pub fn read_array<T: aya::Pod>(table: &aya::maps::Array<MapData, T>) -> Result<Vec<T>> {
    use std::os::fd::{AsFd as _, AsRawFd as _};

    use aya::maps::IterableMap as _;
    let len = table.len() as usize;
    let size = std::mem::size_of::<T>();
    let fd = table.map().fd().as_fd().as_raw_fd();
    let mut keys = vec![0u32; len];
    let mut bytes = vec![0u8; len * size];
    let (mut done, mut token) = (0usize, 0u32);
    while done < len {
        let mut count = (len - done) as u32;
        // SAFETY: the buffers hold `count` more keys and values from `done` on (a value of
        // an array map is `size` bytes, checked when `table` was made), and the batch tokens
        // are u32 slot numbers for an array.
        let rc = unsafe {
            libbpf_rs::libbpf_sys::bpf_map_lookup_batch(
                fd,
                if done == 0 {
                    std::ptr::null_mut()
                } else {
                    (&raw mut token).cast()
                },
                (&raw mut token).cast(),
                keys[done..].as_mut_ptr().cast(),
                bytes[done * size..].as_mut_ptr().cast(),
                &mut count,
                std::ptr::null(),
            )
        };
        done += count as usize;
        if rc == 0 {
            continue;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            // The end of the map: `count` says how many came with it.
            Some(libc::ENOENT) if done == len => break,
            // No batch operations on this kernel (ENOTSUPP, 524, is the kernel's own): slot by
            // slot.
            Some(libc::EINVAL | libc::EOPNOTSUPP | 524) if done == 0 => {
                return table
                    .iter()
                    .collect::<std::result::Result<Vec<T>, _>>()
                    .map_err(|e| Error::bpf("reading an array map", e));
            }
            _ => return Err(Error::io("reading an array map in a batch", e)),
        }
    }
    // Slot i's value is at i * size: the keys of an array come in order.
    debug_assert!(keys.iter().enumerate().all(|(i, &k)| k as usize == i));
    Ok(bytes
        .chunks_exact(size)
        // SAFETY: T is Pod (any bytes are a valid T) and the chunk is size_of::<T>() long.
        .map(|chunk| unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast::<T>()) })
        .collect())
}

/// Path of the pin for program `name` as this build's object has it: the name carries a hash of
/// the object, so a program another version of chaos pinned is never taken for ours.
pub fn prog_pin(name: &str) -> PathBuf {
    use std::hash::{Hash as _, Hasher as _};
    static TAG: OnceLock<u64> = OnceLock::new();
    let tag = TAG.get_or_init(|| {
        let mut h = std::hash::DefaultHasher::new();
        EBPF_OBJECT.hash(&mut h);
        h.finish()
    });
    Path::new(PROG_PIN_DIR).join(format!("{name}-{tag:016x}"))
}

/// Path of the pin for link `name`.
pub fn link_pin(name: &str) -> PathBuf {
    Path::new(LINK_PIN_DIR).join(name)
}

/// Removes every pin of ours (maps and links) and the pin directory. Maps are freed once no
/// program uses them; call only when nothing is attached any more.
pub fn remove_all_pins() -> Result<()> {
    let root = Path::new(PIN_ROOT);
    if !root.exists() {
        return Ok(());
    }
    std::fs::remove_dir_all(root).ctx(|| format!("removing {}", root.display()))
}
