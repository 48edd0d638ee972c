//! The `net loss` skeleton end to end through the `chaos` binary: real UDP traffic between two
//! test namespaces, the measured loss against the binomial interval, the rule's counters against
//! the measurement, the in-kernel deadline, pre-existing tc state, and the oracle after recovery.

use std::{net::IpAddr, time::Duration};

use bpf_tests::{
    Oracle, TwoHosts, UdpSink,
    chaos::{Chaos, tc_requirement},
    skip_on_err, skip_unless, udp_blast,
};

const PORT: u16 = 47_000;
const DATAGRAMS: u64 = 20_000;

/// Sends `n` datagrams from A to B and returns how many arrived.
fn send_and_count(world: &TwoHosts, to: IpAddr, n: u64) -> u64 {
    let sink = UdpSink::bind(&world.b.ns, to, PORT).expect("bind sink");
    let sent = udp_blast(&world.a.ns, to, PORT, n, 64).expect("blast");
    assert_eq!(sent, n, "the sender itself must lose nothing");
    sink.count()
}

/// Arms `percent` % loss with the given TC attach mode, checks the drop fraction over 20,000
/// datagrams is within 2 points of the ask and that the rule's counters account for every
/// missing datagram, recovers, and checks traffic and the oracle.
fn loss_case(attach: &str, percent: f64) {
    skip_unless!(bpf_tests::skip::require_root());
    let chaos = skip_on_err!(Chaos::from_env());
    skip_unless!(tc_requirement(&chaos, attach));
    let world = TwoHosts::new().expect("two hosts");
    let oracle = Oracle::new().with_netns(&world.netns_names());
    let before = oracle.snapshot();

    assert_eq!(
        send_and_count(&world, world.b.v4(), 2_000),
        2_000,
        "no loss before the fault"
    );
    let id = chaos
        .env("CHAOS_TC_ATTACH", attach)
        .inject(&[
            "net",
            "loss",
            "--percent",
            &percent.to_string(),
            "--interface",
            &world.a.ifname,
            "--netns",
            world.a.ns.name(),
            "--duration",
            "120s",
        ])
        .expect("inject");
    let received = send_and_count(&world, world.b.v4(), DATAGRAMS);
    let lost = DATAGRAMS - received;
    let measured = 100.0 * lost as f64 / DATAGRAMS as f64;
    println!("{attach}: asked {percent}%, lost {lost} of {DATAGRAMS} ({measured:.2}%)");
    assert!(
        (measured - percent).abs() <= 2.0,
        "loss {measured:.2}% not within 2 points of {percent}%"
    );
    let status = chaos.status(&id).expect("status");
    let acted = status["counters"]["acted"].as_u64().expect("acted");
    let matched = status["counters"]["matched"].as_u64().expect("matched");
    assert_eq!(
        acted, lost,
        "every missing datagram was dropped by the rule, and only those"
    );
    assert!(
        matched >= DATAGRAMS,
        "the rule saw all the traffic ({matched})"
    );
    assert_eq!(status["strategy"], format!("{attach}-bpf"));

    chaos.recover(&id).expect("recover");
    assert_eq!(
        send_and_count(&world, world.b.v4(), 2_000),
        2_000,
        "no loss after recovery"
    );
    oracle.assert_clean(&before);
}

#[test]
fn loss_30_percent_tcx() {
    loss_case("tcx", 30.0);
}

#[test]
fn loss_30_percent_clsact() {
    loss_case("clsact", 30.0);
}

#[test]
fn loss_70_percent_default_attach() {
    skip_unless!(bpf_tests::skip::require_root());
    let chaos = skip_on_err!(Chaos::from_env());
    let attach = if chaos.probe_has("tcx") {
        "tcx"
    } else {
        "clsact"
    };
    loss_case(attach, 70.0);
}

