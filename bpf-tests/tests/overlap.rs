//! Overlapping faults on one target compose and recover independently, for every family this
//! kernel supports (docs/composition.md says what "compose" means for each).
//!
//! Each test arms two faults on the same target, measures their combined effect, recovers them
//! one at a time in both orders, checks after each recovery that exactly the remaining fault's
//! effect is left (its own counters too, where it has some), and at the end that `chaos list` is
//! empty and the oracle finds the world as before. Every figure is printed.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bpf_tests::{
    ChildProcess, LoopDevice, Oracle, TestCgroup, UdpEcho,
    chaos::{Armed, Chaos, tc_requirement},
    drill::{Drill, PORT},
    skip::require_root,
    skip_on_err, skip_unless,
    world::{
        InsideCgroup, cgroup2_mount,
        io::{MIB, V1_FILES, mib_s},
        measure::within_binomial,
    },
};

// ---------------------------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------------------------

/// Datagrams per loss measurement.
const DATAGRAMS: u64 = 20_000;
/// How far a measured loss may be from the expected one, in points (the binomial 99.9 %
/// interval at 20,000 datagrams is about ±1.2 points at 50 %).
const LOSS_TOLERANCE: f64 = 2.0;

/// `(matched, acted)` of a fault.
fn counters(chaos: &Chaos, id: &str) -> (u64, u64) {
    let s = chaos.status(id).expect("status");
    let c = &s["counters"];
    (
        c["matched"].as_u64().unwrap_or_else(|| panic!("{s}")),
        c["acted"].as_u64().unwrap_or_else(|| panic!("{s}")),
    )
}

/// Sends [`DATAGRAMS`] from A to B at `port`; the percentage lost.
fn lost_percent(d: &Drill, port: u16) -> f64 {
    let got = d.send_port(d.world.b.v4(), port, DATAGRAMS);
    100.0 * (DATAGRAMS - got) as f64 / DATAGRAMS as f64
}

fn assert_loss(what: &str, measured: f64, expect: f64) {
    assert!(
        (measured - expect).abs() <= LOSS_TOLERANCE,
        "{what}: {measured:.2}% dropped, expected {expect}% ± {LOSS_TOLERANCE}"
    );
}

/// Measures the loss while `remaining` is the only fault left, and checks that its counters
/// account for exactly that measurement: every datagram matched, every missing one acted on
/// (plus the odd IPv6 control packet the interface-wide rule also drops).
fn remaining_only(d: &Drill, remaining: &str, port: u16, expect: f64) -> f64 {
    let (m0, a0) = counters(&d.chaos, remaining);
    let got = d.send_port(d.world.b.v4(), port, DATAGRAMS);
    let lost = DATAGRAMS - got;
    let (m1, a1) = counters(&d.chaos, remaining);
    let pct = 100.0 * lost as f64 / DATAGRAMS as f64;
    assert_loss("remaining fault", pct, expect);
    assert!(
        m1 - m0 >= DATAGRAMS && m1 - m0 <= DATAGRAMS + 10,
        "the remaining fault matched {} packets for {DATAGRAMS} datagrams",
        m1 - m0
    );
    assert!(
        a1 - a0 >= lost && a1 - a0 <= lost + 10,
        "the remaining fault's drops ({}) are the missing datagrams ({lost})",
        a1 - a0
    );
    pct
}

/// Two 50 % losses on the same interface and direction act independently: 1 - 0.5 * 0.5 = 75 %
/// dropped, each rule dropping half of what it sees; recovering one leaves exactly the other's
/// 50 %, with its own counters; recovering both leaves nothing, in either order.
#[test]
fn net_two_losses_compose_independently() {
    let d = skip_on_err!(Drill::new("any"));
    assert_eq!(d.send_v4(2_000), 2_000, "no loss before the faults");
    for first_out in [0, 1] {
        let ids = [
            d.loss(&d.world.a, 50.0, "egress", "120s"),
            d.loss(&d.world.a, 50.0, "egress", "120s"),
        ];
        let before: Vec<_> = ids.iter().map(|id| counters(&d.chaos, id)).collect();
        let both = lost_percent(&d, PORT);
        for (id, b) in ids.iter().zip(&before) {
            let (m, a) = counters(&d.chaos, id);
            let own = 100.0 * (a - b.1) as f64 / (m - b.0) as f64;
            println!(
                "  fault {id}: matched {} acted {} ({own:.1}%)",
                m - b.0,
                a - b.1
            );
            assert_loss("each rule on its own traffic", own, 50.0);
        }
        assert_loss("two 50% losses", both, 75.0);
        let (gone, kept) = (&ids[first_out], &ids[1 - first_out]);
        d.chaos.recover(gone).expect("recover the first");
        let after_one = remaining_only(&d, kept, PORT, 50.0);
        d.chaos.recover(kept).expect("recover the second");
        let after_both = lost_percent(&d, PORT);
        println!(
            "overlap net loss 50%+50%: {both:.1}% dropped (expect 75%), after recovering {}: \
             {after_one:.1}%, after {}: {after_both:.1}%",
            if first_out == 0 { "A" } else { "B" },
            if first_out == 0 { "B" } else { "A" },
        );
        assert_eq!(after_both, 0.0, "no loss once both are recovered");
    }
    d.assert_clean();
}

