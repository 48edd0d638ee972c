//! Network faults beyond plain loss, with real traffic between two test namespaces: selectors
//! (port, prefix, protocol, cgroup, exclusions) hit exactly the selected flows in both
//! directions, correlation makes bursts, corrupt and duplicate rates fall in their binomial
//! intervals, the guards protect the management path, and the oracle finds nothing afterwards.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    process::Command,
    time::Duration,
};

use bpf_tests::{
    ChildProcess, TestCgroup, UdpProbeSink,
    drill::{Drill, PORT},
    skip_on_err, skip_unless,
    world::{
        CgroupVersion, TcpEcho, big_receive_buffer, cgroup2_mount, measure::within_binomial,
        tcp_check,
    },
};

/// Sends `n` sequenced datagrams A -> B and returns the sink's statistics.
fn probe(d: &Drill, n: u64) -> bpf_tests::world::measure::SinkStats {
    let to = SocketAddr::new(d.world.b.v4(), PORT);
    let sink = UdpProbeSink::bind(&d.world.b.ns, to.ip(), PORT, 64).expect("bind probe sink");
    let sent = bpf_tests::udp_send_seq(&d.world.a.ns, to, n, 64, None).expect("send");
    assert_eq!(sent, n, "the sender itself must lose nothing");
    sink.stats(sent)
}

#[test]
fn loss_correlation_makes_bursts() {
    let d = skip_on_err!(Drill::new("any"));
    let n = 20_000;
    let mut runs = Vec::new();
    for correlation in ["0", "75"] {
        let id = d.net(
            "loss",
            &d.world.a,
            &["--percent", "30", "--correlation", correlation],
            "60s",
        );
        let stats = probe(&d, n);
        d.chaos.recover(&id).expect("recover");
        let mean_run = stats.lost() as f64 / stats.loss_runs.len().max(1) as f64;
        let share = stats.lost() as f64 / n as f64;
        println!(
            "correlation {correlation}%: lost {:.2}%, {} runs, mean run {mean_run:.2}",
            100.0 * share,
            stats.loss_runs.len()
        );
        runs.push((share, mean_run));
    }
    // Without correlation: binomial; mean run 1/(1-p) = 1.43.
    assert!(
        within_binomial(n, 0.30, (runs[0].0 * n as f64) as u64),
        "{:?}",
        runs[0]
    );
    assert!((runs[0].1 - 1.0 / 0.7).abs() < 0.15, "{:?}", runs[0]);
    // With 75%: the same average (bursts widen its spread), mean run 1/((1-p)(1-c)) = 5.71.
    assert!((runs[1].0 - 0.30).abs() < 0.05, "{:?}", runs[1]);
    let expected = 1.0 / (0.7 * 0.25);
    assert!(
        (runs[1].1 - expected).abs() / expected < 0.25,
        "mean burst {:.2} vs {expected:.2}",
        runs[1].1
    );
    d.assert_clean();
}

#[test]
fn partition_by_port_hits_that_flow_both_ways() {
    let d = skip_on_err!(Drill::new("any"));
    let (hit, spared) = (PORT, PORT + 1);
    let id = d.net(
        "partition",
        &d.world.a,
        &["--proto", "udp", "--dport", &hit.to_string()],
        "60s",
    );
    assert_eq!(d.send_port(d.world.b.v4(), hit, 300), 0, "A -> B:{hit} cut");
    assert_eq!(
        d.send_port(d.world.b.v4(), spared, 300),
        300,
        "A -> B:{spared} flows"
    );
    // Ingress on A: B -> A:hit is cut too (partition is both ways by default).
    assert_eq!(d.send_back(hit, 300), 0, "B -> A:{hit} cut");
    assert_eq!(d.send_back(spared, 300), 300, "B -> A:{spared} flows");
    d.chaos.recover(&id).expect("recover");
    assert_eq!(d.send_port(d.world.b.v4(), hit, 300), 300);
    d.assert_clean();
}

