//! The `net loss` skeleton end to end through the `chaos` binary: real UDP traffic between two
//! test namespaces, the measured loss against the binomial interval, the rule's counters against
//! the measurement, the in-kernel deadline, pre-existing tc state, and the oracle after recovery.

use std::time::{Duration, Instant};

use bpf_tests::{bench::bpf::OurTc, drill::Drill, skip_on_err};

const DATAGRAMS: u64 = 20_000;

/// Arms `percent` % loss, checks the drop fraction over 20,000 datagrams is within 2 points of
/// the ask and that the rule's counters account for every missing datagram, recovers, and checks
/// traffic and the oracle.
fn loss_case(attach: &str, percent: f64) {
    let d = skip_on_err!(Drill::new(attach));
    assert_eq!(d.send_v4(2_000), 2_000, "no loss before the fault");
    let id = d.loss(&d.world.a, percent, "egress", "120s");
    let a = &d.world.a;
    let on = OurTc::read(&a.ns, &a.ifname, true).expect("reading tc");
    match attach {
        "tcx" => assert!(on.tcx.len() == 1 && on.clsact.is_empty(), "{on:?}"),
        "clsact" => assert!(on.tcx.is_empty() && on.clsact.len() == 1, "{on:?}"),
        // Armed through a clsact filter, then handed over: only the TCX link is left, and the
        // clsact qdisc the filter needed went with it.
        "clsact-tcx" => {
            assert!(on.tcx.len() == 1 && on.clsact.is_empty(), "{on:?}");
            let qdiscs =
                a.ns.exec(&["tc", "qdisc", "show", "dev", &a.ifname])
                    .expect("tc qdisc show");
            assert!(!qdiscs.contains("clsact"), "{qdiscs}");
        }
        _ => {}
    }
    let received = d.send_v4(DATAGRAMS);
    let lost = DATAGRAMS - received;
    let measured = 100.0 * lost as f64 / DATAGRAMS as f64;
    println!("{attach}: asked {percent}%, lost {lost} of {DATAGRAMS} ({measured:.2}%)");
    assert!(
        (measured - percent).abs() <= 2.0,
        "loss {measured:.2}% not within 2 points of {percent}%"
    );
    let status = d.chaos.status(&id).expect("status");
    let acted = status["counters"]["acted"].as_u64().expect("acted");
    let matched = status["counters"]["matched"].as_u64().expect("matched");
    // The rule drops everything on the interface, so the odd IPv6 control packet (MLD, router
    // solicitation) adds to `acted`; every missing datagram must be among the drops.
    assert!(
        acted >= lost && acted <= lost + 10,
        "the rule's drops ({acted}) account for the missing datagrams ({lost})"
    );
    assert!(
        matched >= DATAGRAMS,
        "the rule saw all the traffic ({matched})"
    );
    if attach != "any" {
        assert_eq!(status["strategy"], format!("{attach}-bpf"));
    }
    d.chaos.recover(&id).expect("recover");
    assert_eq!(d.send_v4(2_000), 2_000, "no loss after recovery");
    d.assert_clean();
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
fn loss_30_percent_clsact_then_tcx() {
    loss_case("clsact-tcx", 30.0);
}

#[test]
fn loss_70_percent_default_attach() {
    loss_case("any", 70.0);
}

/// Ingress, egress and both: 100% on one end's ingress partitions A -> B; IPv6 too. With clsact,
/// "both" shares one qdisc between two filters, which must go with the last of them.
fn directions_case(attach: &str) {
    let d = skip_on_err!(Drill::new(attach));
    for (host, direction) in [
        (&d.world.b, "ingress"),
        (&d.world.a, "egress"),
        (&d.world.b, "both"),
    ] {
        let id = d.loss(host, 100.0, direction, "60s");
        assert_eq!(d.send_v4(500), 0, "{direction}: all dropped");
        if d.world.b.ipv6.is_some() {
            assert_eq!(d.send(d.world.b.v6(), 500), 0, "{direction}: IPv6 too");
        }
        d.chaos.recover(&id).expect("recover");
        assert_eq!(d.send_v4(500), 500, "{direction}: recovered");
    }
    d.assert_clean();
}

#[test]
fn directions_and_ipv6_tcx() {
    directions_case("tcx");
}

#[test]
fn directions_and_ipv6_clsact() {
    directions_case("clsact");
}

#[test]
fn directions_and_ipv6_clsact_then_tcx() {
    directions_case("clsact-tcx");
}

/// The kernel ends a fault at its deadline with no process of ours alive: the CLI has exited
/// after arming, and nothing calls recover until traffic has been checked.
#[test]
fn deadline_ends_fault_in_kernel() {
    let d = skip_on_err!(Drill::new("any"));
    let id = d.loss(&d.world.a, 100.0, "egress", "8s");
    let remaining = d.chaos.status(&id).expect("status")["remaining_ms"]
        .as_u64()
        .expect("remaining_ms");
    let armed_until = Instant::now() + Duration::from_millis(remaining);
    assert_eq!(d.send_v4(300), 0, "dropped while armed");
    assert!(
        Instant::now() < armed_until,
        "the check while armed ran past the deadline; the machine is too slow for this test"
    );
    std::thread::sleep(armed_until.saturating_duration_since(Instant::now()));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        d.send_v4(300),
        300,
        "traffic flows once the deadline passed, with no command run"
    );
    let status = d.chaos.status(&id).expect("status");
    assert_eq!(status["expired"], true);
    d.chaos.recover_all().expect("recover --all");
    d.assert_clean();
}

