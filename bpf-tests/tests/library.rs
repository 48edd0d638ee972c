//! `chaos_user` as a library, linked into this test as an agent links it: a `FaultGuard` arms a
//! 100 % `net loss` on host A's veth of a two-host world, its counters grow with the traffic it
//! drops, and dropping it (at the end of its scope, or while a panic unwinds) recovers it, with
//! nothing left for the oracle; `keep()` leaves the fault armed until its in-kernel deadline;
//! `Injector::run` of a tiny drill returns a report with its verdict.
//!
//! The test binary embeds the same eBPF object as `chaos` (chaos-user's build script), so no
//! `chaos` process is involved in arming; the binary is only needed by the shared `Drill`
//! world's setup (the probe row check).

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    time::{Duration, Instant},
};

use bpf_tests::{drill::Drill, skip_on_err};
use chaos_user::{Error, FaultSpec, Injector, experiment::report::Verdict};

/// A 100 % loss of everything host A sends, for `duration`.
fn loss(d: &Drill, duration: &str) -> FaultSpec {
    let text = serde_json::json!({
        "kind": "net",
        "action": "loss",
        "percent": 100,
        "interface": d.world.a.ifname,
        "netns": d.world.a.ns.name(),
        "direction": "egress",
        "duration": duration,
    })
    .to_string();
    chaos_user::spec::from_json(&text).expect("a valid spec")
}

fn injector() -> Injector {
    Injector::new().expect("Injector::new as root")
}

/// Armed, counted and recovered by dropping the guard; then the same with a panic in its scope.
#[test]
fn guard_recovers_on_drop_and_on_panic() {
    let d = skip_on_err!(Drill::new("any"));
    let injector = injector();
    let spec = loss(&d, "60s");
    assert_eq!(d.send_v4(300), 300, "no loss before the fault");

    let id = {
        let t = Instant::now();
        let fault = injector.inject(&spec).expect("inject");
        println!(
            "armed {} with {} in {:?}",
            fault.id(),
            fault.strategy(),
            t.elapsed()
        );
        assert!(
            fault.strategy().to_string().contains("bpf"),
            "{}",
            fault.strategy()
        );
        assert_eq!(d.send_v4(300), 0, "all dropped while the guard lives");
        let first = fault
            .counters()
            .expect("counters")
            .expect("a net fault counts");
        assert!(first.acted >= 300, "{first:?}");
        assert_eq!(d.send_v4(200), 0);
        let second = fault.counters().expect("counters").expect("counters");
        println!("counters: {first:?} then {second:?}");
        assert!(
            second.acted >= first.acted + 200 && second.seen >= first.seen + 200,
            "the counters grow with the traffic: {first:?} then {second:?}"
        );
        let status = fault.status().expect("status");
        assert_eq!(status.record.id, fault.id());
        assert!(
            !status.expired && status.remaining_ms > 50_000,
            "{status:?}"
        );
        let listed: Vec<String> = injector
            .list()
            .expect("list")
            .into_iter()
            .map(|s| s.record.id)
            .collect();
        assert!(listed.contains(&fault.id().to_owned()), "{listed:?}");
        fault.id().to_owned()
    }; // dropped: recovered
    assert!(
        matches!(injector.status(&id), Err(Error::NotFound(_))),
        "the record is gone once the guard dropped"
    );
    assert_eq!(d.send_v4(300), 300, "nothing dropped after the guard");
    d.assert_clean();

    let armed_id = std::sync::Mutex::new(None);
    let unwound = catch_unwind(AssertUnwindSafe(|| {
        let fault = injector.inject(&spec).expect("inject");
        *armed_id.lock().unwrap() = Some(fault.id().to_owned());
        assert_eq!(d.send_v4(100), 0, "armed in the panicking scope");
        panic!("a deliberate panic with the guard alive");
    }));
    assert!(unwound.is_err(), "the closure panics");
    let id = armed_id.into_inner().unwrap().expect("it was armed");
    assert!(
        matches!(injector.status(&id), Err(Error::NotFound(_))),
        "the unwinding dropped the guard, which recovered {id}"
    );
    assert_eq!(d.send_v4(300), 300, "nothing dropped after the panic");
    d.assert_clean();
}

