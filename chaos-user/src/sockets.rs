//! The sockets of a process, by cookie: how `--pid` selects "only that process's traffic" in a TC
//! program, which sees packets, not processes. Each socket the process holds is duplicated into
//! the controller with `pidfd_getfd` (5.6+) just long enough to read its `SO_COOKIE`, the same id
//! `bpf_get_socket_cookie` returns for its packets.

use std::os::fd::{AsFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd};

use crate::error::{Error, Result};

const SO_COOKIE: libc::c_int = 57;

fn syscall_fd(ret: libc::c_long) -> std::io::Result<OwnedFd> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        // SAFETY: the kernel just returned this fd to us.
        Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
    }
}

fn cookie(fd: BorrowedFd<'_>) -> std::io::Result<u64> {
    let mut value: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of the sizes given.
    let ret = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SOL_SOCKET,
            SO_COOKIE,
            (&mut value as *mut u64).cast(),
            &mut len,
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(value)
    }
}

/// Cookies of the sockets process `pid` holds now. `field` names the spec field for errors.
pub fn cookies(pid: u32, field: &'static str) -> Result<Vec<u64>> {
    let fix = "give the pid of a running process that holds sockets (see `ss -p`)";
    std::fs::metadata(format!("/proc/{pid}/fd"))
        .map_err(|e| Error::invalid(field, format!("no process {pid} ({e})"), fix))?;
    let mut out = Vec::new();
    for_each_socket(pid, |fd| {
        if let Ok(c) = cookie(fd) {
            out.push(c);
        }
    })?;
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        return Err(Error::invalid(
            field,
            format!("process {pid} holds no sockets now"),
            "--pid selects the sockets a process holds when the fault is armed; use --cgroup to \
             catch connections it opens later",
        ));
    }
    Ok(out)
}

/// Calls `f` with each socket process `pid` holds now, duplicated into this process with
/// `pidfd_getfd` (5.6+) for the call and closed after it. A socket closed in between is skipped.
pub fn for_each_socket(pid: u32, mut f: impl FnMut(BorrowedFd<'_>)) -> Result<()> {
    let fd_dir = format!("/proc/{pid}/fd");
    let entries =
        std::fs::read_dir(&fd_dir).map_err(|e| Error::io(format!("reading {fd_dir}"), e))?;
    // SAFETY: plain syscall; the result is checked.
    let pidfd = syscall_fd(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) })
        .map_err(|e| Error::io(format!("pidfd_open({pid})"), e))?;
    for entry in entries.flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:["));
        let Some(n) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<libc::c_int>().ok())
        else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // SAFETY: plain syscall; the result is checked.
        let ours = syscall_fd(unsafe {
            libc::syscall(
                libc::SYS_pidfd_getfd,
                std::os::fd::AsRawFd::as_raw_fd(&pidfd),
                n,
                0,
            )
        });
        match ours {
            Ok(fd) => f(fd.as_fd()),
            // The socket was closed in between.
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => {}
            Err(e) => return Err(Error::io(format!("pidfd_getfd({pid}, {n})"), e)),
        }
    }
    Ok(())
}
