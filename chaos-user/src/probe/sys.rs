//! The few raw system calls the probe makes itself: loading two-instruction programs of a given
//! type and attach point, and attaching them, so that each answer comes from the kernel and not
//! from a config file.

use std::{
    ffi::{CStr, CString},
    io,
    os::fd::{FromRawFd as _, OwnedFd, RawFd},
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_LINK_CREATE: libc::c_long = 28;

/// `BPF_PROG_TYPE_*` values used by the probe.
pub mod prog_type {
    pub const KPROBE: u32 = 2;
    pub const SCHED_CLS: u32 = 3;
    pub const TRACEPOINT: u32 = 5;
    pub const CGROUP_SKB: u32 = 8;
    pub const SOCK_OPS: u32 = 13;
    pub const RAW_TRACEPOINT: u32 = 17;
    pub const CGROUP_SOCK_ADDR: u32 = 18;
    pub const CGROUP_SOCKOPT: u32 = 25;
    pub const TRACING: u32 = 26;
    pub const LSM: u32 = 29;
}

/// `BPF_*` attach types used by the probe.
pub mod attach_type {
    pub const CGROUP_INET_EGRESS: u32 = 1;
    pub const CGROUP_SOCK_OPS: u32 = 3;
    pub const CGROUP_INET4_CONNECT: u32 = 10;
    pub const CGROUP_GETSOCKOPT: u32 = 21;
    pub const TRACE_FENTRY: u32 = 24;
    pub const MODIFY_RETURN: u32 = 26;
    pub const LSM_MAC: u32 = 27;
    pub const TCX_EGRESS: u32 = 47;
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_prog_fd: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
    cookie: u64,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u64; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// What the kernel said when it refused a load or an attach.
#[derive(Debug)]
pub struct Refusal {
    /// The errno.
    pub error: io::Error,
    /// The first meaningful line of the verifier log, if any.
    pub log: Option<String>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = errno_name(&self.error);
        match &self.log {
            Some(log) => write!(f, "{name}: {log}"),
            None => write!(f, "{name} ({})", self.error),
        }
    }
}

/// `EPERM`, `EINVAL`... for an error, falling back to its number.
pub fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) => "EPERM".into(),
        Some(libc::EINVAL) => "EINVAL".into(),
        Some(libc::ENOENT) => "ENOENT".into(),
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP".into(),
        Some(libc::E2BIG) => "E2BIG".into(),
        Some(libc::EACCES) => "EACCES".into(),
        Some(libc::ESRCH) => "ESRCH".into(),
        Some(n) => format!("errno {n}"),
        None => e.to_string(),
    }
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<RawFd> {
    // SAFETY: `attr` is a valid, initialised `repr(C)` struct of the size we pass; the kernel
    // reads (and for logs, writes through pointers we own) no more than that.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as RawFd)
    }
}

/// Loads `r0 = ret; exit` as a program of `prog_type`.
pub fn load_trivial(
    prog_type: u32,
    expected_attach_type: u32,
    attach_btf_id: u32,
    ret: i32,
) -> Result<OwnedFd, Refusal> {
    let insns = [
        // BPF_ALU64 | BPF_MOV | BPF_K, dst r0
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
    ];
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"chaos_probe");
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        expected_attach_type,
        attach_btf_id,
        ..Default::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: the kernel just returned this fd to us.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(error) => {
            let text = CStr::from_bytes_until_nul(&log)
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default();
            let log = text
                .lines()
                .find(|l| !l.is_empty() && !l.starts_with("processed") && !l.starts_with("0:"))
                .map(str::to_owned);
            Err(Refusal { error, log })
        }
    }
}