/// A partition of ports 47000-47001 and a narrower 50 % loss on port 47001, both on A's egress:
/// together everything on both ports is dropped; without the partition only the loss on 47001
/// is left (47000 flows); without the loss the partition still drops both ports.
#[test]
fn net_partition_and_a_narrower_loss() {
    let d = skip_on_err!(Drill::new("any"));
    let (wide, narrow) = (PORT, PORT + 1);
    let range = format!("{wide}-{narrow}");
    let n = narrow.to_string();
    for first_out in ["partition", "loss"] {
        let partition = d.net(
            "partition",
            &d.world.a,
            &["--direction", "egress", "--dport", &range, "--proto", "udp"],
            "120s",
        );
        let loss = d.net(
            "loss",
            &d.world.a,
            &[
                "--percent",
                "50",
                "--direction",
                "egress",
                "--dport",
                &n,
                "--proto",
                "udp",
            ],
            "120s",
        );
        let both = (lost_percent(&d, wide), lost_percent(&d, narrow));
        assert_eq!(both, (100.0, 100.0), "the partition drops both ports");
        let (one, left) = if first_out == "partition" {
            d.chaos.recover(&partition).expect("recover partition");
            assert_eq!(
                lost_percent(&d, wide),
                0.0,
                "47000: only the partition held it"
            );
            let narrow_loss = remaining_only(&d, &loss, narrow, 50.0);
            ((0.0, narrow_loss), loss)
        } else {
            d.chaos.recover(&loss).expect("recover loss");
            let w = remaining_only(&d, &partition, wide, 100.0);
            let x = remaining_only(&d, &partition, narrow, 100.0);
            ((w, x), partition)
        };
        d.chaos.recover(&left).expect("recover the other");
        let after = (lost_percent(&d, wide), lost_percent(&d, narrow));
        println!(
            "overlap net partition {range} + loss 50% on {narrow}: {:.1}%/{:.1}% dropped \
             (expect 100/100), after recovering the {first_out}: {:.1}%/{:.1}%, after both: \
             {:.1}%/{:.1}%",
            both.0, both.1, one.0, one.1, after.0, after.1
        );
        assert_eq!(after, (0.0, 0.0), "nothing dropped once both are recovered");
    }
    d.assert_clean();
}

/// Probers for round-trip measurements.
const PROBERS: usize = 4;
/// A probe whose echo has not come back in this long is counted lost.
const PROBE_TIMEOUT: Duration = Duration::from_millis(600);

/// `n` probes from A to `echo`: the median RTT (ms) of those answered, and the fraction lost.
fn rtt(d: &Drill, echo: SocketAddr, n: usize) -> (f64, f64) {
    let ns = &d.world.a.ns;
    let mut all = Vec::with_capacity(n);
    std::thread::scope(|s| {
        let probers: Vec<_> = (0..PROBERS)
            .map(|_| {
                s.spawn(move || {
                    bpf_tests::world::measure::udp_rtt_with(
                        ns,
                        echo,
                        n.div_ceil(PROBERS),
                        Duration::ZERO,
                        PROBE_TIMEOUT,
                    )
                })
            })
            .collect();
        for p in probers {
            all.extend(p.join().expect("prober").expect("udp_rtt"));
        }
    });
    let mut ms: Vec<f64> = all
        .iter()
        .flatten()
        .map(|r| r.as_secs_f64() * 1e3)
        .collect();
    ms.sort_by(f64::total_cmp);
    let lost = (all.len() - ms.len()) as f64 / all.len() as f64;
    let median = ms.get(ms.len() / 2).copied().unwrap_or(f64::NAN);
    (median, lost)
}

/// Asserts a median RTT is `base + added` within max(10 %, 4 ms): loose enough for the
/// emulated VMs, tight enough to tell one delay from another or from their sum.
fn assert_delay(what: &str, median: f64, base: f64, added: f64) {
    let tol = (0.10 * added).max(4.0);
    assert!(
        (median - base - added).abs() <= tol,
        "{what}: median RTT {median:.1} ms, expected {base:.1} + {added} ± {tol:.1} ms"
    );
}

/// A drill on a kernel that shapes egress delay with fq departure times (the path that orders
/// two delays by their departure time); `Err` is a skip reason.
fn fq_drill() -> Result<Drill, String> {
    require_root()?;
    let chaos = Chaos::from_env()?;
    tc_requirement(&chaos, "any")?;
    chaos.probe_row("qdisc_fq")?;
    Drill::with(chaos.env("CHAOS_NET_SHAPING", "fq"))
}

