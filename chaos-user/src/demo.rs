//! The built-in demo: a real fault on a test network, measured and recovered.
//!
//! Two namespaces joined by a veth carry a paced UDP stream. The demo measures the loss before
//! the fault, arms `net loss` on the sender's egress, measures the loss while it is armed (with
//! the rule's own counters beside it), lets the in-kernel deadline end it, recovers, measures
//! again, and checks that no trace is left. The lifecycle runner (`chaos run`) generalises this.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    Counters, FaultSpec, Injector,
    error::{Error, IoContext, Result},
    spec::{Direction, NetAction, NetSpec},
    testbed::TwoHosts,
};

/// Demo settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Loss to inject, percent.
    pub percent: f64,
    /// How long the fault lasts.
    pub fault: Duration,
    /// Length of the baseline and the recovery windows.
    pub window: Duration,
    /// Datagrams per second.
    pub rate: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            percent: 30.0,
            fault: Duration::from_secs(6),
            window: Duration::from_secs(3),
            rate: 2000,
        }
    }
}

/// Loss measured over one phase.
#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    /// `baseline`, `fault` or `recovery`.
    pub name: &'static str,
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams received.
    pub received: u64,
    /// Measured loss, percent.
    pub loss_percent: f64,
}

/// A check the demo makes, and whether it held.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// What was checked.
    pub check: String,
    /// Whether it held.
    pub ok: bool,
}

/// What the demo found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The fault as armed.
    pub fault: FaultSpec,
    /// Its id.
    pub id: String,
    /// The strategy used.
    pub strategy: String,
    /// Phases in order.
    pub phases: Vec<Phase>,
    /// The rule's counters when it ended.
    pub counters: Counters,
    /// Checks.
    pub verdicts: Vec<Verdict>,
}

impl Report {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.ok)
    }
}

