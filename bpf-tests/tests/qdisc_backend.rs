//! `chaos_user::backend::qdisc` against real interfaces: the fq root, netem bands of our prio
//! root (and the delay they add to the packets steered into them), ifb devices, refusal of a
//! user's root qdisc, and exact restoration of the state `tc` showed before.
//!
//! Kernels without fq, netem, prio or ifb skip the tests that need them, after checking that the
//! failed attempt changed nothing.

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bpf_tests::{TwoHosts, skip::require_netns, skip_on_err, skip_unless, world::Host};
use chaos_user::{
    Error,
    backend::qdisc::{self, Distribution, FqRecord, IfbRecord, NetemBand, NetemParams, RootQdisc},
    netns::NetNs as ChaosNetNs,
    plan::Interface,
};
use serde_json::Value;

/// Runs its closure on drop: cleanup that happens even when the test panics.
struct Defer<F: FnMut()>(F);

impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

fn iface_of(h: &Host) -> Interface {
    Interface {
        netns: Some(ChaosNetNs::resolve(h.ns.name(), "netns").unwrap()),
        name: h.ifname.clone(),
        ifindex: h.ifindex,
    }
}

/// `tc -j qdisc show dev <dev>` inside the host's namespace.
fn show(h: &Host, dev: &str) -> String {
    h.ns.exec(&["tc", "-j", "qdisc", "show", "dev", dev])
        .unwrap()
}

fn show_json(h: &Host, dev: &str) -> Vec<Value> {
    serde_json::from_str(show(h, dev).trim()).unwrap()
}

fn root_of(h: &Host, dev: &str) -> Value {
    show_json(h, dev)
        .into_iter()
        .find(|q| q["root"] == Value::Bool(true))
        .unwrap_or(Value::Null)
}

/// `Ok` for success, `Err(reason)` (a skip) for `Error::Unsupported` once the failed attempt is
/// checked to have left `dev` as it was; any other error fails the test.
fn attempt<T>(h: &Host, dev: &str, f: impl FnOnce() -> chaos_user::Result<T>) -> Result<T, String> {
    let before = show(h, dev);
    match f() {
        Ok(v) => Ok(v),
        Err(e @ Error::Unsupported { .. }) => {
            assert_eq!(show(h, dev), before, "a refused attempt changed {dev}: {e}");
            Err(e.to_string())
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn fq_guard(rec: &FqRecord) -> Defer<impl FnMut() + '_> {
    Defer(move || {
        let _ = qdisc::restore_fq(rec);
    })
}

fn band_guard(band: &NetemBand) -> Defer<impl FnMut() + '_> {
    Defer(move || {
        let _ = qdisc::remove_netem_band(band);
    })
}

fn delay(ms: u64) -> NetemParams {
    NetemParams {
        delay: Duration::from_millis(ms),
        ..Default::default()
    }
}

#[test]
fn fq_install_and_restore_exactly() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    let (h, dev) = (&w.a, w.a.ifname.as_str());
    let iface = iface_of(h);
    let before = show(h, dev);
    let rec = skip_on_err!(attempt(h, dev, || qdisc::install_fq(&iface)));
    let _g = fq_guard(&rec);
    assert!(rec.is_ours());
    assert!(rec.before.is_default(), "{:?}", rec.before);
    let root = root_of(h, dev);
    assert_eq!(root["kind"], "fq", "{root}");
    assert_eq!(root["handle"], "c4a1:", "{root}");
    let text = h.ns.exec(&["tc", "qdisc", "show", "dev", dev]).unwrap();
    assert!(text.contains("qdisc fq c4a1: root"), "{text}");

    // A second fault on the same interface shares our root: whichever record goes last restores.
    let second = qdisc::install_fq(&iface).unwrap();
    assert!(second.is_ours() && second.same_root(&rec));
    assert_eq!(root_of(h, dev)["handle"], "c4a1:");

    // The serde round trip is what the state store does between processes.
    let stored: FqRecord = serde_json::from_str(&serde_json::to_string(&rec).unwrap()).unwrap();
    qdisc::restore_fq(&stored).unwrap();
    assert_eq!(show(h, dev), before);
    qdisc::restore_fq(&stored).unwrap();
    qdisc::restore_fq(&second).unwrap();
    assert_eq!(show(h, dev), before);
}