#[test]
fn partition_by_prefix_with_exclusion() {
    let mut d = skip_on_err!(Drill::new("any"));
    // A second and third address on B, in the same subnet.
    let k = d.world.subnet();
    let extra: Vec<Ipv4Addr> = [3, 4].map(|i| Ipv4Addr::new(10, 213, k, i)).to_vec();
    for a in &extra {
        d.world
            .b
            .ns
            .exec(&[
                "ip",
                "addr",
                "add",
                &format!("{a}/32"),
                "dev",
                &d.world.b.ifname,
            ])
            .expect("add address");
        d.world
            .a
            .ns
            .exec(&[
                "ip",
                "neigh",
                "replace",
                &a.to_string(),
                "lladdr",
                &mac(&d.world.b.mac),
                "dev",
                &d.world.a.ifname,
                "nud",
                "permanent",
            ])
            .expect("neighbour");
    }
    d.before = d.oracle.snapshot();
    let dst = format!("10.213.{k}.0/24");
    let keep = format!("{}", extra[1]);
    let id = d.net(
        "partition",
        &d.world.a,
        &["--dst", &dst, "--exclude", &keep, "--direction", "egress"],
        "60s",
    );
    assert_eq!(d.send(d.world.b.v4(), 300), 0, ".2 is in the prefix");
    assert_eq!(d.send(IpAddr::V4(extra[0]), 300), 0, ".3 is in the prefix");
    assert_eq!(d.send(IpAddr::V4(extra[1]), 300), 300, ".4 is excluded");
    if let Some(v6) = d.world.b.ipv6 {
        assert_eq!(
            d.send(IpAddr::V6(v6), 300),
            300,
            "IPv6 is outside the IPv4 prefix"
        );
    }
    d.chaos.recover(&id).expect("recover");
    assert_eq!(d.send(IpAddr::V4(extra[0]), 300), 300);
    d.assert_clean();
}

fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn partition_by_ipv6_prefix() {
    let d = skip_on_err!(Drill::new("any"));
    skip_unless!(d.world.b.ipv6.ok_or("no IPv6 in this kernel"));
    let v6 = d.world.b.v6();
    let id = d.net(
        "partition",
        &d.world.a,
        &["--dst", &format!("{v6}/128"), "--direction", "egress"],
        "60s",
    );
    assert_eq!(d.send(v6, 300), 0, "IPv6 destination cut");
    assert_eq!(d.send(d.world.b.v4(), 300), 300, "IPv4 untouched");
    d.chaos.recover(&id).expect("recover");
    d.assert_clean();
}

#[test]
fn partition_by_proto() {
    let d = skip_on_err!(Drill::new("any"));
    let echo = TcpEcho::start(&d.world.b.ns, d.world.b.v4(), 48_000).expect("echo");
    let id = d.net("partition", &d.world.a, &["--proto", "tcp"], "60s");
    assert!(
        tcp_check(&d.world.a.ns, echo.local_addr(), Duration::from_millis(500)).is_err(),
        "TCP cut"
    );
    assert_eq!(d.send_v4(300), 300, "UDP flows");
    d.chaos.recover(&id).expect("recover");
    tcp_check(&d.world.a.ns, echo.local_addr(), Duration::from_secs(2)).expect("TCP back");
    d.assert_clean();
}

/// The current process's cgroup v2 directory.
fn own_cgroup_v2() -> Option<std::path::PathBuf> {
    let root = cgroup2_mount()?;
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(root.join(rel.trim_start_matches('/')))
}

/// A UDP socket in A's namespace whose cgroup is `cg`: sockets keep the cgroup of the process
/// that created them, so the test joins `cg`, creates it, and goes back.
fn socket_in_cgroup(d: &Drill, cg: &TestCgroup) -> UdpSocket {
    let home = own_cgroup_v2().expect("own cgroup v2");
    let pid = std::process::id().to_string();
    cg.add_pid(std::process::id())
        .expect("join the test cgroup");
    let sock = d
        .world
        .a
        .ns
        .run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)));
    std::fs::write(home.join("cgroup.procs"), &pid).expect("back to our cgroup");
    sock.expect("socket")
}

/// Sends `n` datagrams from `sock` (on A) to a sink on B; returns how many arrived.
fn outbound(d: &Drill, sock: &UdpSocket, n: u32) -> u64 {
    let to = SocketAddr::new(d.world.b.v4(), PORT);
    let sink = bpf_tests::UdpSink::bind(&d.world.b.ns, to.ip(), PORT).expect("sink");
    for i in 0..n {
        sock.send_to(&i.to_be_bytes(), to).expect("send");
    }
    sink.count()
}

