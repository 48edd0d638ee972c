//! A checkup's terminal summary and its report.html: one self-contained page (inline CSS, no
//! script) with the score, the findings worst first with their numbers and the catalog's advice,
//! the skipped scenarios, and a link to each drill's own page. Every text is escaped.

use super::{CheckupReport, Finding, Outcome};
use crate::experiment::html::markup::esc;

/// The summary `chaos checkup` prints: the score, the findings worst first, the skipped ones.
pub fn summary(r: &CheckupReport) -> String {
    let mut out = Vec::new();
    let score = r.score.map_or_else(
        || "no score (no drill ran)".to_owned(),
        |s| format!("{s}/100"),
    );
    out.push(format!(
        "Checkup {}: score {score} ({} at {}), {} risks tried, {} skipped",
        r.profile.as_str(),
        if r.passed { "pass" } else { "FAIL" },
        r.min_score,
        r.findings.len(),
        r.skipped.len()
    ));
    if let Some(s) = &r.stopped {
        out.push(format!("Stopped: {s}"));
    }
    if !r.findings.is_empty() {
        out.push(String::new());
        out.push("Findings, worst first:".into());
    }
    for f in &r.findings {
        out.push(format!(
            "  {:>2}. {:<16} {:<8} {:<38} {:>4.1} pts",
            f.rank,
            f.outcome.as_str().replace('_', " "),
            f.severity.as_str(),
            f.scenario,
            f.risk_points
        ));
        out.push(format!("      {}", f.headline));
        if f.outcome != Outcome::Tolerated
            && let Some(first) = f.prevention.first()
        {
            out.push(format!("      prevent: {first}"));
        }
    }
    if !r.skipped.is_empty() {
        out.push(String::new());
        out.push("Skipped:".into());
        for s in &r.skipped {
            out.push(format!("  {:<38} {}", s.scenario, s.reason));
        }
    }
    out.iter().map(|l| format!("{}\n", l.trim_end())).collect()
}

fn list(items: &[String]) -> String {
    let li: String = items
        .iter()
        .map(|i| format!("<li>{}</li>", esc(i)))
        .collect();
    format!("<ul>{li}</ul>")
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.1}"))
}

fn finding(f: &Finding) -> String {
    let e = &f.evidence;
    let expectations: String = e
        .expectations
        .iter()
        .map(|x| {
            format!(
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"j-{}\">{}</td></tr>",
                esc(&x.name),
                esc(&x.comparison),
                num(x.measured),
                esc(&x.verdict),
                esc(&x.verdict)
            )
        })
        .collect();
    let params: String = f
        .parameters
        .iter()
        .map(|(k, v)| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(k),
                esc(&v.value),
                esc(&v.source)
            )
        })
        .collect();
    format!(
        "<section class=\"finding o-{o}\" id=\"{id}\">\
         <h3>{rank}. <span class=\"badge o-{o}\">{outcome}</span> {title} \
         <small>{id} · {sev} · {pts:.1} pts</small></h3>\
         <p class=\"headline\">{headline}</p>\
         <p>{risk}</p>\
         <table><tr><th>expectation</th><th>metric</th><th>measured</th><th>verdict</th></tr>{expectations}</table>\
         <div class=\"advice\"><div><h4>Expected</h4><p>{expected}</p><h4>Detect</h4>{detect}</div>\
         <div><h4>Prevention</h4>{prevention}<h4>Emergency</h4>{emergency}</div></div>\
         <details><summary>parameters</summary><table><tr><th>name</th><th>value</th><th>from</th></tr>{params}</table></details>\
         <p><a href=\"{html}\">the drill's report</a> · <a href=\"{json}\">report.json</a></p>\
         </section>",
        o = f.outcome.as_str(),
        id = esc(&f.scenario),
        rank = f.rank,
        outcome = f.outcome.as_str().replace('_', " "),
        title = esc(&f.title),
        sev = f.severity.as_str(),
        pts = f.risk_points,
        headline = esc(&f.headline),
        risk = esc(&f.risk),
        expected = esc(&f.expected),
        detect = list(&f.detect),
        prevention = list(&f.prevention),
        emergency = list(&f.emergency),
        html = esc(&f.report_html),
        json = esc(&f.report),
    )
}

