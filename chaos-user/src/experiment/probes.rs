//! A drill's probes (`probes` in the spec, `docs/experiments.md`): each runs on a thread of the
//! runner, checking the service every `interval` (the time between the starts of two checks)
//! and appending every check, up or down with why in a few words, to its [`CheckLog`].

use std::{
    process::Stdio,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{
    CmpOp, Measure, Probe, Quantity, parse_comparison,
    record::{Check, CheckLog, Clock},
    traffic::{
        command::{self, Ended},
        http, human, tcp,
    },
};
use crate::error::{Error, Result};

/// Time between two checks when the spec gives no `interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a check may take when the spec gives no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long [`ProbeRun::stop`] waits for a check in progress before leaving its thread to end
/// by itself (it records nothing more).
const STOP_WAIT: Duration = Duration::from_millis(250);

fn duration(field: &'static str, text: Option<&String>, default: Duration) -> Result<Duration> {
    match text {
        None => Ok(default),
        Some(t) => humantime::parse_duration(t.trim()).map_err(|e| {
            Error::invalid(
                field,
                format!("{t:?} is not a duration ({e})"),
                "write a number with a unit, e.g. 1s",
            )
        }),
    }
}

/// What one probe checks, parsed from its (valid) spec.
#[derive(Debug)]
enum Checker {
    Tcp(String),
    Http {
        agent: ureq::Agent,
        spec: super::HttpProbe,
        max_latency: Duration,
    },
    Command {
        run: Vec<String>,
        exit_code: i32,
    },
    Prometheus {
        agent: ureq::Agent,
        url: String,
        query: String,
        threshold: String,
        op: CmpOp,
        limit: f64,
    },
}

/// A probe ready to check: its kind, timeout and checker.
#[derive(Debug)]
struct Prepared {
    kind: &'static str,
    interval: Duration,
    timeout: Duration,
    checker: Checker,
}

fn prepare(spec: &Probe) -> Result<Prepared> {
    let interval = duration("interval", spec.interval.as_ref(), DEFAULT_INTERVAL)?;
    let timeout = duration("timeout", spec.timeout.as_ref(), DEFAULT_TIMEOUT)?;
    let (kind, checker) = if let Some(addr) = &spec.tcp {
        ("tcp", Checker::Tcp(addr.clone()))
    } else if let Some(h) = &spec.http {
        let max_latency = duration("http.max_latency", h.max_latency.as_ref(), timeout)?;
        (
            "http",
            Checker::Http {
                agent: http::agent(timeout),
                spec: h.clone(),
                max_latency,
            },
        )
    } else if let Some(c) = &spec.command {
        (
            "command",
            Checker::Command {
                run: c.run.clone(),
                exit_code: c.exit_code.unwrap_or(0),
            },
        )
    } else if let Some(p) = &spec.prometheus {
        let cmp = parse_comparison(&p.threshold, Measure::Number).map_err(|problem| {
            Error::invalid(
                "prometheus.threshold",
                problem,
                "write an operator and a number, e.g. \"< 5\"",
            )
        })?;
        let limit = match cmp.value {
            Quantity::Number(v) | Quantity::Percent(v) | Quantity::Millis(v) => v,
        };
        (
            "prometheus",
            Checker::Prometheus {
                agent: http::agent(timeout),
                url: format!("{}/api/v1/query", p.url.trim_end_matches('/')),
                query: p.query.clone(),
                threshold: p.threshold.trim().to_owned(),
                op: cmp.op,
                limit,
            },
        )
    } else {
        return Err(Error::invalid(
            "probes",
            format!("probe {:?} checks nothing", spec.name),
            "give one of tcp, http, command or prometheus",
        ));
    };
    Ok(Prepared {
        kind,
        interval,
        timeout,
        checker,
    })
}

/// A check's outcome before it is stamped: up, or down and why.
struct Outcome {
    ok: bool,
    value: Option<f64>,
    detail: Option<String>,
}

impl Outcome {
    fn up() -> Outcome {
        Outcome {
            ok: true,
            value: None,
            detail: None,
        }
    }

    fn down(detail: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            value: None,
            detail: Some(detail.into()),
        }
    }
}

