//! The timeline: one SVG with x = seconds since the drill's start. From the top: phase marks,
//! one lane per fault (planned window, and armed..ended), the baseline and recovery spans; then
//! per traffic generator a throughput panel (successful ops/s, errors/s) and a latency panel
//! (p50, p99, log scale); the faults' acted/s; one strip per probe (each check green or red);
//! the time axis. Fault windows are shaded across every panel, phase marks cross them all.
//! Tooltips are SVG `<title>`s, so hovering works without any script.

use super::{
    markup::el,
    svg::{Linear, Log, line_path, linear_ticks, step_area, time_ticks},
};
use crate::experiment::{
    present,
    report::{FaultReport, PhaseName, ProbeReport, RecoveryVerdict, Report, TrafficReport},
    stats::Second,
};

/// The drawing's width (the SVG scales to the page's width).
const WIDTH: f64 = 1200.0;
/// Room for lane names and axis labels.
const LEFT: f64 = 130.0;
const RIGHT: f64 = 24.0;
/// Height of one row of phase labels; there are [`LABEL_ROWS`].
const LABEL_ROW: f64 = 14.0;
const LABEL_ROWS: usize = 3;
const LANE: f64 = 20.0;
const PANEL: f64 = 120.0;
const SMALL_PANEL: f64 = 60.0;
const GAP: f64 = 12.0;
const STRIP: f64 = 16.0;
const AXIS: f64 = 40.0;
/// Approximate width of a character of the 11 px labels.
const CHAR: f64 = 6.2;

/// Colours of the faults, in spec order (cycled).
pub const FAULT_COLOURS: [&str; 6] = [
    "#ff7f0e", "#bcbd22", "#e377c2", "#17becf", "#8c564b", "#7f7f7f",
];
/// Successful operations per second.
pub const OK_COLOUR: &str = "#1f77b4";
/// Errors per second, failed probe checks.
pub const ERROR_COLOUR: &str = "#d62728";
/// Median latency.
pub const P50_COLOUR: &str = "#2ca02c";
/// 99th percentile latency.
pub const P99_COLOUR: &str = "#9467bd";
/// Passing probe checks.
pub const PASS_COLOUR: &str = "#2ca02c";

/// The colour of the `i`-th fault.
pub fn fault_colour(i: usize) -> &'static str {
    FAULT_COLOURS[i % FAULT_COLOURS.len()]
}

/// The timeline of `report`, or none when there is nothing measured to draw (no traffic second,
/// no probe check, no fault counter).
pub fn timeline(report: &Report) -> Option<String> {
    let measured = report.traffic.iter().any(|t| !t.series.is_empty())
        || report.probes.iter().any(|p| !p.series.is_empty())
        || report.faults.iter().any(|f| !f.series.is_empty());
    if !measured {
        return None;
    }
    let end_ms = end_ms(report);
    let x = Linear {
        domain: (0.0, end_ms as f64),
        range: (LEFT, WIDTH - RIGHT),
    };
    let mut chart = Chart {
        report,
        x,
        end_ms,
        y: LABEL_ROW * LABEL_ROWS as f64 + 6.0,
        rows: Vec::new(),
        hover: Vec::new(),
    };
    let top = chart.y;
    chart.lanes();
    for t in report.traffic.iter().filter(|t| !t.series.is_empty()) {
        chart.traffic(t);
    }
    chart.counters();
    chart.io();
    chart.probes();
    let bottom = chart.y;
    let axis = chart.axis(top, bottom);
    let back = chart.shading(top, bottom);
    let marks = chart.marks(bottom);
    let height = bottom + AXIS;
    Some(
        el("svg")
            .attr("id", "timeline")
            .attr("class", "timeline")
            .attr(
                "viewBox",
                format!("0 0 {WIDTH} {}", super::markup::px(height)),
            )
            .attr("role", "img")
            .attr(
                "aria-label",
                format!("timeline of {}", report.experiment.name),
            )
            .child(axis)
            .child(back)
            .children(chart.rows)
            .child(marks)
            .child(el("g").attr("class", "hover").children(chart.hover).close())
            .close(),
    )
}

