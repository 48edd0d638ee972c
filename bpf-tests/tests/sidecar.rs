//! The sidecar: `chaos serve` in a pod made with runc, as Kubernetes makes one with
//! `shareProcessNamespace`: an app container that owns the pod's pid namespace, a privileged
//! chaos container that joins it, both in the pod's network namespace (a named one with a veth to
//! a peer, as a CNI plugin leaves it), each with its own mount and cgroup namespaces. The daemon
//! listens on a unix socket in a directory both the pod and the host see (an `emptyDir`).
//!
//! What a fault armed through that daemon reaches: a net fault on the pod's interface hits the
//! pod's traffic and not another namespace's interface of the same name; a syscall fault on a pid
//! as the pod numbers it hits that process and not a process of the same name outside the pod; a
//! fault by command name stays inside the pod.
//!
//! Where runc is missing (the VM images), the pod is made with busybox's `unshare` and
//! `nsenter` instead: the app is pid 1 of a new pid namespace in the pod's network namespace, and
//! the daemon joins that pid namespace with a mount namespace of its own, in which it mounts the
//! pod's /proc, a private bpffs and a tmpfs over /run/netns (the host's namespace names), and
//! keeps its store in the test's directory.

use std::{
    net::UdpSocket,
    os::unix::fs::{PermissionsExt, symlink},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bpf_tests::{
    ChildProcess, NetNs, TwoHosts, UdpSink,
    chaos::Chaos,
    daemon::{Addr, Client, TempDir},
    skip::require_root,
    skip_on_err, skip_unless,
    world::Host,
};
use serde_json::{Value, json};

/// The work loop of the app: a shell script, so its `comm` is the script's name; each turn opens
/// /dev/null (an `openat`), and notes a failed open on fd 3 (the file given as `$1`, if any: a
/// write, so it cannot fail the same way).
const PODWORK: &str = "#!/bin/busybox sh\n\
    if [ -n \"$1\" ]; then exec 3>>\"$1\"; else exec 3>/dev/null; fi\n\
    while :; do echo x 2>/dev/null >/dev/null || echo failed >&3; /bin/busybox usleep 20000; done\n";

/// Every capability runc 1.1 knows, by number.
const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities of this process's bounding set (what a privileged container gets; a
/// sandbox may have dropped some).
fn bounding_caps() -> Vec<&'static str> {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .expect("CapBnd");
    ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// busybox, whose `unshare` and `nsenter` make the pod where runc is missing.
const BUSYBOX: &str = "/bin/busybox";

/// Whether runc is installed (and not set aside by `CHAOS_SIDECAR_UNSHARE=1`, which tests the
/// busybox pod on a machine that has runc).
fn have_runc() -> bool {
    std::env::var_os("CHAOS_SIDECAR_UNSHARE").is_none_or(|v| v != "1")
        && Command::new("runc")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// `Ok` when runc, or busybox with `unshare` and `nsenter`, can make a pod.
fn require_pod_maker() -> Result<(), String> {
    if have_runc() {
        return Ok(());
    }
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .map_err(|e| format!("neither runc nor {BUSYBOX}: {e}"))?;
    let list = String::from_utf8_lossy(&list.stdout);
    match ["unshare", "nsenter"]
        .iter()
        .find(|a| !list.lines().any(|l| l == **a))
    {
        Some(a) => Err(format!("no runc, and busybox has no {a}")),
        None => Ok(()),
    }
}

/// Copies `src` to `root` + `src`, making its directories.
fn copy_into(root: &Path, src: &Path) {
    let dst = root.join(src.strip_prefix("/").expect("absolute path"));
    std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir in rootfs");
    std::fs::copy(src, &dst).unwrap_or_else(|e| panic!("copying {}: {e}", src.display()));
}

/// Copies the libraries `ldd` names for `exe` into `root` at the same paths.
fn copy_libs(root: &Path, exe: &Path) {
    let ldd = Command::new("ldd").arg(exe).output().expect("running ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
        let path = line
            .split("=>")
            .last()
            .and_then(|s| s.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            copy_into(root, Path::new(p));
        }
    }
}

/// `tool` on this process's PATH or in /usr/sbin, /sbin.
fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A rootfs with busybox, the work script, the chaos binary at `/chaos` and what the image
/// carries besides (iproute2's `ip` and `tc`, in /bin), each with the libraries `ldd` names.
fn make_rootfs(root: &Path, chaos: &Path) {
    for d in ["bin", "proc", "sys", "dev", "run", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir in rootfs");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copying busybox");
    for applet in ["sh", "sleep", "usleep"] {
        symlink("busybox", root.join("bin").join(applet)).expect("applet link");
    }
    write_script(&root.join("bin/podwork"));
    // A hard link where it can (the debug binary is large), else a copy.
    if std::fs::hard_link(chaos, root.join("chaos")).is_err() {
        std::fs::copy(chaos, root.join("chaos")).expect("copying chaos");
    }
    copy_libs(root, chaos);
    for tool in ["ip", "tc"] {
        let path = which(tool)
            .and_then(|p| p.canonicalize().ok())
            .unwrap_or_else(|| panic!("{tool} (iproute2) not found"));
        std::fs::copy(&path, root.join("bin").join(tool)).expect("copying the tool");
        copy_libs(root, &path);
    }
}

/// Writes the work script at `path`, executable.
fn write_script(path: &Path) {
    std::fs::write(path, PODWORK).expect("writing the script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// One container of the pod.
struct Container {
    /// Name for runc (unique to this test process).
    id: String,
    /// `runc run`, in the foreground.
    runc: ChildProcess,
}

/// The pod: the app container (pid 1 of the pod's pid namespace, two work loops), the chaos
/// container (`chaos serve` on a socket in a shared directory), and a client for the daemon.
/// Drop stops the daemon, deletes both containers and the cgroups runc made.
struct Pod {
    /// The bundles, the rootfs, the logs.
    dir: TempDir,
    /// The socket's directory, shared by the pod and the host (removed on drop).
    api: PathBuf,
    /// Host pid of the pod's pid 1.
    init_pid: u32,
    /// Without runc: `unshare` (the app) and `nsenter` (the daemon).
    plain: Vec<ChildProcess>,
    /// The cgroup parent of both containers (`/chaos-sidecar-<pid>-<name>` in each hierarchy).
    cgroup_parent: String,
    app: Option<Container>,
    sidecar: Option<Container>,
    /// The daemon's stderr, for failure messages.
    log: PathBuf,
    client: Client,
}

/// An OCI runtime config running `args` with `namespaces`; `privileged` drops masks and the
/// seccomp profile, grants every capability and device, and mounts /sys read-write.
fn oci_config(
    args: &[&str],
    namespaces: Value,
    cgroups_path: &str,
    privileged: bool,
    extra_mounts: Value,
) -> Value {
    let caps: Vec<&str> = if privileged {
        bounding_caps()
    } else {
        vec!["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]
    };
    let sys_options = if privileged {
        json!(["nosuid", "noexec", "nodev"])
    } else {
        json!(["nosuid", "noexec", "nodev", "ro"])
    };
    let mut mounts = json!([
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_options},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=755"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=1777"]},
    ]);
    mounts
        .as_array_mut()
        .expect("array")
        .extend(extra_mounts.as_array().cloned().unwrap_or_default());
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": cgroups_path,
        "resources": {"devices": [{"allow": privileged, "access": "rwm"}]},
    });
    if !privileged {
        linux["maskedPaths"] = json!(["/proc/kcore", "/proc/keys", "/sys/firmware"]);
        linux["readonlyPaths"] = json!(["/proc/sys", "/proc/sysrq-trigger"]);
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin", "RUST_BACKTRACE=1"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps,
            },
            "noNewPrivileges": !privileged,
        },
        "root": {"path": "../rootfs", "readonly": false},
        "hostname": "pod",
        "mounts": mounts,
        "linux": linux,
    })
}

