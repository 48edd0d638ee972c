//! Tests of the oracle's tc view, in a two-host world.

use bpf_tests::oracle::testing::{TempBpffs, load_sched_cls, pin};
use bpf_tests::skip::{require_bpf, require_command, require_netns};
use bpf_tests::{LeftoverKind, Oracle, TwoHosts, skip_on_err, skip_unless};

#[test]
fn new_clsact_qdisc_is_reported_until_removed() {
    skip_unless!(require_netns());
    skip_unless!(require_command("tc"));
    let w = TwoHosts::new().unwrap();
    let oracle = Oracle::new().with_netns(&w.netns_names());
    let before = oracle.snapshot();
    assert!(
        oracle.leftovers(&before).is_empty(),
        "{:?}",
        oracle.leftovers(&before)
    );
    w.a.ns
        .exec(&["tc", "qdisc", "add", "dev", "veth-a", "clsact"])
        .unwrap();
    let found = oracle.leftovers(&before);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, LeftoverKind::Qdisc);
    assert!(
        found[0].description.contains("veth-a") && found[0].description.contains(w.a.ns.name())
    );
    // A qdisc present in the snapshot is not a leftover.
    let with_qdisc = oracle.snapshot();
    assert!(oracle.leftovers(&with_qdisc).is_empty());
    w.a.ns
        .exec(&["tc", "qdisc", "del", "dev", "veth-a", "clsact"])
        .unwrap();
    oracle.assert_clean(&before);
}

#[test]
fn bpf_filter_keeps_program_alive_and_is_reported() {
    skip_unless!(require_bpf());
    skip_unless!(require_command("tc"));
    let w = TwoHosts::new().unwrap();
    let fs = skip_on_err!(TempBpffs::new());
    let oracle = Oracle::new().with_netns(&w.netns_names());
    let before = oracle.snapshot();

    let prog = load_sched_cls("chaos_oracletst").unwrap();
    let pinned = fs.path().join("prog");
    pin(&prog, &pinned).unwrap();
    let p = pinned.to_str().unwrap();
    w.b.ns
        .exec(&["tc", "qdisc", "add", "dev", "veth-b", "clsact"])
        .unwrap();
    w.b.ns
        .exec(&[
            "tc", "filter", "add", "dev", "veth-b", "ingress", "bpf", "da", "pinned", p,
        ])
        .unwrap();
    w.b.ns
        .exec(&[
            "tc", "filter", "add", "dev", "veth-b", "egress", "bpf", "da", "pinned", p,
        ])
        .unwrap();
    // Only the filters now hold the program.
    drop(prog);
    std::fs::remove_file(&pinned).unwrap();

    let found = oracle.leftovers(&before);
    let count = |k| found.iter().filter(|l| l.kind == k).count();
    assert_eq!(count(LeftoverKind::Program), 1, "{found:?}");
    assert_eq!(count(LeftoverKind::TcFilter), 2, "{found:?}");
    assert_eq!(count(LeftoverKind::Qdisc), 1, "{found:?}");
    assert!(
        found
            .iter()
            .any(|l| l.description.contains("ingress") && l.description.contains("veth-b"))
    );

    // Traffic still flows (the program returns TC_ACT_OK).
    let sink = bpf_tests::UdpSink::bind(&w.b.ns, w.b.v4(), 0).unwrap();
    let sent = bpf_tests::udp_blast(&w.a.ns, w.b.v4(), sink.local_addr().port(), 1000, 32).unwrap();
    assert_eq!(sink.count(), sent);

    // Removing the qdisc removes the filters, and then the kernel frees the program.
    w.b.ns
        .exec(&["tc", "qdisc", "del", "dev", "veth-b", "clsact"])
        .unwrap();
    oracle.assert_clean(&before);
}

#[test]
fn assert_clean_panics_with_a_list() {
    skip_unless!(require_netns());
    skip_unless!(require_command("tc"));
    let w = TwoHosts::new().unwrap();
    let oracle = Oracle::new().with_netns(&w.netns_names());
    let before = oracle.snapshot();
    w.a.ns
        .exec(&["tc", "qdisc", "add", "dev", "veth-a", "clsact"])
        .unwrap();
    let err = std::panic::catch_unwind(|| oracle.assert_clean(&before)).unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains("Qdisc: clsact qdisc") && msg.contains("veth-a"),
        "{msg}"
    );
}

#[test]
fn vanished_namespace_is_not_an_error() {
    skip_unless!(require_netns());
    skip_unless!(require_command("tc"));
    let w = TwoHosts::new().unwrap();
    let oracle = Oracle::new().with_netns(&w.netns_names());
    let before = oracle.snapshot();
    drop(w);
    oracle.assert_clean(&before);
}