/// A fault's index (its colour), the fault, and its values per second `(t_ms, value)`.
type FaultValues<'a> = (usize, &'a FaultReport, Vec<(u64, f64)>);

/// Where the time axis ends: the run's end, or the last thing measured or planned if later.
fn end_ms(r: &Report) -> u64 {
    let run = r.ended_unix_ms.saturating_sub(r.started_unix_ms);
    let phases = r.phases.iter().map(|p| p.end_ms);
    let seconds = r
        .traffic
        .iter()
        .flat_map(|t| t.series.last().map(|s| s.t_ms + 1000));
    let checks = r
        .probes
        .iter()
        .flat_map(|p| p.series.last().map(|c| c.t_ms + 1000));
    let faults = r.faults.iter().flat_map(|f| {
        let planned = r.fault_phase_ms.map(|_| f.window.end_ms);
        [planned, f.ended_ms, f.series.last().map(|s| s.t_ms + 1000)]
    });
    let recovery = r.recovery.started_ms.map(|s| {
        s + r
            .recovery
            .time_to_recover_ms
            .unwrap_or(r.recovery.within_ms)
    });
    phases
        .chain(seconds)
        .chain(checks)
        .chain(faults.flatten())
        .chain(recovery)
        .fold(run, u64::max)
        .max(1000)
}

/// A chart being laid out from the top down.
struct Chart<'a> {
    report: &'a Report,
    x: Linear,
    end_ms: u64,
    /// The next row's top.
    y: f64,
    /// Drawn rows (lanes, panels, strips).
    rows: Vec<String>,
    /// Invisible per-second columns with tooltips, drawn last so they are on top.
    hover: Vec<String>,
}

