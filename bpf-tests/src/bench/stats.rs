//! The little statistics the rows need: medians, nearest-rank percentiles, spreads, ratios, and
//! the one-line description of a row printed beside its JSON.

use serde_json::{Value, json};

use super::{GoalOn, Row};

/// Lowest and highest of a set of trials, and how many there were.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// Lowest trial.
    pub min: f64,
    /// Highest trial.
    pub max: f64,
    /// Number of trials.
    pub n: usize,
}

impl Spread {
    /// The spread of `xs` (`None` when empty).
    pub fn of(xs: &[f64]) -> Option<Spread> {
        let finite: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
        if finite.is_empty() {
            return None;
        }
        Some(Spread {
            min: finite.iter().copied().fold(f64::INFINITY, f64::min),
            max: finite.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n: finite.len(),
        })
    }

    /// As JSON: `{"min", "max", "n"}`.
    pub fn to_json(&self) -> Value {
        json!({ "min": self.min, "max": self.max, "n": self.n })
    }
}

/// The median of `xs` (mean of the two middle values for an even count); NaN when empty.
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The nearest-rank `p`-th percentile (0 < p <= 100): the smallest sample with at least `p` %
/// of the samples at or below it; NaN when empty.
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let rank = ((p / 100.0 * n as f64).ceil() as usize).clamp(1, n);
    v[rank - 1]
}

/// Mean and sample standard deviation (0 for fewer than two samples); NaN mean when empty.
pub fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return (f64::NAN, 0.0);
    }
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// `value / baseline`, or `None` when the baseline is zero or either is not finite.
pub fn ratio(value: f64, baseline: f64) -> Option<f64> {
    let r = value / baseline;
    (baseline != 0.0 && r.is_finite()).then_some(r)
}

/// Per-trial ratios of paired trials: `armed[i] / baseline[i]`, skipping unusable pairs.
pub fn paired_ratios(armed: &[f64], baseline: &[f64]) -> Vec<f64> {
    armed
        .iter()
        .zip(baseline)
        .filter_map(|(&a, &b)| ratio(a, b))
        .collect()
}

/// A number with about four significant digits, without exponent for everyday magnitudes.
pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return "-".to_owned();
    }
    let a = x.abs();
    if a == 0.0 {
        "0".to_owned()
    } else if a >= 1e4 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.3}")
    } else if a >= 1e-3 {
        format!("{x:.4}")
    } else {
        format!("{x:.2e}")
    }
}

/// One line for people: `name: value unit (baseline b, ratio r, goal ...)`.
pub fn describe(row: &Row) -> String {
    let mut s = format!("{}: {} {}", row.name, fmt_num(row.value), row.unit);
    if let Some(b) = row.baseline {
        s.push_str(&format!(", baseline {}", fmt_num(b)));
    }
    if let Some(r) = row.ratio {
        s.push_str(&format!(", ratio {}", fmt_num(r)));
    }
    if let Some(sp) = &row.spread {
        s.push_str(&format!(
            ", trials {}..{} (n {})",
            fmt_num(sp.min),
            fmt_num(sp.max),
            sp.n
        ));
    }
    if let Some(g) = row.goal {
        let on = match g.on {
            GoalOn::Value => "value",
            GoalOn::Ratio => "ratio",
        };
        s.push_str(&format!(
            ", goal {on} {} {}",
            if g.at_most { "<=" } else { ">=" },
            fmt_num(g.target)
        ));
    }
    if let Some(n) = &row.note {
        s.push_str(&format!(" [{n}]"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&xs, 99.0), 99.0);
        assert_eq!(percentile(&xs, 100.0), 100.0);
        assert_eq!(percentile(&xs, 50.0), 50.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn ratios_skip_zero_baselines() {
        assert_eq!(ratio(1.0, 2.0), Some(0.5));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(
            paired_ratios(&[1.0, 3.0, 5.0], &[2.0, 0.0, 5.0]),
            vec![0.5, 1.0]
        );
    }

    #[test]
    fn spread_and_mean() {
        let s = Spread::of(&[2.0, f64::NAN, 1.0, 3.0]).unwrap();
        assert_eq!((s.min, s.max, s.n), (1.0, 3.0, 3));
        assert!(Spread::of(&[]).is_none());
        let (m, sd) = mean_sd(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((sd - 1.0).abs() < 1e-12);
    }

    #[test]
    fn rows_serialise_with_the_fields_xtask_reads() {
        let row = Row::cost("net.x", "pkt/s", 97.0, 100.0)
            .goal(super::super::Goal::ratio_at_least(0.97))
            .note("n");
        let v = row.to_json();
        for k in ["name", "value", "unit", "baseline", "ratio", "kernel"] {
            assert!(v.get(k).is_some(), "{k} missing from {v}");
        }
        assert_eq!(v["ratio"], json!(0.97));
        assert_eq!(v["goal"]["op"], ">=");
        assert_eq!(
            Row::value("a", "ms", f64::NAN).to_json()["value"],
            Value::Null
        );
    }
}
