//! The kernel ends a fault on time when the process holding it is killed -9: `chaos inject ...
//! --foreground` (the controller, which would recover the fault on exit or Ctrl-C) arms 100 %
//! loss for 8 s and is killed -9 at 2 s; no other process of ours runs and no command is run, and
//! traffic flows again at 8 s +- 1 s.

use std::{
    io::BufReader,
    net::SocketAddr,
    os::unix::process::ExitStatusExt as _,
    process::Stdio,
    time::{Duration, Instant},
};

use bpf_tests::{UdpProbeSink, drill::Drill, skip_on_err, udp_send_seq};
use serde_json::Value;

const FAULT: Duration = Duration::from_secs(8);
const KILL_AT: Duration = Duration::from_secs(2);
/// One probe datagram every 20 ms, for long enough to see the fault start, the kill, the end.
const PACE: Duration = Duration::from_millis(20);
const LEN: usize = 64;

#[test]
fn fault_ends_on_time_after_the_controller_is_killed() {
    let d = skip_on_err!(Drill::new("any"));
    let (a, b) = (&d.world.a, &d.world.b);
    let sink = UdpProbeSink::bind(&b.ns, b.v4(), 0, LEN).expect("sink");
    let to: SocketAddr = sink.local_addr();
    // Sends from before arming until well after the deadline.
    let probes =
        (FAULT + KILL_AT + Duration::from_secs(6)).as_millis() as u64 / PACE.as_millis() as u64;
    std::thread::scope(|s| {
        let sender = s.spawn(|| udp_send_seq(&a.ns, to, probes, LEN, Some(PACE)));
        std::thread::sleep(Duration::from_millis(500));
        assert!(sink.count_now() > 0, "traffic flows before the fault");

        let mut controller = d
            .chaos
            .command(&[
                "inject",
                "--foreground",
                "--json",
                "net",
                "loss",
                "--percent",
                "100",
                "--interface",
                &a.ifname,
                "--netns",
                a.ns.name(),
                "--duration",
                &format!("{}s", FAULT.as_secs()),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start chaos inject --foreground");
        // The first JSON value it prints is the armed fault; the rule is live by then.
        let mut out = BufReader::new(controller.stdout.take().expect("stdout"));
        let armed: Value = serde_json::Deserializer::from_reader(&mut out)
            .into_iter::<Value>()
            .next()
            .expect("chaos printed the armed fault")
            .expect("armed fault as JSON");
        let armed_at = Instant::now();
        // Its live counters keep coming until the kill; read them so it never blocks or dies
        // of a closed pipe.
        s.spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let id = armed["id"].as_str().expect("fault id").to_owned();

        std::thread::sleep(KILL_AT.saturating_sub(armed_at.elapsed()));
        controller.kill().expect("kill -9 the controller");
        let status = controller.wait().expect("reap the controller");
        let killed_at = armed_at.elapsed();
        assert_eq!(status.signal(), Some(9), "the controller died of SIGKILL");
        assert_eq!(
            d.chaos.processes(),
            Vec::<u32>::new(),
            "no process of ours is left to end the fault"
        );

        let sent = sender.join().expect("sender").expect("send");
        sink.drain(Duration::from_millis(500));
        // Datagrams in flight when the rule went live may land just after; none later.
        let arrivals: Vec<Duration> = sink
            .arrivals()
            .iter()
            .filter_map(|x| x.at.checked_duration_since(armed_at))
            .filter(|t| *t > Duration::from_millis(100))
            .collect();
        let resumed = *arrivals
            .first()
            .expect("traffic never flowed again after the controller was killed");
        let after = arrivals.len();
        println!(
            "killed controller: 100% loss for {FAULT:?}, controller killed -9 at {:.2} s, \
             traffic flowed again {:.2} s after arming (expect {:.0} s +- 1 s); \
             {after} of {sent} probes arrived after that, none before",
            killed_at.as_secs_f64(),
            resumed.as_secs_f64(),
            FAULT.as_secs_f64()
        );
        assert!(
            killed_at < FAULT - Duration::from_secs(1),
            "the kill came too late ({killed_at:?}) to prove anything; the machine is too slow"
        );
        assert!(
            resumed >= FAULT - Duration::from_secs(1) && resumed <= FAULT + Duration::from_secs(1),
            "traffic flowed again {resumed:?} after arming, not {FAULT:?} +- 1 s"
        );
        // Once flowing, it keeps flowing: the rest of the probes arrive, one every PACE.
        let tail = arrivals.iter().filter(|t| **t > resumed).count() as f64;
        let window = arrivals.last().expect("arrivals").saturating_sub(resumed);
        let expected = window.as_secs_f64() / PACE.as_secs_f64();
        assert!(
            tail >= 0.9 * expected,
            "after the deadline only {tail} of ~{expected:.0} probes arrived"
        );

        let status = d.chaos.status(&id).expect("status after the deadline");
        assert_eq!(status["expired"], true, "{status}");
    });
    d.chaos.recover_all().expect("recover --all");
    d.assert_clean();
}

/// Qdisc state (the fq root or netem band of a delay) is outside BPF: the detached deadline
/// keeper removes it at the deadline, with no command run.
#[test]
fn qdiscs_go_at_the_deadline_with_no_command_run() {
    let d = skip_on_err!(Drill::new("any"));
    let a = &d.world.a;
    let id = skip_on_err!(match d.try_net("delay", a, &["--latency", "50ms"], "3s") {
        Ok(id) => Ok(id),
        Err(f) if f.stderr.contains("this kernel cannot") => Err(f.stderr.trim().to_owned()),
        Err(f) => panic!("delay: {f}"),
    });
    let armed = Instant::now();
    let ours = || {
        let out =
            a.ns.exec(&["tc", "qdisc", "show", "dev", &a.ifname])
                .expect("tc");
        // Our roots carry fixed handles c4a0 (prio), c4a1 (fq), c4a2 (mq).
        ["c4a0:", "c4a1:", "c4a2:"].iter().any(|h| out.contains(h))
    };
    assert!(ours(), "the delay fault added a qdisc of ours");
    while ours() {
        assert!(
            armed.elapsed() < Duration::from_secs(3) + Duration::from_millis(2500),
            "the qdisc outlived the fault's deadline by more than 2.5 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "the delay's qdisc was removed {:.2} s after arming a 3 s fault, with no command run",
        armed.elapsed().as_secs_f64()
    );
    // The keeper removes the qdisc first, then the fault's record (a store transaction, slow
    // under TCG): the record goes, or is marked recovered, shortly after.
    let gone = Instant::now();
    loop {
        match d.chaos.status(&id) {
            Err(_) => break,
            Ok(s) if s["state"] == "recovered" => break,
            Ok(s) => assert!(
                gone.elapsed() < Duration::from_secs(5),
                "the keeper left the fault's record 5 s after removing its qdisc: {s}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    d.assert_clean();
}
