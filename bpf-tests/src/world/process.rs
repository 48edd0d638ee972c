//! Child processes that die with the test.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;

use super::{NetNs, TestCgroup};

/// A started process, optionally inside a [`NetNs`] and/or a [`TestCgroup`] (it joins both
/// before `exec`, so it never runs outside them). Drop SIGKILLs and reaps it.
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
    reaped: Option<ExitStatus>,
}

/// Builder for [`ChildProcess`]: `ChildProcess::builder(cmd).netns(&ns).cgroup(&cg).spawn()`.
#[derive(Debug)]
pub struct ChildBuilder {
    cmd: Command,
    netns: Option<Arc<OwnedFd>>,
    cgroup_procs: Option<CString>,
}

impl ChildBuilder {
    /// Runs the process inside `ns`.
    pub fn netns(mut self, ns: &NetNs) -> Self {
        self.netns = Some(ns.fd());
        self
    }

    /// Runs the process inside `cg`.
    pub fn cgroup(mut self, cg: &TestCgroup) -> Self {
        let procs = cg.path().join("cgroup.procs");
        self.cgroup_procs = Some(
            CString::new(procs.into_os_string().into_encoded_bytes())
                .expect("no NUL in a cgroup path"),
        );
        self
    }

    /// Starts the process.
    pub fn spawn(mut self) -> io::Result<ChildProcess> {
        let netns = self.netns.take();
        let procs = self.cgroup_procs.take();
        // SAFETY: the closure only makes raw syscalls (setns, open, write, close) on data
        // prepared before the fork; it allocates nothing.
        unsafe {
            self.cmd.pre_exec(move || {
                if let Some(fd) = &netns
                    && libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                if let Some(path) = &procs {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // "0" means the writing process, in cgroup v1 and v2 alike.
                    let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                    if n != 1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = self.cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("spawn `{}`: {e}", crate::cmd::describe(&self.cmd)),
            )
        })?;
        Ok(ChildProcess {
            child,
            reaped: None,
        })
    }
}

impl ChildProcess {
    /// A builder for a process running `cmd`.
    pub fn builder(cmd: Command) -> ChildBuilder {
        ChildBuilder {
            cmd,
            netns: None,
            cgroup_procs: None,
        }
    }

    /// Starts `cmd` in the current namespaces and cgroups.
    pub fn spawn(cmd: Command) -> io::Result<Self> {
        Self::builder(cmd).spawn()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The underlying [`Child`], e.g. to take its stdout.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Its exit status if it has exited (reaping it), else `None`.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.reaped.is_some() {
            return Ok(self.reaped);
        }
        let status = self.child.try_wait()?;
        self.reaped = status;
        Ok(status)
    }

    /// Waits for it to exit.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.reaped {
            return Ok(status);
        }
        let status = self.child.wait()?;
        self.reaped = Some(status);
        Ok(status)
    }

    /// SIGKILLs it (if still running) and reaps it.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.reaped {
            return Ok(status);
        }
        let _ = self.child.kill();
        self.wait()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