impl Pod {
    /// Starts the pod in network namespace `ns`, with runc if it is installed; `name` keeps
    /// pods of different tests apart.
    fn start(chaos: &Chaos, ns: &NetNs, name: &str) -> Pod {
        let dir = TempDir::new(&format!("sidecar-{name}"));
        let tag = format!("{}-{name}", std::process::id());
        // Not under /run: the unshare pod's daemon would not see it under its /run/netns tmpfs
        // either way, but keep both pods alike.
        let api = std::env::temp_dir().join(format!("chaos-sidecar-{tag}"));
        let _ = std::fs::remove_dir_all(&api);
        std::fs::create_dir_all(&api).expect("mkdir api");
        let log = dir.0.join("sidecar.log");
        let mut pod = Pod {
            client: Client {
                addr: Addr::Unix(api.join("chaos.sock")),
                token: None,
            },
            dir,
            api,
            init_pid: 0,
            plain: Vec::new(),
            cgroup_parent: format!("/chaos-sidecar-{tag}"),
            app: None,
            sidecar: None,
            log,
        };
        let stdout = if have_runc() {
            pod.start_runc(chaos, ns)
        } else {
            pod.start_unshare(chaos, ns)
        };
        let line = bpf_tests::daemon::first_line(stdout);
        assert!(
            line.starts_with("listening on unix:"),
            "the sidecar did not start: {line:?}\n{}",
            pod.log()
        );
        pod
    }

