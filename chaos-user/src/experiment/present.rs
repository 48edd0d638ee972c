//! How the report's numbers read, shared by the terminal summary and the HTML page: durations,
//! latencies, plain numbers, dates and an expectation's measured value with its unit.

use super::report::{ExpectationReport, PhaseName};

/// A plain number with at most 3 significant decimals: `1612`, `98.4`, `7.31`, `0.012`; `-` when
/// it is not finite.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return "-".to_owned();
    }
    if v == v.trunc() && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let a = v.abs();
    let text = if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    trim_zeros(text)
}

/// `12.50` -> `12.5`, `3.00` -> `3`.
fn trim_zeros(text: String) -> String {
    if !text.contains('.') {
        return text;
    }
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A duration: `850 ms`, `12.5 s`, `2 min 5 s`, `1 h 2 min`.
pub fn duration_ms(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{} s", trim_zeros(format!("{:.1}", ms as f64 / 1000.0))),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// A point of the drill, seconds since its start with one decimal: `17.0 s`.
pub fn at_ms(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// A latency given in ms, in the unit that reads best: `420 µs`, `12.5 ms`, `8.5 s`.
pub fn latency_ms(ms: f64) -> String {
    if !ms.is_finite() {
        "-".to_owned()
    } else if ms < 1.0 {
        format!("{} µs", number(ms * 1000.0))
    } else if ms < 1000.0 {
        format!("{} ms", number(ms))
    } else {
        format!("{} s", number(ms / 1000.0))
    }
}

/// A percentage: `7.31%`.
pub fn percent(v: f64) -> String {
    format!("{}%", number(v))
}

/// The unit of an expectation's measured value: the comparison's (`%`, `ms`), or the metric's.
fn unit(metric: &str, comparison: &str) -> Unit {
    if comparison.trim_end().ends_with('%') {
        return Unit::Percent;
    }
    match metric {
        "p50" | "p90" | "p99" | "max_latency" => Unit::Millis,
        "throughput" => Unit::PerSecond,
        "error_rate" | "fails" => Unit::Percent,
        _ => Unit::Plain,
    }
}

enum Unit {
    Percent,
    Millis,
    PerSecond,
    Plain,
}

/// An expectation's measured value with its unit (`7.31%`, `1 s`, `48.2/s`), or `-` when it
/// could not be measured. A throughput share also shows the baseline it is a share of.
pub fn measured(e: &ExpectationReport) -> String {
    let Some(v) = e.measured else {
        return "-".to_owned();
    };
    let text = match unit(&e.metric, &e.comparison) {
        Unit::Percent => percent(v),
        Unit::Millis => latency_ms(v),
        Unit::PerSecond => format!("{}/s", number(v)),
        Unit::Plain => number(v),
    };
    match e.baseline {
        Some(b) if e.metric == "throughput" => format!("{text} of {}/s", number(b)),
        _ => text,
    }
}

/// `text` cut to `max` characters, with an ellipsis when cut.
pub fn fit(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A phase's name, as in the report.
pub fn phase(p: PhaseName) -> &'static str {
    match p {
        PhaseName::Admission => "admission",
        PhaseName::Traffic => "traffic",
        PhaseName::Inject => "inject",
        PhaseName::Measure => "measure",
        PhaseName::Recover => "recover",
        PhaseName::Verify => "verify",
        PhaseName::Report => "report",
    }
}

/// A time since the epoch in ms as UTC: `2025-11-26 07:33:20 UTC`.
pub fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_short() {
        assert_eq!(number(1612.0), "1612");
        assert_eq!(number(98.43), "98.4");
        assert_eq!(number(7.312), "7.31");
        assert_eq!(number(0.0123), "0.012");
        assert_eq!(number(2.5), "2.5");
        assert_eq!(number(1234.56), "1235");
        assert_eq!(number(f64::NAN), "-");
    }

    #[test]
    fn durations_and_latencies_pick_their_unit() {
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(8000), "8 s");
        assert_eq!(duration_ms(12_500), "12.5 s");
        assert_eq!(duration_ms(125_000), "2 min 5 s");
        assert_eq!(duration_ms(3_720_000), "1 h 2 min");
        assert_eq!(latency_ms(0.42), "420 µs");
        assert_eq!(latency_ms(12.5), "12.5 ms");
        assert_eq!(latency_ms(8500.0), "8.5 s");
        assert_eq!(at_ms(17_012), "17.0 s");
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_764_140_000_000), "2025-11-26 06:53:20 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