/// The page for `r`.
pub fn html(r: &CheckupReport) -> String {
    let score = r.score.map_or_else(|| "–".to_owned(), |s| s.to_string());
    let class = match (r.score, r.passed) {
        (None, _) => "none",
        (_, true) => "pass",
        _ => "fail",
    };
    let rows: String = r
        .findings
        .iter()
        .map(|f| {
            format!(
                "<tr><td class=\"num\">{}</td><td><a href=\"#{id}\">{id}</a></td><td>{}</td>\
                 <td><span class=\"badge o-{o}\">{}</span></td><td class=\"num\">{:.1}</td><td>{}</td></tr>",
                f.rank,
                f.severity.as_str(),
                f.outcome.as_str().replace('_', " "),
                f.risk_points,
                esc(&f.headline),
                id = esc(&f.scenario),
                o = f.outcome.as_str(),
            )
        })
        .collect();
    let skipped: String = r
        .skipped
        .iter()
        .map(|s| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&s.scenario),
                s.severity.as_str(),
                esc(&s.reason)
            )
        })
        .collect();
    let facts: String = r
        .facts
        .iter()
        .map(|(k, f)| {
            format!(
                "<dt>{}</dt><dd>{} <small>({})</small></dd>",
                esc(k),
                esc(&f.value),
                esc(&f.source)
            )
        })
        .collect();
    let details: String = r.findings.iter().map(finding).collect();
    let stopped = r
        .stopped
        .as_ref()
        .map(|s| format!("<p class=\"stopped\">Stopped: {}</p>", esc(s)))
        .unwrap_or_default();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{profile} checkup – {score}/100 – chaos</title><style>{CSS}</style></head><body><main>\
         <header class=\"score score-{class}\"><div class=\"big\">{score}</div>\
         <div><div class=\"what\">{profile} checkup · {verdict} (minimum {min})</div>\
         <div>{n} risks tried, {k} skipped · chaos {version}</div></div></header>{stopped}\
         <h2>Target</h2><dl class=\"facts\">{facts}</dl>\
         <h2>Findings, worst first</h2>\
         <table><tr><th>#</th><th>scenario</th><th>severity</th><th>outcome</th><th>points</th><th>evidence</th></tr>{rows}</table>\
         {details}\
         <h2>Skipped</h2><table><tr><th>scenario</th><th>severity</th><th>why</th></tr>{skipped}</table>\
         <footer>schema {schema}; score = 100 × (1 − Σ weight × loss / Σ weight), weights low 1, medium 2, \
         high 4, critical 8; loss tolerated 0, degraded 0.25, failed 0.6, did not recover 1.</footer>\
         </main></body></html>\n",
        profile = r.profile.as_str(),
        verdict = if r.passed { "passed" } else { "failed" },
        min = r.min_score,
        n = r.findings.len(),
        k = r.skipped.len(),
        version = esc(&r.chaos_version),
        schema = esc(&r.schema),
    )
}

const CSS: &str = r#"
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, sans-serif; color: #1f2328; background: #f6f8fa; }
main { max-width: 1200px; margin: 0 auto; padding: 16px 20px 40px; }
.score { border-radius: 8px; padding: 14px 20px; color: #fff; display: flex; gap: 24px; align-items: center; }
.score-pass { background: #1a7f37; } .score-fail { background: #cf222e; } .score-none { background: #6e7781; }
.big { font-size: 48px; font-weight: 800; } .what { font-size: 20px; font-weight: 600; }
.stopped { color: #d4730b; font-weight: 600; }
h2 { font-size: 18px; margin: 26px 0 8px; border-bottom: 1px solid #d0d7de; }
h3 small { color: #57606a; font-weight: 400; font-size: 13px; }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: 13px; margin: 6px 0; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eaeef2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { border-radius: 10px; padding: 1px 8px; color: #fff; font-size: 12px; }
.o-tolerated .badge, .badge.o-tolerated { background: #1a7f37; }
.badge.o-degraded { background: #bf8700; } .badge.o-failed { background: #cf222e; }
.badge.o-did_not_recover { background: #82071e; }
.finding { background: #fff; border: 1px solid #d0d7de; border-left: 6px solid #1a7f37; border-radius: 6px;
  padding: 4px 14px; margin: 14px 0; }
.finding.o-degraded { border-left-color: #bf8700; } .finding.o-failed { border-left-color: #cf222e; }
.finding.o-did_not_recover { border-left-color: #82071e; }
.headline { font-weight: 600; }
.advice { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.j-fail { color: #cf222e; font-weight: 600; } .j-pass { color: #1a7f37; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; }
.facts dt { font-weight: 600; } .facts dd { margin: 0; }
footer { margin-top: 24px; color: #57606a; font-size: 12px; }
"#;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        catalog::Severity,
        checkup::{Evidence, Profile, SCHEMA, Skipped, Target},
    };

    #[test]
    fn the_page_and_summary_show_findings_escaped() {
        let r = CheckupReport {
            schema: SCHEMA.into(),
            chaos_version: "0".into(),
            profile: Profile::Redis,
            target: Target::Pid(1),
            probe: "127.0.0.1:6379".into(),
            facts: BTreeMap::new(),
            started_unix_ms: 0,
            ended_unix_ms: 0,
            score: Some(42),
            min_score: 80,
            passed: false,
            stopped: Some("x did not recover".into()),
            findings: vec![Finding {
                rank: 1,
                scenario: "redis-aof-fsync-eio".into(),
                title: "<script>".into(),
                severity: Severity::Critical,
                outcome: Outcome::DidNotRecover,
                risk_points: 8.0,
                evidence: Evidence::default(),
                headline: "writes: 10/10 failed".into(),
                parameters: BTreeMap::new(),
                risk: "r".into(),
                expected: "e".into(),
                detect: vec!["d".into()],
                prevention: vec!["p".into()],
                emergency: vec!["m".into()],
                report: "drills/01-redis-aof-fsync-eio/report.json".into(),
                report_html: "drills/01-redis-aof-fsync-eio/report.html".into(),
            }],
            skipped: vec![Skipped {
                scenario: "redis-client-network-delay".into(),
                title: "t".into(),
                severity: Severity::Medium,
                reason: "needs --set clients=…".into(),
            }],
        };
        let page = html(&r);
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("drills/01-redis-aof-fsync-eio/report.html"));
        let text = summary(&r);
        assert!(text.contains("score 42/100 (FAIL at 80)"), "{text}");
        assert!(text.contains("1. did not recover"), "{text}");
        assert!(text.contains("prevent: p"), "{text}");
        assert!(text.contains("needs --set clients="), "{text}");
        assert_eq!(r.exit_code(), 1);
    }
}