/// Sends `n` datagrams from B to `sock`'s port on A (`via_lo`: from A itself, over loopback);
/// returns how many `sock` received.
fn inbound(d: &Drill, sock: &UdpSocket, n: u64, via_lo: bool) -> u64 {
    let port = sock.local_addr().expect("local address").port();
    let (from, to) = if via_lo {
        (&d.world.a.ns, IpAddr::V4(Ipv4Addr::LOCALHOST))
    } else {
        (&d.world.b.ns, d.world.a.v4())
    };
    let sent = bpf_tests::udp_blast(from, to, port, n, 64).expect("blast");
    assert_eq!(sent, n, "the sender itself must lose nothing");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    let mut got = 0;
    while sock.recv_from(&mut buf).is_ok() {
        got += 1;
    }
    got
}

/// A socket in A's namespace, outside any test cgroup.
fn plain_socket(d: &Drill) -> UdpSocket {
    d.world
        .a
        .ns
        .run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
        .expect("socket")
}

#[test]
fn partition_by_cgroup_cuts_both_directions_of_its_subtree() {
    let d = skip_on_err!(Drill::new("any"));
    skip_unless!(own_cgroup_v2().ok_or("this process is in no cgroup v2"));
    skip_on_err!(d.chaos.probe_row("cgroup_skb"));
    let cg = skip_on_err!(TestCgroup::new_v2());
    let sub = TestCgroup::in_dir(cg.path(), CgroupVersion::V2).expect("sub-cgroup");
    // Sockets of the cgroup's sub-cgroup are the cgroup's too.
    let inside = socket_in_cgroup(&d, &sub);
    let outside = plain_socket(&d);
    let cgroup = cg.path().to_string_lossy().into_owned();
    let refused = d
        .try_net(
            "corrupt",
            &d.world.a,
            &[
                "--percent",
                "5",
                "--cgroup",
                &cgroup,
                "--direction",
                "ingress",
            ],
            "60s",
        )
        .unwrap_err();
    assert!(
        refused.stderr.starts_with("error: invalid cgroup") && refused.stderr.contains("dropped"),
        "{refused}"
    );
    // Partition: both directions by default.
    let fault = d.net("partition", &d.world.a, &["--cgroup", &cgroup], "60s");
    let status = d.chaos.status(&fault).expect("status");
    assert_eq!(
        status["strategy"]
            .as_str()
            .map(|s| s.ends_with("+cgroup-skb")),
        Some(true),
        "{status}"
    );
    assert_eq!(
        outbound(&d, &inside, 200),
        0,
        "the cgroup's sockets cannot send"
    );
    assert_eq!(inbound(&d, &inside, 200, false), 0, "nor receive");
    assert_eq!(outbound(&d, &outside, 200), 200, "other sockets send");
    assert_eq!(inbound(&d, &outside, 200, false), 200, "and receive");
    // The fault is on A's veth: the same socket still hears loopback.
    assert_eq!(inbound(&d, &inside, 200, true), 200, "loopback is not cut");
    let acted = d.chaos.status(&fault).expect("status")["counters"]["acted"]
        .as_u64()
        .expect("acted");
    assert_eq!(acted, 400, "200 out and 200 in dropped: {acted}");
    d.chaos.recover(&fault).expect("recover");
    assert_eq!(outbound(&d, &inside, 200), 200, "recovered: out");
    assert_eq!(inbound(&d, &inside, 200, false), 200, "recovered: in");
    drop(inside);
    d.assert_clean();
}

#[test]
fn loss_by_cgroup_inbound_within_binomial_interval() {
    let d = skip_on_err!(Drill::new("any"));
    skip_unless!(own_cgroup_v2().ok_or("this process is in no cgroup v2"));
    skip_on_err!(d.chaos.probe_row("cgroup_skb"));
    let cg = skip_on_err!(TestCgroup::new_v2());
    let inside = socket_in_cgroup(&d, &cg);
    let cgroup = cg.path().to_string_lossy().into_owned();
    let fault = d.net(
        "loss",
        &d.world.a,
        &[
            "--percent",
            "30",
            "--cgroup",
            &cgroup,
            "--direction",
            "ingress",
        ],
        "60s",
    );
    let n = 20_000;
    big_receive_buffer(&inside);
    let lost = n - inbound(&d, &inside, n, false);
    assert!(
        within_binomial(n, 0.30, lost),
        "lost {lost} of {n} for 30 %"
    );
    assert_eq!(outbound(&d, &inside, 200), 200, "egress untouched");
    d.chaos.recover(&fault).expect("recover");
    drop(inside);
    d.assert_clean();
}

