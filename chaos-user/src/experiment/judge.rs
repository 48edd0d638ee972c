//! Verdicts from what was measured: expectations, abort rules and the recovered steady state,
//! all computed from the raw records ([`super::record`]) by [`super::stats`]'s rules. Pure
//! functions over a snapshot, so they are tested without a drill.

use std::collections::BTreeMap;

use super::{
    AbortRule, CmpOp, Comparison, Expectation, Measure, Quantity, parse_comparison,
    record::{Check, Op},
    report::{ExpectationReport, Judgement, Subject, WindowMs},
    stats::{Span, summarize},
    validate::metrics_of,
};
use crate::injector::Counters;

/// One traffic generator's records.
#[derive(Clone, Debug, Default)]
pub struct TrafficData {
    /// Finished operations.
    pub ops: Vec<Op>,
    /// Start times (µs) of those in flight at `now_us`.
    pub in_flight: Vec<u64>,
    /// Successful operations per second over the baseline (none: not measured yet).
    pub baseline: Option<f64>,
    /// Whether it measures operations (a command run once does not).
    pub measures_ops: bool,
}

/// One fault's records.
#[derive(Clone, Debug, Default)]
pub struct FaultData {
    /// Cumulative counters sampled while on, `(t_ms, counters)`, in time order.
    pub samples: Vec<(u64, Counters)>,
    /// Whether the fault has counters (network and syscall faults).
    pub counted: bool,
    /// Why it was not armed, if it was not.
    pub not_armed: Option<String>,
    /// When it went live and when it ended, ms.
    pub armed_ms: Option<u64>,
    /// When it ended, ms.
    pub ended_ms: Option<u64>,
}

/// Everything measured, at `now_us`.
#[derive(Clone, Debug, Default)]
pub struct Data {
    /// By generator name.
    pub traffic: BTreeMap<String, TrafficData>,
    /// Checks by probe name.
    pub probes: BTreeMap<String, Vec<Check>>,
    /// By fault name.
    pub faults: BTreeMap<String, FaultData>,
    /// Now, µs since `t = 0`.
    pub now_us: u64,
}

/// A value measured, with the baseline it was compared to (throughput shares).
type Measured = Result<(f64, Option<f64>), String>;

impl Data {
    /// The value of `metric` of `subject` over `span`, in `cmp`'s unit; the error says why it
    /// could not be measured.
    pub fn measure(
        &self,
        subject: &Subject,
        metric: &str,
        cmp: &Comparison,
        span: Span,
    ) -> Measured {
        match subject {
            Subject::Traffic(name) => self.traffic_metric(name, metric, cmp, span),
            Subject::Probe(name) => {
                let checks = self.probes.get(name).ok_or("no such probe")?;
                let in_span: Vec<&Check> = checks
                    .iter()
                    .filter(|c| (span.start_us..span.end_us).contains(&(c.t_ms * 1000)))
                    .collect();
                if in_span.is_empty() {
                    return Err("no check of the probe in the window".into());
                }
                let failed = in_span.iter().filter(|c| !c.ok).count();
                Ok((failed as f64 * 100.0 / in_span.len() as f64, None))
            }
            Subject::Fault(name) => {
                let f = self.faults.get(name).ok_or("no such fault")?;
                if let Some(why) = &f.not_armed {
                    return Err(format!("the fault was not armed ({why})"));
                }
                if !f.counted {
                    return Err("this fault has no in-kernel counters".into());
                }
                // The sample taken when the fault was seen ended comes after its end: a window
                // reaching the fault's end takes every count.
                let fault_end_us = f.ended_ms.map_or(u64::MAX, |e| e * 1000);
                let at = |t_us: u64| {
                    f.samples
                        .iter()
                        .take_while(|(t, _)| t * 1000 <= t_us || t_us >= fault_end_us)
                        .last()
                        .map_or(0, |(_, c)| c.acted)
                };
                if f.samples.is_empty() {
                    return Err("no counter sample was taken".into());
                }
                Ok(((at(span.end_us) - at(span.start_us)) as f64, None))
            }
        }
    }

