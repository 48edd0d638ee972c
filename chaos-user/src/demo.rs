//! The built-in drill (`chaos demo`): a real experiment on a workload chaos builds for it,
//! using every fault family, run by the same runner as `chaos run`.
//!
//! The workload: an echo server in its own network namespace (reached through a veth pair whose
//! host end chaos made), a scratch ext4 filesystem on a loop device, and a cgroup of its own in
//! which the traffic runs: TCP requests to the server and 16 KiB writes with `fdatasync` to
//! the filesystem. The drill puts one fault after another on it (packet loss, a partition,
//! refused connects, delay, slow and hung disk I/O, failed writes and fsyncs, a full disk), each
//! with expectations that it bites, then checks that everything comes back. A fault this kernel
//! cannot make is skipped with the reason (`admission.unsupported: skip`), never faked.
//! Everything is removed afterwards, whatever happens.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::json;

use crate::{
    Injector,
    error::{Error, Result},
    experiment::{
        self, ExperimentSpec,
        progress::Progress,
        report::Report,
        runner::{self, Options},
    },
    mounts::CgroupMounts,
    testbed::Peer,
};

/// The echo server's port.
const PORT: u16 = 7007;

/// What the demo builds, removed on drop.
pub struct World {
    peer: Peer,
    server_stop: Arc<AtomicBool>,
    disk: ScratchDisk,
    /// The workload's cgroup, relative to the hierarchies' roots.
    pub cgroup: String,
    cgroup_dirs: Vec<PathBuf>,
}

impl World {
    /// Builds the demo's world: namespace + veth + echo server, loop device + ext4, cgroup.
    pub fn new() -> Result<World> {
        let tag = std::process::id();
        let name = format!("chaos-demo-{tag}");
        let peer = Peer::new(&name, 251)?;
        let server_stop = Arc::new(AtomicBool::new(false));
        let addr = SocketAddrV4::new(peer.peer_addr, PORT);
        let listener = peer.netns.run(move || {
            TcpListener::bind(addr).map_err(|e| Error::io(format!("binding {addr}"), e))
        })?;
        serve(listener, server_stop.clone());
        let disk = ScratchDisk::new(&name, 256 << 20)?;
        let mut world = World {
            peer,
            server_stop,
            disk,
            cgroup: name,
            cgroup_dirs: Vec::new(),
        };
        let mounts = CgroupMounts::read()?;
        for root in mounts.v2.iter().chain(mounts.v1.get("blkio")) {
            let dir = root.join(&world.cgroup);
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            world.cgroup_dirs.push(dir);
        }
        Ok(world)
    }

    /// The echo server, `HOST:PORT`.
    pub fn server(&self) -> String {
        format!("{}:{PORT}", self.peer.peer_addr)
    }

    /// The scratch filesystem's mount point.
    pub fn data_dir(&self) -> &Path {
        &self.disk.mount
    }

    /// The loop device.
    pub fn device(&self) -> &Path {
        &self.disk.device
    }

    /// The host end of the veth pair.
    pub fn interface(&self) -> &str {
        &self.peer.host_if
    }