/// Attaches a tracing / LSM program to its BTF target (`BPF_RAW_TRACEPOINT_OPEN` with no name),
/// or a raw tracepoint program to tracepoint `name`. The attachment lives as long as the fd.
pub fn raw_tracepoint_open(prog: &OwnedFd, name: Option<&CStr>) -> Result<OwnedFd, Refusal> {
    use std::os::fd::AsRawFd as _;
    let mut attr = RawTracepointAttr {
        name: name.map_or(0, |n| n.as_ptr() as u64),
        prog_fd: prog.as_raw_fd() as u32,
        ..Default::default()
    };
    bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)
        // SAFETY: fresh fd from the kernel.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .map_err(|error| Refusal { error, log: None })
}

/// `BPF_LINK_CREATE`: `target` is a cgroup fd or an interface index, depending on the type.
pub fn link_create(prog: &OwnedFd, target: u32, attach_type: u32) -> Result<OwnedFd, Refusal> {
    use std::os::fd::AsRawFd as _;
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target,
        attach_type,
        ..Default::default()
    };
    bpf(BPF_LINK_CREATE, &mut attr)
        // SAFETY: fresh fd from the kernel.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .map_err(|error| Refusal { error, log: None })
}

#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
}

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;

/// Opens a perf event of PMU `type_` (`config1` pointing at `func` for kprobes) and attaches
/// `prog` to it. The attachment lives as long as the returned fd.
pub fn perf_attach(
    prog: &OwnedFd,
    type_: u32,
    config: u64,
    func: Option<&CString>,
) -> Result<OwnedFd, Refusal> {
    use std::os::fd::AsRawFd as _;
    let attr = PerfEventAttr {
        type_,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config,
        sample_period: 1,
        wakeup_events: 1,
        config1: func.map_or(0, |f| f.as_ptr() as u64),
        ..Default::default()
    };
    // SAFETY: `attr` is a valid perf_event_attr prefix of the size it declares.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            8 as libc::c_ulong, // PERF_FLAG_FD_CLOEXEC
        )
    };
    if fd < 0 {
        return Err(Refusal {
            error: io::Error::last_os_error(),
            log: None,
        });
    }
    // SAFETY: fresh fd from the kernel.
    let event = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // SAFETY: PERF_EVENT_IOC_SET_BPF takes the program fd by value.
    let ret = unsafe { libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd()) };
    if ret < 0 {
        return Err(Refusal {
            error: io::Error::last_os_error(),
            log: None,
        });
    }
    Ok(event)
}

/// Attaches `prog` to tracepoint `id` (from tracefs `events/*/*/id`).
pub fn tracepoint_attach(prog: &OwnedFd, id: u64) -> Result<OwnedFd, Refusal> {
    perf_attach(prog, PERF_TYPE_TRACEPOINT, id, None)
}

/// Whether the seccomp action `SECCOMP_RET_USER_NOTIF` is available.
pub fn seccomp_user_notif() -> io::Result<()> {
    const SECCOMP_GET_ACTION_AVAIL: libc::c_ulong = 2;
    const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
    let action = SECCOMP_RET_USER_NOTIF;
    // SAFETY: reads one u32 we own.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_ACTION_AVAIL,
            0 as libc::c_ulong,
            &action as *const u32,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[repr(C)]
#[derive(Default)]
struct ObjPinAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `BPF_OBJ_PIN`: pins `prog` at `path` (on bpffs).
pub fn obj_pin(prog: &OwnedFd, path: &std::path::Path) -> Result<(), Refusal> {
    use std::os::{fd::AsRawFd as _, unix::ffi::OsStrExt as _};
    const BPF_OBJ_PIN: libc::c_long = 6;
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| Refusal {
        error: io::Error::from_raw_os_error(libc::EINVAL),
        log: None,
    })?;
    let mut attr = ObjPinAttr {
        pathname: cpath.as_ptr() as u64,
        bpf_fd: prog.as_raw_fd() as u32,
        ..Default::default()
    };
    bpf(BPF_OBJ_PIN, &mut attr)
        .map(drop)
        .map_err(|error| Refusal { error, log: None })
}