/// The first sample's value of a Prometheus instant query's answer (`vector` or `scalar`).
fn prometheus_value(body: &str) -> std::result::Result<f64, String> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|_| "the answer is not JSON".to_owned())?;
    if v["status"] != "success" {
        let error = v["error"].as_str().unwrap_or("no reason given");
        return Err(format!("query failed: {error}"));
    }
    let data = &v["data"];
    let sample = match data["resultType"].as_str() {
        Some("vector") => &data["result"][0]["value"],
        Some("scalar") => &data["result"],
        Some(other) => return Err(format!("a {other} result (give an instant query)")),
        None => return Err("the answer has no result".into()),
    };
    if sample.is_null() {
        return Err("no sample".into());
    }
    let text = sample[1]
        .as_str()
        .ok_or_else(|| "the sample has no value".to_owned())?;
    text.parse::<f64>()
        .map_err(|_| format!("the sample's value {text:?} is not a number"))
}

impl Prepared {
    /// One check; `None` if `stop` cut it short.
    fn check(&self, stop: &AtomicBool) -> Option<Check> {
        let started = Instant::now();
        let outcome = self.outcome(stop)?;
        Some(Check {
            t_ms: 0,
            ok: outcome.ok,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            value: outcome.value,
            detail: outcome.detail,
        })
    }

    fn outcome(&self, stop: &AtomicBool) -> Option<Outcome> {
        let timeout = self.timeout;
        Some(match &self.checker {
            Checker::Tcp(addr) => match tcp::connect(addr, timeout) {
                Ok(_) => Outcome::up(),
                Err(e) => Outcome::down(e),
            },
            Checker::Http {
                agent,
                spec,
                max_latency,
            } => {
                let started = Instant::now();
                match http::exchange(agent, spec.method, &spec.url, None, timeout, false) {
                    Err(e) => Outcome::down(e),
                    Ok((status, _)) if !http::status_ok(status, spec.status) => {
                        Outcome::down(format!("status {status}"))
                    }
                    Ok(_) if started.elapsed() > *max_latency => Outcome::down(format!(
                        "slow: {} over {}",
                        human(started.elapsed()),
                        human(*max_latency)
                    )),
                    Ok(_) => Outcome::up(),
                }
            }
            Checker::Command { run, exit_code } => {
                let mut child = match command::spawn(run, Stdio::null()) {
                    Ok(c) => c,
                    Err(e) => return Some(Outcome::down(e)),
                };
                match command::wait(&mut child, Some(Instant::now() + timeout), stop) {
                    Ended::Stopped => return None,
                    Ended::TimedOut => {
                        Outcome::down(format!("timed out after {}, killed", human(timeout)))
                    }
                    Ended::Exited(s) if s.code() == Some(*exit_code) => Outcome::up(),
                    Ended::Exited(s) => Outcome::down(command::describe_status(s)),
                }
            }
            Checker::Prometheus {
                agent,
                url,
                query,
                threshold,
                op,
                limit,
            } => {
                let answer = agent
                    .get(url)
                    .query("query", query)
                    .call()
                    .map_err(|e| http::describe(&e, timeout))
                    .and_then(|mut r| {
                        let status = r.status().as_u16();
                        let body = r
                            .body_mut()
                            .read_to_string()
                            .map_err(|e| http::describe(&e, timeout))?;
                        Ok((status, body))
                    });
                match answer {
                    Err(e) => Outcome::down(e),
                    // Prometheus answers a bad query with 400 and a JSON error.
                    Ok((status, body)) if !(200..300).contains(&status) => {
                        match prometheus_value(&body) {
                            Err(e) if e.starts_with("query failed") => Outcome::down(e),
                            _ => Outcome::down(format!("status {status}")),
                        }
                    }
                    Ok((_, body)) => match prometheus_value(&body) {
                        Err(e) => Outcome::down(e),
                        Ok(v) => Outcome {
                            ok: op.holds(v, *limit),
                            value: Some(v),
                            detail: (!op.holds(v, *limit))
                                .then(|| format!("value {v} does not meet {threshold}")),
                        },
                    },
                }
            }
        })
    }
}

/// Checks probe `spec` once (a valid spec; `t_ms` 0). A spec that cannot be checked gives a
/// failed check saying why.
pub fn check_once(spec: &Probe) -> Check {
    let never = AtomicBool::new(false);
    match prepare(spec) {
        Ok(p) => p.check(&never).unwrap_or_else(|| down_check("stopped")),
        Err(e) => down_check(&e.to_string()),
    }
}

