//! A real Redis for the tests that need one (`redis-server`, `redis-tools` from Debian's
//! packages): started on a loopback port with `appendonly yes` and `appendfsync always`.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    ChildProcess, TestCgroup,
    checkup::{BlkioTwin, wait_serving},
};

/// `redis-cli -p PORT ARGS...`'s answer, trimmed.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("running redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// redis-server on `port` with its data in `dir`, in `cg` (and `twin`), answering PING.
pub fn start_redis(dir: &Path, port: u16, cg: &TestCgroup, twin: &BlkioTwin) -> ChildProcess {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--daemonize", "no", "--bind", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .arg("--dir")
        .arg(dir)
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ])
        .args(["--logfile", "redis.log"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let redis = ChildProcess::builder(cmd)
        .cgroup(cg)
        .spawn()
        .expect("starting redis-server");
    twin.add(redis.pid());
    wait_serving(
        "redis-server",
        Duration::from_secs(20),
        || redis_cli(port, &["PING"]) == "PONG",
        || std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default(),
    );
    redis
}
