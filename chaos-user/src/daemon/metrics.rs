//! `GET /metrics`: the faults in Prometheus text format 0.0.4.
//!
//! - `chaos_faults_active`: faults armed and not past their deadline;
//! - `chaos_faults_expired`: faults past their deadline, not yet recovered;
//! - `chaos_fault_seen_total`, `chaos_fault_matched_total`, `chaos_fault_acted_total`, labelled
//!   `id`, `kind` (`net loss`...) and `strategy` (`tcx-bpf`...): the counters of faults that
//!   have them (network, syscall, block-layer I/O faults).

use std::fmt::Write;

use crate::Status;

/// The `Content-Type` of the answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

/// The metrics for `faults`.
pub fn render(faults: &[Status]) -> String {
    let mut out = String::new();
    let active = faults.iter().filter(|s| !s.expired).count();
    let expired = faults.len() - active;
    for (name, help, v) in [
        (
            "chaos_faults_active",
            "Faults armed and not past their deadline.",
            active,
        ),
        (
            "chaos_faults_expired",
            "Faults past their deadline and not yet recovered.",
            expired,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    type Get = fn(&crate::Counters) -> u64;
    let counters: [(&str, &str, Get); 3] = [
        ("seen", "Packets or calls the fault's rule examined.", |c| {
            c.seen
        }),
        (
            "matched",
            "Those of its target, within the deadline.",
            |c| c.matched,
        ),
        ("acted", "Those it acted on (dropped, failed, ...).", |c| {
            c.acted
        }),
    ];
    for (what, help, get) in counters {
        let name = format!("chaos_fault_{what}_total");
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for s in faults {
            if let Some(c) = &s.counters {
                let _ = writeln!(
                    out,
                    "{name}{{id=\"{}\",kind=\"{}\",strategy=\"{}\"}} {}",
                    escape(&s.record.id),
                    escape(&s.record.spec.name()),
                    escape(&s.record.strategy.to_string()),
                    get(c)
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("a\nb"), r"a\nb");
    }

    #[test]
    fn no_faults_gives_zero_gauges_and_empty_counters() {
        let text = render(&[]);
        assert!(text.contains("\nchaos_faults_active 0\n"), "{text}");
        assert!(text.contains("\nchaos_faults_expired 0\n"), "{text}");
        assert!(
            text.contains("# TYPE chaos_fault_acted_total counter\n"),
            "{text}"
        );
        assert!(!text.contains("{id="), "{text}");
    }
}