    /// The pod made with busybox: `unshare` makes the app pid 1 of a new pid namespace;
    /// `nsenter` puts the daemon in it, and `unshare` gives it a mount namespace of its own.
    fn start_unshare(&mut self, chaos: &Chaos, ns: &NetNs) -> std::process::ChildStdout {
        let script = self.dir.0.join("podwork");
        write_script(&script);
        let mut app = Command::new(BUSYBOX);
        app.args(["unshare", "-p", "-f", "--mount-proc", BUSYBOX, "sh", "-c"])
            .arg(format!(
                "{s} & {s} & while :; do wait; {BUSYBOX} sleep 1; done",
                s = script.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let app = ChildProcess::builder(app)
            .netns(ns)
            .spawn()
            .expect("spawning unshare");
        let unshare = app.pid();
        self.plain.push(app);
        // Its child is the pod's pid 1 (found by PPid: not every kernel has
        // /proc/PID/task/TID/children).
        let child_of = |parent: u32| {
            std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                let ppid: u32 = status
                    .lines()
                    .find_map(|l| l.strip_prefix("PPid:"))?
                    .trim()
                    .parse()
                    .ok()?;
                (ppid == parent).then_some(pid)
            })
        };
        let mut init = None;
        assert!(
            wait_for(Duration::from_secs(10), || {
                init = child_of(unshare);
                init.is_some()
            }),
            "unshare started no pid 1"
        );
        self.init_pid = init.expect("pid 1 of the pod");
        let state = self.dir.0.join("state");
        let serve = format!(
            "{BUSYBOX} mount -t proc proc /proc && {BUSYBOX} mount -t bpf bpf /sys/fs/bpf && \
             {BUSYBOX} mount -t tmpfs tmpfs /run/netns; \
             CHAOS_STATE_DIR={state} exec {chaos} serve --socket {sock}",
            state = state.display(),
            chaos = chaos.bin().display(),
            sock = self.api.join("chaos.sock").display(),
        );
        let mut sidecar = Command::new(BUSYBOX);
        sidecar
            .args(["nsenter", "-t", &self.init_pid.to_string(), "-p", "--"])
            .args([BUSYBOX, "unshare", "-m", "--propagation", "private"])
            .args([BUSYBOX, "sh", "-c", &serve])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&self.log).expect("log file"));
        let mut sidecar = ChildProcess::builder(sidecar)
            .netns(ns)
            .spawn()
            .expect("spawning nsenter");
        let stdout = sidecar.child_mut().stdout.take().expect("stdout");
        self.plain.push(sidecar);
        stdout
    }

    /// The pod made with runc: an app container owning the pod's pid namespace, a privileged
    /// chaos container joining it.
    fn start_runc(&mut self, chaos: &Chaos, ns: &NetNs) -> std::process::ChildStdout {
        let pod = self;
        make_rootfs(&pod.dir.0.join("rootfs"), chaos.bin());
        let api = pod.api.clone();
        let netns = ns.path().display().to_string();
        // The app: pid 1 of the pod (it reaps), two work loops.
        let app = oci_config(
            &[
                "/bin/sh",
                "-c",
                "/bin/podwork & /bin/podwork & while :; do wait; /bin/busybox sleep 1; done",
            ],
            json!([
                {"type": "pid"}, {"type": "network", "path": netns}, {"type": "mount"},
                {"type": "ipc"}, {"type": "uts"}, {"type": "cgroup"},
            ]),
            &format!("{}/app", pod.cgroup_parent),
            false,
            json!([]),
        );
        pod.app = Some(pod.run_container("app", &app, Stdio::null()));
        let app_pid = pod.container_pid("app");
        pod.init_pid = app_pid;
        let sidecar = oci_config(
            &["/chaos", "serve", "--socket", "/run/chaos-api/chaos.sock"],
            json!([
                {"type": "pid", "path": format!("/proc/{app_pid}/ns/pid")},
                {"type": "network", "path": netns},
                {"type": "ipc", "path": format!("/proc/{app_pid}/ns/ipc")},
                {"type": "uts", "path": format!("/proc/{app_pid}/ns/uts")},
                {"type": "mount"}, {"type": "cgroup"},
            ]),
            &format!("{}/chaos", pod.cgroup_parent),
            true,
            json!([{"destination": "/run/chaos-api", "type": "bind",
                    "source": api.display().to_string(), "options": ["rbind", "rw"]}]),
        );
        let mut c = pod.run_container("chaos", &sidecar, Stdio::piped());
        let stdout = c.runc.child_mut().stdout.take().expect("stdout");
        pod.sidecar = Some(c);
        stdout
    }

    /// Writes the bundle `name` and starts it with `runc run` in the foreground.
    fn run_container(&self, name: &str, config: &Value, stdout: Stdio) -> Container {
        let bundle = self.dir.0.join(name);
        std::fs::create_dir_all(&bundle).expect("mkdir bundle");
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(config).expect("json"),
        )
        .expect("writing config.json");
        let id = format!(
            "chaos-sidecar-{}-{name}",
            self.cgroup_parent.trim_start_matches("/chaos-sidecar-")
        );
        let log = if name == "chaos" {
            self.log.clone()
        } else {
            self.dir.0.join(format!("{name}.log"))
        };
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new("runc");
        cmd.args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let runc = ChildProcess::spawn(cmd).expect("spawning runc");
        let mut c = Container { id, runc };
        // Wait until runc reports it running.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) && matches!(c.runc.try_wait(), Ok(None)) {
            if self.state(&c.id).is_some_and(|s| s["status"] == "running") {
                return c;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "container {name} did not start ({:?}): {}",
            self.state(&c.id),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// `runc state ID`, if runc knows it.
    fn state(&self, id: &str) -> Option<Value> {
        let out = Command::new("runc").args(["state", id]).output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The host pid of container `name`'s first process.
    fn container_pid(&self, name: &str) -> u32 {
        let c = match name {
            "app" => self.app.as_ref(),
            _ => self.sidecar.as_ref(),
        }
        .expect("container started");
        self.state(&c.id)
            .and_then(|s| s["pid"].as_u64())
            .expect("runc state pid") as u32
    }

    /// The daemon's stderr so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The host pid and pod pid of every live `podwork` in the pod.
    fn podworks(&self) -> Vec<(u32, u32)> {
        let pod_ns = std::fs::read_link(format!("/proc/{}/ns/pid", self.init_pid))
            .expect("pod pid namespace");
        podworks()
            .into_iter()
            .filter(|&(host, _)| {
                std::fs::read_link(format!("/proc/{host}/ns/pid")).is_ok_and(|n| n == pod_ns)
            })
            .collect()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // The daemon first, gracefully (it recovers nothing on exit, the test does that), then
        // the app; `delete --force` kills what is left.
        for c in [self.sidecar.take(), self.app.take()].into_iter().flatten() {
            let _ = Command::new("runc")
                .args(["kill", &c.id, "TERM"])
                .stderr(Stdio::null())
                .status();
            let mut runc = c.runc;
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) && matches!(runc.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("runc")
                .args(["delete", "--force", &c.id])
                .stderr(Stdio::null())
                .status();
            drop(runc);
        }
        // Without runc: the daemon first (SIGTERM to the processes of the pod but its pid 1),
        // then the pod's pid 1, whose death kills what is left in its namespace.
        if !self.plain.is_empty() {
            let pod_ns = std::fs::read_link(format!("/proc/{}/ns/pid", self.init_pid)).ok();
            for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                if pid as u32 != self.init_pid
                    && pod_ns.is_some()
                    && std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok() == pod_ns
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
            }
            if let Some(sidecar) = self.plain.get_mut(1) {
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(5)
                    && matches!(sidecar.try_wait(), Ok(None))
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            // Never pid 0 (which would be this process group).
            if self.init_pid > 1 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.init_pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            self.plain.clear();
        }
        let _ = std::fs::remove_dir_all(&self.api);
        // runc removes the containers' cgroups, not their parent.
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in entries.flatten() {
                let _ =
                    std::fs::remove_dir(e.path().join(self.cgroup_parent.trim_start_matches('/')));
            }
        }
        let _ = std::fs::remove_dir(
            Path::new("/sys/fs/cgroup").join(self.cgroup_parent.trim_start_matches('/')),
        );
    }
}

