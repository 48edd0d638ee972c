//! Tiny BPF objects for testing the oracle itself (and for probing that the bpf syscall works),
//! loaded through libbpf from raw instructions: no object file, no clang.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use libbpf_rs::libbpf_sys;

/// One BPF instruction, laid out as `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// `r0 = ret; exit`.
const fn return_const(ret: i32) -> [Insn; 2] {
    [
        // BPF_ALU64 | BPF_MOV | BPF_K
        Insn {
            code: 0xb7,
            regs: 0,
            off: 0,
            imm: ret,
        },
        // BPF_JMP | BPF_EXIT
        Insn {
            code: 0x95,
            regs: 0,
            off: 0,
            imm: 0,
        },
    ]
}

fn load(prog_type: libbpf_sys::bpf_prog_type, name: &str, ret: i32) -> io::Result<OwnedFd> {
    let insns = return_const(ret);
    let name = CString::new(name).map_err(io::Error::other)?;
    let license = c"GPL";
    // SAFETY: the instructions have `struct bpf_insn`'s layout (8 bytes: code, dst/src nibbles,
    // off, imm); every pointer outlives the call; NULL options are allowed.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            prog_type,
            name.as_ptr(),
            license.as_ptr(),
            insns.as_ptr().cast(),
            insns.len() as _,
            std::ptr::null_mut(),
        )
    };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: libbpf returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Loads a socket filter `r0 = 0; exit` named `name` (the kernel keeps 15 bytes of it). The
/// program lives while the returned descriptor is open (and nothing else holds it).
pub fn load_socket_filter(name: &str) -> io::Result<OwnedFd> {
    load(libbpf_sys::BPF_PROG_TYPE_SOCKET_FILTER, name, 0)
}

/// Loads a TC classifier `r0 = 0; exit` (`TC_ACT_OK`: lets every packet pass) named `name`.
pub fn load_sched_cls(name: &str) -> io::Result<OwnedFd> {
    load(libbpf_sys::BPF_PROG_TYPE_SCHED_CLS, name, 0)
}

/// Loads a cgroup skb program `r0 = 1; exit` (lets every packet pass) named `name`.
pub fn load_cgroup_skb(name: &str) -> io::Result<OwnedFd> {
    load(libbpf_sys::BPF_PROG_TYPE_CGROUP_SKB, name, 1)
}

/// Attaches `prog` (a cgroup skb program) to the v2 cgroup at `cgroup` on ingress through a BPF
/// link; the attachment lasts while the returned link descriptor is open.
pub fn link_cgroup_ingress(prog: &OwnedFd, cgroup: &Path) -> io::Result<OwnedFd> {
    let dir = std::fs::File::open(cgroup)?;
    // SAFETY: both descriptors are valid; NULL options are allowed.
    let fd = unsafe {
        libbpf_sys::bpf_link_create(
            prog.as_raw_fd(),
            dir.as_raw_fd(),
            libbpf_sys::BPF_CGROUP_INET_INGRESS,
            std::ptr::null(),
        )
    };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: libbpf returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates a 1-entry array map (u32 -> u64) named `name`.
pub fn create_array_map(name: &str) -> io::Result<OwnedFd> {
    let name = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: `name` outlives the call; NULL options are allowed.
    let fd = unsafe {
        libbpf_sys::bpf_map_create(
            libbpf_sys::BPF_MAP_TYPE_ARRAY,
            name.as_ptr(),
            4,
            8,
            1,
            std::ptr::null(),
        )
    };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: libbpf returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Pins the object behind `fd` at `path` (on a bpf filesystem).
pub fn pin(fd: &OwnedFd, path: &Path) -> io::Result<()> {
    let p = CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: `p` outlives the call.
    let r = unsafe { libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), p.as_ptr()) };
    if r < 0 {
        return Err(io::Error::from_raw_os_error(-r));
    }
    Ok(())
}

/// A private bpf filesystem mounted on a temporary directory `chaos-t-<pid>-<n>`, unmounted and
/// removed on drop (with everything pinned in it).
#[derive(Debug)]
pub struct TempBpffs {
    dir: std::path::PathBuf,
}

impl TempBpffs {
    /// Mounts a new bpffs instance.
    pub fn new() -> io::Result<Self> {
        let dir = std::env::temp_dir().join(crate::world::unique_name());
        std::fs::create_dir(&dir)?;
        if let Err(e) = nix::mount::mount(
            Some("bpf"),
            &dir,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        ) {
            let _ = std::fs::remove_dir(&dir);
            return Err(io::Error::other(format!(
                "mount bpffs on {}: {e}",
                dir.display()
            )));
        }
        Ok(TempBpffs { dir })
    }

    /// Its mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TempBpffs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.dir);
    }
}