/// `recover()` says what it removed; `keep()` hands the fault to its deadline, which ends it in
/// the kernel with no process of ours doing anything.
#[test]
fn keep_leaves_the_fault_armed_until_its_deadline() {
    let d = skip_on_err!(Drill::new("any"));
    let injector = injector();

    let fault = injector.inject(loss(&d, "60s")).expect("inject");
    let id = fault.id().to_owned();
    let recovered = fault.recover().expect("recover");
    assert_eq!(recovered.faults, [id]);
    assert_eq!(d.send_v4(100), 100);

    // Long enough to arm and check on an emulated CPU, short enough to wait out.
    let armed = injector.inject(loss(&d, "6s")).expect("inject").keep();
    let kept_at = Instant::now();
    assert_eq!(d.send_v4(100), 0, "still armed after keep()");
    let status = injector
        .status(&armed.id)
        .expect("a kept fault has its record");
    assert!(!status.expired);
    // A second guard's drop is no business of the kept fault.
    drop(injector.inject(loss(&d, "60s")).expect("inject"));
    assert_eq!(d.send_v4(100), 0, "the kept fault still acts");

    let until = kept_at + Duration::from_millis(status.remaining_ms) + Duration::from_millis(500);
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    assert!(injector.status(&armed.id).expect("status").expired);
    assert_eq!(
        d.send_v4(300),
        300,
        "the in-kernel deadline ended the kept fault"
    );
    let r = injector
        .recover(&armed.id)
        .expect("recover the expired fault's remains");
    assert_eq!(r.faults, [armed.id]);
    d.assert_clean();
}

/// `Injector::run` of a drill with one fault and one expectation on its counters, while this
/// test sends the traffic the fault drops.
#[test]
fn run_returns_a_report_with_its_verdict() {
    let d = skip_on_err!(Drill::new("any"));
    let injector = injector();
    let yaml = format!(
        "name: library-run\n\
         baseline: 1s\n\
         duration: 4s\n\
         admission: {{steady_for: 0s}}\n\
         faults:\n\
         \x20 - name: loss\n\
         \x20   start: 0s\n\
         \x20   duration: 3s\n\
         \x20   fault: {{kind: net, action: loss, percent: 100, direction: egress, \
                interface: {}, netns: {}}}\n\
         expect:\n\
         \x20 - {{fault: loss, acted: \"> 0\"}}\n\
         recovery: {{within: 5s, hold: 0s}}\n",
        d.world.a.ifname,
        d.world.a.ns.name()
    );
    let spec = chaos_user::experiment::from_yaml(&yaml).expect("the drill reads");

    // The drill runs on a thread (the world is not shared between threads); this one sends.
    let report = std::thread::scope(|s| {
        let run = s.spawn(|| injector.run(&spec));
        while !run.is_finished() {
            d.send_v4(20);
        }
        run.join().expect("the drill's thread")
    })
    .expect("run");
    println!(
        "verdict {} ({:?}); fault: {:?} {:?} {:?}",
        report.verdict.as_str(),
        report.reason,
        report.faults[0].status,
        report.faults[0].strategy,
        report.faults[0].counters
    );
    assert_eq!(report.verdict, Verdict::Passed, "{:?}", report.reason);
    assert_eq!(report.experiment.name, "library-run");
    let fault = &report.faults[0];
    assert!(fault.id.is_some() && fault.strategy.is_some(), "{fault:?}");
    assert!(fault.counters.is_some_and(|c| c.acted > 0), "{fault:?}");
    assert_eq!(report.expectations.len(), 1);
    assert_eq!(d.send_v4(300), 300, "nothing dropped after the drill");
    d.assert_clean();

    // A drill that does not validate is refused as one error naming its field.
    let mut bad = spec.clone();
    bad.duration = "soon".into();
    let err = injector
        .run(&bad)
        .expect_err("an invalid drill runs nothing");
    assert!(err.to_string().contains("duration"), "{err}");
}