impl Chart<'_> {
    fn xt(&self, t_ms: u64) -> f64 {
        self.x.map(t_ms as f64)
    }

    /// The x span of `[from_ms, to_ms)`, at least one pixel wide.
    fn span(&self, from_ms: u64, to_ms: u64) -> (f64, f64) {
        let x0 = self.xt(from_ms);
        (x0, (self.xt(to_ms) - x0).max(1.0))
    }

    /// A name in the left margin, cut to fit.
    fn margin_label(&self, text: &str, y: f64, class: &str) -> String {
        el("text")
            .attr("class", class)
            .num("x", LEFT - 6.0)
            .num("y", y)
            .attr("text-anchor", "end")
            .text(&present::fit(text, ((LEFT - 10.0) / CHAR) as usize))
            .close()
    }

    /// The faults' lanes, then the baseline and recovery spans.
    fn lanes(&mut self) {
        let mut out = Vec::new();
        for (i, f) in self.report.faults.iter().enumerate() {
            let planned = self.report.fault_phase_ms.is_some();
            if !planned && f.armed_ms.is_none() {
                continue;
            }
            out.push(self.fault_lane(i, f, planned));
            self.y += LANE;
        }
        if let Some(lane) = self.span_lane() {
            out.push(lane);
            self.y += LANE;
        }
        self.y += GAP;
        self.rows
            .push(el("g").attr("class", "lanes").children(out).close());
    }

    fn fault_lane(&self, i: usize, f: &FaultReport, planned: bool) -> String {
        let colour = fault_colour(i);
        let y = self.y + 2.0;
        let h = LANE - 4.0;
        let mut g = el("g")
            .attr("class", "fault-lane")
            .attr("data-fault", &f.name)
            .child(self.margin_label(&f.name, y + h - 4.0, "lane-label"));
        if planned {
            let (x0, w) = self.span(f.window.start_ms, f.window.end_ms);
            g = g.child(
                el("rect")
                    .attr("class", "fault-planned")
                    .num("x", x0)
                    .num("y", y)
                    .num("width", w)
                    .num("height", h)
                    .attr("fill", colour)
                    .attr("fill-opacity", "0.25")
                    .attr("stroke", colour)
                    .attr("stroke-dasharray", "4 2")
                    .tooltip(&format!(
                        "{}: planned {} – {}",
                        f.name,
                        present::at_ms(f.window.start_ms),
                        present::at_ms(f.window.end_ms)
                    ))
                    .close(),
            );
        }
        if let Some(armed) = f.armed_ms {
            let ended = f.ended_ms.unwrap_or(self.end_ms);
            let (x0, w) = self.span(armed, ended);
            g = g.child(
                el("rect")
                    .attr("class", "fault-armed")
                    .num("x", x0)
                    .num("y", y + 3.0)
                    .num("width", w)
                    .num("height", h - 6.0)
                    .attr("fill", colour)
                    .tooltip(&format!(
                        "{}: armed {} – {}{}",
                        f.name,
                        present::at_ms(armed),
                        f.ended_ms
                            .map(present::at_ms)
                            .unwrap_or_else(|| "end".into()),
                        f.counters
                            .map(|c| format!(", acted on {}", c.acted))
                            .unwrap_or_default()
                    ))
                    .close(),
            );
        }
        let start = f.armed_ms.unwrap_or(f.window.start_ms);
        g = g.child(
            el("text")
                .attr("class", "lane-text")
                .num("x", self.xt(start) + 4.0)
                .num("y", y + h - 4.0)
                .text(&format!("{} ({})", f.name, f.fault.name()))
                .close(),
        );
        g.close()
    }

    /// The baseline (the traffic phase) and the time to recover (from the last window's end),
    /// if there is either.
    fn span_lane(&self) -> Option<String> {
        let r = self.report;
        let y = self.y + 2.0;
        let h = LANE - 4.0;
        let mut spans = Vec::new();
        if let Some(p) = r.phases.iter().find(|p| p.name == PhaseName::Traffic) {
            let end = r.fault_phase_ms.unwrap_or(p.end_ms);
            let label = format!("baseline {}", present::duration_ms(end - p.start_ms));
            spans.push(("baseline", p.start_ms, end, "#c7c7c7", label));
        }
        let rec = &r.recovery;
        if let Some(start) = rec.started_ms {
            match (rec.verdict, rec.time_to_recover_ms) {
                (_, Some(ttr)) => {
                    let label = format!("recovered in {}", present::duration_ms(ttr));
                    spans.push(("time-to-recover", start, start + ttr, "#98df8a", label));
                    let hold = format!("hold {}", present::duration_ms(rec.hold_ms));
                    let (s, e) = (start + ttr, start + ttr + rec.hold_ms);
                    spans.push(("hold", s, e, "#dff3d8", hold));
                }
                (RecoveryVerdict::Fail, None) => {
                    let label = format!(
                        "not recovered within {}",
                        present::duration_ms(rec.within_ms)
                    );
                    spans.push((
                        "time-to-recover",
                        start,
                        start + rec.within_ms,
                        "#ff9896",
                        label,
                    ));
                }
                _ => {}
            }
        }
        if spans.is_empty() {
            return None;
        }
        let mut g = el("g").attr("class", "span-lane").child(self.margin_label(
            "baseline / recovery",
            y + h - 4.0,
            "lane-label",
        ));
        for (class, from, to, fill, label) in spans {
            let (x0, w) = self.span(from, to.min(self.end_ms));
            g = g.child(
                el("rect")
                    .attr("class", class)
                    .num("x", x0)
                    .num("y", y)
                    .num("width", w)
                    .num("height", h)
                    .attr("fill", fill)
                    .tooltip(&format!(
                        "{label}: {} – {}",
                        present::at_ms(from),
                        present::at_ms(to)
                    ))
                    .close(),
            );
            g = g.child(
                el("text")
                    .attr("class", "lane-text")
                    .num("x", x0 + 4.0)
                    .num("y", y + h - 4.0)
                    .text(&label)
                    .close(),
            );
        }
        Some(g.close())
    }

    /// A generator's throughput and latency panels.
    fn traffic(&mut self, t: &TrafficReport) {
        let top = self.y;
        let throughput = self.throughput_panel(t);
        self.y += PANEL + GAP / 2.0;
        let latency = self.latency_panel(t);
        self.y += PANEL + GAP;
        self.rows.push(
            el("g")
                .attr("class", "traffic")
                .attr("data-traffic", &t.name)
                .child(throughput)
                .child(latency)
                .close(),
        );
        for s in &t.series {
            let (x0, w) = self.span(s.t_ms, s.t_ms + 1000);
            self.hover.push(
                el("rect")
                    .num("x", x0)
                    .num("y", top)
                    .num("width", w)
                    .num("height", 2.0 * PANEL + GAP / 2.0)
                    .attr("fill", "transparent")
                    .tooltip(&second_tooltip(&t.name, s))
                    .close(),
            );
        }
    }

    fn panel_frame(&self, height: f64, title: &str) -> Vec<String> {
        vec![
            el("rect")
                .attr("class", "panel")
                .num("x", LEFT)
                .num("y", self.y)
                .num("width", WIDTH - LEFT - RIGHT)
                .num("height", height)
                .close(),
            el("text")
                .attr("class", "panel-title")
                .num("x", LEFT + 6.0)
                .num("y", self.y + 13.0)
                .text(title)
                .close(),
        ]
    }

    /// Horizontal grid lines and their labels in the margin.
    fn y_ticks(&self, ticks: &[(f64, String)]) -> Vec<String> {
        ticks
            .iter()
            .flat_map(|(y, label)| {
                [
                    el("line")
                        .attr("class", "grid")
                        .num("x1", LEFT)
                        .num("x2", WIDTH - RIGHT)
                        .num("y1", *y)
                        .num("y2", *y)
                        .close(),
                    el("text")
                        .attr("class", "tick")
                        .num("x", LEFT - 4.0)
                        .num("y", y + 3.5)
                        .attr("text-anchor", "end")
                        .text(label)
                        .close(),
                ]
            })
            .collect()
    }

    fn throughput_panel(&self, t: &TrafficReport) -> String {
        let max = t.series.iter().map(|s| s.ops as f64).fold(1.0, f64::max);
        let ticks = linear_ticks(max, 4);
        let top = ticks.last().copied().unwrap_or(max);
        let y = Linear {
            domain: (0.0, top),
            range: (self.y + PANEL, self.y + 18.0),
        };
        let labels: Vec<(f64, String)> = ticks
            .iter()
            .map(|v| (y.map(*v), present::number(*v)))
            .collect();
        let base = y.map(0.0);
        let errors = step_area(
            t.series.iter().filter(|s| s.errors > 0).map(|s| {
                let (x0, w) = self.span(s.t_ms, s.t_ms + 1000);
                (x0, x0 + w, y.map(s.errors as f64))
            }),
            base,
        );
        let ok = line_path(t.series.iter().map(|s| {
            Some((
                self.xt(s.t_ms + 500),
                y.map(s.ops.saturating_sub(s.errors) as f64),
            ))
        }));
        let title = format!("{} ({}): successful ops/s and errors/s", t.name, t.kind);
        el("g")
            .attr("class", "panel-throughput")
            .children(self.panel_frame(PANEL, &title))
            .children(self.y_ticks(&labels))
            .child(
                el("path")
                    .attr("class", "series errors")
                    .attr("d", errors)
                    .attr("fill", ERROR_COLOUR)
                    .attr("fill-opacity", "0.55")
                    .close(),
            )
            .child(series_line("series throughput", ok, OK_COLOUR))
            .close()
    }

    fn latency_panel(&self, t: &TrafficReport) -> String {
        let title = format!("{}: latency p50 and p99 (log scale)", t.name);
        let mut g = el("g")
            .attr("class", "panel-latency")
            .children(self.panel_frame(PANEL, &title));
        let values = t.series.iter().flat_map(|s| [s.p50_ms, s.p99_ms]).flatten();
        let Some(y) = Log::covering(values, 2, (self.y + PANEL, self.y + 18.0)) else {
            return g.child(self.no_data(PANEL, "no latency measured")).close();
        };
        let labels: Vec<(f64, String)> = y
            .ticks()
            .into_iter()
            .map(|v| (y.map(v), present::latency_ms(v)))
            .collect();
        g = g.children(self.y_ticks(&labels));
        for (class, colour, pick) in [
            (
                "series p50",
                P50_COLOUR,
                (|s: &Second| s.p50_ms) as fn(&Second) -> _,
            ),
            ("series p99", P99_COLOUR, |s: &Second| s.p99_ms),
        ] {
            let d = line_path(
                t.series
                    .iter()
                    .map(|s| pick(s).map(|v| (self.xt(s.t_ms + 500), y.map(v)))),
            );
            g = g.child(series_line(class, d, colour));
        }
        g.child(self.peak(t, &y)).close()
    }

    /// The highest p99 written out next to it, when it towers over the rest (a hang).
    fn peak(&self, t: &TrafficReport, y: &Log) -> String {
        let mut p99: Vec<(u64, f64)> = t
            .series
            .iter()
            .filter_map(|s| s.p99_ms.map(|v| (s.t_ms, v)))
            .collect();
        let Some(&(t_ms, top)) = p99.iter().max_by(|a, b| a.1.total_cmp(&b.1)) else {
            return String::new();
        };
        p99.sort_by(|a, b| a.1.total_cmp(&b.1));
        let median = p99[p99.len() / 2].1;
        if top < 10.0 * median {
            return String::new();
        }
        let x = self.xt(t_ms + 500);
        let anchor = if x > WIDTH - RIGHT - 80.0 {
            "end"
        } else {
            "start"
        };
        let dx = if anchor == "end" { -6.0 } else { 6.0 };
        el("text")
            .attr("class", "peak")
            .num("x", x + dx)
            .num("y", y.map(top) + 4.0)
            .attr("text-anchor", anchor)
            .text(&format!("p99 {}", present::latency_ms(top)))
            .close()
    }

    fn no_data(&self, height: f64, text: &str) -> String {
        el("text")
            .attr("class", "no-data")
            .num("x", (LEFT + WIDTH - RIGHT) / 2.0)
            .num("y", self.y + height / 2.0 + 4.0)
            .attr("text-anchor", "middle")
            .text(text)
            .close()
    }

    /// Each fault's acted-on count per second.
    fn counters(&mut self) {
        self.fault_panel(
            "panel-counters",
            "acted",
            "faults: packets or calls acted on per second",
            |f| {
                f.series
                    .iter()
                    .map(|s| (s.t_ms + 500, s.acted as f64))
                    .collect()
            },
        );
    }

    /// Block I/O completed per second on the devices of block faults (reads and writes).
    fn io(&mut self) {
        self.fault_panel(
            "panel-io",
            "iops",
            "block faults: I/O completed per second on their devices",
            |f| {
                f.io.iter()
                    .flat_map(|d| d.series.iter())
                    // Each sample ends its second.
                    .map(|s| (s.t_ms.saturating_sub(500), s.read_iops + s.write_iops))
                    .collect()
            },
        );
    }

    /// A small panel with one line per fault: `values` of each second, at its middle (ms).
    fn fault_panel(
        &mut self,
        class: &str,
        what: &str,
        title: &str,
        values: impl Fn(&FaultReport) -> Vec<(u64, f64)>,
    ) {
        let faults: Vec<FaultValues<'_>> = self
            .report
            .faults
            .iter()
            .enumerate()
            .map(|(i, f)| (i, f, values(f)))
            .filter(|(_, _, v)| !v.is_empty())
            .collect();
        if faults.is_empty() {
            return;
        }
        let max = faults
            .iter()
            .flat_map(|(_, _, v)| v.iter().map(|(_, x)| *x))
            .fold(1.0, f64::max);
        let ticks = linear_ticks(max, 2);
        let y = Linear {
            domain: (0.0, ticks.last().copied().unwrap_or(max)),
            range: (self.y + SMALL_PANEL, self.y + 16.0),
        };
        let labels: Vec<(f64, String)> = ticks
            .iter()
            .map(|v| (y.map(*v), present::number(*v)))
            .collect();
        let mut g = el("g")
            .attr("class", class)
            .children(self.panel_frame(SMALL_PANEL, title))
            .children(self.y_ticks(&labels));
        for (i, f, v) in faults {
            let d = line_path(v.iter().map(|&(t, x)| Some((self.xt(t), y.map(x)))));
            g = g.child(
                el("path")
                    .attr("class", format!("series {what}"))
                    .attr("data-fault", &f.name)
                    .attr("d", d)
                    .attr("fill", "none")
                    .attr("stroke", fault_colour(i))
                    .attr("stroke-width", "2")
                    .tooltip(&format!("{}: {what} per second", f.name))
                    .close(),
            );
        }
        self.y += SMALL_PANEL + GAP;
        self.rows.push(g.close());
    }

    /// One strip per probe: each check from its start to the next one's, green or red.
    fn probes(&mut self) {
        for p in &self.report.probes {
            let g = self.probe_strip(p);
            self.rows.push(g);
            self.y += STRIP + 4.0;
        }
        if !self.report.probes.is_empty() {
            self.y += GAP - 4.0;
        }
    }

    fn probe_strip(&self, p: &ProbeReport) -> String {
        let mut g = el("g")
            .attr("class", "probe-strip")
            .attr("data-probe", &p.name)
            .child(self.margin_label(&p.name, self.y + STRIP - 4.0, "lane-label"))
            .child(
                el("rect")
                    .attr("class", "strip")
                    .num("x", LEFT)
                    .num("y", self.y)
                    .num("width", WIDTH - LEFT - RIGHT)
                    .num("height", STRIP)
                    .close(),
            );
        for (i, c) in p.series.iter().enumerate() {
            let next = p.series.get(i + 1).map_or(c.t_ms + 1000, |n| n.t_ms);
            let (x0, w) = self.span(c.t_ms, next.max(c.t_ms + 1));
            let state = if c.ok { "ok" } else { "failed" };
            let mut tip = format!(
                "{} at {}: {state} ({})",
                p.name,
                present::at_ms(c.t_ms),
                present::latency_ms(c.latency_ms)
            );
            if let Some(v) = c.value {
                tip.push_str(&format!(", value {}", present::number(v)));
            }
            if let Some(d) = &c.detail {
                tip.push_str(&format!(": {d}"));
            }
            g = g.child(
                el("rect")
                    .attr("class", format!("probe-check {state}"))
                    .num("x", x0)
                    .num("y", self.y + 1.0)
                    .num("width", w)
                    .num("height", STRIP - 2.0)
                    .attr("fill", if c.ok { PASS_COLOUR } else { ERROR_COLOUR })
                    .tooltip(&tip)
                    .close(),
            );
        }
        g.close()
    }

    /// The time axis under everything, with vertical grid lines through it all.
    fn axis(&self, top: f64, bottom: f64) -> String {
        let mut g = el("g").attr("class", "axis");
        for t in time_ticks(self.end_ms, 14) {
            let x = self.xt(t);
            g = g
                .child(
                    el("line")
                        .attr("class", "grid")
                        .num("x1", x)
                        .num("x2", x)
                        .num("y1", top)
                        .num("y2", bottom)
                        .close(),
                )
                .child(
                    el("text")
                        .attr("class", "tick")
                        .num("x", x)
                        .num("y", bottom + 12.0)
                        .attr("text-anchor", "middle")
                        .text(&format!("{}", t / 1000))
                        .close(),
                );
        }
        g.child(
            el("text")
                .attr("class", "axis-title")
                .num("x", (LEFT + WIDTH - RIGHT) / 2.0)
                .num("y", bottom + 30.0)
                .attr("text-anchor", "middle")
                .text("seconds since the drill started")
                .close(),
        )
        .close()
    }

    /// Each fault's window shaded across the panels: planned (light) and armed..ended.
    fn shading(&self, top: f64, bottom: f64) -> String {
        let mut g = el("g").attr("class", "shading");
        for (i, f) in self.report.faults.iter().enumerate() {
            let (from, to) = match (f.armed_ms, self.report.fault_phase_ms) {
                (Some(a), _) => (a, f.ended_ms.unwrap_or(self.end_ms)),
                (None, Some(_)) => (f.window.start_ms, f.window.end_ms),
                (None, None) => continue,
            };
            let (x0, w) = self.span(from, to);
            g = g.child(
                el("rect")
                    .attr("class", "fault-window")
                    .attr("data-fault", &f.name)
                    .num("x", x0)
                    .num("y", top)
                    .num("width", w)
                    .num("height", bottom - top)
                    .attr("fill", fault_colour(i))
                    .attr("fill-opacity", "0.13")
                    .close(),
            );
        }
        g.close()
    }

    /// Phase marks, offset 0 of the fault phase and the abort: vertical lines with labels in
    /// up to three rows at the top, so marks close together stay readable.
    fn marks(&self, bottom: f64) -> String {
        let r = self.report;
        let mut marks: Vec<(u64, String, &str)> = r
            .phases
            .iter()
            .filter(|p| {
                matches!(
                    p.name,
                    PhaseName::Admission
                        | PhaseName::Traffic
                        | PhaseName::Inject
                        | PhaseName::Recover
                        | PhaseName::Verify
                )
            })
            .map(|p| (p.start_ms, present::phase(p.name).to_owned(), "phase-mark"))
            .collect();
        if let Some(t0) = r.fault_phase_ms {
            marks.push((t0, "offset 0".to_owned(), "fault-phase-mark"));
        }
        if let Some(a) = &r.abort {
            marks.push((a.at_ms, format!("abort ({})", a.rule), "abort-mark"));
        }
        marks.sort_by_key(|m| m.0);
        let mut row_end = [f64::MIN; LABEL_ROWS];
        let mut g = el("g").attr("class", "marks");
        for (t, label, class) in marks {
            let x = self.xt(t);
            let row = (0..LABEL_ROWS)
                .find(|&i| x >= row_end[i] + 4.0)
                .unwrap_or_else(|| {
                    (0..LABEL_ROWS)
                        .min_by(|&a, &b| row_end[a].total_cmp(&row_end[b]))
                        .unwrap_or(0)
                });
            row_end[row] = x + 6.0 + label.len() as f64 * CHAR;
            let label_y = LABEL_ROW * (row as f64 + 1.0) - 3.0;
            g = g
                .child(
                    el("line")
                        .attr("class", class)
                        .num("x1", x)
                        .num("x2", x)
                        .num("y1", label_y - 10.0)
                        .num("y2", bottom)
                        .tooltip(&format!("{label} at {}", present::at_ms(t)))
                        .close(),
                )
                .child(
                    el("text")
                        .attr("class", format!("{class}-label"))
                        .num("x", x + 3.0)
                        .num("y", label_y)
                        .text(&label)
                        .close(),
                );
        }
        g.close()
    }
}

fn series_line(class: &str, d: String, colour: &str) -> String {
    el("path")
        .attr("class", class)
        .attr("d", d)
        .attr("fill", "none")
        .attr("stroke", colour)
        .attr("stroke-width", "1.8")
        .attr("stroke-linejoin", "round")
        .close()
}

fn second_tooltip(name: &str, s: &Second) -> String {
    let lat = |v: Option<f64>| v.map(present::latency_ms).unwrap_or_else(|| "-".into());
    format!(
        "{name} at {}: {} ok/s, {} errors/s, p50 {}, p99 {}, max {}",
        present::at_ms(s.t_ms),
        s.ops.saturating_sub(s.errors),
        s.errors,
        lat(s.p50_ms),
        lat(s.p99_ms),
        lat(s.max_ms)
    )
}
