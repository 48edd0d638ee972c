//! The rules across an experiment's fields: durations, sizes, addresses and comparisons parse;
//! names are well formed and unique; what `admission`, `expect`, `recovery` and `abort` refer to
//! exists; each fault's window fits in the drill. Every broken rule is reported, each naming its
//! field's path. What depends on the running system (processes, cgroups, what the kernel allows)
//! is left to admission.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use serde::Serialize;

use super::{
    AbortRule, Admission, EXPERIMENT_SCHEMA, Expectation, ExperimentSpec, Probe, Recovery,
    SpecErrors, Target, Traffic,
};
use crate::{error::Error, plan::MAX_DURATION, spec::FaultSpec};

/// An experiment's timing, from a valid spec: what the runner schedules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Schedule {
    /// Traffic measured before the first fault.
    pub baseline: Duration,
    /// The fault phase's length (offset 0 is its start).
    pub duration: Duration,
    /// Each fault's window, in the order of `faults`.
    pub windows: Vec<Window>,
    /// How long the steady state must hold at admission.
    pub steady_for: Duration,
    /// How long admission waits for the steady state.
    pub admission_timeout: Duration,
    /// The recovery deadline, from the last window's end.
    pub recovery_within: Duration,
    /// How long the steady state must hold to count as recovered.
    pub recovery_hold: Duration,
}

/// When a fault is on, as offsets from the fault phase's start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    /// The fault's name.
    pub name: String,
    /// When it is armed.
    pub start: Duration,
    /// When its deadline ends it.
    pub end: Duration,
}

impl Schedule {
    /// The longest the drill can take once admitted: baseline, fault phase, recovery deadline.
    pub fn longest(&self) -> Duration {
        self.baseline + self.duration + self.recovery_within
    }
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CmpOp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl CmpOp {
    /// Whether `measured OP limit` holds.
    pub fn holds(self, measured: f64, limit: f64) -> bool {
        match self {
            CmpOp::Lt => measured < limit,
            CmpOp::Le => measured <= limit,
            CmpOp::Gt => measured > limit,
            CmpOp::Ge => measured >= limit,
            CmpOp::Eq => measured == limit,
            CmpOp::Ne => measured != limit,
        }
    }
}

/// What a comparison's value measures, which decides how it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// A share, written with `%`, 0-100 (`error_rate`, `fails`).
    Percent,
    /// A latency, written as a duration (`p99`: `200ms`).
    Latency,
    /// A whole count (`acted`).
    Count,
    /// Operations per second (`100`) or a share of the baseline's (`50%`) (`throughput`).
    Throughput,
    /// Any finite number (a Prometheus threshold).
    Number,
}

/// A comparison's value, normalised.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Quantity {
    /// Percent (of operations, of checks, or of the baseline's throughput).
    Percent(f64),
    /// Milliseconds.
    Millis(f64),
    /// A plain number (a count, operations per second, a metric's value).
    Number(f64),
}

/// A parsed comparison such as `>= 10%`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// The operator.
    pub op: CmpOp,
    /// The value compared with.
    pub value: Quantity,
}

/// Parses a comparison (`">= 10%"`, `"<= 200ms"`, `"> 0"`) whose value measures `measure`;
/// the error is the problem, in words.
pub fn parse_comparison(text: &str, measure: Measure) -> Result<Comparison, String> {
    let t = text.trim();
    let (op, rest) = [
        (">=", CmpOp::Ge),
        ("<=", CmpOp::Le),
        ("==", CmpOp::Eq),
        ("!=", CmpOp::Ne),
        (">", CmpOp::Gt),
        ("<", CmpOp::Lt),
    ]
    .into_iter()
    .find_map(|(sym, op)| t.strip_prefix(sym).map(|rest| (op, rest.trim())))
    .ok_or_else(|| format!("{text:?} does not start with <, <=, >, >=, == or !="))?;
    let number = |s: &str| -> Result<f64, String> {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("{:?} is not a number", s.trim()))
    };
    let value = match measure {
        Measure::Percent => {
            let Some(p) = rest.strip_suffix('%') else {
                return Err(format!("{rest:?} is not a percentage (it needs a %)"));
            };
            let p = number(p)?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("{rest} is outside 0-100%"));
            }
            Quantity::Percent(p)
        }
        Measure::Latency => {
            let d = humantime::parse_duration(rest)
                .map_err(|e| format!("{rest:?} is not a duration ({e})"))?;
            Quantity::Millis(d.as_secs_f64() * 1000.0)
        }
        Measure::Count => {
            let n: u64 = rest
                .parse()
                .map_err(|_| format!("{rest:?} is not a whole number"))?;
            Quantity::Number(n as f64)
        }
        Measure::Throughput => match rest.strip_suffix('%') {
            Some(p) => Quantity::Percent(non_negative(number(p)?, rest)?),
            None => Quantity::Number(non_negative(number(rest)?, rest)?),
        },
        Measure::Number => Quantity::Number(number(rest)?),
    };
    Ok(Comparison { op, value })
}

