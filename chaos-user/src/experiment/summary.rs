//! The summary `chaos run` prints at the end of a drill: plain text, at most [`WIDTH`] columns,
//! the verdict first, then the phases, the faults, the expectations, the recovery and what was
//! left behind. Long names are cut with `…` so the columns stay aligned.

use super::{
    present::{self, fit},
    report::{FaultStatus, Judgement, Outcome, RecoveryVerdict, Report},
};

/// The widest line of the summary, in characters.
pub const WIDTH: usize = 100;

/// The summary of `report`, lines ending with `\n`.
pub fn summary(report: &Report) -> String {
    let mut out = Vec::new();
    verdict(report, &mut out);
    phases(report, &mut out);
    faults(report, &mut out);
    expectations(report, &mut out);
    recovery(report, &mut out);
    if let Some(a) = &report.abort {
        out.push(String::new());
        out.push(format!("Abort: {} at {}", a.rule, present::at_ms(a.at_ms)));
        out.push(fit(&format!("  {}", a.detail), WIDTH));
    }
    leftovers(report, &mut out);
    out.iter().map(|l| format!("{}\n", l.trim_end())).collect()
}

/// Columns of the given widths (the last one takes what is left of [`WIDTH`]), two spaces of
/// indent and one between columns.
fn columns(cells: &[(&str, usize)]) -> String {
    let mut line = String::from("  ");
    for (i, (text, width)) in cells.iter().enumerate() {
        if i + 1 == cells.len() {
            let left = WIDTH.saturating_sub(line.chars().count());
            line.push_str(&fit(text, left));
        } else {
            let cell = fit(text, *width);
            let pad = width.saturating_sub(cell.chars().count());
            line.push_str(&cell);
            line.push_str(&" ".repeat(pad + 1));
        }
    }
    line
}

/// `text` in lines of at most `WIDTH` characters, each starting with `indent`.
fn wrap(text: &str, indent: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = indent.to_owned();
    for word in text.split_whitespace() {
        let fits = line.chars().count() + 1 + word.chars().count() <= WIDTH;
        if !fits && line.len() > indent.len() {
            lines.push(std::mem::replace(&mut line, indent.to_owned()));
        }
        if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(fit(&line, WIDTH));
    lines
}

fn verdict(r: &Report, out: &mut Vec<String>) {
    let head = format!(
        "{}: {}",
        r.verdict.as_str().to_uppercase(),
        r.experiment.name
    );
    out.push(fit(&head, WIDTH));
    if let Some(reason) = &r.reason {
        out.extend(wrap(reason, "  "));
    }
    out.push(fit(
        &format!(
            "  {} (Linux {}), {}, ran {}",
            r.host.hostname,
            r.host.kernel,
            present::utc(r.started_unix_ms),
            present::duration_ms(r.ended_unix_ms.saturating_sub(r.started_unix_ms))
        ),
        WIDTH,
    ));
}

fn outcome(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::Failed => "FAILED",
        Outcome::Aborted => "ABORTED",
        Outcome::Skipped => "skipped",
    }
}

fn phases(r: &Report, out: &mut Vec<String>) {
    out.push(String::new());
    out.push("Phases".to_owned());
    for p in &r.phases {
        let span = format!(
            "{} – {}",
            present::at_ms(p.start_ms),
            present::at_ms(p.end_ms)
        );
        out.push(columns(&[
            (present::phase(p.name), 10),
            (&span, 16),
            (
                &present::duration_ms(p.end_ms.saturating_sub(p.start_ms)),
                10,
            ),
            (outcome(p.outcome), 8),
            (p.detail.as_deref().unwrap_or(""), 0),
        ]));
    }
}

fn fault_status(s: FaultStatus) -> &'static str {
    match s {
        FaultStatus::Recovered => "recovered",
        FaultStatus::Skipped => "skipped",
        FaultStatus::NotStarted => "not started",
        FaultStatus::Failed => "FAILED",
    }
}

