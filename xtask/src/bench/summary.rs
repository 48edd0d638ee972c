//! Rows of `chaos-bench` (one `CHAOS-BENCH-ROW <json>` line each, from a native run or a VM's
//! console), their goals, the printed table and `target/bench/summary.json`.
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The line prefix of a row (`bpf_tests::bench::ROW_MARKER`).
pub const ROW_MARKER: &str = "CHAOS-BENCH-ROW ";
/// The line prefix of a section that could not be measured (`bpf_tests::bench::ERROR_MARKER`).
pub const ERROR_MARKER: &str = "CHAOS-BENCH-ERROR ";

/// A goal: `on` (`value` or `ratio`) `op` (`<=` or `>=`) `target`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Goal {
    pub on: String,
    pub op: String,
    pub target: f64,
}

impl Goal {
    /// Whether `row` meets it; `None` when the compared figure is missing or the goal unknown.
    pub fn met(&self, row: &Row) -> Option<bool> {
        let x = match self.on.as_str() {
            "value" => row.value?,
            "ratio" => row.ratio?,
            _ => return None,
        };
        match self.op.as_str() {
            "<=" => Some(x <= self.target),
            ">=" => Some(x >= self.target),
            _ => None,
        }
    }

    fn short(&self) -> String {
        format!("{} {} {}", self.on, self.op, num(Some(self.target)))
    }
}

/// Lowest and highest trial and how many.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

/// One row of the summary: the issue's fields (`name`, `value`, `unit`, `baseline`, `ratio`,
/// `kernel`; `baseline` and `ratio` are null for figures that are not costs), then what the
/// bench adds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    pub value: Option<f64>,
    pub unit: String,
    pub baseline: Option<f64>,
    pub ratio: Option<f64>,
    pub kernel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<Goal>,
    /// Whether the goal is met (written by xtask).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<Spread>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Collects rows and errors from output lines.
#[derive(Debug, Default)]
pub struct Collector {
    pub rows: Vec<Row>,
    /// `where: section: why`.
    pub errors: Vec<String>,
}

impl Collector {
    /// Takes a row or error line (anything else is ignored); `origin` names where it came from
    /// in error messages (`native`, `vm debian-6.12`).
    pub fn feed(&mut self, origin: &str, line: &str) {
        // A VM console may put kernel messages before the marker on the same line.
        if let Some(at) = line.find(ROW_MARKER) {
            let json = &line[at + ROW_MARKER.len()..];
            match serde_json::from_str::<Row>(json.trim()) {
                Ok(mut row) => {
                    row.met = row.goal.as_ref().and_then(|g| g.met(&row));
                    self.rows.push(row);
                }
                Err(e) => self
                    .errors
                    .push(format!("{origin}: unreadable row ({e}): {json}")),
            }
        } else if let Some(at) = line.find(ERROR_MARKER) {
            self.errors
                .push(format!("{origin}: {}", &line[at + ERROR_MARKER.len()..]));
        }
    }
}

/// A number with about four significant digits; `-` for none.
fn num(x: Option<f64>) -> String {
    let Some(x) = x.filter(|x| x.is_finite()) else {
        return "-".to_owned();
    };
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

/// The table, as Markdown (readable in a terminal and pasted as is into docs/performance.md).
pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| row | value | unit | baseline | ratio | trials (min..max) | goal | kernel |"
    );
    let _ = writeln!(s, "|---|---:|---|---:|---:|---|---|---|");
    for r in rows {
        let spread = r
            .spread
            .as_ref()
            .map(|sp| format!("{}..{} (n {})", num(Some(sp.min)), num(Some(sp.max)), sp.n))
            .unwrap_or_default();
        let goal = match (&r.goal, r.met) {
            (Some(g), Some(true)) => format!("{} ok", g.short()),
            (Some(g), Some(false)) => format!("{} **missed**", g.short()),
            (Some(g), None) => format!("{} ?", g.short()),
            (None, _) => String::new(),
        };
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            num(r.value),
            r.unit,
            num(r.baseline),
            num(r.ratio),
            spread,
            goal,
            r.kernel
        );
    }
    s
}

/// The notes of the rows, one line each, for under the table.
pub fn notes(rows: &[Row]) -> String {
    let mut s = String::new();
    for r in rows {
        if let Some(n) = &r.note {
            let _ = writeln!(s, "- `{}`: {n}", r.name);
        }
    }
    s
}

/// `summary.json`: `{"rows": [...], ...}` with the run's context beside the rows.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub rows: &'a [Row],
    /// Sections that could not be measured.
    pub errors: &'a [String],
    pub quick: bool,
    /// Model, cores, memory and kernel of the machine that ran the bench.
    pub machine: String,
    pub elapsed_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"CHAOS-BENCH-ROW {"name":"net.nonmatching_pps_ratio","value":97.0,"unit":"pkt/s","baseline":100.0,"ratio":0.97,"kernel":"6.18","goal":{"on":"ratio","op":">=","target":0.97},"spread":{"min":0.9,"max":1.0,"n":5}}"#;

    #[test]
    fn reads_rows_and_judges_goals() {
        let mut c = Collector::default();
        c.feed("native", LINE);
        c.feed(
            "native",
            "  net.nonmatching_pps_ratio: 97 pkt/s (for people)",
        );
        c.feed(
            "vm",
            &format!("[   3.1] random: crng init done{LINE}").replace("0.97,", "0.5,"),
        );
        c.feed("vm", "CHAOS-BENCH-ERROR net.delay: no netem");
        c.feed("vm", "CHAOS-BENCH-ROW {broken");
        assert_eq!(c.rows.len(), 2);
        assert_eq!(c.rows[0].met, Some(true));
        assert_eq!(c.rows[1].ratio, Some(0.5));
        assert_eq!(c.rows[1].met, Some(false));
        assert_eq!(c.errors.len(), 2, "{:?}", c.errors);
        assert!(c.errors[0].starts_with("vm: net.delay"));
    }

    #[test]
    fn goals_on_missing_figures_are_unknown() {
        let mut c = Collector::default();
        c.feed("native", &LINE.replace("\"ratio\":0.97", "\"ratio\":null"));
        assert_eq!(c.rows[0].met, None);
        let g = Goal {
            on: "value".into(),
            op: "<=".into(),
            target: 10.0,
        };
        assert_eq!(g.met(&c.rows[0]), Some(false));
    }

    #[test]
    fn summary_has_the_issue_fields_with_nulls() {
        let mut c = Collector::default();
        c.feed(
            "native",
            r#"CHAOS-BENCH-ROW {"name":"net.loss_abs_error","value":0.001,"unit":"fraction","baseline":null,"ratio":null,"kernel":"6.18"}"#,
        );
        let s = Summary {
            rows: &c.rows,
            errors: &[],
            quick: true,
            machine: "m".into(),
            elapsed_s: 1.0,
        };
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        let row = &v["rows"][0];
        for k in ["name", "value", "unit", "baseline", "ratio", "kernel"] {
            assert!(row.get(k).is_some(), "{k} missing in {row}");
        }
        assert!(row["baseline"].is_null());
        assert!(row.get("goal").is_none());
        let t = table(&c.rows);
        assert!(
            t.contains("| `net.loss_abs_error` | 0.0010 | fraction | - | - |"),
            "{t}"
        );
    }
}