/// Whether `name` is a name: letters, digits, `-`, `_`, `.`, at most 64 bytes, not starting
/// with `-` or `.`.
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn non_negative(v: f64, text: &str) -> Result<f64, String> {
    if v < 0.0 {
        Err(format!("{text} is negative"))
    } else {
        Ok(v)
    }
}

/// How a comparison of `measure` is written, for fixes.
fn comparison_fix(measure: Measure) -> &'static str {
    match measure {
        Measure::Percent => "write an operator and a percentage, e.g. \">= 10%\" (quoted in YAML)",
        Measure::Latency => "write an operator and a duration, e.g. \">= 200ms\" (quoted in YAML)",
        Measure::Count => "write an operator and a whole number, e.g. \">= 1\" (quoted in YAML)",
        Measure::Throughput => {
            "write an operator and operations per second or a share of the baseline, e.g. \
             \">= 100\" or \"<= 50%\" (quoted in YAML)"
        }
        Measure::Number => "write an operator and a number, e.g. \"< 5\" (quoted in YAML)",
    }
}

/// Collects the errors of one validation.
struct Check {
    errors: Vec<Error>,
}

impl Check {
    fn fail(
        &mut self,
        field: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.errors.push(Error::InvalidField {
            field: field.into(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    /// A duration; zero only if `zero_ok`.
    fn duration(&mut self, field: &str, text: &str, zero_ok: bool) -> Option<Duration> {
        let d = match humantime::parse_duration(text.trim()) {
            Ok(d) => d,
            Err(e) => {
                self.fail(
                    field,
                    format!("{text:?} is not a duration ({e})"),
                    "write a number with a unit, e.g. 500ms, 30s, 5m or 1h",
                );
                return None;
            }
        };
        if d.is_zero() && !zero_ok {
            self.fail(field, "is 0s", "give a positive duration, e.g. 30s");
            return None;
        }
        if d > MAX_DURATION {
            self.fail(
                field,
                format!("{text} is longer than the 7-day maximum"),
                "give a shorter duration",
            );
            return None;
        }
        Some(d)
    }

    /// An optional duration with its default.
    fn duration_or(
        &mut self,
        field: &str,
        text: Option<&String>,
        default: Duration,
        zero_ok: bool,
    ) -> Option<Duration> {
        match text {
            Some(t) => self.duration(field, t, zero_ok),
            None => Some(default),
        }
    }

    /// A size (`4k`, `2G`); positive.
    fn size(&mut self, field: &str, text: &str) -> Option<u64> {
        match crate::plan::parse_size("size", text) {
            Ok(0) => {
                self.fail(field, "is 0 bytes", "give a positive size, e.g. 4k");
                None
            }
            Ok(n) => Some(n),
            Err(Error::Invalid { problem, fix, .. }) => {
                self.fail(field, problem, fix);
                None
            }
            Err(e) => {
                self.fail(field, e.to_string(), "write e.g. 4k, 64M or 2G");
                None
            }
        }
    }

    fn comparison(&mut self, field: &str, text: &str, measure: Measure) -> Option<Comparison> {
        match parse_comparison(text, measure) {
            Ok(c) => Some(c),
            Err(problem) => {
                self.fail(field, problem, comparison_fix(measure));
                None
            }
        }
    }

    /// A name (see [`is_name`]).
    fn name(&mut self, field: &str, name: &str) {
        if !is_name(name) {
            self.fail(
                field,
                format!("{name:?} is not a name"),
                "use up to 64 letters, digits, '-', '_' or '.', e.g. pg-fsync-eio",
            );
        }
    }

    /// Names of a list, unique.
    fn unique<'a>(&mut self, list: &str, names: impl Iterator<Item = &'a str>) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, name) in names.enumerate() {
            let field = format!("{list}[{i}].name");
            self.name(&field, name);
            if let Some(first) = seen.get(name) {
                self.fail(
                    field,
                    format!("{name:?} is also {list}[{first}]'s name"),
                    "give each a name of its own",
                );
            } else {
                seen.insert(name, i);
            }
        }
    }

    /// A reference to a name of `list`.
    fn refers(&mut self, field: &str, name: &str, list: &str, names: &[&str]) {
        if names.contains(&name) {
            return;
        }
        // Only the valid names are offered: an invalid one has an error of its own, and may
        // hold anything, a line break too.
        let valid: Vec<&str> = names.iter().copied().filter(|n| is_name(n)).collect();
        let fix = if valid.is_empty() {
            format!("define it under {list} first")
        } else {
            format!("name one of {list}: {}", valid.join(", "))
        };
        self.fail(field, format!("no {list} entry is named {name:?}"), fix);
    }

    /// `HOST:PORT`.
    fn host_port(&mut self, field: &str, text: &str) {
        if text.parse::<SocketAddr>().is_ok() {
            return;
        }
        let fix = "write HOST:PORT, e.g. 127.0.0.1:5432, db.internal:5432 or [::1]:5432";
        let Some((host, port)) = text.rsplit_once(':') else {
            self.fail(field, format!("{text:?} has no port"), fix);
            return;
        };
        let host_ok = !host.is_empty()
            && !host.contains(':')
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !host_ok {
            self.fail(field, format!("{host:?} is not a host"), fix);
        } else if !port.parse::<u16>().is_ok_and(|p| p > 0) {
            self.fail(field, format!("{port:?} is not a port (1-65535)"), fix);
        }
    }

    /// `http://HOST[:PORT][/PATH]`.
    fn http_url(&mut self, field: &str, url: &str) {
        if url.starts_with("https://") {
            self.fail(
                field,
                "https is not supported (chaos has no TLS client)",
                "use http://, or a command probe such as [curl, -fsS, URL]",
            );
            return;
        }
        let fix = "write http://HOST[:PORT]/PATH, e.g. http://127.0.0.1:8080/health";
        let Some(rest) = url.strip_prefix("http://") else {
            self.fail(field, format!("{url:?} is not an http:// URL"), fix);
            return;
        };
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if url.chars().any(char::is_whitespace) {
            self.fail(field, format!("{url:?} holds a space"), fix);
        } else if authority.is_empty() {
            self.fail(field, format!("{url:?} names no host"), fix);
        } else if authority.contains(':') && !authority.ends_with(']') {
            self.host_port(field, authority);
        }
    }

    fn status(&mut self, field: &str, status: Option<u16>) {
        if let Some(s) = status
            && !(100..=599).contains(&s)
        {
            self.fail(
                field,
                format!("{s} is not an HTTP status"),
                "give 100-599, e.g. 200",
            );
        }
    }

    fn command(&mut self, field: &str, run: &[String]) {
        if run.first().is_none_or(|p| p.trim().is_empty()) {
            self.fail(
                field,
                "names no program",
                "give the program and its arguments, e.g. [pg_isready, -h, 127.0.0.1]",
            );
        }
    }

    fn absolute(&mut self, field: &str, path: &str) {
        if !path.starts_with('/') {
            self.fail(
                field,
                format!("{path:?} is not an absolute path"),
                "give a path from /, e.g. /var/lib/postgresql",
            );
        }
    }
}

/// Names defined by the spec, for references.
struct Names<'a> {
    probes: Vec<&'a str>,
    traffic: Vec<&'a str>,
    faults: Vec<&'a str>,
}

