//! `report.html`: one self-contained page (inline CSS and SVG, no script, nothing loaded from
//! elsewhere) that shows a drill's [`Report`]. The picture comes first: the verdict, then the
//! timeline (`chart`); then the tables: expectations, faults, traffic, probes, recovery, abort,
//! leftovers, admission checks and phases. Every text from the report is escaped.

mod chart;
pub(crate) mod markup;
mod svg;

use self::{
    chart::{ERROR_COLOUR, OK_COLOUR, P50_COLOUR, P99_COLOUR, PASS_COLOUR, fault_colour},
    markup::el,
    svg::{Linear, line_path},
};
use super::{
    present,
    report::{
        EndedBy, ExpectationReport, FaultReport, FaultStatus, Judgement, Outcome, RecoveryVerdict,
        Report, Subject, TrafficFigures, Verdict,
    },
};

/// The page for `report`.
pub fn render(report: &Report) -> String {
    let sections = [
        header(report),
        timeline(report),
        expectations(report),
        faults(report),
        traffic(report),
        probes(report),
        recovery(report),
        abort(report),
        leftovers(report),
        admission(report),
        phases(report),
        footer(report),
    ];
    let body = el("body")
        .child(el("main").children(sections).close())
        .close();
    let html = el("html")
        .attr("lang", "en")
        .child(head(report))
        .child(body)
        .close();
    format!("<!DOCTYPE html>\n{html}\n")
}

fn head(r: &Report) -> String {
    el("head")
        .child(el("meta").attr("charset", "utf-8").close())
        .child(
            el("meta")
                .attr("name", "viewport")
                .attr("content", "width=device-width, initial-scale=1")
                .close(),
        )
        .child(
            el("title")
                .text(&format!(
                    "{} – {} – chaos report",
                    r.experiment.name,
                    r.verdict.as_str()
                ))
                .close(),
        )
        .child(el("style").child(CSS).close())
        .close()
}

/// The verdict, big and coloured, with its reason, and what ran where and when.
fn header(r: &Report) -> String {
    let verdict = el("header")
        .attr("class", format!("verdict verdict-{}", r.verdict.as_str()))
        .attr("id", "verdict")
        .child(
            el("div")
                .attr("class", "verdict-word")
                .text(&r.verdict.as_str().to_uppercase())
                .close(),
        )
        .child(
            el("div")
                .attr("class", "reason")
                .text(r.reason.as_deref().unwrap_or(verdict_blurb(r.verdict)))
                .close(),
        )
        .close();
    let run = r.ended_unix_ms.saturating_sub(r.started_unix_ms);
    let meta = [
        (
            "host",
            format!("{} (Linux {})", r.host.hostname, r.host.kernel),
        ),
        ("started", present::utc(r.started_unix_ms)),
        ("ran for", present::duration_ms(run)),
        (
            "spec",
            r.experiment
                .source
                .clone()
                .unwrap_or_else(|| "(not from a file)".into()),
        ),
        ("chaos", r.chaos_version.clone()),
    ];
    let dl = el("dl").attr("class", "meta").children(
        meta.iter()
            .map(|(k, v)| el("dt").text(k).close() + &el("dd").text(v).close()),
    );
    let mut out = verdict + &el("h1").text(&r.experiment.name).close();
    if let Some(d) = &r.experiment.description {
        out += &el("p").attr("class", "description").text(d).close();
    }
    out + &dl.close()
}

fn verdict_blurb(v: Verdict) -> &'static str {
    match v {
        Verdict::Passed => "every expectation and the recovery held",
        Verdict::Failed => "an expectation or the recovery did not hold",
        Verdict::Aborted => "the drill was stopped early",
        Verdict::Refused => "admission failed; nothing was injected",
    }
}

fn section(id: &str, title: &str, content: impl AsRef<str>) -> String {
    el("section")
        .attr("id", id)
        .child(el("h2").text(title).close())
        .child(content)
        .close()
}

