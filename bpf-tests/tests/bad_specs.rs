//! The bad-spec corpus (`bpf-tests/corpus/bad-specs.jsonl`, issue 7): every spec in it is refused
//! with one line that names its field, and nothing is armed.
//!
//! Each corpus line is `{"field": F, "case": WHY, "spec": {...}}`, or `"raw": "TEXT"` instead of
//! `spec` for text that is not one JSON object. The specs go through the library's JSON reader and
//! dry run (one probe, a state store of our own that must stay unwritten), which is what `chaos
//! inject spec FILE --dry-run` and the daemon use; a few also go through the binary, to check the
//! one-line `error: ...` and the exit code. Nothing is ever armed: a spec the dry run wrongly
//! accepted fails the test without acting. Field names match with `-` and `_` taken as one, since
//! the plan names fields as the command line spells them (`path-prefix`) and JSON as `path_prefix`.

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Output, Stdio},
};

use bpf_tests::{Oracle, chaos::Chaos, skip_on_err, skip_unless};
use chaos_user::{Injector, probe, spec, store::Store};
use serde_json::Value;

/// The corpus, built into the test binary so that it runs in the VMs as it does here.
const CORPUS: &str = include_str!("../corpus/bad-specs.jsonl");

/// Issue 7 asks for at least this many bad specs.
const MIN_CASES: usize = 200;

/// How many corpus cases also go through the `chaos` binary.
const CLI_CASES: usize = 5;

/// One bad spec.
struct Case {
    /// Line in the corpus file (1-based).
    line: usize,
    /// The field the message must name.
    field: String,
    /// Why the spec is bad.
    case: String,
    /// The spec's text.
    text: String,
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "corpus line {} ({}, field {}): {}",
            self.line, self.case, self.field, self.text
        )
    }
}

fn corpus() -> Vec<Case> {
    CORPUS
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let line = i + 1;
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("corpus line {line} is not JSON: {e}"));
            let text_of = |key: &str| {
                v[key]
                    .as_str()
                    .unwrap_or_else(|| panic!("corpus line {line}: no {key:?} string"))
                    .to_owned()
            };
            let text = match (v.get("spec"), v.get("raw")) {
                (Some(spec), None) => spec.to_string(),
                (None, Some(_)) => text_of("raw"),
                _ => panic!("corpus line {line}: give exactly one of \"spec\" and \"raw\""),
            };
            Case {
                line,
                field: text_of("field"),
                case: text_of("case"),
                text,
            }
        })
        .collect()
}

/// `-` and `_` as one: the command line's spelling and JSON's.
fn norm(s: &str) -> String {
    s.replace('-', "_")
}

/// Why `message` (a refusal of `case`, naming `field` if the error knows one) is not one line
/// naming the case's field; `None` if it is.
fn misnamed(case: &Case, field: Option<&str>, message: &str) -> Option<String> {
    if message.contains('\n') || message.trim().is_empty() {
        return Some(format!("not one line: {message:?}"));
    }
    if field.map(norm) != Some(norm(&case.field)) {
        return Some(format!("names field {field:?}: {message}"));
    }
    if !norm(message).contains(&norm(&case.field)) {
        return Some(format!("the message does not name it: {message}"));
    }
    None
}

/// Removes a directory when dropped, if something made it.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn corpus_is_large_enough() {
    let cases = corpus();
    assert!(
        cases.len() >= MIN_CASES,
        "the bad-spec corpus has {} cases; issue 7 asks for at least {MIN_CASES}",
        cases.len()
    );
    let texts: std::collections::HashSet<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        texts.len(),
        cases.len(),
        "a spec appears twice in the corpus"
    );
}

#[test]
fn every_bad_spec_is_refused_naming_its_field() {
    skip_unless!(bpf_tests::skip::require_root());
    let cases = corpus();
    let state = RemoveDir(std::env::temp_dir().join(bpf_tests::world::unique_name()));
    let store = Store::open(&state.0).expect("store");
    let injector = Injector::with(probe::run(), store);
    // After the probe, whose test programs are gone once it returns.
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    let mut failures = Vec::new();
    for case in &cases {
        match spec::from_json(&case.text).and_then(|s| injector.dry_run(&s)) {
            Ok(dry) => failures.push(format!("{case}\n    accepted: {dry:?}")),
            Err(e) => {
                if let Some(why) = misnamed(case, e.field(), &e.to_string()) {
                    failures.push(format!("{case}\n    {why}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad specs were not refused naming their field:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(
        injector.store().faults().expect("faults").is_empty(),
        "nothing recorded"
    );
    assert!(
        !state.0.exists(),
        "a dry run wrote state in {}",
        state.0.display()
    );
    oracle.assert_clean(&before);
    println!("bad specs: {} refused, each naming its field", cases.len());
}

/// `chaos inject spec - --dry-run` with `text` on its standard input.
fn dry_run_cli(chaos: &Chaos, text: &str) -> Output {
    let mut child = chaos
        .command(&["inject", "spec", "-", "--dry-run"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chaos");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the spec");
    child.wait_with_output().expect("chaos output")
}

#[test]
fn the_cli_refuses_bad_specs_in_one_line() {
    skip_unless!(bpf_tests::skip::require_root());
    let chaos = skip_on_err!(Chaos::from_env());
    let cases = corpus();
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    // Spread over the corpus: its shape errors come first, then each family's.
    let step = cases.len() / CLI_CASES;
    let picked: Vec<&Case> = cases.iter().step_by(step.max(1)).take(CLI_CASES).collect();
    for case in &picked {
        let out = dry_run_cli(&chaos, &case.text);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{case}\n    accepted: {stderr}");
        let stderr = stderr.strip_suffix('\n').unwrap_or(&stderr);
        let message = stderr
            .strip_prefix("error: ")
            .unwrap_or_else(|| panic!("{case}\n    not `error: ...`: {stderr:?}"));
        // The binary prints the message only; the field is read back from it.
        let field = message
            .strip_prefix("invalid ")
            .and_then(|m| m.split_once(": "))
            .map(|(f, _)| f);
        if let Some(why) = misnamed(case, field, message) {
            panic!("{case}\n    {why}");
        }
        assert!(out.stdout.is_empty(), "{case}: printed {:?}", out.stdout);
    }
    assert_eq!(
        chaos.list().expect("list"),
        serde_json::json!([]),
        "nothing armed"
    );
    oracle.assert_clean(&before);
    println!(
        "bad specs through `chaos inject spec - --dry-run`: {} refused in one line",
        picked.len()
    );
}