impl ExperimentSpec {
    /// Checks the rules across fields and returns the drill's [`Schedule`], or every broken
    /// rule, each one line naming its field's path (`faults[2].after`, `expect[0].p99`).
    pub fn validate(&self) -> Result<Schedule, SpecErrors> {
        let mut c = Check { errors: Vec::new() };
        let names = Names {
            probes: self.probes.iter().map(|p| p.name.as_str()).collect(),
            traffic: self.traffic.iter().map(|t| t.name.as_str()).collect(),
            faults: self.faults.iter().map(|f| f.name.as_str()).collect(),
        };
        if let Some(schema) = &self.schema
            && schema != EXPERIMENT_SCHEMA
        {
            c.fail(
                "schema",
                format!("{schema:?} is not a schema this chaos reads"),
                format!("write {EXPERIMENT_SCHEMA}, or leave it out"),
            );
        }
        c.name("name", &self.name);
        if let Some(target) = &self.target {
            check_target(&mut c, target);
        }
        c.unique("probes", names.probes.iter().copied());
        for (i, p) in self.probes.iter().enumerate() {
            check_probe(&mut c, &format!("probes[{i}]"), p);
        }
        let admission = self.admission.clone().unwrap_or_default();
        let (steady_for, admission_timeout) = check_admission(&mut c, &admission, &names);
        c.unique("traffic", names.traffic.iter().copied());
        for (i, t) in self.traffic.iter().enumerate() {
            check_traffic(&mut c, &format!("traffic[{i}]"), t);
        }
        let baseline = c.duration_or(
            "baseline",
            self.baseline.as_ref(),
            Duration::from_secs(10),
            true,
        );
        let duration = c.duration("duration", &self.duration, false);
        let windows = self.check_faults(&mut c, duration);
        let window_of = |name: Option<&String>| -> Option<Duration> {
            match name {
                Some(n) => windows
                    .iter()
                    .find(|w| &w.name == n)
                    .map(|w| w.end.saturating_sub(w.start)),
                None => {
                    let start = windows.iter().map(|w| w.start).min()?;
                    let end = windows.iter().map(|w| w.end).max()?;
                    Some(end - start)
                }
            }
        };
        for (i, e) in self.expect.iter().enumerate() {
            let path = format!("expect[{i}]");
            check_expectation(&mut c, &path, e, self, &names, false, baseline);
            if let Some(settle) = &e.settle
                && let Some(settle) = c.duration(&format!("{path}.settle"), settle, true)
                && let Some(window) = window_of(e.during.as_ref())
                && settle >= window
            {
                c.fail(
                    format!("{path}.settle"),
                    format!(
                        "leaves nothing of the {} window to measure",
                        humantime::format_duration(window)
                    ),
                    "give a settle time shorter than the window",
                );
            }
        }
        let recovery = self.recovery.clone().unwrap_or_default();
        let (recovery_within, recovery_hold) =
            self.check_recovery(&mut c, &recovery, &names, baseline);
        for (i, a) in self.abort.iter().enumerate() {
            check_abort(&mut c, &format!("abort[{i}]"), a, &names, baseline);
        }
        if !c.errors.is_empty() {
            return Err(SpecErrors(c.errors));
        }
        // Every part parsed when no error was found.
        match (
            baseline,
            duration,
            steady_for,
            admission_timeout,
            recovery_within,
            recovery_hold,
        ) {
            (Some(b), Some(d), Some(s), Some(t), Some(w), Some(h)) => Ok(Schedule {
                baseline: b,
                duration: d,
                windows,
                steady_for: s,
                admission_timeout: t,
                recovery_within: w,
                recovery_hold: h,
            }),
            _ => Err(SpecErrors(vec![Error::InvalidField {
                field: "experiment".into(),
                problem: "its timing did not parse".into(),
                fix: "check baseline, duration, admission and recovery".into(),
            }])),
        }
    }