fn note(text: &str) -> String {
    el("p").attr("class", "note").text(text).close()
}

fn timeline(r: &Report) -> String {
    let mut content = String::new();
    if r.traffic.iter().all(|t| t.series.is_empty()) {
        let why = match r.verdict {
            Verdict::Refused => {
                "No traffic was measured: admission refused the drill before traffic started, and nothing was injected."
            }
            _ => "No traffic was measured.",
        };
        content += &note(why);
    }
    match chart::timeline(r) {
        Some(svg) => {
            content += &legend(r);
            content += &el("div").attr("class", "chart").child(svg).close();
        }
        None => content += &note("Nothing was measured, so there is no timeline to draw."),
    }
    section("timeline-section", "Timeline", content)
}

/// What the chart's colours mean (the faults by name).
fn legend(r: &Report) -> String {
    let item = |colour: &str, class: &str, label: &str| {
        el("span")
            .attr("class", "legend-item")
            .child(
                el("span")
                    .attr("class", format!("swatch {class}"))
                    .attr("style", format!("background:{colour}"))
                    .close(),
            )
            .text(label)
            .close()
    };
    let mut items = Vec::new();
    if r.traffic.iter().any(|t| !t.series.is_empty()) {
        items.extend([
            item(OK_COLOUR, "line", "successful ops/s"),
            item(ERROR_COLOUR, "area", "errors/s"),
            item(P50_COLOUR, "line", "p50 latency"),
            item(P99_COLOUR, "line", "p99 latency"),
        ]);
    }
    if r.probes.iter().any(|p| !p.series.is_empty()) {
        items.extend([
            item(PASS_COLOUR, "box", "probe check ok"),
            item(ERROR_COLOUR, "box", "probe check failed"),
        ]);
    }
    for (i, f) in r.faults.iter().enumerate() {
        if r.fault_phase_ms.is_some() || f.armed_ms.is_some() {
            let label = format!("fault {} (dashed: planned, solid: armed)", f.name);
            items.push(item(fault_colour(i), "box", &label));
        }
    }
    el("div").attr("class", "legend").children(items).close()
}

fn table(class: &str, headers: &[&str], rows: Vec<String>) -> String {
    let head = el("tr").children(headers.iter().map(|h| el("th").text(h).close()));
    el("table")
        .attr("class", class)
        .child(el("thead").child(head.close()).close())
        .child(el("tbody").children(rows).close())
        .close()
}

fn td(text: &str) -> String {
    el("td").text(text).close()
}

fn td_num(text: &str) -> String {
    el("td").attr("class", "num").text(text).close()
}

fn td_class(class: &str, text: &str) -> String {
    el("td").attr("class", class).text(text).close()
}

fn opt(v: Option<&str>) -> &str {
    v.unwrap_or("")
}

fn judgement(j: Judgement) -> (&'static str, &'static str) {
    match j {
        Judgement::Pass => ("pass", "pass"),
        Judgement::Fail => ("fail", "fail"),
        Judgement::Unmeasured => ("unmeasured", "unmeasured"),
    }
}

fn subject(s: &Subject) -> String {
    match s {
        Subject::Traffic(n) => format!("traffic {n}"),
        Subject::Probe(n) => format!("probe {n}"),
        Subject::Fault(n) => format!("fault {n}"),
    }
}

fn span(start_ms: u64, end_ms: u64) -> String {
    format!("{} – {}", present::at_ms(start_ms), present::at_ms(end_ms))
}

fn expectations(r: &Report) -> String {
    if r.expectations.is_empty() {
        return section(
            "expectations",
            "Expectations",
            note("No expectation was measured."),
        );
    }
    let rows = r.expectations.iter().map(expectation_row).collect();
    let headers = [
        "verdict",
        "path",
        "expectation",
        "subject",
        "metric",
        "wanted",
        "measured",
        "window",
        "detail",
    ];
    section(
        "expectations",
        "Expectations",
        table("expectations", &headers, rows),
    )
}

