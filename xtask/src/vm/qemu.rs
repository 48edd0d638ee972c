//! Driving QEMU: boot a kernel with an initramfs, stream the serial console line by line, stop
//! on a timeout or a kernel panic, and report what happened.
use std::{
    fs::File,
    io::{BufRead as _, BufReader, Read, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::cmd;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    /// QEMU's translator; `multi_threaded` gives each vCPU its own host thread (MTTCG).
    Tcg {
        multi_threaded: bool,
    },
}

/// Can this machine run KVM guests? `/dev/kvm` must open and create a VM. (Some nested hosts
/// pass this and still cannot run a guest; `Boot::life_timeout` catches those.)
pub fn kvm_usable() -> bool {
    use std::os::fd::AsRawFd as _;
    const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
    let Ok(kvm) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    else {
        return false;
    };
    // SAFETY: KVM_CREATE_VM takes an integer argument (the machine type, 0) and returns a new
    // file descriptor, which is closed right away.
    let vm = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM, 0) };
    if vm < 0 {
        return false;
    }
    // SAFETY: `vm` is a descriptor this function just received and owns.
    unsafe { libc::close(vm) };
    true
}

pub struct Boot<'a> {
    /// Prefix of the console lines echoed to stdout.
    pub label: &'a str,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub append: String,
    pub accel: Accel,
    pub memory_mb: u32,
    pub smp: u32,
    /// Whole boot + tests.
    pub timeout: Duration,
    /// Give up if `life_marker` has not appeared by then (used to detect a KVM that hangs).
    pub life_timeout: Option<Duration>,
    pub life_marker: &'a str,
    /// Printed by init when it is done; QEMU should exit soon after.
    pub end_marker: &'a str,
    pub log: PathBuf,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub saw_life: bool,
    pub saw_end: bool,
    /// The console line that showed a kernel panic, BUG or oops.
    pub kernel_error: Option<String>,
    pub timed_out: bool,
    /// `life_timeout` passed without a sign of life.
    pub no_life: bool,
    pub status: Option<ExitStatus>,
    pub duration: Duration,
}

enum Event {
    Line(String),
    Stderr(String),
    Eof,
}

/// Is this console line the kernel reporting a fatal problem?
fn kernel_error(line: &str) -> bool {
    // Kernel lines start with a "[    1.234]" timestamp (or nothing, without PRINTK_TIME);
    // checking for it keeps a test that prints "BUG:" from stopping the VM.
    let body = match line.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(line, |(_, b)| b.trim_start()),
        None => line,
    };
    body.starts_with("Kernel panic - not syncing")
        || body.starts_with("BUG: ")
        || body.starts_with("Oops: ")
        || body.contains("---[ end Kernel panic")
}

/// Removes terminal escape sequences and control characters (SeaBIOS clears the screen).
fn clean(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // Parameters, then one final byte in @..~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn spawn_reader(
    stream: impl Read + Send + 'static,
    tx: mpsc::Sender<Event>,
    stderr: bool,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = clean(&buf);
                    let ev = if stderr {
                        Event::Stderr(line)
                    } else {
                        Event::Line(line)
                    };
                    if tx.send(ev).is_err() {
                        break;
                    }
                }
            }
        }
        if !stderr {
            let _ = tx.send(Event::Eof);
        }
    })
}

fn command(b: &Boot<'_>) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    match b.accel {
        Accel::Kvm => c.args(["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg { multi_threaded } => c.args([
            "-accel",
            if multi_threaded {
                "tcg,thread=multi"
            } else {
                "tcg,thread=single"
            },
            "-cpu",
            "max",
        ]),
    };
    c.args(["-m", &b.memory_mb.to_string(), "-smp", &b.smp.to_string()])
        .args([
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-serial",
            "stdio",
        ])
        // A virtio RNG so that the guest's getrandom does not wait for entropy.
        .args(["-device", "virtio-rng-pci"])
        .arg("-kernel")
        .arg(b.kernel)
        .arg("-initrd")
        .arg(b.initrd)
        .args(["-append", &b.append])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Boots and waits for the VM to power off; `on_line` sees every console line.
pub fn boot(b: &Boot<'_>, mut on_line: impl FnMut(&str)) -> Result<Outcome> {
    let mut c = command(b);
    eprintln!("$ {}", cmd::display(&c));
    let mut log = File::create(&b.log).with_context(|| format!("creating {}", b.log.display()))?;
    writeln!(log, "$ {}", cmd::display(&c))?;
    let start = Instant::now();
    let mut child = c.spawn().context("starting qemu-system-x86_64")?;
    let (tx, rx) = mpsc::channel();
    let out_reader = spawn_reader(
        child.stdout.take().context("qemu stdout")?,
        tx.clone(),
        false,
    );
    let err_reader = spawn_reader(child.stderr.take().context("qemu stderr")?, tx, true);

    let mut outcome = Outcome::default();
    // After a panic or the end marker, QEMU gets a grace period to exit by itself.
    let mut stop_by: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let mut deadline = start + b.timeout;
        if let Some(t) = stop_by {
            deadline = deadline.min(t);
        }
        if let (Some(life), false) = (b.life_timeout, outcome.saw_life) {
            deadline = deadline.min(start + life);
        }
        let wait = deadline.saturating_duration_since(now);
        match rx.recv_timeout(wait) {
            Ok(Event::Line(line)) => {
                writeln!(log, "{line}")?;
                println!("[{}] {line}", b.label);
                if line.contains(b.life_marker) {
                    outcome.saw_life = true;
                }
                if line.trim() == b.end_marker {
                    outcome.saw_end = true;
                    stop_by.get_or_insert(Instant::now() + Duration::from_secs(30));
                }
                if outcome.kernel_error.is_none() && kernel_error(&line) {
                    outcome.kernel_error = Some(line.clone());
                    // Keep reading a little to capture the trace.
                    stop_by = Some(Instant::now() + Duration::from_secs(10));
                }
                on_line(&line);
            }
            Ok(Event::Stderr(line)) => {
                writeln!(log, "qemu: {line}")?;
                eprintln!("[{}] qemu: {line}", b.label);
            }
            Ok(Event::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                if stop_by.is_some_and(|t| now >= t) {
                    // Panic trace captured, or QEMU did not exit after the end marker.
                } else if !outcome.saw_life && b.life_timeout.is_some_and(|l| now >= start + l) {
                    outcome.no_life = true;
                } else {
                    outcome.timed_out = true;
                }
                kill(&mut child);
                break;
            }
        }
    }
    let status = child.wait().context("waiting for qemu")?;
    outcome.status = Some(status);
    let _ = out_reader.join();
    let _ = err_reader.join();
    outcome.duration = start.elapsed();
    writeln!(
        log,
        "xtask: qemu exited: {status} after {:?}",
        outcome.duration
    )?;
    Ok(outcome)
}

fn kill(child: &mut Child) {
    let _ = child.kill();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_kernel_errors_not_test_output() {
        assert!(kernel_error(
            "[    3.1] Kernel panic - not syncing: Attempted to kill init!"
        ));
        assert!(kernel_error(
            "[   12.000001] BUG: kernel NULL pointer dereference, address: 0"
        ));
        assert!(kernel_error("Kernel panic - not syncing: VFS"));
        assert!(!kernel_error("test foo ... BUG: in the test's own words"));
        assert!(!kernel_error("[chaos] BUG:no"));
    }

    #[test]
    fn strips_escapes() {
        assert_eq!(clean(b"\x1bc\x1b[?7l\x1b[2JSeaBIOS\r\n"), "SeaBIOS");
    }
}