    /// The faults' rules; the windows of those whose timing parsed.
    fn check_faults(&self, c: &mut Check, drill: Option<Duration>) -> Vec<Window> {
        if self.faults.is_empty() {
            c.fail(
                "faults",
                "lists no fault",
                "add at least one, e.g. {name: loss, duration: 30s, fault: {kind: net, action: \
                 loss, percent: 30, interface: eth0}}",
            );
        }
        c.unique("faults", self.faults.iter().map(|f| f.name.as_str()));
        let mut windows: Vec<Window> = Vec::new();
        for (i, f) in self.faults.iter().enumerate() {
            let path = format!("faults[{i}]");
            let start = c.duration_or(
                &format!("{path}.start"),
                f.start.as_ref(),
                Duration::ZERO,
                true,
            );
            let length = c.duration(&format!("{path}.duration"), &f.duration, false);
            let base = match &f.after {
                None => Some(Duration::ZERO),
                Some(after) => {
                    let earlier = self.faults[..i].iter().position(|g| &g.name == after);
                    match earlier {
                        Some(_) => windows.iter().find(|w| &w.name == after).map(|w| w.end),
                        None => {
                            let problem = if after == &f.name {
                                "a fault cannot follow itself".to_owned()
                            } else if self.faults[i..].iter().any(|g| &g.name == after) {
                                format!("{after:?} is listed later")
                            } else {
                                format!("no fault is named {after:?}")
                            };
                            c.fail(
                                format!("{path}.after"),
                                problem,
                                "name a fault listed before this one (list faults in the order \
                                 they start)",
                            );
                            None
                        }
                    }
                }
            };
            check_fault_body(c, &format!("{path}.fault"), &f.fault, self.target.as_ref());
            let (Some(start), Some(length), Some(base)) = (start, length, base) else {
                continue;
            };
            let window = Window {
                name: f.name.clone(),
                start: base + start,
                end: base + start + length,
            };
            if let Some(drill) = drill
                && window.end > drill
            {
                c.fail(
                    format!("{path}.duration"),
                    format!(
                        "the fault's window ends at {}, after the drill's duration ({})",
                        humantime::format_duration(window.end),
                        humantime::format_duration(drill)
                    ),
                    "shorten it, start it earlier, or lengthen the experiment's duration",
                );
            }
            windows.push(window);
        }
        windows
    }