fn expectation_row(e: &ExpectationReport) -> String {
    let (class, word) = judgement(e.verdict);
    el("tr")
        .attr("class", "expectation")
        .attr("data-path", &e.path)
        .child(td_class(&format!("verdict-cell {class}"), word))
        .child(el("td").child(el("code").text(&e.path).close()).close())
        .child(td(&e.name))
        .child(td(&subject(&e.subject)))
        .child(td(&e.metric))
        .child(td(&e.comparison))
        .child(td_num(&present::measured(e)))
        .child(td_class("when", &span(e.window.start_ms, e.window.end_ms)))
        .child(td(opt(e.detail.as_deref())))
        .close()
}

fn fault_status(s: FaultStatus) -> (&'static str, &'static str) {
    match s {
        FaultStatus::Recovered => ("pass", "recovered"),
        FaultStatus::Skipped => ("unmeasured", "skipped"),
        FaultStatus::NotStarted => ("unmeasured", "not started"),
        FaultStatus::Failed => ("fail", "failed"),
    }
}

fn ended_by(e: EndedBy) -> &'static str {
    match e {
        EndedBy::Deadline => "deadline",
        EndedBy::Recovery => "recovery",
        EndedBy::Abort => "abort",
    }
}

fn faults(r: &Report) -> String {
    if r.faults.is_empty() {
        return section("faults", "Faults", note("The drill has no fault."));
    }
    let rows = r
        .faults
        .iter()
        .enumerate()
        .map(|(i, f)| fault_row(i, f))
        .collect();
    let headers = [
        "fault",
        "kind",
        "strategy",
        "status",
        "planned",
        "armed – ended",
        "ended by",
        "seen / matched / acted",
        "acted/s",
        "time to detect",
        "detail",
    ];
    section("faults", "Faults", table("faults", &headers, rows))
}

fn fault_row(i: usize, f: &FaultReport) -> String {
    let (class, status) = fault_status(f.status);
    let name = el("td")
        .child(
            el("span")
                .attr("class", "swatch box")
                .attr("style", format!("background:{}", fault_colour(i)))
                .close(),
        )
        .text(&f.name)
        .close();
    let armed = match (f.armed_ms, f.ended_ms) {
        (Some(a), Some(e)) => span(a, e),
        (Some(a), None) => format!("{} –", present::at_ms(a)),
        _ => String::new(),
    };
    let counters = f
        .counters
        .map(|c| format!("{} / {} / {}", c.seen, c.matched, c.acted))
        .unwrap_or_default();
    let detail = match (&f.detail, &f.id) {
        (Some(d), Some(id)) => format!("{id}: {d}"),
        (Some(d), None) => d.clone(),
        (None, Some(id)) => id.clone(),
        (None, None) => String::new(),
    };
    el("tr")
        .attr("class", "fault")
        .attr("data-fault", &f.name)
        .child(name)
        .child(td(&f.fault.name()))
        .child(td(opt(f.strategy.as_deref())))
        .child(td_class(&format!("verdict-cell {class}"), status))
        .child(td_class("when", &span(f.window.start_ms, f.window.end_ms)))
        .child(td_class("when", &armed))
        .child(td(f.ended_by.map(ended_by).unwrap_or("")))
        .child(td_num(&counters))
        .child(el("td").child(sparkline(f, fault_colour(i))).close())
        .child(td_num(
            &f.time_to_detect_ms
                .map(present::duration_ms)
                .unwrap_or_default(),
        ))
        .child(td(&detail))
        .close()
}