    fn traffic_metric(&self, name: &str, metric: &str, cmp: &Comparison, span: Span) -> Measured {
        let t = self.traffic.get(name).ok_or("no such traffic")?;
        if !t.measures_ops {
            return Err("a command run once has no per-operation measurements".into());
        }
        let s = summarize(&t.ops, &t.in_flight, span, self.now_us);
        let latency = |pick: fn(&super::stats::Latency) -> f64| {
            s.latency_ms
                .as_ref()
                .map(|l| (pick(l), None))
                .ok_or_else(|| "no operation ran in the window".to_owned())
        };
        match metric {
            "error_rate" => s
                .error_rate
                .map(|r| (r, None))
                .ok_or_else(|| "no operation finished in the window".into()),
            "throughput" => match cmp.value {
                Quantity::Percent(_) => match t.baseline {
                    Some(b) if b > 0.0 => Ok((s.throughput * 100.0 / b, Some(b))),
                    _ => Err("the baseline had no successful operation".into()),
                },
                _ => Ok((s.throughput, None)),
            },
            "p50" => latency(|l| l.p50),
            "p90" => latency(|l| l.p90),
            "p99" => latency(|l| l.p99),
            "max_latency" => latency(|l| l.max),
            other => Err(format!("unknown metric {other}")),
        }
    }
}

/// The value a comparison compares with, in its unit.
pub fn limit(cmp: &Comparison) -> f64 {
    match cmp.value {
        Quantity::Percent(v) | Quantity::Millis(v) | Quantity::Number(v) => v,
    }
}

/// The unit a metric's value is written in, for people.
pub fn unit(metric: &str, cmp: &Comparison) -> &'static str {
    match (metric, cmp.value) {
        (_, Quantity::Percent(_)) => "%",
        (_, Quantity::Millis(_)) => "ms",
        ("throughput", _) => "/s",
        _ => "",
    }
}

/// The subject an expectation names.
pub fn subject_of(e: &Expectation) -> Option<Subject> {
    if let Some(t) = &e.traffic {
        Some(Subject::Traffic(t.clone()))
    } else if let Some(p) = &e.probe {
        Some(Subject::Probe(p.clone()))
    } else {
        e.fault.clone().map(Subject::Fault)
    }
}

/// One metric of an expectation, ready to judge.
#[derive(Clone, Debug)]
pub struct Metric {
    /// `expect[1].p99`.
    pub path: String,
    /// The label.
    pub name: String,
    /// The subject.
    pub subject: Subject,
    /// `p99`.
    pub metric: &'static str,
    /// As written.
    pub text: String,
    /// Parsed.
    pub cmp: Comparison,
}

/// The metrics of expectation `e` at `path` (`expect[1]`), one per comparison given. The spec is
/// validated, so every comparison parses.
pub fn metrics(path: &str, e: &Expectation) -> Vec<Metric> {
    let Some(subject) = subject_of(e) else {
        return Vec::new();
    };
    metrics_of(e)
        .into_iter()
        .filter_map(|m| {
            let text = m.text?;
            let cmp = parse_comparison(text, m.measure).ok()?;
            let who = match &subject {
                Subject::Traffic(n) | Subject::Probe(n) | Subject::Fault(n) => n,
            };
            let name = e.name.clone().unwrap_or_else(|| {
                let during = e
                    .during
                    .as_ref()
                    .map(|d| format!(" during {d}"))
                    .unwrap_or_default();
                format!("{who} {} {}{during}", m.field, text.trim())
            });
            Some(Metric {
                path: format!("{path}.{}", m.field),
                name,
                subject: subject.clone(),
                metric: m.field,
                text: text.trim().to_owned(),
                cmp,
            })
        })
        .collect()
}