/// Loss and delay on the same traffic both act: half the probes are lost and the others are
/// late by the delay; recovering the loss leaves the delay with no loss, recovering the delay
/// leaves the loss with no delay.
#[test]
fn net_loss_and_delay_both_act() {
    let d = skip_on_err!(fq_drill());
    let echo = UdpEcho::start(&d.world.b.ns, d.world.b.v4(), PORT).expect("echo in B");
    let to = echo.local_addr();
    let (base, base_lost) = rtt(&d, to, 200);
    assert_eq!(base_lost, 0.0, "no loss before the faults");
    for first_out in ["loss", "delay"] {
        let loss = d.loss(&d.world.a, 50.0, "egress", "120s");
        let delay = d.net(
            "delay",
            &d.world.a,
            &["--latency", "60ms", "--direction", "egress"],
            "120s",
        );
        // Loss is measured on the probes (one flow each), not with a blast: fq holds at most
        // 100 packets of a flow, so a blast into a 60 ms delay overflows it.
        let n = 400;
        let (both, both_lost) = rtt(&d, to, n);
        let dropped = 100.0 * both_lost;
        assert_delay("loss + delay", both, base, 60.0);
        assert!(
            within_binomial(n as u64, 0.5, (both_lost * n as f64).round() as u64),
            "probes lost with loss + delay: {dropped:.1}%"
        );
        let (gone, kept) = if first_out == "loss" {
            (&loss, &delay)
        } else {
            (&delay, &loss)
        };
        d.chaos.recover(gone).expect("recover");
        let (one, one_lost) = rtt(&d, to, n);
        let one_dropped = 100.0 * one_lost;
        if first_out == "loss" {
            assert_delay("the delay alone", one, base, 60.0);
            assert_eq!(one_lost, 0.0, "the delay alone loses nothing");
        } else {
            assert_delay("the loss alone", one, base, 0.0);
            assert!(
                within_binomial(n as u64, 0.5, (one_lost * n as f64).round() as u64),
                "probes lost with the loss alone: {one_dropped:.1}%"
            );
        }
        d.chaos.recover(kept).expect("recover");
        let (after, after_lost) = rtt(&d, to, 200);
        println!(
            "overlap net loss 50% + delay 60ms: {dropped:.1}% of probes lost, median RTT \
             {both:.1} ms (base {base:.1}); after recovering the {first_out}: {one_dropped:.1}% \
             lost, {one:.1} ms; after both: {after:.1} ms, {:.0}% lost",
            100.0 * after_lost
        );
        assert_delay("after both", after, base, 0.0);
        assert_eq!(after_lost, 0.0, "no loss after both");
    }
    d.assert_clean();
}

/// Two delays on the same traffic do not add: a packet has one departure time, the latest of
/// those the armed delays give it, so the longer delay is what the traffic sees; recovering it
/// leaves exactly the shorter one, and recovering the shorter first leaves the longer.
#[test]
fn net_two_delays_the_longer_wins() {
    let d = skip_on_err!(fq_drill());
    let echo = UdpEcho::start(&d.world.b.ns, d.world.b.v4(), PORT).expect("echo in B");
    let to = echo.local_addr();
    let (base, _) = rtt(&d, to, 200);
    for first_out in [40.0, 80.0] {
        let delay = |ms: f64| {
            d.net(
                "delay",
                &d.world.a,
                &["--latency", &format!("{ms}ms"), "--direction", "egress"],
                "120s",
            )
        };
        let ids = [(40.0, delay(40.0)), (80.0, delay(80.0))];
        let (both, lost) = rtt(&d, to, 200);
        assert_eq!(lost, 0.0, "delays lose nothing");
        assert_delay("40 ms + 80 ms", both, base, 80.0);
        let (gone, kept) = if first_out == 40.0 {
            (&ids[0], &ids[1])
        } else {
            (&ids[1], &ids[0])
        };
        d.chaos.recover(&gone.1).expect("recover");
        let (one, _) = rtt(&d, to, 200);
        assert_delay("the remaining delay", one, base, kept.0);
        d.chaos.recover(&kept.1).expect("recover");
        let (after, _) = rtt(&d, to, 200);
        println!(
            "overlap net delay 40ms + 80ms: median RTT +{:.1} ms (expect +80), after recovering \
             the {first_out} ms one: +{:.1} ms (expect +{}), after both: +{:.1} ms",
            both - base,
            one - base,
            kept.0,
            after - base
        );
        assert_delay("after both", after, base, 0.0);
    }
    d.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// Syscalls
// ---------------------------------------------------------------------------------------------

/// A syscall fault, recovered when it drops (even by a panic).
struct SysFault<'a> {
    chaos: &'a Chaos,
    id: String,
}

impl SysFault<'_> {
    fn recover(self) {
        self.chaos
            .recover(&self.id)
            .unwrap_or_else(|f| panic!("recover {}: {f}", self.id));
    }
}

impl Drop for SysFault<'_> {
    fn drop(&mut self) {
        let _ = self.chaos.recover(&self.id);
    }
}