#[test]
fn fq_on_a_multiqueue_device_goes_under_each_queue() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    let h = &w.a;
    let dev = "chq-mq0";
    skip_on_err!(
        h.ns.exec(&["ip", "link", "add", dev, "numtxqueues", "4", "type", "ifb"])
            .map_err(|e| format!("no multi-queue ifb to test mq on: {e}"))
    );
    let _del = Defer(|| {
        let _ = h.ns.exec(&["ip", "link", "del", dev]);
    });
    h.ns.exec(&["ip", "link", "set", dev, "up"]).unwrap();
    let root = root_of(h, dev);
    skip_unless!(if root["kind"] == "mq" {
        Ok(())
    } else {
        Err(format!(
            "the default root of a 4-queue ifb is {root}, not mq"
        ))
    });
    let before = show(h, dev);
    let iface = Interface {
        ifindex: h
            .ns
            .run(|| chaos_user::netns::ifindex(dev))
            .expect("ifindex"),
        name: dev.into(),
        ..iface_of(h)
    };
    let rec = skip_on_err!(attempt(h, dev, || qdisc::install_fq(&iface)));
    let _g = fq_guard(&rec);
    let all = show_json(h, dev);
    let root = root_of(h, dev);
    assert_eq!(
        (&root["kind"], &root["handle"]),
        (&"mq".into(), &"c4a2:".into())
    );
    let fqs: Vec<_> = all.iter().filter(|q| q["kind"] == "fq").collect();
    assert_eq!(fqs.len(), 4, "{all:?}");
    for q in fqs {
        assert!(q["parent"].as_str().unwrap().starts_with("c4a2:"), "{q}");
    }
    qdisc::restore_fq(&rec).unwrap();
    assert_eq!(show(h, dev), before);
}

#[test]
fn a_user_root_qdisc_is_refused_and_left_identical() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    let (h, dev) = (&w.a, w.a.ifname.as_str());
    skip_on_err!(
        h.ns.exec(&[
            "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", "1gbit", "burst", "32kb",
            "latency", "50ms",
        ])
        .map_err(|e| format!("cannot add a tbf root: {e}"))
    );
    let iface = iface_of(h);
    let before = show(h, dev);
    for err in [
        qdisc::install_fq(&iface).map(drop).unwrap_err(),
        qdisc::install_netem_band(&iface, &delay(50))
            .map(drop)
            .unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(matches!(err, Error::Unsupported { .. }), "{text}");
        assert!(text.contains("tbf") && text.contains(dev), "{text}");
        assert!(text.contains("tc qdisc del dev"), "{text}");
        assert!(!text.contains('\n'), "{text}");
        assert_eq!(show(h, dev), before);
    }
    let read = RootQdisc::read(&iface).unwrap();
    assert_eq!(read.kind(), "tbf");
    assert!(!read.is_default());
}

#[test]
fn a_user_fq_is_used_and_never_touched() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    let (h, dev) = (&w.a, w.a.ifname.as_str());
    skip_on_err!(
        h.ns.exec(&["tc", "qdisc", "add", "dev", dev, "root", "fq"])
            .map_err(|e| format!("cannot add an fq root: {e}"))
    );
    let iface = iface_of(h);
    let before = show(h, dev);
    let rec = qdisc::install_fq(&iface).unwrap();
    assert!(!rec.is_ours());
    assert_eq!(show(h, dev), before);
    qdisc::restore_fq(&rec).unwrap();
    assert_eq!(show(h, dev), before);
    // And a netem band is refused there: the fq root is the user's.
    let err = qdisc::install_netem_band(&iface, &delay(10)).unwrap_err();
    assert!(err.to_string().contains("fq"), "{err}");
    assert_eq!(show(h, dev), before);
}