    /// The server's address.
    pub fn server_addr(&self) -> Ipv4Addr {
        self.peer.peer_addr
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.server_stop.store(true, Ordering::Relaxed);
        for dir in &self.cgroup_dirs {
            // Move stragglers to the parent, then remove.
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            if let Some(parent) = dir.parent() {
                for pid in procs.split_whitespace() {
                    let _ = std::fs::write(parent.join("cgroup.procs"), pid);
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Echoes what each connection sends, until `stop`.
fn serve(listener: TcpListener, stop: Arc<AtomicBool>) {
    let _ = listener.set_nonblocking(true);
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    std::thread::spawn(move || {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                        let mut buf = [0u8; 256];
                        if let Ok(n) = conn.read(&mut buf)
                            && n > 0
                        {
                            let _ = conn.write_all(&buf[..n]);
                        }
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
}

/// An ext4 filesystem on a loop device over a sparse file, mounted; removed on drop.
struct ScratchDisk {
    image: PathBuf,
    device: PathBuf,
    mount: PathBuf,
}

fn command(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::io(format!("running {program}"), e))?;
    if !out.status.success() {
        return Err(Error::io(
            format!("{program} {}", args.join(" ")),
            std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl ScratchDisk {
    fn new(name: &str, size: u64) -> Result<ScratchDisk> {
        // A sparse file: only what the drill writes takes space (fill faults fallocate, which
        // writes metadata only).
        let dir = Some(PathBuf::from("/var/tmp"))
            .filter(|d| d.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let image = dir.join(format!("{name}.img"));
        let mount = PathBuf::from(format!("/run/{name}"));
        let file = std::fs::File::create(&image)
            .map_err(|e| Error::io(format!("creating {}", image.display()), e))?;
        file.set_len(size)
            .map_err(|e| Error::io(format!("sizing {}", image.display()), e))?;
        let mut disk = ScratchDisk {
            image,
            device: PathBuf::new(),
            mount,
        };
        let img = disk.image.to_string_lossy().into_owned();
        disk.device = PathBuf::from(command("losetup", &["--find", "--show", &img])?);
        let dev = disk.device.to_string_lossy().into_owned();
        command("mkfs.ext4", &["-q", "-F", "-m", "0", &dev])?;
        std::fs::create_dir_all(&disk.mount)
            .map_err(|e| Error::io(format!("creating {}", disk.mount.display()), e))?;
        command("mount", &[&dev, &disk.mount.to_string_lossy()])?;
        Ok(disk)
    }
}

impl Drop for ScratchDisk {
    fn drop(&mut self) {
        let mount = self.mount.to_string_lossy().into_owned();
        if command("umount", &[&mount]).is_err() {
            let _ = command("umount", &["-l", &mount]);
        }
        let _ = std::fs::remove_dir(&self.mount);
        if !self.device.as_os_str().is_empty() {
            let _ = command("losetup", &["-d", &self.device.to_string_lossy()]);
        }
        let _ = std::fs::remove_file(&self.image);
    }
}

/// The demo's drill on `world`.
pub fn experiment(world: &World) -> ExperimentSpec {
    let data = world.data_dir().to_string_lossy().into_owned();
    let device = world.device().to_string_lossy().into_owned();
    let iface = world.interface();
    let server = world.server();
    let dst = format!("{}/32", world.server_addr());
    let cg = &world.cgroup;
    // Whether 1 MiB can still be had. fallocate takes the space at once, so the probe's file
    // exists for a moment only: written with `head`, on a loaded machine it existed for most of
    // each second, and a fill that measured the free space then left that MiB free when the
    // file went (the probe then never failed).
    let space = format!(
        "fallocate -l 1048576 {data}/.space-probe; s=$?; rm -f {data}/.space-probe; exit $s"
    );
    let spec = json!({
        "schema": "chaos.experiment/v1",
        "name": "chaos-demo",
        "description": "An echo service in its own network namespace and a writer that fsyncs \
            every block, both run from their own cgroup, meet every fault family this kernel \
            can make, one after another; each must bite, and everything must come back.",
        "target": {"cgroup": cg},
        "probes": [
            {"name": "server", "tcp": server, "interval": "500ms", "timeout": "500ms"},
            {"name": "space", "command": {"run": ["sh", "-c", space]}, "interval": "1s", "timeout": "3s"},
        ],
        "admission": {
            "unsupported": "skip",
            // The workload's processes are the traffic's, started after admission.
            "target_alive": false,
            "free_disk": [{"path": data, "min": "100M"}],
            "steady_for": "2s",
            "timeout": "20s",
        },
        "traffic": [
            {"name": "echo", "tcp": {"address": server, "send": "ping"}, "rate": 100,
             "concurrency": 4, "timeout": "1s", "cgroup": cg},
            {"name": "writes", "file": {"path": data, "block_size": "16k", "file_size": "1M",
             "fsync": true}, "rate": 50, "concurrency": 2, "timeout": "10s", "cgroup": cg},
        ],
        "baseline": "5s",
        "duration": "45s",
        "faults": [
            {"name": "loss", "start": "0s", "duration": "7s", "fault":
                {"kind": "net", "action": "loss", "percent": 40, "interface": iface, "dst": [dst]}},
            {"name": "fsync-eio", "start": "0s", "duration": "7s", "fault":
                {"kind": "syscall", "action": "fail", "syscall": ["fdatasync"], "errno": "EIO"}},
            {"name": "partition", "start": "9s", "duration": "5s", "fault":
                {"kind": "net", "action": "partition", "interface": iface, "dst": [dst]}},
            {"name": "refused", "start": "16s", "duration": "5s", "fault":
                {"kind": "syscall", "action": "fail", "syscall": ["connect"], "errno": "ECONNREFUSED"}},
            {"name": "delay", "start": "23s", "duration": "6s", "fault":
                {"kind": "net", "action": "delay", "latency": "100ms", "interface": iface, "dst": [dst]}},
            {"name": "slow", "start": "23s", "duration": "6s", "fault":
                {"kind": "io", "action": "slow", "device": device, "write_iops": 10}},
            {"name": "hang", "start": "31s", "duration": "5s", "fault":
                {"kind": "io", "action": "hang", "device": device}},
            {"name": "write-eio", "start": "38s", "duration": "5s", "fault":
                {"kind": "io", "action": "fail", "device": device, "op": "write"}},
            {"name": "disk-full", "start": "38s", "duration": "5s", "fault":
                {"kind": "disk", "action": "fill", "path": data, "free": "256k"}},
        ],
        "expect": [
            {"fault": "loss", "acted": ">= 1"},
            {"during": "loss", "traffic": "echo", "p99": ">= 200ms"},
            {"during": "fsync-eio", "settle": "500ms", "traffic": "writes", "error_rate": ">= 90%"},
            {"during": "partition", "settle": "1s", "probe": "server", "fails": ">= 80%"},
            {"during": "partition", "settle": "1500ms", "traffic": "echo", "error_rate": ">= 90%"},
            {"fault": "refused", "acted": ">= 1"},
            {"during": "refused", "settle": "500ms", "traffic": "echo", "error_rate": ">= 90%"},
            {"during": "delay", "settle": "500ms", "traffic": "echo", "p50": ">= 50ms"},
            {"during": "slow", "settle": "1s", "traffic": "writes", "throughput": "<= 50%"},
            {"during": "hang", "settle": "1s", "traffic": "writes", "throughput": "<= 10%"},
            {"during": "hang", "traffic": "writes", "max_latency": ">= 2s"},
            {"during": "write-eio", "settle": "500ms", "traffic": "writes", "error_rate": ">= 50%"},
            {"during": "disk-full", "settle": "1s", "probe": "space", "fails": ">= 80%"},
        ],
        "recovery": {
            "within": "20s",
            "hold": "3s",
            "expect": [
                {"traffic": "echo", "throughput": ">= 80%"},
                {"traffic": "writes", "throughput": ">= 70%"},
            ],
        },
        "abort": [
            {"probe": "server", "down_for": "30s"},
        ],
    });
    experiment::from_value(spec).expect("the demo's drill is a valid spec")
}

/// Builds the world, runs the demo's drill on it and removes the world.
pub fn run(
    injector: &Injector,
    worker_exe: PathBuf,
    progress: Box<dyn Progress>,
    stop: Arc<AtomicBool>,
) -> Result<Report> {
    let world = World::new()?;
    let spec = experiment(&world);
    let report = runner::run(
        &spec,
        injector,
        Options {
            source: Some("chaos demo".into()),
            worker_exe,
            stop,
            progress,
        },
    )
    .map_err(|e| Error::io("the demo's drill", std::io::Error::other(e.to_string())))?;
    drop(world);
    Ok(report)
}