/// Arms `chaos inject syscall fail ARGS --cgroup CG`; `Err` is a skip reason (no strategy
/// here).
fn sys_fault<'a>(chaos: &'a Chaos, cg: &str, args: &[&str]) -> Result<SysFault<'a>, String> {
    let mut full = vec!["syscall", "fail"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--cgroup", cg, "--duration", "120s"]);
    let id = chaos
        .inject(&full)
        .map_err(|f| f.stderr.trim().to_owned())?;
    Ok(SysFault { chaos, id })
}

/// The rule slot of a syscall fault (the lower one judges first).
fn slot(chaos: &Chaos, id: &str) -> u64 {
    let s = chaos.status(id).expect("status");
    s["record"]["syscall"]["slot"]
        .as_u64()
        .or_else(|| s["syscall"]["slot"].as_u64())
        .unwrap_or_else(|| panic!("no slot in {s}"))
}

/// `n` UDP sends to `to` from inside `cg`: how many failed with each errno.
fn sends(cg: &TestCgroup, to: SocketAddr, n: u64) -> std::collections::BTreeMap<i32, u64> {
    let _inside = InsideCgroup::enter(cg);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("sender");
    let mut out = std::collections::BTreeMap::new();
    for _ in 0..n {
        if let Err(e) = socket.send_to(b"x", to) {
            *out.entry(e.raw_os_error().unwrap_or(0)).or_default() += 1;
        }
    }
    out
}

/// Whether `setsockopt` fails inside `cg`, with which errno.
fn sockopt(cg: &TestCgroup) -> Option<i32> {
    let _inside = InsideCgroup::enter(cg);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
    socket
        .set_broadcast(true)
        .err()
        .map(|e| e.raw_os_error().unwrap_or(0))
}

/// Two faults on one cgroup. Different calls: each fails with its own errno, and recovering
/// one leaves the other's calls failing and its own working. The same call: the rules are
/// judged in slot order and the first that acts decides, so two 100 % faults fail the call
/// with the errno of the lower slot (normally the one armed first) and two 50 % faults fail
/// 1 - 0.5 * 0.5 = 75 % of the calls; recovering one leaves exactly the other.
#[test]
fn syscall_two_faults_on_one_cgroup() {
    let chaos = skip_on_err!(require_root().and_then(|()| Chaos::from_env()));
    skip_unless!(cgroup2_mount().ok_or("no cgroup v2"));
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("receiver");
    let to = receiver.local_addr().expect("addr");
    let cg = skip_on_err!(TestCgroup::new_v2());
    let cgroup = cg.path().to_string_lossy().into_owned();
    let n = 2_000;

    // Different calls.
    for first_out in ["sendto", "setsockopt"] {
        let send = skip_on_err!(sys_fault(
            &chaos,
            &cgroup,
            &["--syscall", "sendto", "--errno", "ENETUNREACH"]
        ));
        let strategy = chaos.status(&send.id).expect("status")["strategy"].clone();
        let opt = sys_fault(
            &chaos,
            &cgroup,
            &["--syscall", "setsockopt", "--errno", "EPERM"],
        )
        .unwrap_or_else(|e| panic!("setsockopt on the same cgroup: {e}"));
        let both = (sends(&cg, to, 100), sockopt(&cg));
        assert_eq!(both.0.get(&libc::ENETUNREACH), Some(&100), "{both:?}");
        assert_eq!(both.1, Some(libc::EPERM));
        let (s0, s1) = if first_out == "sendto" {
            send.recover();
            (sends(&cg, to, 100), sockopt(&cg))
        } else {
            opt.recover();
            (sends(&cg, to, 100), sockopt(&cg))
        };
        if first_out == "sendto" {
            assert!(s0.is_empty() && s1 == Some(libc::EPERM), "{s0:?} {s1:?}");
        } else {
            assert!(
                s0.get(&libc::ENETUNREACH) == Some(&100) && s1.is_none(),
                "{s0:?} {s1:?}"
            );
        }
        println!(
            "overlap syscall ({strategy}) sendto ENETUNREACH + setsockopt EPERM: sendto failed \
             {:?}, setsockopt {:?}; after recovering {first_out}: sendto {s0:?}, setsockopt \
             {s1:?}",
            both.0, both.1
        );
    }
    // The rules that remain are recovered by their guards; nothing fails now.
    assert!(sends(&cg, to, 100).is_empty() && sockopt(&cg).is_none());

    // The same call, 100 % each: the lower slot's errno.
    for first_out in [0, 1] {
        let a = sys_fault(
            &chaos,
            &cgroup,
            &["--syscall", "sendto", "--errno", "EACCES"],
        )
        .unwrap();
        let b = sys_fault(
            &chaos,
            &cgroup,
            &["--syscall", "sendto", "--errno", "ENETUNREACH"],
        )
        .unwrap();
        let (sa, sb) = (slot(&chaos, &a.id), slot(&chaos, &b.id));
        let lower = if sa < sb {
            libc::EACCES
        } else {
            libc::ENETUNREACH
        };
        let both = sends(&cg, to, 100);
        assert_eq!(
            both.get(&lower),
            Some(&100),
            "the lower slot decides: {both:?}"
        );
        let (b_acted_before, a_first) = (counters(&chaos, &b.id).1, first_out == 0);
        let left = if a_first {
            a.recover();
            b
        } else {
            b.recover();
            a
        };
        let one = sends(&cg, to, 100);
        let want = if a_first {
            libc::ENETUNREACH
        } else {
            libc::EACCES
        };
        assert_eq!(
            one.get(&want),
            Some(&100),
            "the remaining one's errno: {one:?}"
        );
        println!(
            "overlap syscall sendto EACCES (slot {sa}) + ENETUNREACH (slot {sb}), 100% each: \
             {both:?}; after recovering the {} one: {one:?} (the other fault had acted {} \
             times while both were armed)",
            if a_first { "EACCES" } else { "ENETUNREACH" },
            b_acted_before
        );
        left.recover();
        assert!(sends(&cg, to, 100).is_empty(), "nothing fails after both");
    }

    // The same call, 50 % each: independent chances.
    for first_out in [0, 1] {
        let args = ["--syscall", "sendto", "--errno", "EIO", "--percent", "50"];
        let faults = [
            sys_fault(&chaos, &cgroup, &args).unwrap(),
            sys_fault(&chaos, &cgroup, &args).unwrap(),
        ];
        let both = sends(&cg, to, n).get(&libc::EIO).copied().unwrap_or(0);
        assert!(
            within_binomial(n, 0.75, both),
            "{both} of {n} failed, expect 75%"
        );
        let [f0, f1] = faults;
        let kept = if first_out == 0 {
            f0.recover();
            f1
        } else {
            f1.recover();
            f0
        };
        let (_, a0) = counters(&chaos, &kept.id);
        let one = sends(&cg, to, n).get(&libc::EIO).copied().unwrap_or(0);
        let (_, a1) = counters(&chaos, &kept.id);
        assert!(
            within_binomial(n, 0.5, one),
            "{one} of {n} failed, expect 50%"
        );
        assert_eq!(
            a1 - a0,
            one,
            "the remaining fault's counter is its own failures"
        );
        kept.recover();
        let after = sends(&cg, to, n).get(&libc::EIO).copied().unwrap_or(0);
        println!(
            "overlap syscall sendto EIO 50%+50%: {:.1}% failed (expect 75%), after recovering \
             {}: {:.1}%, after both: {:.1}%",
            100.0 * both as f64 / n as f64,
            if first_out == 0 { "A" } else { "B" },
            100.0 * one as f64 / n as f64,
            100.0 * after as f64 / n as f64
        );
        assert_eq!(after, 0);
    }
    drop(receiver);
    assert!(
        chaos
            .list()
            .expect("list")
            .as_array()
            .is_some_and(|a| a.is_empty())
    );
    oracle.assert_clean(&before);
}

