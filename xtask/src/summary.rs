//! Reading libtest's human output (from a pipe or a VM console) into pass / fail / skip counts.
//!
//! libtest prints `test NAME ... ok|FAILED|ignored`. With `--test-threads=1 --nocapture` the test's
//! own output comes between `test NAME ... ` and the result word, so the result may be on a later
//! line. A test that prints a line starting with `CHAOS-SKIP ` (the bpf-tests convention:
//! `CHAOS-SKIP <test name>: <reason>`) while it runs, and then passes, is counted as skipped, not
//! passed: it returned early because the kernel lacks something. `ignored` tests count as skipped.
use std::{
    collections::{BTreeSet, VecDeque},
    fmt,
    ops::AddAssign,
};

/// The marker a test prints when it skips itself.
pub const SKIP_MARKER: &str = "CHAOS-SKIP ";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Names of failed tests (and of test binaries that crashed or exited non-zero).
    pub failures: Vec<String>,
    /// `name: reason` of skipped tests.
    pub skips: Vec<String>,
    /// The last lines each failed test printed (its panic message among them, backtraces left
    /// out), by name: the summary repeats them, since a CI log may keep only its tail.
    pub failure_output: Vec<(String, Vec<String>)>,
}

impl Counts {
    pub fn fail(&mut self, what: impl Into<String>) {
        self.failed += 1;
        self.failures.push(what.into());
    }

    /// Prints what each failed test last printed. Called after the summary table, since a CI
    /// log may keep only its tail.
    pub fn print_failure_output(&self) {
        for (name, tail) in &self.failure_output {
            println!("\n==> the last lines of failed test {name}");
            for line in tail {
                println!("  | {line}");
            }
        }
    }
}

impl AddAssign<&Counts> for Counts {
    fn add_assign(&mut self, rhs: &Counts) {
        self.passed += rhs.passed;
        self.failed += rhs.failed;
        self.skipped += rhs.skipped;
        self.failures.extend(rhs.failures.iter().cloned());
        self.skips.extend(rhs.skips.iter().cloned());
        self.failure_output
            .extend(rhs.failure_output.iter().cloned());
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Failed,
    Ignored,
}

impl Outcome {
    /// Parses the result word(s) libtest prints after `... `.
    fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        match s {
            "ok" => Some(Self::Ok),
            "FAILED" => Some(Self::Failed),
            _ if s == "ignored" || s.starts_with("ignored, ") => Some(Self::Ignored),
            _ => None,
        }
    }
}

/// Incremental parser: feed it lines, in order, from one or more test binaries.
#[derive(Debug, Default)]
pub struct LibtestParser {
    counts: Counts,
    /// The test whose `test NAME ... ` line was printed but whose result was not yet.
    pending: Option<Pending>,
    /// Tests named by a skip marker outside of a pending test (e.g. printed from another thread).
    marked: BTreeSet<String>,
    /// Reason per skip marker, by name.
    reasons: Vec<(String, String)>,
    /// Whether the current binary printed `test result:` (so we know it finished).
    saw_result: bool,
    /// Whether a `running N tests` line was seen for the current binary.
    in_binary: bool,
    /// `counts.failed` when the current binary started.
    failed_before_binary: usize,
}

#[derive(Debug, Default)]
struct Pending {
    name: String,
    skip_reason: Option<String>,
    /// Its last [`TAIL_LINES`] lines of output.
    tail: VecDeque<String>,
    /// Whether the lines now are a backtrace's frames (not kept).
    in_backtrace: bool,
}

/// Lines of a failed test's output the summary repeats.
pub const TAIL_LINES: usize = 40;

