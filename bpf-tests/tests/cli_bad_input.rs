//! Bad input: every case is answered with exactly one line on stderr that names the problem,
//! a non-zero exit, and nothing armed (the store is empty and the oracle finds nothing).

use std::os::unix::process::CommandExt as _;

use bpf_tests::{Oracle, TwoHosts, chaos::Chaos, skip_on_err, skip_unless};

/// Runs `chaos args` and checks the one-line error contains every `needle`.
fn rejects(chaos: &Chaos, args: &[&str], needles: &[&str]) {
    let out = chaos.output(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "chaos {args:?} succeeded: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "chaos {args:?}: one line expected, got {stderr:?}"
    );
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(
            lines[0].contains(n),
            "chaos {args:?}: {n:?} missing from {stderr:?}"
        );
    }
}

#[test]
fn bad_inputs_are_one_line_and_arm_nothing() {
    skip_unless!(bpf_tests::skip::require_root());
    let chaos = skip_on_err!(Chaos::from_env());
    let world = TwoHosts::new().expect("two hosts");
    let oracle = Oracle::new().with_netns(&world.netns_names());
    let before = oracle.snapshot();
    let ns = world.a.ns.name();
    let dev = world.a.ifname.as_str();
    let loss = |percent: &str, interface: &str, netns: &str, duration: &str| {
        vec![
            "inject".to_owned(),
            "net".into(),
            "loss".into(),
            "--percent".into(),
            percent.into(),
            "--interface".into(),
            interface.into(),
            "--netns".into(),
            netns.into(),
            "--duration".into(),
            duration.into(),
        ]
    };
    let with = |mut base: Vec<String>, extra: &[&str]| {
        base.extend(extra.iter().map(|s| s.to_string()));
        base
    };
    let ok_loss = || loss("10", dev, ns, "10s");
    let mut cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            with(ok_loss(), &["--dst", "10.0.0.0/33"]),
            vec!["invalid dst", "10.0.0.0/33"],
        ),
        (
            with(ok_loss(), &["--src", "not-an-ip"]),
            vec!["invalid src"],
        ),
        (
            with(ok_loss(), &["--dport", "70000"]),
            vec!["invalid dport", "1-65535"],
        ),
        (
            with(ok_loss(), &["--sport", "9-1"]),
            vec!["invalid sport", "backwards"],
        ),
        (
            with(ok_loss(), &["--exclude", "nonsense"]),
            vec!["invalid exclude"],
        ),
        (
            with(ok_loss(), &["--correlation", "101"]),
            vec!["invalid correlation"],
        ),
        (
            with(ok_loss(), &["--proto", "icmp", "--dport", "80"]),
            vec!["invalid proto", "icmp has no ports"],
        ),
        (
            with(ok_loss(), &["--cgroup", "no/such/cgroup"]),
            vec!["invalid cgroup"],
        ),
        (
            with(ok_loss(), &["--pid", "999999999"]),
            vec!["invalid pid"],
        ),
        (
            with(ok_loss(), &["--target-pid", "1"]),
            vec!["--netns", "--target-pid"],
        ),
        (
            loss("150", dev, ns, "10s"),
            vec!["invalid percent", "0-100"],
        ),
        (loss("-1", dev, ns, "10s"), vec!["invalid percent", "0-100"]),
        (loss("ten", dev, ns, "10s"), vec!["--percent"]),
        (
            loss("10", "nosuch0", ns, "10s"),
            vec!["invalid interface", "nosuch0", "nsenter"],
        ),
        (
            loss("10", dev, "no-such-netns", "10s"),
            vec!["invalid netns", "ip netns list"],
        ),
        (loss("10", dev, ns, "soon"), vec!["invalid duration", "30s"]),
        (loss("10", dev, ns, "10"), vec!["invalid duration", "unit"]),
        (loss("10", dev, ns, "0s"), vec!["invalid duration"]),
        (
            loss("10", dev, ns, "30d"),
            vec!["invalid duration", "maximum"],
        ),
        (
            vec![
                "inject".into(),
                "net".into(),
                "loss".into(),
                "--percent".into(),
                "10".into(),
            ],
            // No duration is fine (10 minutes); no target is not.
            vec!["invalid interface", "--interface"],
        ),
        (
            vec!["inject".into(), "net".into(), "los".into()],
            vec!["los"],
        ),
        (
            vec!["recover".into(), "f-00000000".into()],
            vec!["no fault with id f-00000000"],
        ),
        (vec!["status".into(), "../etc".into()], vec!["no fault"]),
        (vec!["recover".into()], vec!["--all"]),
    ];
    // Delay where neither fq nor netem exists names both.
    if chaos.probe_row("qdisc_fq").is_err() && chaos.probe_row("qdisc_netem").is_err() {
        let delay = vec![
            "inject",
            "net",
            "delay",
            "--latency",
            "50ms",
            "--interface",
            dev,
            "--netns",
            ns,
            "--duration",
            "10s",
        ];
        cases.push((
            delay.into_iter().map(String::from).collect(),
            vec!["cannot net delay", "fq", "netem"],
        ));
    }
    let rate = |r: &str| {
        with(
            vec![
                "inject".into(),
                "net".into(),
                "rate".into(),
                "--rate".into(),
                r.into(),
            ],
            &["--interface", dev, "--netns", ns, "--duration", "10s"],
        )
    };
    // Syscall faults: a sleeping child of ours is the (never harmed) target.
    // Killed when dropped, even by a failing assertion (an orphan would hold the runner's pipes).
    let mut target = bpf_tests::ChildProcess::spawn({
        let mut c = std::process::Command::new("sleep");
        c.arg("3600")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    })
    .expect("sleep");
    let pid = target.pid().to_string();
    let sys = |action: &str, extra: &[&str]| {
        let mut v: Vec<String> = ["inject", "syscall", action]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let fail = |extra: &[&str]| {
        let mut base = vec!["--errno", "EIO", "--duration", "10s"];
        base.extend_from_slice(extra);
        sys("fail", &base)
    };
    cases.extend([
        (
            fail(&["--syscall", "fsyncc", "--pid", &pid]),
            vec!["invalid syscall", "fsyncc", "man 2"],
        ),
        (
            sys(
                "fail",
                &[
                    "--errno",
                    "EFOO",
                    "--syscall",
                    "fsync",
                    "--pid",
                    &pid,
                    "--duration",
                    "1s",
                ],
            ),
            vec!["invalid errno", "EFOO"],
        ),
        (
            fail(&["--syscall", "fsync"]),
            vec!["invalid pid", "no target", "--cgroup"],
        ),
        (
            fail(&["--syscall", "fsync", "--pid", &pid, "--comm", "sleep"]),
            vec!["more than one target"],
        ),
        (
            fail(&[
                "--syscall",
                "connect",
                "--pid",
                &pid,
                "--path-prefix",
                "/data",
            ]),
            vec!["invalid path-prefix", "connect"],
        ),
        (
            fail(&["--syscall", "fsync", "--pid", "1"]),
            vec!["invalid pid", "init", "--force"],
        ),
        (
            fail(&["--syscall", "fsync", "--pid", &pid, "--every", "0"]),
            vec!["invalid every"],
        ),
        (
            fail(&["--syscall", "fsync", "--comm", "a-name-longer-than-15"]),
            vec!["invalid comm"],
        ),
        (
            sys(
                "kill",
                &[
                    "--signal",
                    "SIGFOO",
                    "--syscall",
                    "fsync",
                    "--pid",
                    &pid,
                    "--duration",
                    "1s",
                ],
            ),
            vec!["invalid signal", "SIGFOO"],
        ),
        (
            sys(
                "delay",
                &[
                    "--latency",
                    "5m",
                    "--syscall",
                    "fsync",
                    "--pid",
                    &pid,
                    "--duration",
                    "1s",
                ],
            ),
            vec!["invalid latency", "60s"],
        ),
    ]);
    cases.push((rate("fast"), vec!["invalid rate"]));
    cases.push((rate("1furlong"), vec!["invalid rate", "unknown unit"]));
    for (args, needles) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        rejects(&chaos, &args, needles);
    }
    assert_eq!(
        chaos.list().expect("list"),
        serde_json::json!([]),
        "nothing armed"
    );
    assert_eq!(
        target.try_wait().expect("try_wait"),
        None,
        "target untouched"
    );
    let _ = target.kill();
    let _ = target.wait();
    oracle.assert_clean(&before);
}

