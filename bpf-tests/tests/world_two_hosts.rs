//! Tests of the two-host world and the traffic helpers: counts must be exact with no fault armed.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bpf_tests::skip::require_netns;
use bpf_tests::world::tcp_check;
use bpf_tests::{TcpEcho, TwoHosts, UdpSink, skip_unless, udp_blast};

const N: u64 = 20_000;

#[test]
fn two_hosts_shape() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    let k = w.subnet();
    assert_eq!(w.a.ipv4.to_string(), format!("10.213.{k}.1"));
    assert_eq!(w.b.ipv4.to_string(), format!("10.213.{k}.2"));
    for h in [&w.a, &w.b] {
        let show = h.ns.exec(&["ip", "-o", "link", "show", &h.ifname]).unwrap();
        assert!(
            show.starts_with(&format!("{}: {}@", h.ifindex, h.ifname)),
            "{show}"
        );
        let addrs =
            h.ns.exec(&["ip", "-o", "addr", "show", "dev", &h.ifname])
                .unwrap();
        assert!(addrs.contains(&format!("{}/24", h.ipv4)), "{addrs}");
        if let Some(v6) = h.ipv6 {
            assert!(addrs.contains(&format!("{v6}/64")), "{addrs}");
        }
    }
}

fn blast_and_count(w: &TwoHosts, v6: bool, rounds: usize) {
    let dst = if v6 { w.b.v6() } else { w.b.v4() };
    let sink = UdpSink::bind(&w.b.ns, dst, 0).unwrap();
    let port = sink.local_addr().port();
    for round in 0..rounds {
        sink.reset();
        let sent = udp_blast(&w.a.ns, dst, port, N, 64).unwrap();
        assert_eq!(sent, N);
        let got = sink.count();
        assert_eq!(
            got, N,
            "round {round}: {got} of {N} datagrams arrived with no fault armed"
        );
    }
}

#[test]
fn udp_ipv4_no_loss_over_20000_datagrams_repeatedly() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    blast_and_count(&w, false, 5);
}

#[test]
fn udp_ipv6_no_loss_over_20000_datagrams() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    skip_unless!(w.a.ipv6.map(drop).ok_or("kernel without IPv6"));
    blast_and_count(&w, true, 2);
}

#[test]
fn udp_large_payload_no_loss() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    let sink = UdpSink::bind(&w.b.ns, w.b.v4(), 0).unwrap();
    let sent = udp_blast(&w.a.ns, w.b.v4(), sink.local_addr().port(), N, 1400).unwrap();
    assert_eq!(sink.count(), sent);
    assert_eq!(sink.bytes_now(), sent * 1400);
}

#[test]
fn tcp_echo_both_ways() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    let echo = TcpEcho::start(&w.b.ns, w.b.v4(), 0).unwrap();
    let rtt = tcp_check(&w.a.ns, echo.local_addr(), Duration::from_secs(2)).unwrap();
    assert!(rtt < Duration::from_secs(2));
    if w.a.ipv6.is_some() {
        let echo6 = TcpEcho::start(&w.a.ns, w.a.v6(), 0).unwrap();
        tcp_check(&w.b.ns, echo6.local_addr(), Duration::from_secs(2)).unwrap();
    }
    // Nothing listens on the other side: refused, not hung.
    let closed = SocketAddr::new(w.a.v4(), 9);
    assert!(tcp_check(&w.b.ns, closed, Duration::from_secs(1)).is_err());
}

#[test]
fn cleanup_leaves_no_namespace_even_after_a_panic() {
    skip_unless!(require_netns());
    let mut names = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let w = TwoHosts::new().unwrap();
        names.extend(w.netns_names());
        w.a.ns.run(|| panic!("boom in host A"));
    }));
    assert!(result.is_err());
    assert_eq!(names.len(), 2);
    for n in &names {
        assert!(!Path::new("/run/netns").join(n).exists(), "{n} left behind");
    }
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for n in &names {
        assert!(!list.contains(n.as_str()), "{n} still listed: {list}");
    }
    // The veth ends lived only in those namespaces; the host never had them.
    let host_links = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let host_links = String::from_utf8_lossy(&host_links.stdout);
    assert!(
        !host_links.contains("02:13:00:"),
        "a veth of ours is in the host namespace: {host_links}"
    );
}
