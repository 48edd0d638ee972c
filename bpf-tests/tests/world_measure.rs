//! Tests of the measurement tools with no fault armed: a clean veth must measure as clean (no
//! loss, duplicates, corruption or reordering, small latency, positive throughput), and the
//! detectors must see hand-made damage sent through real sockets.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use bpf_tests::skip::require_netns;
use bpf_tests::world::measure::{
    LatencyStats, MIN_PROBE_LEN, Z_999, binomial_interval, payload, summary, tcp_bulk_report,
    within_binomial,
};
use bpf_tests::{
    NetNs, TcpSink, TwoHosts, UdpEcho, UdpProbeSink, skip_unless, snmp, tcp_bulk, udp_rtt,
    udp_send_seq,
};

const N: u64 = 20_000;
const LEN: usize = 64;

fn probe_clean(w: &TwoHosts, to: std::net::IpAddr, n: u64, len: usize) {
    let sink = UdpProbeSink::bind(&w.b.ns, to, 0, len).unwrap();
    let sent = udp_send_seq(&w.a.ns, sink.local_addr(), n, len, None).unwrap();
    assert_eq!(sent, n);
    let s = sink.stats(sent);
    println!("{to} len {len}: {s:?}");
    assert_eq!(s.received, n, "{s:?}");
    assert_eq!(s.unique, n, "{s:?}");
    assert_eq!(
        (s.duplicates, s.corrupted, s.reordered, s.out_of_range),
        (0, 0, 0, 0),
        "{s:?}"
    );
    assert!(s.loss_runs.is_empty(), "{s:?}");
    assert_eq!(s.max_seq, Some(n - 1));
}

#[test]
fn probe_sink_clean_over_20000_datagrams() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    probe_clean(&w, w.b.v4(), N, LEN);
    probe_clean(&w, w.b.v4(), 5_000, 1400);
    if w.b.ipv6.is_some() {
        probe_clean(&w, w.b.v6(), N, LEN);
    }
}

#[test]
fn paced_sender_keeps_its_rate() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    let sink = UdpProbeSink::bind(&w.b.ns, w.b.v4(), 0, LEN).unwrap();
    let start = std::time::Instant::now();
    let sent = udp_send_seq(
        &w.a.ns,
        sink.local_addr(),
        200,
        LEN,
        Some(Duration::from_millis(1)),
    )
    .unwrap();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(199),
        "200 datagrams 1 ms apart took {took:?}"
    );
    let s = sink.stats(sent);
    assert_eq!((s.unique, s.lost()), (200, 0), "{s:?}");
    let arrivals = sink.arrivals();
    let spread = arrivals[199].at - arrivals[0].at;
    assert!(
        spread >= Duration::from_millis(190),
        "arrivals spread over {spread:?}"
    );
}

#[test]
fn short_probes_are_refused() {
    skip_unless!(require_netns());
    let ns = NetNs::new().unwrap();
    let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let e = udp_send_seq(&ns, to, 1, MIN_PROBE_LEN - 1, None).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

/// Sends hand-made datagrams from A to the sink, in order, through one socket.
fn send_raw(w: &TwoHosts, to: SocketAddr, datagrams: &[Vec<u8>]) {
    w.a.ns.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for d in datagrams {
            s.send_to(d, to).unwrap();
        }
    });
}