#[test]
fn records_of_gone_interfaces_and_namespaces_restore_as_success() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    let iface = iface_of(&w.a);
    let missing_if = Interface {
        name: "chq-none0".into(),
        ifindex: 999,
        ..iface.clone()
    };
    let nothing = RootQdisc {
        root: None,
        children: vec![],
    };
    let records = |iface: &Interface| {
        (
            FqRecord {
                interface: iface.clone(),
                before: nothing.clone(),
                ours: true,
            },
            NetemBand {
                interface: iface.clone(),
                band: 4,
                priority: qdisc::band_priority(4),
                before: nothing.clone(),
            },
            IfbRecord {
                ifb: iface.clone(),
                parent: iface.clone(),
            },
        )
    };
    let (fq, band, ifb) = records(&missing_if);
    qdisc::restore_fq(&fq).unwrap();
    qdisc::remove_netem_band(&band).unwrap();
    qdisc::remove_ifb(&ifb).unwrap();
    // An install on a gone interface is an error naming it.
    let err = qdisc::install_fq(&missing_if).unwrap_err().to_string();
    assert!(
        err.starts_with("invalid interface:") && err.contains("chq-none0"),
        "{err}"
    );

    let (fq, band, _) = records(&iface);
    drop(w);
    qdisc::restore_fq(&fq).unwrap();
    qdisc::remove_netem_band(&band).unwrap();
    // Not the veth: an ifb record for the gone namespace.
    qdisc::remove_ifb(&IfbRecord {
        ifb: Interface {
            name: "chifb0".into(),
            ..iface.clone()
        },
        parent: iface,
    })
    .unwrap();
}

#[test]
fn bad_netem_parameters_are_named_and_change_nothing() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    let (h, dev) = (&w.a, w.a.ifname.as_str());
    let iface = iface_of(h);
    let before = show(h, dev);
    let bad = NetemParams {
        loss: 150.0,
        ..Default::default()
    };
    let err = qdisc::install_netem_band(&iface, &bad)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("invalid loss:"), "{err}");
    let bad = NetemParams {
        reorder: 25.0,
        ..Default::default()
    };
    let err = qdisc::install_netem_band(&iface, &bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("invalid reorder:") && err.contains("delay"),
        "{err}"
    );
    assert_eq!(show(h, dev), before);
}