/// A fault's acted-on count per second, 120 × 24 px.
fn sparkline(f: &FaultReport, colour: &str) -> String {
    if f.series.is_empty() {
        return String::new();
    }
    let (w, h) = (120.0, 24.0);
    let first = f.series[0].t_ms as f64;
    let last = f.series[f.series.len() - 1].t_ms as f64;
    let x = Linear {
        domain: (first, last),
        range: (1.0, w - 1.0),
    };
    let max = f.series.iter().map(|s| s.acted).max().unwrap_or(0).max(1) as f64;
    let y = Linear {
        domain: (0.0, max),
        range: (h - 2.0, 2.0),
    };
    let d = line_path(
        f.series
            .iter()
            .map(|s| Some((x.map(s.t_ms as f64), y.map(s.acted as f64)))),
    );
    el("svg")
        .attr("class", "sparkline")
        .attr("viewBox", format!("0 0 {w} {h}"))
        .num("width", w)
        .num("height", h)
        .child(
            el("path")
                .attr("d", d)
                .attr("fill", "none")
                .attr("stroke", colour)
                .attr("stroke-width", "1.5")
                .close(),
        )
        .tooltip(&format!("{}: at most {} acted on per second", f.name, max))
        .close()
}

fn traffic(r: &Report) -> String {
    if r.traffic.is_empty() {
        return section(
            "traffic",
            "Traffic",
            note("The drill has no traffic generator."),
        );
    }
    let mut rows = Vec::new();
    for t in &r.traffic {
        let name = format!("{} ({})", t.name, t.kind);
        for (label, figures) in [("baseline", &t.baseline), ("whole run", &t.totals)] {
            rows.push(figures_row(&name, label, figures.as_ref()));
        }
        if let Some(x) = &t.exit {
            let how = match (x.code, x.signal) {
                (Some(c), _) => format!("exited with code {c}"),
                (None, Some(s)) => format!("killed by signal {s}"),
                (None, None) => "still running at the end".to_owned(),
            };
            let at = x.at_ms.map(|a| format!(" at {}", present::at_ms(a)));
            rows.push(note_row(&name, &format!("{how}{}", at.unwrap_or_default())));
        }
        if let Some(e) = &t.last_error {
            rows.push(note_row(&name, &format!("last error: {e}")));
        }
    }
    let headers = [
        "generator",
        "span",
        "ops",
        "errors",
        "error rate",
        "throughput",
        "p50",
        "p90",
        "p99",
        "max",
    ];
    section("traffic", "Traffic", table("traffic", &headers, rows))
}

fn figures_row(name: &str, label: &str, f: Option<&TrafficFigures>) -> String {
    let row = el("tr").child(td(name)).child(td(label));
    let Some(f) = f else {
        return row
            .child(el("td").attr("colspan", "8").text("not measured").close())
            .close();
    };
    let lat = |pick: fn(&super::stats::Latency) -> f64| {
        f.latency_ms
            .as_ref()
            .map(|l| present::latency_ms(pick(l)))
            .unwrap_or_else(|| "-".into())
    };
    row.child(td_num(&f.ops.to_string()))
        .child(td_num(&f.errors.to_string()))
        .child(td_num(
            &f.error_rate
                .map(present::percent)
                .unwrap_or_else(|| "-".into()),
        ))
        .child(td_num(&format!("{}/s", present::number(f.throughput))))
        .child(td_num(&lat(|l| l.p50)))
        .child(td_num(&lat(|l| l.p90)))
        .child(td_num(&lat(|l| l.p99)))
        .child(td_num(&lat(|l| l.max)))
        .close()
}

fn note_row(name: &str, text: &str) -> String {
    el("tr")
        .child(td(name))
        .child(el("td").attr("colspan", "9").text(text).close())
        .close()
}