#[test]
fn corrupt_rate_within_binomial_interval() {
    let d = skip_on_err!(Drill::new("any"));
    let n = 20_000;
    let id = d.net("corrupt", &d.world.a, &["--percent", "5"], "60s");
    let stats = probe(&d, n);
    let status = d.chaos.status(&id).expect("status");
    d.chaos.recover(&id).expect("recover");
    // A corrupted datagram either arrives damaged (checksum computed after the flip, with
    // offload) or is dropped by the receiver's checksum check: both are the fault's doing.
    let hit = stats.corrupted + stats.corrupted_unattributed + stats.lost();
    println!(
        "corrupted {} + unattributed {} + lost {} of {n}; rule acted {}",
        stats.corrupted,
        stats.corrupted_unattributed,
        stats.lost(),
        status["counters"]["acted"]
    );
    assert!(within_binomial(n, 0.05, hit), "{hit} of {n}");
    assert_eq!(stats.duplicates, 0);
    d.assert_clean();
}

#[test]
fn duplicate_rate_within_binomial_interval() {
    let d = skip_on_err!(Drill::new("any"));
    let n = 20_000;
    let id = d.net("duplicate", &d.world.a, &["--percent", "5"], "60s");
    let stats = probe(&d, n);
    let status = d.chaos.status(&id).expect("status");
    d.chaos.recover(&id).expect("recover");
    let acted = status["counters"]["acted"].as_u64().expect("acted");
    println!(
        "duplicates {} of {n}, lost {}; the rule acted {acted} times; {}",
        stats.duplicates,
        stats.lost(),
        status["counters"]
    );
    // Every copy the rule made of a probe arrived, and no other. The rule selects every packet
    // on the interface: a packet that is not a probe (seen once on Debian 6.1: matched 20001 of
    // 20000 sent, acted 997, 996 probe copies) may be copied too, and its copy is not counted.
    let matched = status["counters"]["matched"].as_u64().expect("matched");
    let foreign = matched.saturating_sub(n);
    assert!(
        stats.duplicates <= acted && acted - stats.duplicates <= foreign,
        "{} probe copies, the rule acted {acted} times on {matched} packets ({foreign} not probes)",
        stats.duplicates
    );
    assert!(
        within_binomial(n, 0.05, stats.duplicates),
        "{}",
        stats.duplicates
    );
    assert_eq!(stats.lost(), 0, "duplicating loses nothing");
    assert_eq!(stats.corrupted, 0);
    d.assert_clean();
}

#[test]
fn guard_keeps_port_22_unless_forced() {
    let d = skip_on_err!(Drill::new("any"));
    let id = d.net("partition", &d.world.a, &["--direction", "egress"], "60s");
    assert_eq!(d.send_port(d.world.b.v4(), 22, 200), 200, "port 22 kept");
    assert_eq!(d.send_v4(200), 0, "the rest cut");
    d.chaos.recover(&id).expect("recover");
    let id = d.net(
        "partition",
        &d.world.a,
        &["--direction", "egress", "--force"],
        "60s",
    );
    assert_eq!(
        d.send_port(d.world.b.v4(), 22, 200),
        0,
        "--force cuts port 22 too"
    );
    d.chaos.recover(&id).expect("recover");
    d.assert_clean();
}

#[test]
fn guard_refuses_unfiltered_drop_on_the_default_route() {
    let mut d = skip_on_err!(Drill::new("any"));
    let a = &d.world.a;
    a.ns.exec(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        &d.world.b.ipv4.to_string(),
    ])
    .expect("default route");
    d.before = d.oracle.snapshot();
    let refused = d.try_net("partition", &d.world.a, &[], "60s").unwrap_err();
    assert!(
        refused.stderr.contains("default route") && refused.stderr.contains("--force"),
        "{refused}"
    );
    assert_eq!(refused.stderr.lines().count(), 1, "{refused}");
    // Any fault on all of its traffic, not only a full drop.
    let refused = d
        .try_net("loss", &d.world.a, &["--percent", "30"], "60s")
        .unwrap_err();
    assert!(
        refused.stderr.contains("default route") && refused.stderr.contains("--force"),
        "{refused}"
    );
    d.assert_clean();
    // Forced, it is armed.
    let id = d.net("loss", &d.world.a, &["--percent", "30", "--force"], "60s");
    d.chaos.recover(&id).expect("recover");
    d.assert_clean();
    // Narrowed, it is allowed.
    let id = d.net("partition", &d.world.a, &["--dport", "9"], "60s");
    d.chaos.recover(&id).expect("recover");
    d.assert_clean();
}