#[test]
fn detectors_see_hand_made_damage() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    let sink = UdpProbeSink::bind(&w.b.ns, w.b.v4(), 0, LEN).unwrap();
    let to = sink.local_addr();
    let seqs = |range: std::ops::Range<u64>| range.map(|s| payload(s, LEN)).collect::<Vec<_>>();

    // One bit flipped in the pattern of seq 5, instead of the intact seq 5.
    let mut d = seqs(0..10);
    d[5][40] ^= 0x10;
    send_raw(&w, to, &d);
    let s = sink.stats(10);
    assert_eq!((s.received, s.corrupted), (10, 1), "{s:?}");
    // Attributed to seq 5: nothing lost, nothing duplicated.
    assert_eq!((s.unique, s.corrupted_unattributed), (10, 0), "{s:?}");
    assert_eq!((s.duplicates, s.reordered), (0, 0), "{s:?}");
    assert!(s.loss_runs.is_empty(), "{s:?}");

    // One bit flipped in the sequence number of seq 6 (it reads as 7 on its face).
    sink.reset();
    let mut d = seqs(0..10);
    d[6][7] ^= 0x01;
    send_raw(&w, to, &d);
    let s = sink.stats(10);
    assert_eq!((s.corrupted, s.unique, s.duplicates), (1, 10, 0), "{s:?}");

    // The same seq twice.
    sink.reset();
    let mut d = seqs(0..10);
    d.push(payload(3, LEN));
    send_raw(&w, to, &d);
    let s = sink.stats(10);
    assert_eq!((s.received, s.unique, s.duplicates), (11, 10, 1), "{s:?}");
    assert_eq!((s.corrupted, s.reordered), (0, 0), "{s:?}");

    // Reordered, missing, truncated and foreign datagrams.
    sink.reset();
    let order = [0u64, 1, 3, 2, 4, 8, 9];
    let mut d: Vec<Vec<u8>> = order.iter().map(|&s| payload(s, LEN)).collect();
    d.push(payload(10, LEN)[..LEN - 1].to_vec());
    d.push(b"not a probe".to_vec());
    send_raw(&w, to, &d);
    let s = sink.stats(12);
    assert_eq!(s.received, 9, "{s:?}");
    assert_eq!(s.reordered, 1, "{s:?}");
    assert_eq!((s.corrupted, s.corrupted_unattributed), (2, 2), "{s:?}");
    // 5 6 7 and 10 11 never arrived intact.
    assert_eq!(s.loss_runs, vec![3, 2], "{s:?}");
    assert_eq!((s.lost(), s.max_seq), (5, Some(9)), "{s:?}");
}

#[test]
fn udp_rtt_is_small_and_counts_probes() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    let echo = UdpEcho::start(&w.b.ns, w.b.v4(), 0).unwrap();
    let rtts = udp_rtt(&w.a.ns, echo.local_addr(), 200, Duration::from_millis(1)).unwrap();
    assert_eq!(rtts.len(), 200);
    let got: Vec<Duration> = rtts.iter().flatten().copied().collect();
    assert_eq!(got.len(), 200, "every probe came back");
    assert_eq!(echo.echoed(), 200);
    let s: LatencyStats = summary(&got);
    println!("{s:?}");
    assert_eq!(s.count, 200);
    assert!(s.mean < Duration::from_millis(5), "{s:?}");
    assert!(s.min <= s.p50 && s.p50 <= s.p99 && s.p99 <= s.max, "{s:?}");

    // Nobody listening: an error, not 200 lost probes.
    drop(echo);
    let closed = SocketAddr::new(w.b.v4(), 9);
    assert!(udp_rtt(&w.a.ns, closed, 3, Duration::ZERO).is_err());
}

#[test]
fn udp_rtt_reports_lost_probes() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    // A socket that receives but never answers: every probe is lost, and no ICMP error says so.
    let silent = UdpProbeSink::bind(&w.b.ns, w.b.v4(), 0, LEN).unwrap();
    let to = silent.local_addr();
    let rtts =
        bpf_tests::world::udp_rtt_with(&w.a.ns, to, 3, Duration::ZERO, Duration::from_millis(100))
            .unwrap();
    assert_eq!(rtts, vec![None; 3]);
    assert_eq!(silent.count(), 3, "the probes did arrive");
}