#[test]
fn not_root_is_one_line() {
    skip_unless!(bpf_tests::skip::require_root());
    let chaos = skip_on_err!(Chaos::from_env());
    for args in [
        &["probe"][..],
        &[
            "inject",
            "net",
            "loss",
            "--percent",
            "10",
            "--interface",
            "lo",
            "--duration",
            "5s",
        ],
        &["recover", "--all"],
    ] {
        let mut cmd = chaos.command(args);
        // nobody: no capabilities, as a user without sudo would run it.
        cmd.uid(65534).gid(65534);
        let out = cmd.output().expect("run chaos as nobody");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded as nobody");
        assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
        assert!(
            stderr.contains("needs root") && stderr.contains("sudo"),
            "{stderr}"
        );
    }
}

/// Root without one of the capabilities (a restricted container): one line naming it.
#[test]
fn missing_capability_is_named() {
    skip_unless!(bpf_tests::skip::require_root());
    let chaos = skip_on_err!(Chaos::from_env());
    for (cap, name) in [
        (39, "CAP_BPF"),
        (12, "CAP_NET_ADMIN"),
        (21, "CAP_SYS_ADMIN"),
    ] {
        let mut cmd = chaos.command(&[
            "inject",
            "net",
            "loss",
            "--percent",
            "10",
            "--interface",
            "lo",
            "--duration",
            "5s",
        ]);
        // SAFETY: prctl with integer arguments, between fork and exec. Root's capabilities
        // after exec are its bounding set, so dropping it there drops it for chaos.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().expect("run chaos without a capability");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "armed without {name}");
        assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
        assert!(
            stderr.contains("running as root but without") && stderr.contains(name),
            "{name}: {stderr}"
        );
        println!("without {name}: {}", stderr.trim());
    }
}