/// Judges `m` over `window`; `skipped`: the metric is about a fault skipped at admission
/// (unmeasured, and that does not fail the drill).
pub fn judge(m: &Metric, window: WindowMs, data: &Data) -> ExpectationReport {
    let span = Span::ms(window.start_ms, window.end_ms);
    let (measured, baseline, verdict, detail) =
        match data.measure(&m.subject, m.metric, &m.cmp, span) {
            Ok((v, b)) => {
                let ok = m.cmp.op.holds(v, limit(&m.cmp));
                let verdict = if ok { Judgement::Pass } else { Judgement::Fail };
                (Some(round(v)), b.map(round), verdict, None)
            }
            Err(why) => (None, None, Judgement::Unmeasured, Some(why)),
        };
    ExpectationReport {
        path: m.path.clone(),
        name: m.name.clone(),
        subject: m.subject.clone(),
        metric: m.metric.to_owned(),
        comparison: m.text.clone(),
        window,
        measured,
        baseline,
        verdict,
        detail,
    }
}

/// The first second (its end, ms) from `from_ms` to `to_ms` in which `m` held over that second
/// alone (`acted`: counted from `from_ms`).
pub fn first_second_holding(m: &Metric, from_ms: u64, to_ms: u64, data: &Data) -> Option<u64> {
    let mut t = from_ms;
    while t < to_ms {
        let end = (t + 1000).min(to_ms);
        let start = if matches!(m.subject, Subject::Fault(_)) {
            from_ms
        } else {
            t
        };
        if let Ok((v, _)) = data.measure(&m.subject, m.metric, &m.cmp, Span::ms(start, end))
            && m.cmp.op.holds(v, limit(&m.cmp))
        {
            return Some(end);
        }
        t = end;
    }
    None
}

/// Whether abort rule `rule` trips at `now_ms` (watching from `from_ms`); what was measured.
pub fn abort_trips(rule: &AbortRule, from_ms: u64, now_ms: u64, data: &Data) -> Option<String> {
    if let Some(probe) = &rule.probe {
        let down_for = humantime::parse_duration(rule.down_for.as_deref()?.trim()).ok()?;
        let checks = data.probes.get(probe)?;
        let last_ok = checks.iter().rev().find(|c| c.ok).map(|c| c.t_ms);
        let first_down = checks
            .iter()
            .filter(|c| !c.ok && c.t_ms >= from_ms && last_ok.is_none_or(|ok| c.t_ms > ok))
            .map(|c| c.t_ms)
            .next()?;
        let down = now_ms.saturating_sub(first_down);
        return (down >= down_for.as_millis() as u64)
            .then(|| format!("probe {probe} down for {:.1} s", down as f64 / 1000.0));
    }
    let traffic = rule.traffic.as_ref()?;
    let secs = rule
        .for_
        .as_deref()
        .and_then(|f| humantime::parse_duration(f.trim()).ok())
        .map_or(5, |d| d.as_secs().max(1));
    let (field, text, measure) = if let Some(t) = &rule.error_rate {
        ("error_rate", t, Measure::Percent)
    } else if let Some(t) = &rule.throughput {
        ("throughput", t, Measure::Throughput)
    } else {
        ("p99", rule.p99.as_ref()?, Measure::Latency)
    };
    let cmp = parse_comparison(text, measure).ok()?;
    let subject = Subject::Traffic(traffic.clone());
    let last_full = now_ms / 1000;
    if last_full < secs || (last_full - secs) * 1000 < from_ms {
        return None;
    }
    let mut seen = Vec::new();
    for s in (last_full - secs)..last_full {
        let (v, _) = data
            .measure(&subject, field, &cmp, Span::ms(s * 1000, (s + 1) * 1000))
            .ok()?;
        if !cmp.op.holds(v, limit(&cmp)) {
            return None;
        }
        seen.push(v);
    }
    let u = unit(field, &cmp);
    let values: Vec<String> = seen.iter().map(|v| format!("{v:.1}{u}")).collect();
    Some(format!(
        "traffic {traffic} {field} {} for {secs} s in a row ({})",
        text.trim(),
        values.join(", ")
    ))
}