/// Every live `podwork` on the machine: (host pid, pid in its own namespace).
fn podworks() -> Vec<(u32, u32)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or("")
                .to_owned()
        };
        if field("Name:") != "podwork" || field("State:").starts_with('Z') {
            continue;
        }
        let ns_pid = field("NSpid:")
            .split_whitespace()
            .last()
            .and_then(|p| p.parse().ok())
            .unwrap_or(pid);
        found.push((pid, ns_pid));
    }
    found
}

/// Whether host pid `pid` is gone or a zombie.
fn dead(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// Waits up to `limit` for `cond`.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Datagrams of 40 sent from `from` to `to` that arrived.
fn udp_through(from: &Host, to: &Host) -> u64 {
    let sink = UdpSink::bind(&to.ns, to.v4(), 0).expect("binding the sink");
    let target = sink.local_addr();
    let src = from.v4();
    from.ns.run(move || {
        let s = UdpSocket::bind((src, 0)).expect("binding the sender");
        for _ in 0..40 {
            let _ = s.send_to(b"sidecar", target);
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    sink.count_now()
}

/// Arms `spec` through the pod's daemon; panics with the answer when it is refused.
fn arm(pod: &Pod, spec: &Value) -> String {
    let r = pod.client.post("/v1/faults", spec);
    assert_eq!(r.status, 201, "arming {spec}: {}\n{}", r.body, pod.log());
    r.json()["id"].as_str().expect("id").to_owned()
}

/// Recovers fault `id` through the pod's daemon.
fn disarm(pod: &Pod, id: &str) {
    let r = pod.client.delete(&format!("/v1/faults/{id}"));
    assert_eq!(r.status, 200, "recovering {id}: {}", r.body);
}

/// The binary, root and runc, or the reason to skip.
fn setup() -> Result<Chaos, String> {
    require_root()?;
    require_pod_maker()?;
    Chaos::from_env()
}

#[test]
fn net_fault_reaches_only_the_pods_interface() {
    let chaos = skip_on_err!(setup());
    let world = TwoHosts::new().expect("pod world");
    let other = TwoHosts::new().expect("other world");
    let pod = Pod::start(&chaos, &world.a.ns, "net");
    assert!(udp_through(&world.a, &world.b) >= 38, "pod traffic before");

    // Another namespace of the host is not even visible from the pod.
    let r = pod.client.post(
        "/v1/faults",
        &json!({"kind": "net", "action": "loss", "percent": 100, "interface": "veth-a",
                "netns": other.a.ns.name(), "duration": "30s"}),
    );
    assert_eq!(r.status, 400, "a host netns from the pod: {}", r.body);

    let id = arm(
        &pod,
        &json!({"kind": "net", "action": "loss", "percent": 100, "interface": "veth-a",
                "direction": "egress", "duration": "30s"}),
    );
    let in_pod = udp_through(&world.a, &world.b);
    let outside = udp_through(&other.a, &other.b);
    println!("under 100 % loss on the pod's veth-a: pod {in_pod}/40, other veth-a {outside}/40");
    assert_eq!(in_pod, 0, "the pod's traffic is dropped");
    assert!(outside >= 38, "the other namespace's veth-a is untouched");
    disarm(&pod, &id);
    assert!(udp_through(&world.a, &world.b) >= 38, "pod traffic after");
}

#[test]
fn syscall_fault_on_a_pod_pid_hits_that_process_only() {
    let chaos = skip_on_err!(setup());
    let world = TwoHosts::new().expect("pod world");
    let pod = Pod::start(&chaos, &world.a.ns, "pid");
    let host_dir = TempDir::new("sidecar-host");
    write_script(&host_dir.0.join("podwork"));
    let mut outsider = ChildProcess::spawn(Command::new(host_dir.0.join("podwork")))
        .expect("starting the outside podwork");
    assert!(wait_for(Duration::from_secs(10), || pod.podworks().len() == 2));
    let (victim_host, victim) = pod.podworks()[0];
    assert_ne!(victim_host, victim, "the pod numbers its processes itself");

    // A host pid means nothing inside the pod.
    let r = pod.client.post(
        "/v1/faults",
        &json!({"kind": "syscall", "action": "kill", "syscall": ["openat"],
                "pid": outsider.pid(), "duration": "30s"}),
    );
    assert_eq!(r.status, 400, "a host pid from the pod: {}", r.body);

    let id = arm(
        &pod,
        &json!({"kind": "syscall", "action": "kill", "syscall": ["openat"], "pid": victim,
                "duration": "30s"}),
    );
    assert!(
        wait_for(Duration::from_secs(5), || dead(victim_host)),
        "pod pid {victim} (host {victim_host}) was not killed\n{}",
        pod.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pod.podworks().len(), 1, "the other pod process lives");
    assert!(
        matches!(outsider.try_wait(), Ok(None)),
        "the same-name process outside the pod lives"
    );
    let status = pod.client.get(&format!("/v1/faults/{id}")).json();
    println!("pid {victim} in the pod = {victim_host} on the host: {status}");
    disarm(&pod, &id);
}

#[test]
fn fault_by_name_stays_inside_the_pod() {
    let chaos = skip_on_err!(setup());
    let world = TwoHosts::new().expect("pod world");
    let pod = Pod::start(&chaos, &world.a.ns, "comm");
    let host_dir = TempDir::new("sidecar-host-comm");
    write_script(&host_dir.0.join("podwork"));
    let mut outsider = ChildProcess::spawn(Command::new(host_dir.0.join("podwork")))
        .expect("starting the outside podwork");
    assert!(wait_for(Duration::from_secs(10), || pod.podworks().len() == 2));
    skip_unless!(if podworks().len() == 3 {
        Ok(())
    } else {
        Err("another podwork runs on this machine")
    });

    let id = arm(
        &pod,
        &json!({"kind": "syscall", "action": "kill", "syscall": ["openat"], "comm": "podwork",
                "duration": "30s"}),
    );
    assert!(
        wait_for(Duration::from_secs(5), || pod.podworks().is_empty()),
        "the pod's podworks were not killed\n{}",
        pod.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        matches!(outsider.try_wait(), Ok(None)),
        "the podwork outside the pod was killed by the pod's fault"
    );
    let status = pod.client.get(&format!("/v1/faults/{id}")).json();
    println!("by name from the pod: {status}");
    disarm(&pod, &id);
}

#[test]
fn io_fault_on_a_whole_device_is_refused_in_the_pod() {
    let chaos = skip_on_err!(setup());
    let lo = skip_on_err!(bpf_tests::LoopDevice::new(16 << 20));
    let rdev = std::fs::metadata(lo.device()).expect("stat the loop device");
    let dev = {
        use std::os::unix::fs::MetadataExt;
        let r = rdev.rdev();
        format!("{}:{}", libc::major(r), libc::minor(r))
    };
    let world = TwoHosts::new().expect("pod world");
    let pod = Pod::start(&chaos, &world.a.ns, "io");
    // Every process's I/O on the device, the node's included: refused.
    let r = pod.client.post(
        "/v1/faults",
        &json!({"kind": "io", "action": "fail", "device": dev, "op": "write",
                "duration": "30s", "force": true}),
    );
    assert_eq!(r.status, 400, "a whole device from the pod: {}", r.body);
    assert_eq!(r.json()["field"], "device", "{}", r.body);
    assert!(r.body.contains("container"), "{}", r.body);
}

#[test]
fn errno_by_name_stays_inside_the_pod() {
    let chaos = skip_on_err!(setup());
    let world = TwoHosts::new().expect("pod world");
    let pod = Pod::start(&chaos, &world.a.ns, "errno");
    let host_dir = TempDir::new("sidecar-host-errno");
    write_script(&host_dir.0.join("podwork"));
    let failed = host_dir.0.join("failed");
    let mut cmd = Command::new(host_dir.0.join("podwork"));
    cmd.arg(&failed);
    let mut outsider = ChildProcess::spawn(cmd).expect("starting the outside podwork");
    assert!(wait_for(Duration::from_secs(10), || pod.podworks().len() == 2));

    let r = pod.client.post(
        "/v1/faults",
        &json!({"kind": "syscall", "action": "fail", "syscall": ["openat"], "errno": "EACCES",
                "comm": "podwork", "duration": "30s"}),
    );
    skip_unless!(if r.status == 422 {
        Err(format!("this kernel cannot fail openat: {}", r.body))
    } else {
        Ok(())
    });
    assert_eq!(r.status, 201, "arming: {}\n{}", r.body, pod.log());
    let id = r.json()["id"].as_str().expect("id").to_owned();
    std::thread::sleep(Duration::from_secs(1));
    let status = pod.client.get(&format!("/v1/faults/{id}")).json();
    disarm(&pod, &id);
    println!("EACCES on openat by name from the pod: {status}");
    let acted = status["counters"]["acted"].as_u64().unwrap_or(0);
    assert!(acted >= 10, "the pod's opens failed: {status}");
    assert_eq!(pod.podworks().len(), 2, "the pod's processes live on");
    assert!(matches!(outsider.try_wait(), Ok(None)));
    let outside = std::fs::read_to_string(&failed).unwrap_or_default();
    assert_eq!(
        outside.lines().count(),
        0,
        "the podwork outside the pod saw failed opens"
    );
}