#[test]
fn tcp_bulk_positive_rate() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    let sink = TcpSink::start(&w.b.ns, w.b.v4(), 0).unwrap();
    let rate = tcp_bulk(&w.a.ns, sink.local_addr(), Duration::from_secs(2)).unwrap();
    println!("steady rate: {:.1} MB/s", rate / 1e6);
    assert!(rate > 0.0);
    let r = tcp_bulk_report(
        &w.a.ns,
        sink.local_addr(),
        Duration::from_millis(600),
        Duration::from_millis(200),
    )
    .unwrap();
    println!(
        "overall {:.1} MB/s, steady {:?}, {} samples",
        r.overall_rate / 1e6,
        r.steady_rate.map(|r| r / 1e6),
        r.samples.len()
    );
    assert!(
        r.received_bytes > 0 && r.received_bytes <= r.sent_bytes,
        "{r:?}"
    );
    assert!(r.steady_rate.is_some_and(|r| r > 0.0));
    assert!(r.overall_rate > 0.0);
    let (t_last, _) = *r.samples.last().unwrap();
    assert!(
        t_last >= Duration::from_millis(500),
        "last read at {t_last:?}"
    );
    assert!(
        sink.bytes_now() >= r.received_bytes,
        "the sink counted what it reported"
    );
}

#[test]
fn snmp_counts_udp_datagrams_in_the_namespace() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    let before = snmp(&w.b.ns).unwrap();
    let other_before = snmp(&w.a.ns).unwrap();
    for key in ["Udp.InDatagrams", "Udp.InCsumErrors", "Ip.InReceives"] {
        assert!(before.contains_key(key), "{key} missing");
    }
    if w.b.ipv6.is_some() {
        assert!(before.contains_key("Udp6.InCsumErrors"), "{before:?}");
    }
    let sink = UdpProbeSink::bind(&w.b.ns, w.b.v4(), 0, LEN).unwrap();
    let sent = udp_send_seq(&w.a.ns, sink.local_addr(), 1_000, LEN, None).unwrap();
    assert_eq!(sink.stats(sent).unique, 1_000);
    let after = snmp(&w.b.ns).unwrap();
    let delta = after["Udp.InDatagrams"] - before["Udp.InDatagrams"];
    assert!(delta >= 1_000, "Udp.InDatagrams grew by {delta}");
    assert_eq!(after["Udp.InCsumErrors"], before["Udp.InCsumErrors"]);
    // Counted in B's namespace, not in A's (A only sent).
    let other_after = snmp(&w.a.ns).unwrap();
    assert!(
        other_after["Udp.OutDatagrams"] - other_before["Udp.OutDatagrams"] >= 1_000,
        "A sent them"
    );
    assert!(other_after["Udp.InDatagrams"] - other_before["Udp.InDatagrams"] < 10);
}

#[test]
fn binomial_intervals_are_sane() {
    // 20,000 trials at 30 %: mean 6,000, sd 64.8, z 3.29 -> ±213.2.
    let (lo, hi) = binomial_interval(20_000, 0.3, Z_999);
    assert!(
        (lo - 5786.8).abs() < 0.5 && (hi - 6213.2).abs() < 0.5,
        "{lo} {hi}"
    );
    let (lo95, hi95) = binomial_interval(20_000, 0.3, 1.96);
    assert!(lo < lo95 && lo95 < 6000.0 && 6000.0 < hi95 && hi95 < hi);
    // Clamped to [0, n].
    let (lo, hi) = binomial_interval(10, 0.01, Z_999);
    assert_eq!(lo, 0.0);
    assert!(hi > 0.1 && hi <= 10.0);
    assert_eq!(binomial_interval(100, 0.0, Z_999), (0.0, 0.0));
    assert_eq!(binomial_interval(100, 1.0, Z_999), (100.0, 100.0));

    // The suite's checks use z 4.89: ±316.9 around 6,000.
    assert!(within_binomial(20_000, 0.3, 6_000));
    assert!(within_binomial(20_000, 0.3, 5_700));
    assert!(within_binomial(20_000, 0.3, 6_300));
    assert!(!within_binomial(20_000, 0.3, 5_680));
    assert!(!within_binomial(20_000, 0.3, 6_320));
    assert!(within_binomial(1_000, 0.0, 0));
    assert!(!within_binomial(1_000, 0.0, 1));
    assert!(within_binomial(1_000, 1.0, 1_000));
    assert!(!within_binomial(1_000, 1.0, 999));
}