/// On kernels that fail any call (kprobe override): `read` with EIO and `openat` with EACCES on
/// the same process each act on their own call, and recovering one leaves the other.
#[test]
fn syscall_read_and_openat_on_one_process() {
    let chaos = skip_on_err!(require_root().and_then(|()| Chaos::from_env()));
    skip_on_err!(chaos.probe_row("kprobe_override"));
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let dir = std::env::temp_dir().join(format!("chaos-overlap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("data");
    std::fs::write(&file, b"0123456789").expect("file");
    let open = std::fs::File::open(&file).expect("open");
    let pid = std::process::id().to_string();
    let prefix = dir.display().to_string();
    // Under the test's directory only: this process also opens /dev/null to run chaos.
    let arm = |args: &[&str]| -> Result<SysFault<'_>, String> {
        let mut full = vec!["syscall", "fail"];
        full.extend_from_slice(args);
        full.extend_from_slice(&[
            "--path-prefix",
            &prefix,
            "--pid",
            &pid,
            "--duration",
            "120s",
        ]);
        let id = chaos
            .inject(&full)
            .map_err(|f| f.stderr.trim().to_owned())?;
        Ok(SysFault { chaos: &chaos, id })
    };
    let errnos = || {
        use std::os::unix::fs::FileExt as _;
        let mut buf = [0u8; 4];
        let read = open
            .read_at(&mut buf, 0)
            .err()
            .and_then(|e| e.raw_os_error());
        let opened = std::fs::File::open(&file)
            .err()
            .and_then(|e| e.raw_os_error());
        (read, opened)
    };
    for first_out in ["read", "openat"] {
        let read = skip_on_err!(arm(&["--syscall", "pread64", "--errno", "EIO"]));
        let openat = skip_on_err!(arm(&["--syscall", "openat", "--errno", "EACCES"]));
        let both = errnos();
        assert_eq!(both, (Some(libc::EIO), Some(libc::EACCES)));
        let one = if first_out == "read" {
            read.recover();
            let e = errnos();
            assert_eq!(e, (None, Some(libc::EACCES)));
            openat.recover();
            e
        } else {
            openat.recover();
            let e = errnos();
            assert_eq!(e, (Some(libc::EIO), None));
            read.recover();
            e
        };
        let after = errnos();
        println!(
            "overlap syscall pread64 EIO + openat EACCES on one process: {both:?}, after \
             recovering {first_out}: {one:?}, after both: {after:?}"
        );
        assert_eq!(after, (None, None));
    }
    drop(open);
    let _ = std::fs::remove_dir_all(&dir);
    oracle.assert_clean(&before);
}

// ---------------------------------------------------------------------------------------------
// Block I/O throttles
// ---------------------------------------------------------------------------------------------

/// dd's block size.
const BLOCK: u64 = 64 << 10;

/// The shared block I/O world, with this file's helpers.
struct IoWorld(bpf_tests::world::io::IoWorld);

impl std::ops::Deref for IoWorld {
    type Target = bpf_tests::world::io::IoWorld;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl IoWorld {
    fn new() -> Result<IoWorld, String> {
        bpf_tests::world::io::IoWorld::new(128 * MIB).map(IoWorld)
    }

    /// `chaos inject io ACTION ARGS --device D --cgroup CG --duration 120s`.
    fn arm(&self, action: &str, args: &[&str]) -> Armed<'_> {
        let device = self.lo.device().display().to_string();
        let cgroup = self.cg.path().display().to_string();
        let mut full = vec!["io", action, "--device", &device, "--cgroup", &cgroup];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--duration", "120s"]);
        self.chaos.arm(&full)
    }

    /// The cgroup's limit files, as text.
    fn limits(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| format!("<{e}>"));
        let files: &[&str] = if self.v2 { &["io.max"] } else { &V1_FILES };
        files
            .iter()
            .map(|f| format!("{f}: {:?}\n", read(self.cg.path().join(f))))
            .collect()
    }

    /// The write limit (bytes/s) of the device in the cgroup; `None`: no limit.
    fn wbps(&self) -> Option<u64> {
        let dev = self.dev();
        if self.v2 {
            let text = std::fs::read_to_string(self.cg.path().join("io.max")).unwrap_or_default();
            let line = text.lines().find(|l| l.starts_with(&format!("{dev} ")))?;
            let v = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("wbps="))?;
            v.parse().ok()
        } else {
            let text = std::fs::read_to_string(self.cg.path().join(V1_FILES[1])).unwrap();
            let line = text.lines().find(|l| l.starts_with(&format!("{dev} ")))?;
            line.split_whitespace().nth(1)?.parse().ok()
        }
    }

    /// Sets a write limit of our own (the limit "there before chaos").
    fn set_wbps(&self, value: Option<u64>) {
        let dev = self.dev();
        if self.v2 {
            let v = value.map_or("max".to_owned(), |v| v.to_string());
            self.cg
                .write("io.max", &format!("{dev} wbps={v}"))
                .expect("io.max");
        } else {
            self.cg
                .write(V1_FILES[1], &format!("{dev} {}", value.unwrap_or(0)))
                .expect("v1 limit");
        }
    }

    /// Starts a dd writing 48 MiB with direct I/O in the cgroup; its file.
    fn writer(&self, name: &str) -> (ChildProcess, PathBuf) {
        let file = self.mnt().join(name);
        let mut c = Command::new("dd");
        c.arg("if=/dev/zero")
            .arg(format!("of={}", file.display()))
            .arg(format!("bs={BLOCK}"))
            .arg(format!("count={}", 48 * MIB / BLOCK))
            .arg("oflag=direct")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let writer = ChildProcess::builder(c)
            .cgroup(&self.cg)
            .spawn()
            .expect("dd");
        (writer, file)
    }

    /// The direct-write rate (bytes/s) of a fresh dd in the cgroup over `window` after 0.5 s
    /// (over its whole run if it ends sooner). Only where writes are not hung: the dd is killed
    /// and waited for.
    fn write_rate(&self, window: Duration) -> f64 {
        let (mut writer, file) = self.writer("rate");
        let r = rate(&mut writer, &file, window);
        let _ = writer.kill();
        let _ = std::fs::remove_file(&file);
        r
    }
}