/// Whether everything that makes the recovered steady state held over `span`: every probe of
/// `probes` checked at least once and never failed, and every metric of `expect`.
pub fn steady(probes: &[String], expect: &[Metric], span: Span, data: &Data) -> bool {
    let probes_up = probes.iter().all(|p| {
        let cmp = Comparison {
            op: CmpOp::Eq,
            value: Quantity::Percent(0.0),
        };
        matches!(
            data.measure(&Subject::Probe(p.clone()), "fails", &cmp, span),
            Ok((v, _)) if v == 0.0
        )
    });
    probes_up
        && expect.iter().all(|m| {
            matches!(data.measure(&m.subject, m.metric, &m.cmp, span),
                Ok((v, _)) if m.cmp.op.holds(v, limit(&m.cmp)))
        })
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(start_ms: u64, latency_ms: u64, ok: bool) -> Op {
        Op::ms(start_ms, latency_ms, ok)
    }

    fn check(t_ms: u64, ok: bool) -> Check {
        Check {
            t_ms,
            ok,
            latency_ms: 1.0,
            value: None,
            detail: None,
        }
    }

    /// 10 ops/s of 5 ms for 20 s; from 10 s to 15 s they fail after 1 s.
    fn data() -> Data {
        let mut ops = Vec::new();
        for i in 0..200u64 {
            let t = i * 100;
            let bad = (10_000..15_000).contains(&t);
            ops.push(op(t, if bad { 1000 } else { 5 }, !bad));
        }
        let mut d = Data {
            now_us: 20_000_000,
            ..Data::default()
        };
        d.traffic.insert(
            "reads".into(),
            TrafficData {
                ops,
                in_flight: vec![],
                baseline: Some(10.0),
                measures_ops: true,
            },
        );
        d.probes.insert(
            "up".into(),
            (0..20)
                .map(|s| check(s * 1000, !(10..15).contains(&s)))
                .collect(),
        );
        d.faults.insert(
            "loss".into(),
            FaultData {
                samples: vec![
                    (10_000, Counters::default()),
                    (11_000, counters(40)),
                    (15_000, counters(200)),
                ],
                counted: true,
                ..FaultData::default()
            },
        );
        d
    }

    fn counters(acted: u64) -> Counters {
        Counters {
            seen: acted * 2,
            matched: acted * 2,
            acted,
        }
    }

    fn expectation(yaml: &str) -> Expectation {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn expectations_pass_and_fail_on_what_was_measured() {
        let d = data();
        let window = WindowMs {
            start_ms: 10_000,
            end_ms: 15_000,
        };
        let e = expectation(
            "{traffic: reads, error_rate: '>= 90%', p99: '<= 100ms', throughput: '<= 10%'}",
        );
        let ms = metrics("expect[0]", &e);
        assert_eq!(ms.len(), 3);
        let r: Vec<_> = ms.iter().map(|m| judge(m, window, &d)).collect();
        assert_eq!(r[0].path, "expect[0].error_rate");
        // Ops ending 10.0-15.0 s: those started 9.9-13.9 s, of which those from 10 s failed.
        assert_eq!(r[0].verdict, Judgement::Pass, "{:?}", r[0]);
        // Metrics come in the order error_rate, throughput, p50... whatever the text's order.
        assert_eq!(
            (r[1].metric.as_str(), r[1].verdict),
            ("throughput", Judgement::Pass)
        );
        assert_eq!(r[1].baseline, Some(10.0));
        assert_eq!(
            (r[2].metric.as_str(), r[2].verdict),
            ("p99", Judgement::Fail)
        );
        assert_eq!(r[2].measured, Some(1000.0));
    }

    #[test]
    fn probe_fails_and_fault_acted_are_measured_in_the_window() {
        let d = data();
        let window = WindowMs {
            start_ms: 10_000,
            end_ms: 15_000,
        };
        let p = &metrics("expect[0]", &expectation("{probe: up, fails: '>= 100%'}"))[0];
        assert_eq!(judge(p, window, &d).verdict, Judgement::Pass);
        let f = &metrics("expect[1]", &expectation("{fault: loss, acted: '>= 150'}"))[0];
        let r = judge(f, window, &d);
        assert_eq!((r.verdict, r.measured), (Judgement::Pass, Some(200.0)));
        // The second in which the fault first acted 1+ times ends at 11 s.
        let f1 = &metrics("expect[1]", &expectation("{fault: loss, acted: '>= 1'}"))[0];
        assert_eq!(first_second_holding(f1, 10_000, 15_000, &d), Some(11_000));
    }

    #[test]
    fn a_window_to_the_fault_s_end_takes_the_last_sample_taken_after_it() {
        let mut d = data();
        let loss = d.faults.get_mut("loss").unwrap();
        loss.ended_ms = Some(14_500);
        let f = &metrics("expect[0]", &expectation("{fault: loss, acted: '>= 1'}"))[0];
        let to_end = WindowMs {
            start_ms: 10_000,
            end_ms: 14_500,
        };
        // The sample at 15 s (when the end was seen) counts: 200, not the 40 sampled by 14.5 s.
        assert_eq!(judge(f, to_end, &d).measured, Some(200.0));
        let inside = WindowMs {
            start_ms: 10_000,
            end_ms: 12_000,
        };
        assert_eq!(judge(f, inside, &d).measured, Some(40.0));
    }

    #[test]
    fn what_cannot_be_measured_is_unmeasured_with_the_reason() {
        let mut d = data();
        d.faults.get_mut("loss").unwrap().counted = false;
        let f = &metrics("expect[0]", &expectation("{fault: loss, acted: '>= 1'}"))[0];
        let r = judge(
            f,
            WindowMs {
                start_ms: 0,
                end_ms: 1000,
            },
            &d,
        );
        assert_eq!(r.verdict, Judgement::Unmeasured);
        assert!(r.detail.unwrap().contains("no in-kernel counters"));
        let t = &metrics(
            "expect[1]",
            &expectation("{traffic: reads, error_rate: '< 1%'}"),
        )[0];
        let r = judge(
            t,
            WindowMs {
                start_ms: 30_000,
                end_ms: 31_000,
            },
            &d,
        );
        assert_eq!(r.verdict, Judgement::Unmeasured);
    }

    #[test]
    fn abort_rules_trip_only_after_their_time() {
        let d = data();
        let rule: AbortRule =
            serde_norway::from_str("{traffic: reads, error_rate: '> 50%', for: 3s}").unwrap();
        // Seconds 11, 12, 13 are all failures by 14 s; not yet at 12 s.
        assert!(abort_trips(&rule, 0, 12_500, &d).is_none());
        assert!(
            abort_trips(&rule, 0, 14_200, &d)
                .unwrap()
                .contains("3 s in a row")
        );
        let probe: AbortRule = serde_norway::from_str("{probe: up, down_for: 3s}").unwrap();
        let mut early = d.clone();
        early.probes.get_mut("up").unwrap().truncate(13);
        assert!(abort_trips(&probe, 0, 12_500, &early).is_none());
        assert!(
            abort_trips(&probe, 0, 13_000, &early)
                .unwrap()
                .contains("down for 3.0 s")
        );
    }

    #[test]
    fn the_steady_state_needs_every_probe_up_and_every_recovery_metric() {
        let d = data();
        let e = metrics(
            "recovery.expect[0]",
            &expectation("{traffic: reads, throughput: '>= 90%'}"),
        );
        assert!(steady(&["up".into()], &e, Span::ms(15_000, 19_000), &d));
        assert!(!steady(&["up".into()], &e, Span::ms(12_000, 16_000), &d));
        assert!(!steady(&["up".into()], &[], Span::ms(14_000, 16_000), &d));
    }
}