/// Netem children under our prio root, as `(parent, handle)`.
fn netem_children(h: &Host, dev: &str) -> Vec<(String, String)> {
    show_json(h, dev)
        .iter()
        .filter(|q| q["kind"] == "netem")
        .map(|q| {
            (
                q["parent"].as_str().unwrap_or("").to_owned(),
                q["handle"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[test]
fn netem_bands_coexist_and_the_last_one_restores_the_root() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    let (h, dev) = (&w.a, w.a.ifname.as_str());
    let iface = iface_of(h);
    let before = show(h, dev);
    let b50 = skip_on_err!(attempt(h, dev, || qdisc::install_netem_band(
        &iface,
        &delay(50)
    )));
    let _g50 = band_guard(&b50);
    let b100 = qdisc::install_netem_band(&iface, &delay(100)).unwrap();
    let _g100 = band_guard(&b100);
    assert_ne!(b50.band, b100.band);
    assert_ne!(b50.priority, b100.priority);
    assert_eq!(b50.priority >> 16, 0xc4a0);
    assert_eq!(b50.priority & 0xffff, u32::from(b50.band));
    let root = root_of(h, dev);
    assert_eq!(
        (&root["kind"], &root["handle"]),
        (&"prio".into(), &"c4a0:".into())
    );
    assert_eq!(root["options"]["bands"], 16, "{root}");
    assert_eq!(
        root["options"]["priomap"],
        serde_json::json!([1, 2, 2, 2, 1, 2, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    );
    let stats =
        h.ns.exec(&["tc", "-s", "qdisc", "show", "dev", dev])
            .unwrap();
    assert!(
        stats.contains("delay 50") && stats.contains("delay 100"),
        "{stats}"
    );
    assert_eq!(netem_children(h, dev).len(), 2, "{stats}");

    qdisc::remove_netem_band(&b50).unwrap();
    let left = netem_children(h, dev);
    assert_eq!(
        left,
        vec![(
            format!("c4a0:{:x}", b100.band),
            format!("{:x}:", 0xc4b0 + b100.band)
        )]
    );
    let stats =
        h.ns.exec(&["tc", "-s", "qdisc", "show", "dev", dev])
            .unwrap();
    assert!(
        !stats.contains("delay 50") && stats.contains("delay 100"),
        "{stats}"
    );
    // Removing it again changes nothing; a new band takes the freed one.
    qdisc::remove_netem_band(&b50).unwrap();
    assert_eq!(netem_children(h, dev).len(), 1);
    let again = qdisc::install_netem_band(&iface, &delay(20)).unwrap();
    let _gagain = band_guard(&again);
    assert_eq!(again.band, b50.band);
    qdisc::remove_netem_band(&again).unwrap();

    let stored: NetemBand = serde_json::from_str(&serde_json::to_string(&b100).unwrap()).unwrap();
    qdisc::remove_netem_band(&stored).unwrap();
    assert_eq!(show(h, dev), before);
    qdisc::remove_netem_band(&stored).unwrap();
    assert_eq!(show(h, dev), before);
}

#[test]
fn netem_takes_every_parameter() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    let (h, dev) = (&w.a, w.a.ifname.as_str());
    let iface = iface_of(h);
    let before = show(h, dev);
    let params = NetemParams {
        delay: Duration::from_millis(30),
        jitter: Duration::from_millis(5),
        distribution: Distribution::Normal,
        delay_correlation: 10.0,
        loss: 1.0,
        loss_correlation: 5.0,
        reorder: 20.0,
        reorder_correlation: 10.0,
        duplicate: 2.0,
        corrupt: 0.5,
        rate_bit_per_s: Some(100_000_000),
        limit: Some(5000),
    };
    let band = skip_on_err!(attempt(h, dev, || qdisc::install_netem_band(
        &iface, &params
    )));
    let _g = band_guard(&band);
    let text = h.ns.exec(&["tc", "qdisc", "show", "dev", dev]).unwrap();
    for word in [
        "limit 5000",
        "delay 30",
        "loss 1%",
        "duplicate 2%",
        "reorder 20%",
        "corrupt 0.5%",
        "rate 100",
    ] {
        assert!(text.contains(word), "{word} missing: {text}");
    }
    qdisc::remove_netem_band(&band).unwrap();
    assert_eq!(show(h, dev), before);
    // Uniform jitter has no distribution table.
    let uniform = NetemParams {
        distribution: Distribution::Uniform,
        ..params.clone()
    };
    let b2 = qdisc::install_netem_band(&iface, &uniform).unwrap();
    let _g2 = band_guard(&b2);
    qdisc::remove_netem_band(&b2).unwrap();
    assert_eq!(show(h, dev), before);
}

#[test]
fn a_duplicating_band_beside_another_band_works_or_is_refused_cleanly() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    let (h, dev) = (&w.a, w.a.ifname.as_str());
    let iface = iface_of(h);
    let before = show(h, dev);
    let plain = skip_on_err!(attempt(h, dev, || qdisc::install_netem_band(
        &iface,
        &delay(10)
    )));
    let _g = band_guard(&plain);
    let with_one = show(h, dev);
    let dup = NetemParams {
        duplicate: 5.0,
        ..Default::default()
    };
    // Stable kernels with the 2025 restriction (Debian 6.1) refuse; others take it.
    match qdisc::install_netem_band(&iface, &dup) {
        Ok(b) => {
            let _g2 = band_guard(&b);
            assert_eq!(netem_children(h, dev).len(), 2);
            qdisc::remove_netem_band(&b).unwrap();
        }
        Err(e @ Error::Unsupported { .. }) => {
            let text = e.to_string();
            println!("refused: {text}");
            assert!(
                text.contains("recover the other") && text.contains(dev),
                "{text}"
            );
            assert_eq!(show(h, dev), with_one);
        }
        Err(e) => panic!("{e}"),
    }
    qdisc::remove_netem_band(&plain).unwrap();
    assert_eq!(show(h, dev), before);
}

#[test]
fn fq_and_netem_refuse_each_others_root() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    let (h, dev) = (&w.a, w.a.ifname.as_str());
    let iface = iface_of(h);
    let before = show(h, dev);
    let band = skip_on_err!(attempt(h, dev, || qdisc::install_netem_band(
        &iface,
        &delay(5)
    )));
    let _g = band_guard(&band);
    let with_band = show(h, dev);
    let err = qdisc::install_fq(&iface).unwrap_err().to_string();
    assert!(err.contains("recover that fault first"), "{err}");
    assert_eq!(show(h, dev), with_band);
    qdisc::remove_netem_band(&band).unwrap();
    assert_eq!(show(h, dev), before);

    let fq = skip_on_err!(attempt(h, dev, || qdisc::install_fq(&iface)));
    let _gfq = fq_guard(&fq);
    let with_fq = show(h, dev);
    let err = qdisc::install_netem_band(&iface, &delay(5))
        .unwrap_err()
        .to_string();
    assert!(err.contains("recover that fault first"), "{err}");
    assert_eq!(show(h, dev), with_fq);
    qdisc::restore_fq(&fq).unwrap();
    assert_eq!(show(h, dev), before);
}

/// A UDP echo in a namespace, stopped on drop.
struct UdpEcho {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpEcho {
    fn start(h: &Host) -> UdpEcho {
        let sock =
            h.ns.run(|| UdpSocket::bind(SocketAddr::new(h.v4(), 0)))
                .unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        UdpEcho {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP socket in `h`'s namespace connected to `to`, with `SO_PRIORITY` set when given.
fn client(h: &Host, to: SocketAddr, priority: Option<u32>) -> UdpSocket {
    let sock =
        h.ns.run(|| UdpSocket::bind(SocketAddr::new(h.v4(), 0)))
            .unwrap();
    if let Some(p) = priority {
        let value = p as libc::c_int;
        // SAFETY: setsockopt reads one c_int we own.
        let ret = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PRIORITY,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(
            ret,
            0,
            "SO_PRIORITY {p:#x}: {}",
            std::io::Error::last_os_error()
        );
    }
    sock.connect(to).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock
}

/// Median round trip of `n` echoes.
fn median_rtt(sock: &UdpSocket, n: u32) -> Duration {
    let mut rtts = Vec::new();
    let mut buf = [0u8; 64];
    for i in 0..n {
        let msg = i.to_be_bytes();
        let start = Instant::now();
        sock.send(&msg).unwrap();
        loop {
            let got = sock.recv(&mut buf).expect("echo answered within 2 s");
            if buf[..got] == msg {
                break;
            }
        }
        rtts.push(start.elapsed());
    }
    rtts.sort();
    rtts[rtts.len() / 2]
}

#[test]
fn a_netem_band_delays_only_the_packets_steered_into_it() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    let (h, dev) = (&w.a, w.a.ifname.as_str());
    let iface = iface_of(h);
    let band = skip_on_err!(attempt(h, dev, || qdisc::install_netem_band(
        &iface,
        &delay(50)
    )));
    let _g = band_guard(&band);
    let echo = UdpEcho::start(&w.b);
    let plain = client(h, echo.addr, None);
    let steered = client(h, echo.addr, Some(band.priority));
    // Priorities 0-6 go through bands 1-3 by the priomap, undelayed.
    let interactive = client(h, echo.addr, Some(6));
    let p = median_rtt(&plain, 15);
    let s = median_rtt(&steered, 15);
    let i = median_rtt(&interactive, 15);
    println!(
        "median RTT: default {p:?}, priority 6 {i:?}, band {} {s:?}",
        band.band
    );
    assert!(
        p < Duration::from_millis(25),
        "default priority delayed: {p:?}"
    );
    assert!(i < Duration::from_millis(25), "priority 6 delayed: {i:?}");
    assert!(
        s >= Duration::from_millis(48) && s < Duration::from_millis(250),
        "steered packets: {s:?}, expected about 50 ms"
    );
    qdisc::remove_netem_band(&band).unwrap();
    let after = median_rtt(&steered, 15);
    assert!(
        after < Duration::from_millis(25),
        "after removal: {after:?}"
    );
}

#[test]
fn ifb_devices_are_made_and_removed_in_the_namespace() {
    skip_unless!(require_netns());
    let w = TwoHosts::new().unwrap();
    let h = &w.a;
    let iface = iface_of(h);
    let links_before = h.ns.exec(&["ip", "-o", "link", "show"]).unwrap();
    let rec = match qdisc::ensure_ifb(&iface, None) {
        Ok(r) => r,
        Err(e @ Error::Unsupported { .. }) => {
            let links = h.ns.exec(&["ip", "-o", "link", "show"]).unwrap();
            assert_eq!(
                links, links_before,
                "a failed ensure_ifb left a device: {e}"
            );
            skip_on_err!(Err::<IfbRecord, String>(e.to_string()))
        }
        Err(e) => panic!("{e}"),
    };
    let _g = Defer(|| {
        let _ = qdisc::remove_ifb(&rec);
    });
    assert!(rec.ifb.name.starts_with("chifb") && rec.ifb.name.len() <= 15);
    assert_eq!(rec.parent, iface);
    let link =
        h.ns.exec(&["ip", "-o", "link", "show", &rec.ifb.name])
            .unwrap();
    assert!(
        link.starts_with(&format!("{}: {}", rec.ifb.ifindex, rec.ifb.name)),
        "{link}"
    );
    assert!(link.contains(",UP"), "{link}");
    let root = root_of(h, &rec.ifb.name);
    assert_eq!(
        (&root["kind"], &root["handle"]),
        (&"prio".into(), &"c4a0:".into())
    );

    // A known, live record is returned as is; a new call makes another device.
    assert_eq!(qdisc::ensure_ifb(&iface, Some(&rec)).unwrap(), rec);
    let other = qdisc::ensure_ifb(&iface, None).unwrap();
    let _g2 = Defer(|| {
        let _ = qdisc::remove_ifb(&other);
    });
    assert_ne!(other.ifb.name, rec.ifb.name);
    qdisc::remove_ifb(&other).unwrap();

    // Bands on it work like on any interface.
    let band = qdisc::install_netem_band(&rec.ifb, &delay(20)).unwrap();
    assert_eq!(netem_children(h, &rec.ifb.name).len(), 1);
    qdisc::remove_netem_band(&band).unwrap();

    let stored: IfbRecord = serde_json::from_str(&serde_json::to_string(&rec).unwrap()).unwrap();
    qdisc::remove_ifb(&stored).unwrap();
    assert!(h.ns.exec(&["ip", "link", "show", &rec.ifb.name]).is_err());
    qdisc::remove_ifb(&stored).unwrap();
    // A stale record (its device gone) is replaced by a new device.
    let fresh = qdisc::ensure_ifb(&iface, Some(&stored)).unwrap();
    let _g3 = Defer(|| {
        let _ = qdisc::remove_ifb(&fresh);
    });
    assert!(h.ns.exec(&["ip", "link", "show", &fresh.ifb.name]).is_ok());
    qdisc::remove_ifb(&fresh).unwrap();
    assert_eq!(
        h.ns.exec(&["ip", "-o", "link", "show"]).unwrap(),
        links_before
    );
}