    /// The recovery section's rules; its deadline and hold time.
    fn check_recovery(
        &self,
        c: &mut Check,
        r: &Recovery,
        names: &Names,
        baseline: Option<Duration>,
    ) -> (Option<Duration>, Option<Duration>) {
        let within = c.duration_or(
            "recovery.within",
            r.within.as_ref(),
            Duration::from_secs(60),
            false,
        );
        let hold = c.duration_or(
            "recovery.hold",
            r.hold.as_ref(),
            Duration::from_secs(5),
            true,
        );
        if let (Some(w), Some(h)) = (within, hold)
            && h > w
        {
            c.fail(
                "recovery.hold",
                format!(
                    "{} is longer than recovery.within ({}): recovery could never be verified",
                    humantime::format_duration(h),
                    humantime::format_duration(w)
                ),
                "give a hold time shorter than within",
            );
        }
        for (k, p) in r.probes.iter().flatten().enumerate() {
            c.refers(&format!("recovery.probes[{k}]"), p, "probes", &names.probes);
        }
        for (i, e) in r.expect.iter().enumerate() {
            check_expectation(
                c,
                &format!("recovery.expect[{i}]"),
                e,
                self,
                names,
                true,
                baseline,
            );
        }
        (within, hold)
    }
}

fn check_target(c: &mut Check, t: &Target) {
    let given: Vec<&str> = [
        ("pid", t.pid.is_some()),
        ("cgroup", t.cgroup.is_some()),
        ("comm", t.comm.is_some()),
        ("container", t.container.is_some()),
        ("address", t.address.is_some()),
    ]
    .into_iter()
    .filter_map(|(n, set)| set.then_some(n))
    .collect();
    match given.len() {
        0 => c.fail(
            "target",
            "names nothing",
            "give one of pid, cgroup, comm, container or address, or leave target out",
        ),
        1 => {}
        _ => c.fail(
            "target",
            format!("gives {}", given.join(" and ")),
            "keep one: a drill has one target (faults may name their own)",
        ),
    }
    if t.pid == Some(0) {
        c.fail(
            "target.pid",
            "0 is not a process",
            "give a process id, e.g. 4242",
        );
    }
    if let Some(cg) = &t.cgroup
        && cg.trim().is_empty()
    {
        c.fail(
            "target.cgroup",
            "is empty",
            "give a cgroup, e.g. system.slice/postgresql.service",
        );
    }
    if let Some(comm) = &t.comm
        && (comm.is_empty() || comm.len() > 15)
    {
        c.fail(
            "target.comm",
            format!("{comm:?} is not a process name (1-15 bytes, as in /proc/PID/comm)"),
            "give the name as `ps -o comm` shows it, e.g. postgres",
        );
    }
    if let Some(id) = &t.container
        && !(12..=64).contains(&id.len())
    {
        c.fail(
            "target.container",
            format!("{id:?} is not a container id"),
            "give 12 to 64 hex digits, as `docker ps` or `crictl ps` shows them",
        );
    } else if let Some(id) = &t.container
        && !id.chars().all(|ch| ch.is_ascii_hexdigit())
    {
        c.fail(
            "target.container",
            format!("{id:?} is not a container id (hex digits only)"),
            "give the id, not the name, as `docker ps` or `crictl ps` shows it",
        );
    }
    if let Some(addr) = &t.address {
        c.host_port("target.address", addr);
    }
}

fn check_probe(c: &mut Check, path: &str, p: &Probe) {
    let kinds: Vec<&str> = [
        ("tcp", p.tcp.is_some()),
        ("http", p.http.is_some()),
        ("command", p.command.is_some()),
        ("prometheus", p.prometheus.is_some()),
    ]
    .into_iter()
    .filter_map(|(n, set)| set.then_some(n))
    .collect();
    match kinds.len() {
        0 => c.fail(
            path,
            "checks nothing",
            "give one of tcp, http, command or prometheus, e.g. tcp: 127.0.0.1:5432",
        ),
        1 => {}
        _ => c.fail(
            path,
            format!("gives {}", kinds.join(" and ")),
            "keep one; define another probe for the other check",
        ),
    }
    if let Some(addr) = &p.tcp {
        c.host_port(&format!("{path}.tcp"), addr);
    }
    if let Some(h) = &p.http {
        c.http_url(&format!("{path}.http.url"), &h.url);
        c.status(&format!("{path}.http.status"), h.status);
        if let Some(l) = &h.max_latency {
            c.duration(&format!("{path}.http.max_latency"), l, false);
        }
    }
    if let Some(cmd) = &p.command {
        c.command(&format!("{path}.command.run"), &cmd.run);
    }
    if let Some(prom) = &p.prometheus {
        c.http_url(&format!("{path}.prometheus.url"), &prom.url);
        if prom.query.trim().is_empty() {
            c.fail(
                format!("{path}.prometheus.query"),
                "is empty",
                "give a PromQL query, e.g. pg_replication_lag_seconds",
            );
        }
        c.comparison(
            &format!("{path}.prometheus.threshold"),
            &prom.threshold,
            Measure::Number,
        );
    }
    if let Some(i) = &p.interval {
        c.duration(&format!("{path}.interval"), i, false);
    }
    if let Some(t) = &p.timeout {
        c.duration(&format!("{path}.timeout"), t, false);
    }
}