fn probes(r: &Report) -> String {
    if r.probes.is_empty() {
        return section("probes", "Probes", note("The drill has no probe."));
    }
    let rows = r
        .probes
        .iter()
        .map(|p| {
            let share = (p.checks > 0).then(|| p.failures as f64 * 100.0 / p.checks as f64);
            let last = p.series.iter().rev().find_map(|c| c.detail.as_deref());
            let class = if p.failures == 0 { "pass" } else { "fail" };
            el("tr")
                .attr("class", "probe")
                .child(td(&p.name))
                .child(td(&p.kind))
                .child(td_num(&p.checks.to_string()))
                .child(td_class(
                    &format!("num verdict-cell {class}"),
                    &p.failures.to_string(),
                ))
                .child(td_num(
                    &share.map(present::percent).unwrap_or_else(|| "-".into()),
                ))
                .child(td(opt(last)))
                .close()
        })
        .collect();
    let headers = [
        "probe",
        "kind",
        "checks",
        "failures",
        "failed",
        "last failure",
    ];
    section("probes", "Probes", table("probes", &headers, rows))
}

fn recovery(r: &Report) -> String {
    let rec = &r.recovery;
    let (class, word) = match rec.verdict {
        RecoveryVerdict::Pass => ("pass", "pass"),
        RecoveryVerdict::Fail => ("fail", "fail"),
        RecoveryVerdict::Skipped => ("unmeasured", "skipped"),
    };
    let ttr = match (rec.time_to_recover_ms, rec.verdict) {
        (Some(t), _) => present::duration_ms(t),
        (None, RecoveryVerdict::Skipped) => "not verified".to_owned(),
        (None, _) => "not recovered".to_owned(),
    };
    let probes = if rec.probes.is_empty() {
        "none".to_owned()
    } else {
        rec.probes.join(", ")
    };
    let rows = vec![
        el("tr")
            .child(td_class(&format!("verdict-cell {class}"), word))
            .child(td_num(&present::duration_ms(rec.within_ms)))
            .child(td_num(&present::duration_ms(rec.hold_ms)))
            .child(td_num(
                &rec.started_ms.map(present::at_ms).unwrap_or_default(),
            ))
            .child(td_num(
                &rec.recovered_ms.map(present::at_ms).unwrap_or_default(),
            ))
            .child(td_num(&ttr))
            .child(td(&probes))
            .close(),
    ];
    let headers = [
        "verdict",
        "within",
        "hold",
        "faults ended",
        "back at",
        "time to recover",
        "probes",
    ];
    section("recovery", "Recovery", table("recovery", &headers, rows))
}

fn abort(r: &Report) -> String {
    let content = match &r.abort {
        None => el("p").attr("class", "ok-text").text("none").close(),
        Some(a) => el("p")
            .attr("class", "bad-text")
            .text(&format!(
                "{} at {}: {}",
                a.rule,
                present::at_ms(a.at_ms),
                a.detail
            ))
            .close(),
    };
    section("abort", "Abort", content)
}

fn leftovers(r: &Report) -> String {
    let content = if r.leftovers.is_empty() {
        el("p")
            .attr("class", "ok-text")
            .text("none: nothing of the drill was left behind")
            .close()
    } else {
        el("ul")
            .attr("class", "bad-text")
            .children(r.leftovers.iter().map(|l| el("li").text(l).close()))
            .close()
    };
    section("leftovers", "Leftovers", content)
}

fn admission(r: &Report) -> String {
    if r.admission.is_empty() {
        return section("admission", "Admission", note("No admission check ran."));
    }
    let rows = r
        .admission
        .iter()
        .map(|c| {
            let (class, word) = if c.ok {
                ("pass", "ok")
            } else {
                ("fail", "failed")
            };
            el("tr")
                .child(td_class(&format!("verdict-cell {class}"), word))
                .child(td(&c.check))
                .child(td(opt(c.detail.as_deref())))
                .close()
        })
        .collect();
    section(
        "admission",
        "Admission",
        table("admission", &["", "check", "detail"], rows),
    )
}

fn outcome(o: Outcome) -> (&'static str, &'static str) {
    match o {
        Outcome::Ok => ("pass", "ok"),
        Outcome::Failed => ("fail", "failed"),
        Outcome::Aborted => ("aborted", "aborted"),
        Outcome::Skipped => ("unmeasured", "skipped"),
    }
}