fn faults(r: &Report, out: &mut Vec<String>) {
    if r.faults.is_empty() {
        return;
    }
    out.push(String::new());
    out.push("Faults".to_owned());
    for f in &r.faults {
        let acted = f
            .counters
            .map(|c| format!("acted {}", c.acted))
            .unwrap_or_default();
        let window = match (f.armed_ms, f.ended_ms) {
            (Some(a), Some(e)) => format!("{} – {}", present::at_ms(a), present::at_ms(e)),
            _ => String::new(),
        };
        let detect = f
            .time_to_detect_ms
            .map(|t| format!("detected in {}", present::duration_ms(t)))
            .unwrap_or_default();
        out.push(columns(&[
            (&f.name, 16),
            (fault_status(f.status), 11),
            (&f.fault.name(), 16),
            (&acted, 12),
            (&window, 16),
            (&detect, 0),
        ]));
        let how = match (&f.strategy, &f.detail) {
            (Some(s), Some(d)) => format!("{s}: {d}"),
            (Some(s), None) => s.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) => continue,
        };
        out.push(fit(&format!("    {how}"), WIDTH));
    }
}

fn judgement(j: Judgement) -> &'static str {
    match j {
        Judgement::Pass => "pass",
        Judgement::Fail => "FAIL",
        Judgement::Unmeasured => "unmeasured",
    }
}

fn expectations(r: &Report, out: &mut Vec<String>) {
    if r.expectations.is_empty() {
        return;
    }
    out.push(String::new());
    out.push("Expectations".to_owned());
    out.push(columns(&[
        ("verdict", 10),
        ("expectation", 46),
        ("measured", 20),
        ("wanted", 0),
    ]));
    for e in &r.expectations {
        out.push(columns(&[
            (judgement(e.verdict), 10),
            (&e.name, 46),
            (&present::measured(e), 20),
            (&e.comparison, 0),
        ]));
        if e.verdict != Judgement::Pass {
            let detail = match &e.detail {
                Some(d) => format!("{}: {d}", e.path),
                None => e.path.clone(),
            };
            out.push(fit(&format!("{:13}{detail}", ""), WIDTH));
        }
    }
}

fn recovery(r: &Report, out: &mut Vec<String>) {
    let rec = &r.recovery;
    let within = present::duration_ms(rec.within_ms);
    let line = match (rec.verdict, rec.time_to_recover_ms) {
        (RecoveryVerdict::Skipped, _) => "skipped (not verified)".to_owned(),
        (v, Some(t)) => format!(
            "{}: back {} after the faults ended (within {within}, held {})",
            if v == RecoveryVerdict::Pass {
                "pass"
            } else {
                "FAIL"
            },
            present::duration_ms(t),
            present::duration_ms(rec.hold_ms)
        ),
        (_, None) => format!("FAIL: not back within {within}"),
    };
    out.push(String::new());
    out.push(fit(&format!("Recovery: {line}"), WIDTH));
}

fn leftovers(r: &Report, out: &mut Vec<String>) {
    out.push(String::new());
    if r.leftovers.is_empty() {
        out.push("Leftovers: none".to_owned());
        return;
    }
    out.push(format!(
        "Leftovers: {} (run `chaos recover --all`)",
        r.leftovers.len()
    ));
    for l in &r.leftovers {
        out.push(fit(&format!("  {l}"), WIDTH));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::sample;

    fn assert_fits(text: &str) {
        for line in text.lines() {
            assert!(line.chars().count() <= WIDTH, "too wide: {line:?}");
        }
    }

    #[test]
    fn the_sample_summary_fits_and_says_what_happened() {
        let s = summary(&sample::failed());
        println!("{s}");
        assert_fits(&s);
        assert!(s.starts_with("FAILED: replica-partition\n"));
        assert!(s.contains("expect[1].error_rate: reads error_rate 7.31%"));
        assert!(s.contains(" 7.31% "));
        assert!(s.contains("98.4% of 49.8/s"));
        assert!(s.contains("detected in 988 ms"));
        assert!(s.contains("Recovery: pass: back 8 s after the faults ended (within 30 s"));
        assert!(s.contains("Leftovers: none"));
        for e in sample::failed().expectations {
            assert!(s.contains(&e.name), "{}", e.name);
        }
    }

    #[test]
    fn long_names_are_cut_and_a_refused_drill_summarises() {
        let mut r = sample::refused();
        r.experiment.name = "x".repeat(300);
        r.faults[0].name = "a-very-long-fault-name-that-goes-on".to_owned();
        r.reason = Some("word ".repeat(60));
        r.leftovers = vec!["tc filter on veth0".to_owned()];
        let s = summary(&r);
        assert_fits(&s);
        assert!(s.starts_with("REFUSED: xxx"));
        assert!(s.contains(" a-very-long-fau… "));
        assert!(s.contains("not started"));
        assert!(s.contains("Recovery: skipped"));
        assert!(s.contains("Leftovers: 1 (run `chaos recover --all`)\n  tc filter on veth0\n"));
    }
}