/// Interface indexes repeat across namespaces, and one loaded program per direction serves the
/// interfaces by index: the first interface of an index gets the shared instance, another
/// namespace's interface of the same index one of its own. Each keeps its own rules while both
/// are armed, recovering one leaves the other armed, and the index is served again after.
fn same_index_case(attach: &str) {
    let d1 = skip_on_err!(Drill::new(attach));
    let d2 = skip_on_err!(Drill::new(attach));
    assert_eq!(
        d1.world.a.ifindex, d2.world.a.ifindex,
        "fresh namespaces number their first interfaces alike"
    );
    let to_port_9 = [
        "--percent",
        "100",
        "--direction",
        "egress",
        "--proto",
        "udp",
        "--dport",
        "9",
    ];
    let all = d1.loss(&d1.world.a, 100.0, "egress", "120s");
    let port_9 = d2.net("loss", &d2.world.a, &to_port_9, "120s");
    let d2_port_9 = |n| d2.send_port(d2.world.b.v4(), 9, n);
    assert_eq!(
        d1.send_v4(300),
        0,
        "the first namespace's rule drops its traffic"
    );
    assert_eq!(
        d2.send_v4(300),
        300,
        "the second interface has only its own rule"
    );
    assert_eq!(d2_port_9(300), 0, "which drops what it selects");
    d1.chaos.recover(&all).expect("recover");
    assert_eq!(d1.send_v4(300), 300, "the first interface is free again");
    assert_eq!(d2_port_9(300), 0, "the second is still armed");
    let again = d1.loss(&d1.world.a, 100.0, "egress", "120s");
    assert_eq!(
        d1.send_v4(300),
        0,
        "the first interface's index is served again"
    );
    assert_eq!(
        d2.send_v4(300),
        300,
        "and the second still has only its own rule"
    );
    d1.chaos.recover(&again).expect("recover");
    d2.chaos.recover(&port_9).expect("recover");
    assert_eq!(
        d1.send_v4(300) + d2.send_v4(300),
        600,
        "no loss after recovery"
    );
    d1.assert_clean();
    d2.assert_clean();
}

#[test]
fn same_interface_index_in_two_namespaces_tcx() {
    same_index_case("tcx");
}

#[test]
fn same_interface_index_in_two_namespaces_clsact() {
    same_index_case("clsact");
}

#[test]
fn same_interface_index_in_two_namespaces_clsact_then_tcx() {
    same_index_case("clsact-tcx");
}

/// A qdisc and filter that were there before are untouched and still there after recovery.
#[test]
fn preexisting_tc_state_is_kept() {
    let mut d = skip_on_err!(Drill::new("clsact"));
    let (ns, dev) = (&d.world.a.ns, d.world.a.ifname.as_str());
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
    let show = |d: &Drill| {
        let (ns, dev) = (&d.world.a.ns, d.world.a.ifname.as_str());
        (
            ns.exec(&["tc", "qdisc", "show", "dev", dev])
                .expect("qdisc show"),
            ns.exec(&["tc", "filter", "show", "dev", dev, "egress"])
                .expect("filter show"),
        )
    };
    let tc_before = show(&d);
    // The user's qdisc is part of the world the oracle compares against.
    d.before = d.oracle.snapshot();
    let id = d.loss(&d.world.a, 100.0, "egress", "60s");
    assert_eq!(d.send_v4(300), 0, "dropped behind the user's filter");
    d.chaos.recover(&id).expect("recover");
    assert_eq!(show(&d), tc_before, "tc state exactly as before");
    assert_eq!(d.send_v4(300), 300);
    d.assert_clean();
}