/// Bytes per second by which `file` (written by `writer`) grows over `window` from 0.5 s after
/// now, or over the whole run if the writer finishes before that.
fn rate(writer: &mut ChildProcess, file: &Path, window: Duration) -> f64 {
    bpf_tests::world::io::rate(writer, file, Duration::from_millis(500), window)
}

fn assert_rate(what: &str, rate: f64, want: u64) {
    assert!(
        (rate - want as f64).abs() <= want as f64 * 0.2,
        "{what}: {} (want {} ± 20 %)",
        mib_s(rate),
        mib_s(want as f64)
    );
}

/// Two `io slow` on the same cgroup and device, below a limit that was there before: the
/// tightest holds while both are armed; recovering it leaves the other's limit (measured);
/// recovering the last writes back exactly the limit there before. Both orders.
#[test]
fn io_two_throttles_compose_to_the_tightest() {
    let w = skip_on_err!(IoWorld::new());
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let base = w.write_rate(Duration::from_secs(2));
    skip_unless!((base >= 16.0 * MIB as f64).then_some(()).ok_or(format!(
        "direct writes run at {} here: too slow",
        mib_s(base)
    )));
    w.set_wbps(Some(8 * MIB));
    let files = w.limits();
    for first_out in ["1mb", "3mb"] {
        let three = w.arm("slow", &["--write-bps", "3mb"]);
        assert_eq!(w.wbps(), Some(3 * MIB));
        let one = w.arm("slow", &["--write-bps", "1mb"]);
        assert_eq!(w.wbps(), Some(MIB), "the tightest: {}", w.limits());
        let both = w.write_rate(Duration::from_secs(3));
        assert_rate("3mb + 1mb", both, MIB);
        let (left, want) = if first_out == "1mb" {
            one.recover();
            (three, 3 * MIB)
        } else {
            three.recover();
            (one, MIB)
        };
        assert_eq!(
            w.wbps(),
            Some(want),
            "after recovering {first_out}: {}",
            w.limits()
        );
        let after_one = w.write_rate(Duration::from_secs(3));
        assert_rate("the remaining throttle", after_one, want);
        left.recover();
        assert_eq!(w.limits(), files, "exactly the limits there before");
        let after = w.write_rate(Duration::from_secs(2));
        println!(
            "overlap io slow 3mb+1mb (8mb there before): {} (expect 1 MiB/s), after recovering \
             {first_out}: {} (expect {}), after both: {} (limit 8 MiB/s, unthrottled {})",
            mib_s(both),
            mib_s(after_one),
            mib_s(want as f64),
            mib_s(after),
            mib_s(base)
        );
        assert_rate("after both (the limit there before)", after, 8 * MIB);
    }
    assert_nothing_listed(&w.chaos);
    w.set_wbps(None);
    oracle.assert_clean(&before);
}