/// Ingress, egress and both: 100% on one end's ingress partitions A -> B; IPv6 too.
#[test]
fn directions_and_ipv6() {
    skip_unless!(bpf_tests::skip::require_root());
    let chaos = skip_on_err!(Chaos::from_env());
    skip_unless!(tc_requirement(&chaos, "any"));
    let world = TwoHosts::new().expect("two hosts");
    let oracle = Oracle::new().with_netns(&world.netns_names());
    let before = oracle.snapshot();
    for (ns, ifname, direction) in [
        (&world.b.ns, &world.b.ifname, "ingress"),
        (&world.a.ns, &world.a.ifname, "egress"),
        (&world.b.ns, &world.b.ifname, "both"),
    ] {
        let id = chaos
            .inject(&[
                "net",
                "loss",
                "--percent",
                "100",
                "--interface",
                ifname,
                "--netns",
                ns.name(),
                "--direction",
                direction,
                "--duration",
                "60s",
            ])
            .expect("inject");
        assert_eq!(
            send_and_count(&world, world.b.v4(), 500),
            0,
            "{direction}: all dropped"
        );
        if world.b.ipv6.is_some() {
            assert_eq!(
                send_and_count(&world, world.b.v6(), 500),
                0,
                "{direction}: IPv6 too"
            );
        }
        chaos.recover(&id).expect("recover");
        assert_eq!(
            send_and_count(&world, world.b.v4(), 500),
            500,
            "{direction}: recovered"
        );
    }
    oracle.assert_clean(&before);
}

/// The kernel ends a fault at its deadline with no process of ours alive: the CLI has exited
/// after arming, and nothing calls recover until traffic has been checked.
#[test]
fn deadline_ends_fault_in_kernel() {
    skip_unless!(bpf_tests::skip::require_root());
    let chaos = skip_on_err!(Chaos::from_env());
    skip_unless!(tc_requirement(&chaos, "any"));
    let world = TwoHosts::new().expect("two hosts");
    let oracle = Oracle::new().with_netns(&world.netns_names());
    let before = oracle.snapshot();
    let id = chaos
        .inject(&[
            "net",
            "loss",
            "--percent",
            "100",
            "--interface",
            &world.a.ifname,
            "--netns",
            world.a.ns.name(),
            "--duration",
            "5s",
        ])
        .expect("inject");
    let remaining = chaos.status(&id).expect("status")["remaining_ms"]
        .as_u64()
        .expect("remaining_ms");
    let armed_until = std::time::Instant::now() + Duration::from_millis(remaining);
    assert_eq!(
        send_and_count(&world, world.b.v4(), 300),
        0,
        "dropped while armed"
    );
    assert!(
        std::time::Instant::now() < armed_until,
        "the check while armed ran past the deadline; the machine is too slow for this test"
    );
    std::thread::sleep(armed_until.saturating_duration_since(std::time::Instant::now()));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        send_and_count(&world, world.b.v4(), 300),
        300,
        "traffic flows once the deadline passed, with no command run"
    );
    let status = chaos.status(&id).expect("status");
    assert_eq!(status["expired"], true);
    chaos.recover_all().expect("recover --all");
    oracle.assert_clean(&before);
}

/// A qdisc and filter that were there before are untouched and still there after recovery.
#[test]
fn preexisting_tc_state_is_kept() {
    skip_unless!(bpf_tests::skip::require_root());
    let chaos = skip_on_err!(Chaos::from_env());
    skip_unless!(tc_requirement(&chaos, "clsact"));
    let world = TwoHosts::new().expect("two hosts");
    let ns = &world.a.ns;
    let dev = world.a.ifname.as_str();
    ns.exec(&["tc", "qdisc", "add", "dev", dev, "clsact"])
        .expect("clsact");
    // A classic-BPF filter that matches nothing, so our filter after it still sees packets.
    ns.exec(&[
        "tc",
        "filter",
        "add",
        "dev",
        dev,
        "egress",
        "prio",
        "5",
        "bpf",
        "bytecode",
        "1,6 0 0 0,",
    ])
    .expect("user filter");
    let show = || {
        (
            ns.exec(&["tc", "qdisc", "show", "dev", dev])
                .expect("qdisc show"),
            ns.exec(&["tc", "filter", "show", "dev", dev, "egress"])
                .expect("filter show"),
        )
    };
    let tc_before = show();
    let oracle = Oracle::new().with_netns(&world.netns_names());
    let before = oracle.snapshot();
    let id = chaos
        .env("CHAOS_TC_ATTACH", "clsact")
        .inject(&[
            "net",
            "loss",
            "--percent",
            "100",
            "--interface",
            dev,
            "--netns",
            ns.name(),
            "--duration",
            "60s",
        ])
        .expect("inject");
    assert_eq!(
        send_and_count(&world, world.b.v4(), 300),
        0,
        "dropped behind the user's filter"
    );
    chaos.recover(&id).expect("recover");
    assert_eq!(show(), tc_before, "tc state exactly as before");
    assert_eq!(send_and_count(&world, world.b.v4(), 300), 300);
    oracle.assert_clean(&before);
}
