//! `chaos discover` on a service the test starts: this test binary run again as a small service
//! (`service_main`, in a cgroup of the test's own) that appends to a log and fsyncs it, starts a
//! child process that writes a file of its own, keeps a listening socket that the test connects
//! to, connects to a dependency the test listens for, and sends DNS queries to 127.0.0.1:53.
//! Everything stays on loopback; the binary is in the VMs too, so the programs are checked on
//! every kernel.
//!
//! The discovery must find each of those with its counts, fill the catalog's parameters from
//! them (the log directory, the dependency, the resolver, the health address, the cgroup), make
//! the generic scenarios ready to run, and leave nothing of chaos behind.
//!
//! Then on a real Redis (Debian's `redis-server`; skipped where it is not installed, as in the
//! VMs), its data on an ext4 loop device of the test's own, under redis-benchmark, with an AOF
//! rewrite (a forked child) during the watch: the discovery finds its data directory, the AOF
//! it fsyncs at every write, the device, its port and clients, and proposes Redis's scenarios
//! ready to run with those values.

use std::{
    io::Write,
    net::{TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use bpf_tests::{
    ChildProcess, LoopDevice, TestCgroup,
    chaos::Chaos,
    checkup::{BlkioTwin, NothingLeft, free_port},
    daemon::{Daemon, TempDir},
    redis::{redis_cli, start_redis},
    skip_on_err,
};
use serde_json::Value;

/// Set (to the service's directory) when this binary runs as the service.
const SERVICE_DIR: &str = "CHAOS_DISCOVER_SERVICE_DIR";
/// The dependency's port, for the service.
const DEPENDENCY_PORT: &str = "CHAOS_DISCOVER_DEPENDENCY_PORT";

/// The service the discovery watches, when the test below runs this binary again with
/// [`SERVICE_DIR`] set; it runs until killed.
#[test]
#[ignore = "the service the discovery test starts (it runs until killed)"]
fn service_main() {
    let dir = PathBuf::from(std::env::var(SERVICE_DIR).expect("run by the discover test"));
    let dependency: u16 = std::env::var(DEPENDENCY_PORT)
        .expect("the dependency's port")
        .parse()
        .expect("a port");
    let listener = TcpListener::bind("127.0.0.1:0").expect("the service's socket");
    let port = listener.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    std::fs::create_dir_all(dir.join("logs")).expect("logs/");
    std::fs::create_dir_all(dir.join("spool")).expect("spool/");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("logs/app.log"))
        .expect("logs/app.log");
    let dns = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    // Ready: the test reads the port once the file is whole.
    std::fs::write(dir.join("port.tmp"), port.to_string()).expect("port file");
    std::fs::rename(dir.join("port.tmp"), dir.join("port")).expect("port file");
    let child_out = dir.join("spool/child.out");
    for tick in 0u64.. {
        writeln!(log, "tick {tick}").expect("appending to the log");
        log.sync_all().expect("fsync of the log");
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", dependency)) {
            let _ = s.write_all(b"ping\n");
        }
        // A DNS query (its header only) to a resolver nobody runs: it is the sending that counts.
        let _ = dns.send_to(&[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0], "127.0.0.1:53");
        if tick % 5 == 0 {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!("echo {tick} >> {}", child_out.display()))
                .status();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// This binary, run as the service in `cg`; its listening port.
fn start_service(dir: &Path, dependency: u16, cg: &TestCgroup) -> (ChildProcess, u16) {
    let mut cmd = Command::new(std::env::current_exe().expect("this test binary"));
    cmd.args(["--ignored", "--exact", "service_main", "--nocapture"])
        .env(SERVICE_DIR, dir)
        .env(DEPENDENCY_PORT, dependency.to_string())
        .stdout(std::process::Stdio::null());
    let service = ChildProcess::builder(cmd)
        .cgroup(cg)
        .spawn()
        .expect("starting the service");
    let start = Instant::now();
    let port = loop {
        if let Some(p) = std::fs::read_to_string(dir.join("port"))
            .ok()
            .and_then(|s| s.parse().ok())
        {
            break p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the service did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    (service, port)
}

/// The service's dependency on loopback, accepting and dropping connections: its port.
fn dependency() -> u16 {
    let dep = TcpListener::bind("127.0.0.1:0").expect("the dependency's socket");
    let port = dep.local_addr().expect("its address").port();
    std::thread::spawn(move || for _ in dep.incoming() {});
    port
}

/// The entry of `list` whose `key` is `value`.
fn find<'a>(list: &'a Value, key: &str, value: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|x| x[key] == value)
}

#[test]
fn a_service_is_discovered_with_its_files_peers_and_dns() {
    let chaos = skip_on_err!(Chaos::from_env());
    let dir = TempDir::new("discover");
    let dep_port = dependency();
    let cg = TestCgroup::new_v2().expect("a cgroup v2");
    let nothing_left = NothingLeft::now();
    let (service, port) = start_service(&dir.0, dep_port, &cg);
    // Two clients, connected for the whole watch.
    let clients: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connecting to the service"))
        .collect();

    let out = chaos
        .command(&[
            "discover",
            "--pid",
            &service.pid().to_string(),
            "--seconds",
            "4",
            "--json",
        ])
        .output()
        .expect("running chaos discover");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chaos discover failed: {stderr}");
    let d: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let o = &d["observation"];
    let ctx = format!("{d:#}");
    let dirs = dir.0.display().to_string();

    assert_eq!(o["domain"], "generic", "{ctx}");
    assert_eq!(o["lost_events"], 0, "{ctx}");
    // The log: about ten appends and fsyncs a second for four seconds.
    let logs = find(&o["directories"], "path", &format!("{dirs}/logs"))
        .unwrap_or_else(|| panic!("logs/ not found: {ctx}"));
    assert!(logs["syncs"].as_u64() >= Some(10), "{logs}");
    assert!(logs["writes"].as_u64() >= Some(10), "{logs}");
    let log = find(&o["files"], "path", &format!("{dirs}/logs/app.log"))
        .unwrap_or_else(|| panic!("logs/app.log not found: {ctx}"));
    assert!(log["syncs"].as_u64() >= Some(10), "{log}");
    // The children's writes: processes born during the watch are followed.
    let child = find(&o["files"], "path", &format!("{dirs}/spool/child.out"))
        .unwrap_or_else(|| panic!("the children's file not found: {ctx}"));
    assert!(child["opens_for_write"].as_u64() >= Some(2), "{child}");
    assert!(child["writes"].as_u64() >= Some(2), "{child}");
    assert!(o["processes"].as_array().map(Vec::len) >= Some(3), "{ctx}");
    // The network.
    let listening = find(&o["listening"], "address", &format!("127.0.0.1:{port}"))
        .unwrap_or_else(|| panic!("the service's socket not found: {ctx}"));
    assert_eq!(listening["connections"], 2, "{ctx}");
    assert_eq!(o["clients"][0]["address"], "127.0.0.1:0", "{ctx}");
    let dependency = find(&o["outgoing"], "address", &format!("127.0.0.1:{dep_port}"))
        .unwrap_or_else(|| panic!("the dependency not found: {ctx}"));
    assert!(
        dependency["connections"].as_u64() >= Some(10),
        "{dependency}"
    );
    assert_eq!(o["dns"][0]["address"], "127.0.0.1:53", "{ctx}");
    assert!(o["dns"][0]["connections"].as_u64() >= Some(10), "{ctx}");
    let cgroup = cg
        .path()
        .strip_prefix(bpf_tests::world::cgroup2_mount().expect("cgroup2"))
        .expect("under the hierarchy")
        .display()
        .to_string();
    assert_eq!(o["cgroup"], cgroup, "{ctx}");

    // The parameters, with their evidence.
    let v = &d["values"];
    assert_eq!(
        v["health_addr"]["value"],
        format!("127.0.0.1:{port}"),
        "{ctx}"
    );
    assert_eq!(v["dependency_ip"]["value"], "127.0.0.1", "{ctx}");
    assert_eq!(v["dependency_port"]["value"], dep_port.to_string(), "{ctx}");
    assert_eq!(v["resolver_ip"]["value"], "127.0.0.1", "{ctx}");
    assert_eq!(v["cgroup"]["value"], cgroup, "{ctx}");
    assert_eq!(v["pid"]["value"], service.pid().to_string(), "{ctx}");
    // The scenarios, ready as `chaos run` would take them.
    for (id, needs) in [
        ("generic-dns-failure", "--set resolver_ip=127.0.0.1"),
        (
            "generic-dependency-timeout",
            &format!("--set dependency_port={dep_port}") as &str,
        ),
        (
            "generic-fd-exhausted",
            &format!("--set health_addr=127.0.0.1:{port}"),
        ),
    ] {
        let p = find(&d["proposals"], "scenario", id)
            .unwrap_or_else(|| panic!("{id} not proposed: {ctx}"));
        let command = p["command"]
            .as_str()
            .unwrap_or_else(|| panic!("{id}: {p:#}"));
        assert!(
            command.starts_with(&format!("chaos run --scenario {id} ")) && command.contains(needs),
            "{id}: {command}"
        );
    }
    assert!(
        d["checkup"]
            .as_str()
            .is_some_and(|c| c.contains(&format!("--probe 127.0.0.1:{port}"))),
        "{ctx}"
    );

    // The text form says the same.
    let text = chaos
        .run(&[
            "discover",
            "--pid",
            &service.pid().to_string(),
            "--seconds",
            "1",
        ])
        .expect("chaos discover");
    assert!(text.contains(&format!("{dirs}/logs")), "{text}");
    assert!(
        text.contains("chaos run --scenario generic-dns-failure"),
        "{text}"
    );

    drop(clients);
    drop(service);
    nothing_left.assert(&chaos);
}

/// `POST /v1/discover` on a daemon answers as `chaos discover --json`; bad requests get 400
/// naming the field.
#[test]
fn the_daemon_discovers_too() {
    let chaos = skip_on_err!(Chaos::from_env());
    let dir = TempDir::new("discover-daemon");
    let dep_port = dependency();
    let cg = TestCgroup::new_v2().expect("a cgroup v2");
    let (service, port) = start_service(&dir.0, dep_port, &cg);
    let sock = dir.0.join("chaos.sock");
    let daemon = Daemon::start(&chaos, &["--socket", sock.to_str().expect("a UTF-8 path")]);
    let client = daemon.client();
    let body = serde_json::json!({"pid": service.pid(), "seconds": 2});
    let r = client.post("/v1/discover", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let d = r.json();
    assert_eq!(d["observation"]["pid"], service.pid(), "{d:#}");
    assert!(
        find(
            &d["observation"]["directories"],
            "path",
            &format!("{}/logs", dir.0.display())
        )
        .is_some(),
        "{d:#}"
    );
    assert_eq!(
        d["values"]["health_addr"]["value"],
        format!("127.0.0.1:{port}")
    );
    for (body, field) in [
        (serde_json::json!({"pid": 4194303, "seconds": 1}), "pid"),
        (
            serde_json::json!({"pid": service.pid(), "seconds": 0}),
            "seconds",
        ),
        (
            serde_json::json!({"pid": service.pid(), "seconds": 301}),
            "seconds",
        ),
        (serde_json::json!({"pid": "x"}), "pid"),
    ] {
        let r = client.post("/v1/discover", &body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.json()["field"], field, "{body}: {}", r.body);
    }
    daemon.stop();
    drop(service);
}

#[test]
fn a_pid_that_is_not_running_is_refused() {
    let chaos = skip_on_err!(Chaos::from_env());
    let f = chaos
        .run(&["discover", "--pid", "4194303", "--seconds", "1"])
        .expect_err("no such process");
    assert!(
        f.stderr.contains("pid") && f.stderr.contains("no process"),
        "{f}"
    );
}

#[test]
fn redis_is_discovered_with_its_data_directory_device_and_port() {
    for tool in ["redis-server", "redis-cli", "redis-benchmark"] {
        skip_on_err!(bpf_tests::skip::require_command(tool));
    }
    skip_on_err!(bpf_tests::skip::require_loop());
    let chaos = skip_on_err!(Chaos::from_env());
    let lo = LoopDevice::with_ext4(64 << 20).expect("a loop device with ext4");
    let data = lo.mount_point().expect("mounted").join("redis");
    std::fs::create_dir(&data).expect("redis's data directory");
    let cg = TestCgroup::new_v2().expect("a cgroup v2");
    let twin = BlkioTwin::new(&cg);
    let port = free_port();
    let nothing_left = NothingLeft::now();
    let redis = start_redis(&data, port, &cg, &twin);
    let mut bench = Command::new("redis-benchmark");
    bench
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "set",
            "-n",
            "100000000",
            "-c",
            "2",
            "-q",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let bench = ChildProcess::builder(bench)
        .spawn()
        .expect("starting redis-benchmark");
    // An AOF rewrite during the watch: Redis forks a child that writes the new AOF.
    let rewrite = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        redis_cli(port, &["BGREWRITEAOF"])
    });

    let out = chaos
        .command(&[
            "discover",
            "--pid",
            &redis.pid().to_string(),
            "--seconds",
            "4",
            "--json",
        ])
        .output()
        .expect("running chaos discover");
    let rewrite = rewrite.join().expect("the rewrite thread");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let o = &d["observation"];
    let v = &d["values"];
    let ctx = format!("BGREWRITEAOF: {rewrite}\n{d:#}");
    let data_s = data.display().to_string();
    let device = lo.device().display().to_string();

    assert_eq!(o["domain"], "redis", "{ctx}");
    // The AOF: one fsync per write, appendfsync always.
    let aof_dir = &o["directories"][0];
    assert_eq!(aof_dir["path"], format!("{data_s}/appendonlydir"), "{ctx}");
    assert!(aof_dir["syncs"].as_u64() >= Some(100), "{aof_dir}");
    assert_eq!(aof_dir["device"], device, "{ctx}");
    let incr = o["files"]
        .as_array()
        .and_then(|f| {
            f.iter()
                .find(|f| f["path"].as_str().is_some_and(|p| p.ends_with(".incr.aof")))
        })
        .unwrap_or_else(|| panic!("no incremental AOF: {ctx}"));
    assert!(incr["syncs"].as_u64() >= Some(100), "{incr}");
    // The rewrite child was followed: its temporary AOF is among the files written.
    assert!(
        o["files"].as_array().is_some_and(|f| f
            .iter()
            .any(|f| f["path"].as_str().is_some_and(|p| p.contains("rewriteaof")))),
        "the rewrite child's file was not seen: {ctx}"
    );
    assert!(o["processes"].as_array().map(Vec::len) >= Some(2), "{ctx}");
    // Its port and clients.
    assert!(
        find(&o["listening"], "address", &format!("127.0.0.1:{port}"))
            .is_some_and(|l| l["connections"].as_u64() >= Some(2)),
        "{ctx}"
    );
    assert_eq!(o["clients"][0]["address"], "127.0.0.1:0", "{ctx}");
    // The values and the scenarios.
    assert_eq!(v["data_dir"]["value"], data_s, "{ctx}");
    assert_eq!(v["device"]["value"], device, "{ctx}");
    assert_eq!(
        v["redis_addr"]["value"],
        format!("127.0.0.1:{port}"),
        "{ctx}"
    );
    assert_eq!(v["redis_port"]["value"], port.to_string(), "{ctx}");
    for (id, needs) in [
        (
            "redis-aof-fsync-eio",
            format!("--set redis_addr=127.0.0.1:{port}"),
        ),
        ("redis-aof-disk-full", format!("--set data_dir={data_s}")),
        (
            "redis-slow-disk-appendfsync-always",
            format!("--set device={device}"),
        ),
        (
            "redis-client-network-delay",
            "--set clients=127.0.0.1".to_owned(),
        ),
    ] {
        let p = find(&d["proposals"], "scenario", id)
            .unwrap_or_else(|| panic!("{id} not proposed: {ctx}"));
        let command = p["command"]
            .as_str()
            .unwrap_or_else(|| panic!("{id}: {p:#}"));
        assert!(command.contains(&needs), "{id}: {command}");
    }
    assert!(
        d["checkup"]
            .as_str()
            .is_some_and(|c| c.starts_with(&format!(
                "chaos checkup --profile redis --pid {} --probe 127.0.0.1:{port}",
                redis.pid()
            ))),
        "{ctx}"
    );

    // Redis was only watched: it still serves.
    drop(bench);
    assert_eq!(redis_cli(port, &["SET", "discover:after", "1"]), "OK");
    drop(redis);
    nothing_left.assert(&chaos);
    drop(twin);
    drop(cg);
}