/// The admission section's rules; its steady-state time and timeout.
fn check_admission(
    c: &mut Check,
    a: &Admission,
    names: &Names,
) -> (Option<Duration>, Option<Duration>) {
    if let Some(k) = &a.min_kernel {
        let parts: Vec<&str> = k.split('.').collect();
        if !(1..=3).contains(&parts.len())
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.chars().all(|ch| ch.is_ascii_digit()))
        {
            c.fail(
                "admission.min_kernel",
                format!("{k:?} is not a kernel release"),
                "write MAJOR.MINOR, e.g. \"6.1\" (quoted in YAML)",
            );
        }
    }
    for (i, f) in a.free_disk.iter().enumerate() {
        let path = format!("admission.free_disk[{i}]");
        c.absolute(&format!("{path}.path"), &f.path);
        let min = format!("{path}.min");
        match f.min.trim().strip_suffix('%') {
            Some(p) => {
                if !p.trim().parse::<f64>().is_ok_and(|p| p > 0.0 && p <= 100.0) {
                    c.fail(
                        min,
                        format!("{:?} is not a share of the filesystem", f.min),
                        "give a size such as 2G, or a share above 0% and up to 100%, e.g. 10%",
                    );
                }
            }
            None => {
                c.size(&min, &f.min);
            }
        }
    }
    for (k, p) in a.steady_state.iter().flatten().enumerate() {
        c.refers(
            &format!("admission.steady_state[{k}]"),
            p,
            "probes",
            &names.probes,
        );
    }
    let steady_for = c.duration_or(
        "admission.steady_for",
        a.steady_for.as_ref(),
        Duration::from_secs(5),
        true,
    );
    let timeout = c.duration_or(
        "admission.timeout",
        a.timeout.as_ref(),
        Duration::from_secs(60),
        false,
    );
    if let (Some(s), Some(t)) = (steady_for, timeout)
        && s > t
    {
        c.fail(
            "admission.steady_for",
            format!(
                "{} is longer than admission.timeout ({}): admission could never pass",
                humantime::format_duration(s),
                humantime::format_duration(t)
            ),
            "give a steady_for shorter than the timeout",
        );
    }
    (steady_for, timeout)
}

fn check_traffic(c: &mut Check, path: &str, t: &Traffic) {
    let kinds = t.kinds();
    match kinds.len() {
        0 => c.fail(
            path,
            "generates nothing",
            "give one of tcp, http, file or command, e.g. http: {url: http://127.0.0.1:8080/}",
        ),
        1 => {}
        _ => c.fail(
            path,
            format!("gives {}", kinds.join(" and ")),
            "keep one; define another generator for the other load",
        ),
    }
    let once = t.command.as_ref().is_some_and(|cmd| !cmd.repeat);
    if let Some(rate) = t.rate {
        if once {
            c.fail(
                format!("{path}.rate"),
                "a command that runs once has no rate",
                "set command.repeat: true to run it in a loop, or remove rate",
            );
        } else if !(rate.is_finite() && rate > 0.0) {
            c.fail(
                format!("{path}.rate"),
                format!("{rate} is not a rate"),
                "give operations per second above 0, e.g. 100, or leave it out for full speed",
            );
        }
    }
    if let Some(n) = t.concurrency {
        if once {
            c.fail(
                format!("{path}.concurrency"),
                "a command that runs once has no concurrency",
                "set command.repeat: true to run it in a loop, or remove concurrency",
            );
        } else if n == 0 {
            c.fail(
                format!("{path}.concurrency"),
                "0 workers generate nothing",
                "give 1 or more, e.g. 4",
            );
        }
    }
    if let Some(timeout) = &t.timeout {
        c.duration(&format!("{path}.timeout"), timeout, false);
    }
    if let Some(cg) = &t.cgroup
        && cg.trim().is_empty()
    {
        c.fail(
            format!("{path}.cgroup"),
            "is empty",
            "give a cgroup path, e.g. chaos-drill/load",
        );
    }
    if let Some(tcp) = &t.tcp {
        c.host_port(&format!("{path}.tcp.address"), &tcp.address);
    }
    if let Some(h) = &t.http {
        c.http_url(&format!("{path}.http.url"), &h.url);
        c.status(&format!("{path}.http.status"), h.status);
    }
    if let Some(f) = &t.file {
        c.absolute(&format!("{path}.file.path"), &f.path);
        let block = f.block_size.as_ref().map_or(Some(4096), |b| {
            c.size(&format!("{path}.file.block_size"), b)
        });
        let file = f.file_size.as_ref().map_or(Some(64 << 20), |s| {
            c.size(&format!("{path}.file.file_size"), s)
        });
        if let (Some(b), Some(s)) = (block, file)
            && b > s
        {
            c.fail(
                format!("{path}.file.file_size"),
                format!("{s} bytes is smaller than one block ({b} bytes)"),
                "give a file_size of at least block_size, e.g. 64M",
            );
        }
    }
    if let Some(cmd) = &t.command {
        c.command(&format!("{path}.command.run"), &cmd.run);
    }
}