fn down_check(detail: &str) -> Check {
    Check {
        t_ms: 0,
        ok: false,
        latency_ms: 0.0,
        value: None,
        detail: Some(detail.to_owned()),
    }
}

/// The stop signal of a probe's thread: a flag, and a condition variable to end its wait
/// between checks at once.
#[derive(Debug, Default)]
struct Stop {
    flag: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Stop {
    /// Waits until `until` or a stop; true if stopped.
    fn wait_until(&self, until: Instant) -> bool {
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.flag.load(Ordering::Relaxed) {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            guard = self
                .wake
                .wait_timeout(guard, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn set(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.flag.store(true, Ordering::Relaxed);
        self.wake.notify_all();
    }
}

/// One running probe: a thread checking every `interval`, its checks stamped on the drill's
/// clock.
#[derive(Debug)]
pub struct ProbeRun {
    name: String,
    kind: &'static str,
    log: Arc<CheckLog>,
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
}

impl ProbeRun {
    /// Starts probe `spec` (validated): its first check at once, then one every `interval`
    /// (default 1 s) from the start of the previous one, or right after it when a check takes
    /// longer than that.
    pub fn start(spec: &Probe, clock: Clock) -> Result<ProbeRun> {
        let prepared = prepare(spec)?;
        let kind = prepared.kind;
        let log = Arc::new(CheckLog::default());
        let stop = Arc::new(Stop::default());
        let thread = {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("probe-{}", spec.name))
                .spawn(move || {
                    loop {
                        let started = Instant::now();
                        let t_ms = clock.now_ms();
                        let Some(mut check) = prepared.check(&stop.flag) else {
                            break;
                        };
                        if stop.flag.load(Ordering::Relaxed) {
                            break;
                        }
                        check.t_ms = t_ms;
                        log.push(check);
                        if stop.wait_until(started + prepared.interval) {
                            break;
                        }
                    }
                })
                .map_err(|e| Error::io(format!("starting probe {}", spec.name), e))?
        };
        Ok(ProbeRun {
            name: spec.name.clone(),
            kind,
            log,
            stop,
            thread: Some(thread),
        })
    }

    /// The probe's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its kind: `tcp`, `http`, `command` or `prometheus`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The checks so far.
    pub fn log(&self) -> &Arc<CheckLog> {
        &self.log
    }

    /// Stops checking: no check is recorded after this returns. Returns within about 250 ms: a
    /// command check in progress is killed; a network check still running then is left to end
    /// by itself within its timeout, unrecorded. Idempotent.
    pub fn stop(&mut self) {
        self.stop.set();
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + STOP_WAIT;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}

impl Drop for ProbeRun {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;
    use crate::experiment::{
        CommandProbe, HttpProbe, PrometheusProbe,
        traffic::http::tests::{seen, url},
    };

    fn probe() -> Probe {
        Probe {
            name: "p".into(),
            ..Probe::default()
        }
    }

    fn closed_port() -> String {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    }

    /// The address of the shared test server (a port something listens on).
    fn listening() -> String {
        url("").trim_start_matches("http://").to_owned()
    }

    #[test]
    fn tcp_is_up_while_something_listens() {
        let up = check_once(&Probe {
            tcp: Some(listening()),
            ..probe()
        });
        assert!(up.ok, "{:?}", up.detail);
        assert_eq!(up.t_ms, 0);
        let down = check_once(&Probe {
            tcp: Some(closed_port()),
            ..probe()
        });
        assert!(!down.ok);
        assert_eq!(down.detail.as_deref(), Some("connection refused"));
    }

    #[test]
    fn http_judges_status_and_latency() {
        let http = |path: &str, status, max_latency: Option<&str>| Probe {
            http: Some(HttpProbe {
                url: url(path),
                status,
                max_latency: max_latency.map(str::to_owned),
                ..HttpProbe::default()
            }),
            ..probe()
        };
        assert!(check_once(&http("/health/200/0", None, None)).ok);
        let down = check_once(&http("/health/503/0", None, None));
        assert_eq!(
            (down.ok, down.detail.as_deref()),
            (false, Some("status 503"))
        );
        assert!(check_once(&http("/health/503/0", Some(503), None)).ok);

        let c = check_once(&http("/health/200/150", None, Some("50ms")));
        assert!(!c.ok && c.latency_ms >= 150.0);
        assert!(c.detail.unwrap().starts_with("slow: "));
        // Slower than the timeout itself.
        let p = Probe {
            timeout: Some("50ms".into()),
            ..http("/health/200/150", None, None)
        };
        let c = check_once(&p);
        assert_eq!(c.detail.as_deref(), Some("timed out after 50ms"));
        assert!(c.latency_ms < 140.0, "{}", c.latency_ms);
    }

    #[test]
    fn command_exit_codes_and_timeouts() {
        let cmd = |run: &[&str], exit_code| Probe {
            command: Some(CommandProbe {
                run: run.iter().map(|s| s.to_string()).collect(),
                exit_code,
            }),
            timeout: Some("200ms".into()),
            ..probe()
        };
        assert!(check_once(&cmd(&["true"], None)).ok);
        let c = check_once(&cmd(&["false"], None));
        assert_eq!((c.ok, c.detail.as_deref()), (false, Some("exit code 1")));
        assert!(check_once(&cmd(&["false"], Some(1))).ok);
        let t = Instant::now();
        let c = check_once(&cmd(&["sleep", "5"], None));
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(c.detail.as_deref(), Some("timed out after 200ms, killed"));
        let c = check_once(&cmd(&["/nonexistent/chaos-nothing"], None));
        assert!(!c.ok && c.detail.unwrap().starts_with("cannot run "));
    }

    fn prom(url: &str, threshold: &str) -> Probe {
        Probe {
            prometheus: Some(PrometheusProbe {
                url: url.to_owned(),
                query: "rate(errors_total[1m]) > 0".into(),
                threshold: threshold.into(),
            }),
            ..probe()
        }
    }

    #[test]
    fn prometheus_compares_the_first_sample() {
        let base = url("/prom-vector");
        let c = check_once(&prom(&base, "< 5"));
        assert_eq!(c.value, Some(7.5));
        assert!(!c.ok);
        assert_eq!(c.detail.as_deref(), Some("value 7.5 does not meet < 5"));
        assert_eq!(
            seen("prom-vector").last_line,
            "GET /prom-vector/api/v1/query?query=rate(errors_total%5B1m%5D)%20%3E%200 HTTP/1.1"
        );
        let c = check_once(&prom(&format!("{base}/"), ">= 7.5"));
        assert!(c.ok && c.detail.is_none() && c.value == Some(7.5));

        let c = check_once(&prom(&url("/prom-empty"), "< 5"));
        assert_eq!(
            (c.ok, c.value, c.detail.as_deref()),
            (false, None, Some("no sample"))
        );
        assert!(check_once(&prom(&url("/prom-scalar"), "== 2")).ok);
        let c = check_once(&prom(&url("/prom-down/503"), "== 2"));
        assert_eq!(c.detail.as_deref(), Some("status 503"));
    }

    #[test]
    fn a_probe_run_checks_every_interval_and_stops_promptly() {
        let spec = Probe {
            tcp: Some(listening()),
            interval: Some("100ms".into()),
            ..probe()
        };
        let clock = Clock::start();
        let mut run = ProbeRun::start(&spec, clock).unwrap();
        assert_eq!((run.name(), run.kind()), ("p", "tcp"));
        std::thread::sleep(Duration::from_millis(550));
        let t = Instant::now();
        run.stop();
        assert!(t.elapsed() < Duration::from_millis(100));
        let checks = run.log().checks();
        assert!((5..=7).contains(&checks.len()), "{} checks", checks.len());
        assert!(checks.iter().all(|c| c.ok));
        for pair in checks.windows(2) {
            let gap = pair[1].t_ms - pair[0].t_ms;
            assert!((80..=150).contains(&gap), "checks {gap} ms apart");
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            run.log().checks().len(),
            checks.len(),
            "no check after stop"
        );
        run.stop();
    }

    #[test]
    fn stopping_kills_a_command_check_in_progress() {
        let spec = Probe {
            command: Some(CommandProbe {
                run: vec!["sleep".into(), "10".into()],
                exit_code: None,
            }),
            timeout: Some("10s".into()),
            ..probe()
        };
        let mut run = ProbeRun::start(&spec, Clock::start()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        run.stop();
        assert!(t.elapsed() < Duration::from_millis(200));
        assert!(run.log().checks().is_empty());
    }
}