/// Progress events, for live output.
#[derive(Clone, Debug)]
pub enum Event {
    /// A phase started.
    Phase(&'static str),
    /// Once a second while the fault is armed.
    Tick {
        /// Rule counters so far.
        counters: Counters,
        /// Seconds left.
        remaining_s: u64,
    },
    /// The fault was armed.
    Armed {
        /// Its id.
        id: String,
        /// Its strategy.
        strategy: String,
    },
}

struct Traffic {
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// Runs the demo. `stop` aborts it early (the fault is still recovered and the testbed removed).
pub fn run(
    injector: &Injector,
    opts: &Options,
    mut progress: impl FnMut(Event),
    stop: &AtomicBool,
) -> Result<Report> {
    let prefix = format!("chaos-demo-{}", std::process::id());
    let hosts = TwoHosts::new(&prefix, 250)?;
    let port = 45_000;
    let traffic = Traffic {
        sent: Arc::default(),
        received: Arc::default(),
        stop: Arc::default(),
    };
    std::thread::scope(|s| {
        let receiver = {
            let ns = hosts.netns[1].clone();
            let (received, done) = (traffic.received.clone(), traffic.stop.clone());
            let addr = hosts.addr[1];
            s.spawn(move || {
                ns.run(|| {
                    let sock = UdpSocket::bind(SocketAddrV4::new(addr, port))
                        .ctx(|| "binding the demo receiver")?;
                    sock.set_read_timeout(Some(Duration::from_millis(100)))
                        .ctx(|| "setting a read timeout")?;
                    let mut buf = [0u8; 64];
                    while !done.load(Ordering::Relaxed) {
                        if sock.recv(&mut buf).is_ok() {
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(())
                })
            })
        };
        let sender = {
            let ns = hosts.netns[0].clone();
            let (sent, done) = (traffic.sent.clone(), traffic.stop.clone());
            let (from, to) = (hosts.addr[0], hosts.addr[1]);
            let period = Duration::from_secs(1) / opts.rate.max(1);
            s.spawn(move || {
                ns.run(|| {
                    let sock = UdpSocket::bind(SocketAddrV4::new(from, 0))
                        .ctx(|| "binding the demo sender")?;
                    let start = Instant::now();
                    let mut n: u32 = 0;
                    while !done.load(Ordering::Relaxed) {
                        let due = start + period * n;
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        if sock
                            .send_to(&n.to_be_bytes(), SocketAddrV4::new(to, port))
                            .is_ok()
                        {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        n = n.wrapping_add(1);
                    }
                    Ok(())
                })
            })
        };
        let result = drive(injector, opts, &hosts, &traffic, &mut progress, stop);
        traffic.stop.store(true, Ordering::Relaxed);
        let r1 = receiver
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let r2 = sender
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let report = result?;
        r1?;
        r2?;
        Ok(report)
    })
}

/// Measures loss over `window`: (sent, received) deltas, leaving time for in-flight datagrams.
fn measure(traffic: &Traffic, window: Duration, stop: &AtomicBool) -> (u64, u64) {
    let (s0, r0) = (
        traffic.sent.load(Ordering::Relaxed),
        traffic.received.load(Ordering::Relaxed),
    );
    let end = Instant::now() + window;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let s1 = traffic.sent.load(Ordering::Relaxed);
    // Datagrams sent up to s1 arrive within a few ms on a veth.
    std::thread::sleep(Duration::from_millis(50));
    let r1 = traffic.received.load(Ordering::Relaxed);
    (s1 - s0, r1.saturating_sub(r0).min(s1 - s0))
}

fn phase(name: &'static str, (sent, received): (u64, u64)) -> Phase {
    Phase {
        name,
        sent,
        received,
        loss_percent: if sent == 0 {
            0.0
        } else {
            100.0 * (sent - received) as f64 / sent as f64
        },
    }
}

fn drive(
    injector: &Injector,
    opts: &Options,
    hosts: &TwoHosts,
    traffic: &Traffic,
    progress: &mut impl FnMut(Event),
    stop: &AtomicBool,
) -> Result<Report> {
    // Let the receiver bind before counting.
    std::thread::sleep(Duration::from_millis(300));
    progress(Event::Phase("baseline"));
    let baseline = phase("baseline", measure(traffic, opts.window, stop));

    let spec = FaultSpec::Net(NetSpec {
        action: NetAction::Loss,
        percent: Some(opts.percent),
        interface: Some(hosts.ifname[0].clone()),
        netns: Some(hosts.ns[0].clone()),
        direction: Some(Direction::Egress),
        duration: Some(humantime::format_duration(opts.fault).to_string()),
        ..NetSpec::default()
    });
    progress(Event::Phase("fault"));
    let armed = injector.inject(&spec)?;
    progress(Event::Armed {
        id: armed.id.clone(),
        strategy: armed.strategy.describe(),
    });
    let (s0, r0) = (
        traffic.sent.load(Ordering::Relaxed),
        traffic.received.load(Ordering::Relaxed),
    );
    let last = injector.hold(
        &armed.id,
        Duration::from_secs(1),
        |s| {
            progress(Event::Tick {
                counters: s.counters.unwrap_or_default(),
                remaining_s: s.remaining_s(),
            })
        },
        || stop.load(Ordering::Relaxed),
    )?;
    let (s1, r1) = (
        traffic.sent.load(Ordering::Relaxed),
        traffic.received.load(Ordering::Relaxed),
    );
    let fault = phase("fault", (s1 - s0, (r1 - r0).min(s1 - s0)));

    progress(Event::Phase("recovery"));
    let recovery = phase("recovery", measure(traffic, opts.window, stop));

    let counters = last.counters.unwrap_or_default();
    let mut verdicts = Vec::new();
    let mut check = |check: String, ok: bool| verdicts.push(Verdict { check, ok });
    check(
        format!("no loss before the fault ({:.2}%)", baseline.loss_percent),
        baseline.sent > 0 && baseline.loss_percent < 0.5,
    );
    // 5 points of tolerance: thousands of packets give a binomial spread well inside that.
    check(
        format!(
            "loss while armed {:.1}% is {}% +-5",
            fault.loss_percent, opts.percent
        ),
        (fault.loss_percent - opts.percent).abs() <= 5.0,
    );
    let acted_share = if counters.matched == 0 {
        0.0
    } else {
        100.0 * counters.acted as f64 / counters.matched as f64
    };
    check(
        format!(
            "the rule's own counters agree: dropped {} of {} matched ({acted_share:.1}%)",
            counters.acted, counters.matched
        ),
        counters.matched > 0 && (acted_share - opts.percent).abs() <= 5.0,
    );
    check(
        format!(
            "traffic flows again after recovery ({:.2}% loss)",
            recovery.loss_percent
        ),
        recovery.sent > 0 && recovery.loss_percent < 0.5,
    );
    let leftovers = injector.list()?.len();
    check(
        format!(
            "nothing left: {leftovers} fault(s) in the store, pins {}",
            if Path::new(chaos_common::PIN_ROOT).exists() {
                "present"
            } else {
                "gone"
            }
        ),
        leftovers == 0 && !Path::new(chaos_common::PIN_ROOT).exists(),
    );
    if stop.load(Ordering::Relaxed) {
        return Err(Error::io(
            "demo",
            std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "interrupted; fault recovered",
            ),
        ));
    }
    Ok(Report {
        fault: spec,
        id: armed.id,
        strategy: armed.strategy.describe(),
        phases: vec![baseline, fault, recovery],
        counters,
        verdicts,
    })
}

/// The demo's addresses, for documentation and tests.
pub const DEMO_SUBNET: Ipv4Addr = Ipv4Addr::new(10, 213, 250, 0);