#[test]
fn dst_finds_the_interface_and_target_pid_the_namespace() {
    let d = skip_on_err!(Drill::new("any"));
    let sleeper = bpf_tests::world::ChildProcess::builder({
        let mut c = std::process::Command::new("sleep");
        c.arg("60");
        c
    })
    .netns(&d.world.a.ns)
    .spawn()
    .expect("sleeper in A");
    let dst = d.world.b.ipv4.to_string();
    let pid = sleeper.pid().to_string();
    let id = d
        .chaos
        .inject(&[
            "net",
            "partition",
            "--dst",
            &dst,
            "--target-pid",
            &pid,
            "--direction",
            "egress",
            "--duration",
            "60s",
        ])
        .expect("inject by --dst and --target-pid");
    let status = d.chaos.status(&id).expect("status");
    assert_eq!(
        d.send_v4(200),
        0,
        "cut on the interface that routes to {dst}"
    );
    d.chaos.recover(&id).expect("recover");
    assert_eq!(d.send_v4(200), 200);
    assert_eq!(status["spec"]["target_pid"], sleeper.pid());
    drop(sleeper);
    d.assert_clean();
}

#[test]
fn partition_by_pid_hits_the_sockets_it_held() {
    let d = skip_on_err!(Drill::new("any"));
    let held = plain_socket(&d);
    let pid = std::process::id().to_string();
    let fault = d.net(
        "partition",
        &d.world.a,
        &["--pid", &pid, "--direction", "egress"],
        "60s",
    );
    assert_eq!(
        outbound(&d, &held, 200),
        0,
        "a socket the process held when armed is cut"
    );
    // `Drill::send` opens its socket now, after arming: not one the fault selected.
    assert_eq!(d.send_v4(200), 200, "sockets opened later are not selected");
    d.chaos.recover(&fault).expect("recover");
    assert_eq!(outbound(&d, &held, 200), 200, "recovered");
    let refused = d
        .try_net("partition", &d.world.a, &["--pid", "999999999"], "60s")
        .unwrap_err();
    assert!(
        refused.stderr.starts_with("error: invalid pid"),
        "{refused}"
    );
    if own_cgroup_v2() == cgroup2_mount() {
        // Inbound by pid hooks the process's cgroup: never the root one unless forced.
        let refused = d
            .try_net("partition", &d.world.a, &["--pid", &pid], "60s")
            .unwrap_err();
        assert!(
            refused.stderr.starts_with("error: invalid pid")
                && refused.stderr.contains("root cgroup"),
            "{refused}"
        );
    }
    d.assert_clean();
}

#[test]
fn partition_by_pid_cuts_both_directions() {
    let d = skip_on_err!(Drill::new("any"));
    skip_unless!(own_cgroup_v2().ok_or("this process is in no cgroup v2"));
    skip_on_err!(d.chaos.probe_row("cgroup_skb"));
    let cg = skip_on_err!(TestCgroup::new_v2());
    // A process in its own cgroup holding a socket made there (as fd 3); the test reads and
    // writes the same socket through its own descriptor.
    let held = socket_in_cgroup(&d, &cg);
    let fd = held.as_raw_fd();
    let mut sleep = Command::new("sleep");
    sleep.arg("600");
    // SAFETY: dup2 is async-signal-safe; it gives the child the socket as fd 3.
    unsafe {
        sleep.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = ChildProcess::builder(sleep)
        .cgroup(&cg)
        .spawn()
        .expect("sleep");
    let fault = d.net(
        "partition",
        &d.world.a,
        &["--pid", &child.pid().to_string()],
        "60s",
    );
    // Made after arming, in the same cgroup: not one of the process's sockets then.
    let later = socket_in_cgroup(&d, &cg);
    assert_eq!(
        outbound(&d, &held, 200),
        0,
        "the process's socket cannot send"
    );
    assert_eq!(inbound(&d, &held, 200, false), 0, "nor receive");
    assert_eq!(outbound(&d, &later, 200), 200, "a later socket sends");
    assert_eq!(inbound(&d, &later, 200, false), 200, "and receives");
    d.chaos.recover(&fault).expect("recover");
    assert_eq!(inbound(&d, &held, 200, false), 200, "recovered");
    drop(child);
    d.assert_clean();
}
