//! The controller's own costs, measured on the `chaos` binary as users run it (`$CHAOS_BIN`):
//!
//! * `controller.probe_wall_ms`: `chaos probe --json`, against `chaos --version` (the cost of
//!   starting the binary at all).
//! * `controller.rss_kib`: peak resident memory of `chaos inject net loss ... --foreground`
//!   holding a fault on a test veth, against `chaos --version`'s.
//!
//! Runs of the measured command and of its baseline alternate.

use anyhow::{Result, anyhow};

use super::{
    Bench, Place, Row,
    proc::{RunUsage, run_measured},
    stats::{Spread, median, paired_ratios},
};
use crate::{TwoHosts, chaos::Chaos};

/// The family's entry point (native only: the figures are about the host's controller).
pub fn run(b: &mut Bench) {
    if b.config().place == Place::Native {
        b.section("controller", controller);
    }
}

fn controller(b: &mut Bench) -> Result<()> {
    let chaos = Chaos::from_env().map_err(|e| anyhow!(e))?;
    let runs = b.config().pick(5, 15);
    let version = || run_measured(&chaos.command(&["--version"]));

    let (mut probe, mut start) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        b.check()?;
        start.push(version()?);
        probe.push(run_measured(&chaos.command(&["probe", "--json"]))?);
    }
    let ms =
        |u: &[RunUsage]| -> Vec<f64> { u.iter().map(|r| r.wall.as_secs_f64() * 1e3).collect() };
    let (probe_ms, start_ms) = (ms(&probe), ms(&start));
    let r = paired_ratios(&probe_ms, &start_ms);
    b.row(
        Row::cost(
            "controller.probe_wall_ms",
            "ms",
            median(&probe_ms),
            median(&start_ms),
        )
        .with_ratio(median(&r))
        .spread(Spread::of(&probe_ms))
        .note(format!(
            "`chaos probe --json` wall time, {runs} runs; baseline `chaos --version`"
        )),
    );

    let holds = b.config().pick(2, 5);
    let w = TwoHosts::new()?;
    let (mut held, mut idle) = (Vec::new(), Vec::new());
    for _ in 0..holds {
        b.check()?;
        idle.push(version()?.max_rss_kib as f64);
        let u = run_measured(&chaos.command(&[
            "inject",
            "net",
            "loss",
            "--percent",
            "10",
            "--interface",
            &w.a.ifname,
            "--netns",
            w.a.ns.name(),
            "--duration",
            "2s",
            "--foreground",
        ]))?;
        held.push(u.max_rss_kib as f64);
    }
    let r = paired_ratios(&held, &idle);
    b.row(
        Row::cost("controller.rss_kib", "KiB", median(&held), median(&idle))
            .with_ratio(median(&r))
            .spread(Spread::of(&held))
            .note(format!(
                "peak RSS of `chaos inject net loss --foreground` holding a fault for 2 s on a \
                 test veth, {holds} runs; baseline `chaos --version`"
            )),
    );
    Ok(())
}