impl LibtestParser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, line: &str) {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.starts_with("running ") && line.ends_with(" tests") || line == "running 1 test" {
            self.crash_pending("binary ended before reporting a result");
            self.in_binary = true;
            self.saw_result = false;
            return;
        }
        if line.starts_with("test result: ") {
            self.crash_pending("did not report a result");
            self.saw_result = true;
            self.in_binary = false;
            return;
        }
        if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, after)) = rest.split_once(" ... ")
        {
            self.crash_pending("did not report a result");
            let name = clean_name(name);
            let (output, outcome) = split_outcome(after);
            let mut pending = Pending {
                name,
                ..Pending::default()
            };
            if let Some(output) = output {
                pending.note_output(output);
            }
            match outcome {
                Some(outcome) => self.record(pending, outcome),
                None => self.pending = Some(pending),
            }
            return;
        }
        if let Some(pending) = self.pending.as_mut() {
            // Output of the running test, or its result word.
            let (output, outcome) = split_outcome(line);
            if let Some(output) = output {
                pending.note_output(output);
            }
            if let Some(outcome) = outcome {
                let pending = self.pending.take().expect("checked above");
                self.record(pending, outcome);
            }
            return;
        }
        if let Some((name, reason)) = parse_marker(line) {
            self.marked.insert(name.clone());
            self.reasons.push((name, reason));
        }
    }

    /// Marks the end of one test binary's output (or of a `cargo test` run of several).
    /// A binary that exited non-zero without any failed test (a crash, a panic outside of tests,
    /// a missing library) is counted as one failure named after the binary.
    pub fn finish_binary_with_status(&mut self, binary: &str, success: bool) {
        self.crash_pending(&format!("{binary} ended before reporting a result"));
        let ran_to_end = self.saw_result;
        if !success && self.counts.failed == self.failed_before_binary {
            self.counts.fail(format!("{binary} (exited with failure)"));
        } else if success && !ran_to_end && self.in_binary {
            self.counts
                .fail(format!("{binary} (no `test result:` line)"));
        }
        self.in_binary = false;
        self.saw_result = false;
        self.failed_before_binary = self.counts.failed;
    }

    fn crash_pending(&mut self, why: &str) {
        if let Some(p) = self.pending.take() {
            let name = format!("{} ({why})", p.name);
            self.counts
                .failure_output
                .push((name.clone(), p.tail.into()));
            self.counts.fail(name);
        }
    }

    fn record(&mut self, pending: Pending, outcome: Outcome) {
        let marked_reason = pending.skip_reason.clone().or_else(|| {
            self.reasons
                .iter()
                .find(|(n, _)| names_match(n, &pending.name))
                .map(|(_, r)| r.clone())
        });
        let marked = pending.skip_reason.is_some()
            || self.marked.iter().any(|n| names_match(n, &pending.name));
        match outcome {
            Outcome::Failed => {
                self.counts
                    .failure_output
                    .push((pending.name.clone(), pending.tail.into()));
                self.counts.fail(pending.name);
            }
            Outcome::Ignored => {
                self.counts.skipped += 1;
                self.counts.skips.push(format!("{}: ignored", pending.name));
            }
            Outcome::Ok if marked => {
                self.counts.skipped += 1;
                self.counts.skips.push(format!(
                    "{}: {}",
                    pending.name,
                    marked_reason.unwrap_or_default()
                ));
            }
            Outcome::Ok => self.counts.passed += 1,
        }
    }

    /// Tests skipped (or ignored) so far, over every binary fed.
    pub fn skipped(&self) -> usize {
        self.counts.skipped
    }

    /// Tests failed so far, over every binary fed.
    pub fn failed(&self) -> usize {
        self.counts.failed
    }

    /// The counts so far; a test still pending counts as failed (its binary or the VM died).
    pub fn finish(mut self) -> Counts {
        self.crash_pending("output ended before its result");
        self.counts
    }
}

impl Pending {
    fn note_output(&mut self, output: &str) {
        if let Some((_, reason)) = parse_marker(output.trim_start()) {
            self.skip_reason = Some(reason);
        }
        // `RUST_BACKTRACE=1` frames are indented ("  0: f", "     at file"); `note:` ends them.
        if output.starts_with("stack backtrace:") {
            self.in_backtrace = true;
            return;
        }
        if self.in_backtrace && (output.starts_with(' ') || output.starts_with("note: ")) {
            return;
        }
        self.in_backtrace = false;
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(output.to_owned());
    }
}

/// `tests::foo - should panic` -> `tests::foo`.
fn clean_name(name: &str) -> String {
    name.split(" - ").next().unwrap_or(name).trim().to_owned()
}

/// Splits `after` (what follows `... `, or a line of test output) into output and a result.
/// The result word must be alone on its line: libtest prints it after the test returns, and tests
/// end their output with a newline (`println!`), so "output...ok" on one line is not guessed at.
fn split_outcome(after: &str) -> (Option<&str>, Option<Outcome>) {
    if let Some(o) = Outcome::parse(after) {
        return (None, Some(o));
    }
    if after.is_empty() {
        (None, None)
    } else {
        (Some(after), None)
    }
}

/// `CHAOS-SKIP name: reason` -> (name, reason).
pub fn parse_marker(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix(SKIP_MARKER)?;
    let (name, reason) = rest.split_once(':').unwrap_or((rest, ""));
    Some((name.trim().to_owned(), reason.trim().to_owned()))
}

