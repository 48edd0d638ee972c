//! How a drill's report becomes a finding's outcome, and findings a 0-100 score
//! (`docs/checkup.md`, "The score").
//!
//! Each risk weighs by its catalog severity (low 1, medium 2, high 4, critical 8) and loses a
//! share of its weight by outcome (tolerated 0, degraded 0.25, failed 0.6, did not recover 1).
//! The score is `100 × (1 − Σ weight × loss / Σ weight)` over the drills that ran, rounded.

use serde::{Deserialize, Serialize};

use crate::{
    catalog::Severity,
    experiment::report::{Judgement, RecoveryVerdict, Report, Subject, Verdict},
};

/// How the service took a risk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The drill passed: the service behaved as the catalog expects.
    Tolerated,
    /// Expectations failed, but the service kept answering its probes and recovered in time.
    Degraded,
    /// The service stopped answering its probes during the fault, or an abort rule (the blast
    /// radius) stopped the drill.
    Failed,
    /// The steady state did not come back within the recovery objective.
    DidNotRecover,
}

impl Outcome {
    /// Its name, as in report.json.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Tolerated => "tolerated",
            Outcome::Degraded => "degraded",
            Outcome::Failed => "failed",
            Outcome::DidNotRecover => "did_not_recover",
        }
    }

    /// The share of the risk's weight lost, 0-1.
    pub fn loss(self) -> f64 {
        match self {
            Outcome::Tolerated => 0.0,
            Outcome::Degraded => 0.25,
            Outcome::Failed => 0.6,
            Outcome::DidNotRecover => 1.0,
        }
    }
}

/// A severity's weight.
pub fn weight(s: Severity) -> f64 {
    match s {
        Severity::Low => 1.0,
        Severity::Medium => 2.0,
        Severity::High => 4.0,
        Severity::Critical => 8.0,
    }
}

/// A finding's risk points: weight × loss (0 for a tolerated risk, 8 for a critical one that
/// did not recover); findings are ranked by them.
pub fn points(s: Severity, o: Outcome) -> f64 {
    weight(s) * o.loss()
}

/// The outcome of a drill that ran; `None` when it did not (refused, or stopped by a signal or
/// an error of chaos itself).
pub fn classify(r: &Report) -> Option<Outcome> {
    match r.verdict {
        Verdict::Refused => None,
        Verdict::Aborted => match r.abort.as_ref().map(|a| a.rule.as_str()) {
            Some(rule) if rule.starts_with("abort[") => Some(Outcome::Failed),
            _ => None,
        },
        _ if r.recovery.verdict == RecoveryVerdict::Fail => Some(Outcome::DidNotRecover),
        Verdict::Passed => Some(Outcome::Tolerated),
        Verdict::Failed => {
            let probe_failed = r
                .expectations
                .iter()
                .any(|e| e.verdict == Judgement::Fail && matches!(e.subject, Subject::Probe(_)));
            Some(if probe_failed {
                Outcome::Failed
            } else {
                Outcome::Degraded
            })
        }
    }
}

/// Whether the drill never exercised its risk: it failed, yet every fault counts what it acts
/// on and acted on nothing (the service made no call, packet or I/O the faults select), so
/// whatever failed was not the faults' doing and says nothing about this risk. Such a drill is
/// listed as skipped, not scored. A failed recovery is always scored.
pub fn not_exercised(r: &Report) -> bool {
    r.verdict == Verdict::Failed
        && r.recovery.verdict != RecoveryVerdict::Fail
        && !r.faults.is_empty()
        && r.faults
            .iter()
            .all(|f| f.counters.is_some_and(|c| c.acted == 0))
}

/// The score of `(severity, outcome)` pairs, 0-100; `None` when there are none.
pub fn score(findings: impl IntoIterator<Item = (Severity, Outcome)>) -> Option<u32> {
    let (mut total, mut lost) = (0.0, 0.0);
    for (s, o) in findings {
        total += weight(s);
        lost += points(s, o);
    }
    (total > 0.0).then(|| (100.0 * (1.0 - lost / total)).round().clamp(0.0, 100.0) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_score_weighs_severity_by_outcome() {
        use Outcome::*;
        use Severity::*;
        assert_eq!(score([]), None);
        assert_eq!(score([(Critical, Tolerated), (Low, Tolerated)]), Some(100));
        assert_eq!(score([(Critical, DidNotRecover)]), Some(0));
        // 2 + 4 + 8 = 14; lost 4 × 0.6 + 8 × 1 = 10.4 -> 25.7
        assert_eq!(
            score([
                (Medium, Tolerated),
                (High, Failed),
                (Critical, DidNotRecover)
            ]),
            Some(26)
        );
        // One degraded medium among four tolerated highs: 2 × 0.25 / 18
        assert_eq!(
            score([
                (Medium, Degraded),
                (High, Tolerated),
                (High, Tolerated),
                (High, Tolerated),
                (High, Tolerated)
            ]),
            Some(97)
        );
        assert!(points(Critical, Degraded) > points(Medium, Failed));
        assert!(points(High, Failed) > points(Critical, Degraded));
    }
}