/// `io hang` over an `io slow` of the same cgroup and device: the hang wins while armed (writes
/// stall); recovering it brings back the slow limit; recovering the slow one first leaves the
/// hang. And after a crash (the deadline keeper killed -9, no process of ours left), `chaos
/// recover --all` restores exactly the limits there before.
#[test]
fn io_hang_over_slow_and_recover_all_after_a_crash() {
    let w = skip_on_err!(IoWorld::new());
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let files = w.limits();
    for first_out in ["hang", "slow"] {
        let slow = w.arm("slow", &["--write-bps", "2mb"]);
        let hang = w.arm("hang", &[]);
        assert_eq!(w.wbps(), Some(2), "the hang wins: {}", w.limits());
        // One writer throughout: a writer hung in the kernel cannot be killed until its I/O
        // is let through.
        let (mut writer, file) = w.writer("hung");
        let stalled = rate(&mut writer, &file, Duration::from_secs(2));
        assert!(stalled < 64.0 * 1024.0, "hung: {}", mib_s(stalled));
        let after_one = if first_out == "hang" {
            hang.recover();
            assert_eq!(w.wbps(), Some(2 * MIB), "{}", w.limits());
            let r = rate(&mut writer, &file, Duration::from_secs(3));
            assert_rate("the slow one back", r, 2 * MIB);
            slow.recover();
            r
        } else {
            slow.recover();
            assert_eq!(w.wbps(), Some(2), "{}", w.limits());
            let r = rate(&mut writer, &file, Duration::from_secs(2));
            assert!(r < 64.0 * 1024.0, "still hung: {}", mib_s(r));
            hang.recover();
            r
        };
        let _ = writer.kill();
        let _ = std::fs::remove_file(&file);
        assert_eq!(w.limits(), files, "exactly the limits there before");
        println!(
            "overlap io slow 2mb + hang: {} while both, after recovering the {first_out}: {}",
            mib_s(stalled),
            mib_s(after_one)
        );
    }
    // A crash: both armed, every process of ours killed -9, then recover --all.
    w.set_wbps(Some(8 * MIB));
    let files = w.limits();
    let a = w.arm("slow", &["--write-bps", "1mb"]);
    let b = w.arm("hang", &[]);
    let keeper = state_dir().join("deadline-keeper.pid");
    if let Ok(pid) = std::fs::read_to_string(&keeper) {
        let pid: i32 = pid.trim().parse().expect("keeper pid");
        // SAFETY: plain kill of the deadline keeper this test's faults started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(w.wbps(), Some(2), "still armed after the crash");
    w.chaos.recover_all().expect("recover --all");
    std::mem::forget(a);
    std::mem::forget(b);
    assert_eq!(
        w.limits(),
        files,
        "recover --all restored the limits there before"
    );
    println!("overlap io slow + hang, keeper killed -9: recover --all restored {files:?}");
    assert_nothing_listed(&w.chaos);
    w.set_wbps(None);
    oracle.assert_clean(&before);
}

fn state_dir() -> PathBuf {
    std::env::var_os(bpf_tests::oracle::STATE_DIR_ENV)
        .map_or_else(|| PathBuf::from("/run/chaos"), PathBuf::from)
}

fn assert_nothing_listed(chaos: &Chaos) {
    let start = Instant::now();
    loop {
        let list = chaos.list().expect("chaos list");
        if list.as_array().is_some_and(|a| a.is_empty()) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "faults left: {list}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Disk fill
// ---------------------------------------------------------------------------------------------

/// Used bytes of the filesystem at `path` and its usage as df shows it.
fn used(path: &Path) -> (u64, f64) {
    let v = nix::sys::statvfs::statvfs(path).expect("statvfs");
    let b = v.fragment_size();
    let used = (v.blocks() - v.blocks_free()) * b;
    let avail = v.blocks_available() * b;
    (used, 100.0 * used as f64 / (used + avail) as f64)
}

/// Names of the fill files of fault `id` in `dir`.
fn files_of(dir: &Path, id: &str) -> usize {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!(".chaos-fill-{id}"))
        })
        .count()
}