/// A marker may carry the function name (`foo`) or the libtest path (`net::tests::foo`).
fn names_match(marker: &str, test: &str) -> bool {
    marker == test
        || test.ends_with(&format!("::{marker}"))
        || marker.ends_with(&format!("::{test}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Counts {
        let mut p = LibtestParser::new();
        for l in text.lines() {
            p.feed(l);
        }
        p.finish()
    }

    #[test]
    fn a_failed_test_keeps_its_last_lines_without_the_backtrace() {
        let mut text = String::from("running 2 tests\ntest a ... ok\ntest b ... \n");
        for i in 0..TAIL_LINES {
            text.push_str(&format!("line {i}\n"));
        }
        text.push_str(
            "thread 'b' panicked at tests/b.rs:3:5:\n\
             expected 2, got 3\n\
             stack backtrace:\n\
             \x20  0: std::panicking::begin_panic\n\
             \x20            at /rustc/library/std/src/panicking.rs:1:1\n\
             note: Some details are omitted\n\
             FAILED\n\
             test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n",
        );
        let c = parse(&text);
        let [(name, tail)] = &c.failure_output[..] else {
            panic!("one failed test: {:?}", c.failure_output);
        };
        assert_eq!(name, "b");
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail[TAIL_LINES - 3], format!("line {}", TAIL_LINES - 1));
        assert_eq!(
            tail[TAIL_LINES - 2..],
            [
                "thread 'b' panicked at tests/b.rs:3:5:",
                "expected 2, got 3"
            ]
        );
    }

    #[test]
    fn simple_results() {
        let c = parse(
            "running 4 tests\n\
             test a ... ok\n\
             test b::c ... FAILED\n\
             test d ... ignored\n\
             test e ... ignored, needs root\n\
             \n\
             test result: FAILED. 1 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out\n",
        );
        assert_eq!((c.passed, c.failed, c.skipped), (1, 1, 2));
        assert_eq!(c.failures, vec!["b::c".to_owned()]);
    }

    #[test]
    fn nocapture_output_between_name_and_result() {
        let c = parse(
            "running 3 tests\n\
             test net::delay ... CHAOS-SKIP net::delay: no sch_netem\n\
             ok\n\
             test net::loss ... some output\n\
             more output\n\
             ok\n\
             test block::eio ... \n\
             CHAOS-SKIP eio: kernel lacks should_fail_bio injection\n\
             ok\n\
             test result: ok. 3 passed; 0 failed; 0 ignored\n",
        );
        assert_eq!((c.passed, c.failed, c.skipped), (1, 0, 2));
        assert!(c.skips[1].contains("should_fail_bio"), "{:?}", c.skips);
    }

    #[test]
    fn skip_marker_then_failure_is_failure() {
        let c = parse("test x ... CHAOS-SKIP x: why\nFAILED\n");
        assert_eq!((c.passed, c.failed, c.skipped), (0, 1, 0));
    }

    #[test]
    fn crash_mid_test_is_failure() {
        let mut p = LibtestParser::new();
        p.feed("running 2 tests");
        p.feed("test a ... ok");
        p.feed("test b ... doing things");
        p.finish_binary_with_status("bin", false);
        let c = p.finish();
        assert_eq!((c.passed, c.failed), (1, 1));
        assert!(c.failures[0].starts_with("b "), "{:?}", c.failures);
    }

    #[test]
    fn binary_failing_without_tests_counts_once() {
        let mut p = LibtestParser::new();
        p.feed("error while loading shared libraries");
        p.finish_binary_with_status("bin", false);
        let c = p.finish();
        assert_eq!((c.passed, c.failed), (0, 1));
    }

    #[test]
    fn failing_tests_do_not_add_a_binary_failure() {
        let mut p = LibtestParser::new();
        p.feed("running 1 test");
        p.feed("test a ... FAILED");
        p.feed("test result: FAILED. 0 passed; 1 failed");
        p.finish_binary_with_status("bin", false);
        assert_eq!(p.finish().failed, 1);
    }

    #[test]
    fn marker_printed_by_another_thread_still_counts() {
        let c = parse("CHAOS-SKIP foo: no lsm\ntest m::foo ... ok\ntest m::bar ... ok\n");
        assert_eq!((c.passed, c.skipped), (1, 1));
    }

    #[test]
    fn should_panic_names() {
        let c = parse("test a::b - should panic ... ok\n");
        assert_eq!(c.passed, 1);
    }
}