fn phases(r: &Report) -> String {
    let rows = r
        .phases
        .iter()
        .map(|p| {
            let (class, word) = outcome(p.outcome);
            el("tr")
                .child(td(present::phase(p.name)))
                .child(td_num(&present::at_ms(p.start_ms)))
                .child(td_num(&present::at_ms(p.end_ms)))
                .child(td_num(&present::duration_ms(
                    p.end_ms.saturating_sub(p.start_ms),
                )))
                .child(td_class(&format!("verdict-cell {class}"), word))
                .child(td(opt(p.detail.as_deref())))
                .close()
        })
        .collect();
    let headers = ["phase", "start", "end", "took", "outcome", "detail"];
    section("phases", "Phases", table("phases", &headers, rows))
}

fn footer(r: &Report) -> String {
    el("footer")
        .text(&format!(
            "{} · written by chaos {} · times are seconds since {}",
            r.schema,
            r.chaos_version,
            present::utc(r.started_unix_ms)
        ))
        .close()
}

const CSS: &str = r#"
:root { --pass: #1a7f37; --fail: #cf222e; --aborted: #d4730b; --refused: #6e7781; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #1f2328; background: #f6f8fa; }
main { max-width: 1280px; margin: 0 auto; padding: 16px 20px 40px; }
.verdict { border-radius: 8px; padding: 14px 20px; color: #fff; display: flex;
  align-items: baseline; gap: 20px; flex-wrap: wrap; }
.verdict-passed { background: var(--pass); }
.verdict-failed { background: var(--fail); }
.verdict-aborted { background: var(--aborted); }
.verdict-refused { background: var(--refused); }
.verdict-word { font-size: 40px; font-weight: 800; letter-spacing: 2px; }
.reason { font-size: 18px; }
h1 { margin: 14px 0 2px; font-size: 24px; }
h2 { font-size: 18px; margin: 26px 0 8px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
.description { margin: 2px 0 8px; color: #424a53; }
.meta { display: flex; flex-wrap: wrap; gap: 4px 18px; margin: 0; color: #424a53; }
.meta dt { font-weight: 600; }
.meta dt::after { content: ":"; }
.meta dd { margin: 0 0 0 -12px; }
.chart { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 6px; }
svg.timeline { width: 100%; height: auto; display: block; font-size: 11px; }
svg.timeline text { fill: #1f2328; }
svg.timeline .panel { fill: none; stroke: #d0d7de; }
svg.timeline .strip { fill: #f0f0f0; }
svg.timeline .grid { stroke: #eaeef2; }
svg.timeline .tick, svg.timeline .axis-title { fill: #57606a; }
svg.timeline .panel-title { font-weight: 600; paint-order: stroke; stroke: #fff; stroke-width: 3px; }
svg.timeline .lane-label { font-weight: 600; }
svg.timeline .lane-text { paint-order: stroke; stroke: #fff; stroke-width: 3px; }
svg.timeline .phase-mark { stroke: #57606a; stroke-dasharray: 3 3; }
svg.timeline .fault-phase-mark { stroke: #1f2328; stroke-width: 1.5; }
svg.timeline .abort-mark { stroke: var(--aborted); stroke-width: 2; }
svg.timeline .abort-mark-label { fill: var(--aborted); font-weight: 700; }
svg.timeline .peak { fill: #9467bd; font-weight: 700; paint-order: stroke; stroke: #fff;
  stroke-width: 3px; }
svg.timeline .no-data { fill: #8c959f; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 0 0 6px; font-size: 13px; }
.swatch { display: inline-block; width: 14px; height: 10px; margin-right: 5px;
  vertical-align: middle; border-radius: 2px; }
.swatch.line { height: 3px; }
.swatch.area { opacity: .6; }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eaeef2; font-weight: 600; }
td.when { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.verdict-cell { font-weight: 700; text-transform: uppercase; color: #fff; white-space: nowrap;
  width: 1%; }
.verdict-cell.pass { background: var(--pass); }
.verdict-cell.fail { background: var(--fail); }
.verdict-cell.aborted { background: var(--aborted); }
.verdict-cell.unmeasured { background: var(--refused); }
.note { color: #57606a; font-style: italic; }
.ok-text { color: var(--pass); font-weight: 600; }
.bad-text { color: var(--fail); font-weight: 600; }
footer { margin-top: 30px; color: #8c959f; font-size: 12px; }
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::sample;

    #[test]
    fn user_text_is_escaped() {
        let mut r = sample::failed();
        r.experiment.name = "<script>alert(1)</script>".to_owned();
        r.faults[0].name = "a\"><img src=x onerror=alert(1)>".to_owned();
        r.expectations[0].detail = Some("<b>&</b>".to_owned());
        let page = render(&r);
        assert!(!page.contains("<script>"), "a script tag from the report");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!page.contains("<img"));
        assert!(page.contains("a&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
        assert!(page.contains("&lt;b&gt;&amp;&lt;/b&gt;"));
    }

    #[test]
    fn the_sample_page_has_the_chart_and_every_expectation() {
        let r = sample::failed();
        let page = render(&r);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("class=\"verdict verdict-failed\""));
        assert!(page.contains(">FAILED<"));
        assert!(page.contains("<svg id=\"timeline\""));
        assert_eq!(page.matches("class=\"fault-window\"").count(), 2);
        assert_eq!(page.matches("class=\"series throughput\"").count(), 2);
        assert_eq!(page.matches("class=\"series p99\"").count(), 2);
        assert_eq!(page.matches("class=\"probe-strip\"").count(), 2);
        for e in &r.expectations {
            assert!(
                page.contains(&format!("data-path=\"{}\"", e.path)),
                "{}",
                e.path
            );
        }
        // The hang is written out, and numbers read short.
        assert!(page.contains("p99 8.5 s"), "the hang's peak label");
        assert!(page.contains(">7.31%<"));
        assert!(page.contains(">98.4% of 49.8/s<"));
        assert!(page.contains("recovered in 8 s"));
        assert!(page.contains("none: nothing of the drill was left behind"));
        assert!(!page.contains("NaN"));
        assert!(!page.contains(">inf"));
    }

    #[test]
    fn a_refused_drill_renders_with_a_note_instead_of_traffic() {
        let page = render(&sample::refused());
        assert!(page.contains(">REFUSED<"));
        assert!(page.contains("No traffic was measured: admission refused the drill"));
        assert!(page.contains("No expectation was measured."));
        assert!(!page.contains("class=\"series throughput\""));
        assert!(!page.contains("class=\"fault-window\""));
        assert!(page.contains("not started"));
    }

    #[test]
    fn nothing_measured_means_no_chart() {
        let mut r = sample::refused();
        r.probes.clear();
        let page = render(&r);
        assert!(!page.contains("<svg id=\"timeline\""));
        assert!(page.contains("Nothing was measured"));
    }

    #[test]
    fn an_abort_and_leftovers_show_in_red() {
        let mut r = sample::failed();
        r.verdict = Verdict::Aborted;
        r.abort = Some(crate::experiment::report::AbortReport {
            rule: "abort[0]".to_owned(),
            at_ms: 30_000,
            detail: "reads error_rate 62% for 10 s".to_owned(),
        });
        r.leftovers = vec!["tc filter on veth0".to_owned()];
        let page = render(&r);
        assert!(page.contains("verdict-aborted"));
        assert!(page.contains("class=\"abort-mark\""));
        assert!(page.contains("abort[0] at 30.0 s: reads error_rate 62% for 10 s"));
        assert!(page.contains("<ul class=\"bad-text\"><li>tc filter on veth0</li></ul>"));
    }
}