/// Two fills on one filesystem. Amounts in bytes add up; a level (`--percent`) is measured
/// with the other fill's files counted as used, so the second tops up to its own level; each
/// fill's files are its own and recovering one removes exactly them, in either order.
#[test]
fn disk_two_fills_on_one_filesystem() {
    let chaos = skip_on_err!(
        require_root()
            .and_then(|()| bpf_tests::skip::require_loop())
            .and_then(|()| Chaos::from_env())
    );
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let lo = skip_on_err!(LoopDevice::with_ext4(256 * MIB).map_err(|e| format!("ext4: {e}")));
    let mnt = lo.mount_point().expect("mounted").to_owned();
    let m = mnt.display().to_string();
    let fill = |args: &[&str]| {
        let mut full = vec!["disk", "fill", "--path", &m];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--duration", "120s"]);
        chaos.arm(&full)
    };
    let near = |what: &str, a: u64, b: u64| {
        assert!(
            a.abs_diff(b) <= MIB,
            "{what}: {a} bytes, expected {b} ± 1 MiB"
        );
    };
    let (base, base_pct) = used(&mnt);
    // Bytes add up; each recovery gives back exactly its own.
    for first_out in [0, 1] {
        let a = fill(&["--bytes", "40M"]);
        let b = fill(&["--bytes", "60M"]);
        let (both, _) = used(&mnt);
        near("40M + 60M", both - base, 100 * MIB);
        let (gone, kept, kept_bytes) = if first_out == 0 {
            (a, b, 60 * MIB)
        } else {
            (b, a, 40 * MIB)
        };
        let kept_id = kept.id.clone();
        gone.recover();
        let (one, _) = used(&mnt);
        near("the remaining fill", one - base, kept_bytes);
        assert!(files_of(&mnt, &kept_id) > 0, "its files are still there");
        kept.recover();
        let (after, _) = used(&mnt);
        println!(
            "overlap disk fill 40M + 60M: {} MiB taken (expect 100), after recovering the {} \
             one: {} MiB, after both: {} MiB",
            (both - base) / MIB,
            if first_out == 0 { "40M" } else { "60M" },
            (one - base) / MIB,
            after.saturating_sub(base) / MIB
        );
        near("after both", after, base);
    }
    // Levels: the second tops up to its own level; each recovery removes only its files.
    for first_out in ["60%", "80%"] {
        let sixty = fill(&["--percent", "60"]);
        let (at60, p60) = used(&mnt);
        let eighty = fill(&["--percent", "80"]);
        let (at80, p80) = used(&mnt);
        assert!(
            (p60 - 60.0).abs() <= 1.0 && (p80 - 80.0).abs() <= 1.0,
            "{p60} {p80}"
        );
        let (one, p_one) = if first_out == "80%" {
            eighty.recover();
            let (u, p) = used(&mnt);
            near("back to the 60 % fill", u, at60);
            sixty.recover();
            (u, p)
        } else {
            sixty.recover();
            let (u, p) = used(&mnt);
            // Only the 80 % fill's own files are left: what it took on top of the other.
            near("the 80 % fill's own files", u - base, at80 - at60);
            eighty.recover();
            (u, p)
        };
        let (after, p_after) = used(&mnt);
        println!(
            "overlap disk fill 60% then 80%: {p60:.1}% then {p80:.1}% (base {base_pct:.1}%), \
             after recovering the {first_out} one: {p_one:.1}% ({} MiB of fill), after both: \
             {p_after:.1}%",
            one.saturating_sub(base) / MIB
        );
        near("after both", after, base);
    }
    assert_nothing_listed(&chaos);
    drop(lo);
    oracle.assert_clean(&before);
}