/// A fault body's rules in a drill: its duration is the step's, and it has a target.
fn check_fault_body(c: &mut Check, path: &str, fault: &FaultSpec, target: Option<&Target>) {
    let duration = match fault {
        FaultSpec::Net(s) => s.duration.is_some(),
        FaultSpec::Syscall(s) => s.duration.is_some(),
        FaultSpec::Io(s) => s.duration.is_some(),
        FaultSpec::Disk(s) => s.duration.is_some(),
    };
    if duration {
        c.fail(
            format!("{path}.duration"),
            "a drill's fault is on for its step's duration",
            format!(
                "remove it and give the window as {}.duration",
                path.trim_end_matches(".fault")
            ),
        );
    }
    // A syscall fault needs a target; the experiment's process-like targets are inherited.
    if let FaultSpec::Syscall(s) = fault {
        let own = s.pid.is_some() || s.cgroup.is_some() || s.comm.is_some();
        let inherited = target.is_some_and(|t| {
            t.pid.is_some() || t.cgroup.is_some() || t.comm.is_some() || t.container.is_some()
        });
        if !own && !inherited {
            c.fail(
                path,
                "a syscall fault needs a target, and the experiment's target names no process",
                "give the fault a pid, cgroup or comm, or the experiment a target with one",
            );
        }
    }
}

/// One metric of an expectation or abort rule: its field, its text, the subject it applies
/// to and how its value is written.
pub(super) struct Metric<'a> {
    pub(super) field: &'static str,
    pub(super) text: Option<&'a String>,
    pub(super) subject: &'static str,
    pub(super) measure: Measure,
}

pub(super) fn metrics_of(e: &Expectation) -> [Metric<'_>; 8] {
    let m = |field, text, subject, measure| Metric {
        field,
        text,
        subject,
        measure,
    };
    [
        m(
            "error_rate",
            e.error_rate.as_ref(),
            "traffic",
            Measure::Percent,
        ),
        m(
            "throughput",
            e.throughput.as_ref(),
            "traffic",
            Measure::Throughput,
        ),
        m("p50", e.p50.as_ref(), "traffic", Measure::Latency),
        m("p90", e.p90.as_ref(), "traffic", Measure::Latency),
        m("p99", e.p99.as_ref(), "traffic", Measure::Latency),
        m(
            "max_latency",
            e.max_latency.as_ref(),
            "traffic",
            Measure::Latency,
        ),
        m("fails", e.fails.as_ref(), "probe", Measure::Percent),
        m("acted", e.acted.as_ref(), "fault", Measure::Count),
    ]
}

/// The metrics a subject can be measured by, for fixes.
fn metric_names(subject: &str) -> &'static str {
    match subject {
        "traffic" => "error_rate, throughput, p50, p90, p99 or max_latency",
        "probe" => "fails",
        _ => "acted",
    }
}

/// The subject (`traffic`, `probe`, `fault`) given, and its name; refuses none or several.
fn subject<'a>(
    c: &mut Check,
    path: &str,
    given: &[(&'static str, Option<&'a String>)],
) -> Option<(&'static str, &'a String)> {
    let set: Vec<(&'static str, &'a String)> = given
        .iter()
        .filter_map(|(k, v)| v.map(|v| (*k, v)))
        .collect();
    let kinds: Vec<&str> = given.iter().map(|(k, _)| *k).collect();
    match set.as_slice() {
        [one] => Some(*one),
        [] => {
            c.fail(
                path,
                "names no subject",
                format!("give one of {} (a name defined above)", kinds.join(", ")),
            );
            None
        }
        _ => {
            let names: Vec<&str> = set.iter().map(|(k, _)| *k).collect();
            c.fail(
                path,
                format!("names {}", names.join(" and ")),
                "keep one subject; write another entry for the other",
            );
            None
        }
    }
}

fn check_expectation(
    c: &mut Check,
    path: &str,
    e: &Expectation,
    spec: &ExperimentSpec,
    names: &Names,
    recovery: bool,
    baseline: Option<Duration>,
) {
    if recovery {
        for (field, given) in [
            ("during", e.during.is_some()),
            ("settle", e.settle.is_some()),
            ("fault", e.fault.is_some()),
        ] {
            if given {
                c.fail(
                    format!("{path}.{field}"),
                    "does not apply after recovery",
                    "remove it: recovery conditions are measured over recovery.hold, once the \
                     faults are off",
                );
            }
        }
    } else if let Some(d) = &e.during {
        c.refers(&format!("{path}.during"), d, "faults", &names.faults);
    }
    let given: Vec<(&'static str, Option<&String>)> = if recovery {
        vec![("traffic", e.traffic.as_ref()), ("probe", e.probe.as_ref())]
    } else {
        vec![
            ("traffic", e.traffic.as_ref()),
            ("probe", e.probe.as_ref()),
            ("fault", e.fault.as_ref()),
        ]
    };
    let subject = subject(c, path, &given);
    if let Some((kind, name)) = subject {
        let (list, defined) = match kind {
            "traffic" => ("traffic", &names.traffic),
            "probe" => ("probes", &names.probes),
            _ => ("faults", &names.faults),
        };
        c.refers(&format!("{path}.{kind}"), name, list, defined);
    }
    let metrics = metrics_of(e);
    if metrics.iter().all(|m| m.text.is_none()) {
        let fix = match subject {
            Some((kind, _)) => format!("add one of {}", metric_names(kind)),
            None => "add a metric, e.g. error_rate: \">= 10%\"".to_owned(),
        };
        c.fail(path, "measures nothing", fix);
    }
    let generator = subject
        .filter(|(k, _)| *k == "traffic")
        .and_then(|(_, n)| spec.traffic.iter().find(|t| &t.name == n));
    for m in metrics {
        let Some(text) = m.text else { continue };
        let field = format!("{path}.{}", m.field);
        if let Some((kind, _)) = subject
            && kind != m.subject
        {
            c.fail(
                field,
                format!(
                    "measures a {}, and this entry's subject is {kind}",
                    m.subject
                ),
                format!("use {} for {kind}", metric_names(kind)),
            );
            continue;
        }
        if let Some(t) = generator
            && !t.measures_operations()
        {
            c.fail(
                field,
                format!(
                    "traffic {:?} runs its command once, so it has no per-operation measurements",
                    t.name
                ),
                "set command.repeat: true on it, or measure the service with a probe",
            );
            continue;
        }
        relative_throughput(c, &field, text, m.measure, baseline);
    }
}

/// A comparison, and a throughput relative to a baseline that exists.
fn relative_throughput(
    c: &mut Check,
    field: &str,
    text: &str,
    measure: Measure,
    baseline: Option<Duration>,
) {
    if let Some(Comparison {
        value: Quantity::Percent(_),
        ..
    }) = c.comparison(field, text, measure)
        && measure == Measure::Throughput
        && baseline == Some(Duration::ZERO)
    {
        c.fail(
            field,
            "a share of the baseline's throughput, and the baseline is 0s",
            "give a baseline, e.g. baseline: 10s, or operations per second, e.g. \">= 100\"",
        );
    }
}

fn check_abort(
    c: &mut Check,
    path: &str,
    a: &AbortRule,
    names: &Names,
    baseline: Option<Duration>,
) {
    let subject = subject(
        c,
        path,
        &[("probe", a.probe.as_ref()), ("traffic", a.traffic.as_ref())],
    );
    let traffic_metrics = [
        ("error_rate", a.error_rate.as_ref(), Measure::Percent),
        ("throughput", a.throughput.as_ref(), Measure::Throughput),
        ("p99", a.p99.as_ref(), Measure::Latency),
    ];
    match subject {
        Some(("probe", name)) => {
            c.refers(&format!("{path}.probe"), name, "probes", &names.probes);
            match &a.down_for {
                Some(d) => {
                    c.duration(&format!("{path}.down_for"), d, false);
                }
                None => c.fail(
                    path,
                    "says how long the probe may be down in no field",
                    "add down_for, e.g. down_for: 30s",
                ),
            }
            for (field, given) in traffic_metrics
                .iter()
                .map(|(f, t, _)| (*f, t.is_some()))
                .chain([("for", a.for_.is_some())])
            {
                if given {
                    c.fail(
                        format!("{path}.{field}"),
                        "applies to traffic, and this rule's subject is a probe",
                        "remove it, or write another rule for the traffic",
                    );
                }
            }
        }
        Some((_, name)) => {
            c.refers(&format!("{path}.traffic"), name, "traffic", &names.traffic);
            if a.down_for.is_some() {
                c.fail(
                    format!("{path}.down_for"),
                    "applies to a probe, and this rule's subject is traffic",
                    "use for: with error_rate, throughput or p99",
                );
            }
            if traffic_metrics.iter().all(|(_, t, _)| t.is_none()) {
                c.fail(
                    path,
                    "sets no limit",
                    "add error_rate, throughput or p99, e.g. error_rate: \"> 50%\"",
                );
            }
            for (field, text, measure) in traffic_metrics {
                if let Some(text) = text {
                    relative_throughput(c, &format!("{path}.{field}"), text, measure, baseline);
                }
            }
            if let Some(f) = &a.for_ {
                c.duration(&format!("{path}.for"), f, false);
            }
        }
        None => {}
    }
}
