//! The risk catalog end to end: `chaos catalog list|show`, a scenario run with `chaos run
//! --scenario ID --set ...` on the demo's workload (passing, and leaving nothing behind),
//! parameters missing or unknown refused with exit 2 naming them and nothing run, and the same
//! through the daemon (`GET /v1/catalog`, `POST /v1/catalog/{id}/run`).
//!
//! The scenarios run are `generic-dependency-timeout` and `generic-connect-refused`: a service (a shell loop in the demo's cgroup
//! connecting to the demo's echo server every 200 ms, its "dependency") loses its packets to
//! the dependency, while its own endpoint (a listener of this test on loopback) must stay up.

use std::{
    io::Write,
    net::TcpListener,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bpf_tests::{
    Oracle,
    chaos::Chaos,
    daemon::{Daemon, TempDir},
    skip_on_err,
    world::ChildProcess,
};
use chaos_user::demo::World;
use serde_json::{Value, json};

const SCENARIO: &str = "generic-dependency-timeout";

/// A TCP endpoint on loopback answering `ok` to every connection, until dropped.
struct Endpoint {
    addr: String,
    stop: Arc<AtomicBool>,
}

impl Endpoint {
    fn new() -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the endpoint");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("its address").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.write_all(b"ok\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Endpoint { addr, stop }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Setup {
    chaos: Chaos,
    world: World,
    endpoint: Endpoint,
    _service: ChildProcess,
    oracle: Oracle,
    before: bpf_tests::Snapshot,
    dir: TempDir,
}

fn setup(name: &str) -> Result<Setup, String> {
    bpf_tests::skip::require_netns()?;
    bpf_tests::skip::require_loop()?;
    let chaos = Chaos::from_env()?;
    bpf_tests::chaos::tc_requirement(&chaos, "any")?;
    let world = World::new().map_err(|e| format!("building the workload: {e}"))?;
    let (host, port) = world
        .server()
        .rsplit_once(':')
        .map(|(h, p)| (h.to_owned(), p.to_owned()))
        .unwrap();
    // The service: connects to its dependency (the echo server) again and again, each attempt
    // given up after 1 s, from the demo's cgroup.
    let mut cmd = Command::new("bash");
    cmd.args([
        "-c",
        &format!(
            "while :; do timeout 1 bash -c 'exec 3<>/dev/tcp/{host}/{port}' 2>/dev/null; sleep 0.2; done"
        ),
    ]);
    let service = ChildProcess::spawn(cmd).map_err(|e| format!("starting the service: {e}"))?;
    let v2 = bpf_tests::world::cgroup2_mount().ok_or("no cgroup2 mount")?;
    std::fs::write(
        v2.join(&world.cgroup).join("cgroup.procs"),
        service.pid().to_string(),
    )
    .map_err(|e| format!("moving the service into {}: {e}", world.cgroup))?;
    let oracle = Oracle::new();
    let before = oracle.snapshot();
    Ok(Setup {
        chaos,
        world,
        endpoint: Endpoint::new(),
        _service: service,
        oracle,
        before,
        dir: TempDir::new(name),
    })
}

impl Setup {
    /// The scenario's parameters for this world, as `(name, value)`.
    fn params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("cgroup", self.world.cgroup.clone()),
            ("dependency_ip", self.world.server_addr().to_string()),
            (
                "dependency_port",
                self.world.server().rsplit_once(':').unwrap().1.to_owned(),
            ),
            ("health_addr", self.endpoint.addr.clone()),
            ("window", "5s".to_owned()),
        ]
    }

    /// Nothing of chaos left: no fault, no chaos process, no kernel object, no drill lock.
    fn assert_clean(&self) {
        bpf_tests::demo::assert_clean(&self.chaos, &self.oracle, &self.before);
    }
}

fn catalog_json(chaos: &Chaos, args: &[&str]) -> Value {
    let out = chaos
        .run(args)
        .unwrap_or_else(|f| panic!("chaos {args:?}: {f:?}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("chaos {args:?} printed ({e}): {out}"))
}

#[test]
fn the_catalog_lists_and_shows_its_scenarios() {
    let chaos = skip_on_err!(Chaos::from_env());
    let all = catalog_json(&chaos, &["catalog", "list", "--json"]);
    let all = all.as_array().expect("a list");
    assert!(all.len() >= 25, "{} scenarios", all.len());
    let ids: std::collections::BTreeSet<&str> =
        all.iter().map(|s| s["id"].as_str().expect("id")).collect();
    assert_eq!(ids.len(), all.len(), "ids are not unique");
    for s in all {
        assert!(
            s["parameters"].is_array() && s["experiment"]["faults"].is_array(),
            "{s}"
        );
        assert!(!s["prevention"].as_array().unwrap().is_empty(), "{s}");
    }
    let redis = catalog_json(&chaos, &["catalog", "list", "--domain", "redis", "--json"]);
    let redis = redis.as_array().unwrap();
    assert!(redis.len() >= 3 && redis.iter().all(|s| s["domain"] == "redis"));
    let table = chaos.run(&["catalog", "list"]).expect("catalog list");
    assert!(
        table.starts_with("ID") && table.contains(SCENARIO),
        "{table}"
    );
    assert_eq!(table.lines().count(), all.len() + 1, "{table}");
    let bad = chaos
        .run(&["catalog", "list", "--domain", "nosql"])
        .unwrap_err();
    assert!(bad.stderr.contains("oceanbase, mysql"), "{}", bad.stderr);

    let one = catalog_json(&chaos, &["catalog", "show", SCENARIO, "--json"]);
    assert_eq!(one["id"], SCENARIO);
    let text = chaos
        .run(&["catalog", "show", SCENARIO])
        .expect("catalog show");
    for needle in [
        "Risk",
        "Parameters (--set NAME=VALUE)",
        "dependency_ip",
        "Prevention",
        "Emergency",
        "kind: net",
        "chaos run --scenario generic-dependency-timeout --set cgroup=",
    ] {
        assert!(text.contains(needle), "{needle} not in:\n{text}");
    }
    let unknown = chaos.run(&["catalog", "show", "no-such"]).unwrap_err();
    assert!(unknown.stderr.contains(SCENARIO), "{}", unknown.stderr);
}

#[test]
fn a_scenario_with_parameters_missing_or_wrong_is_refused_and_nothing_runs() {
    let chaos = skip_on_err!(Chaos::from_env());
    let out = chaos.output(&[
        "run",
        "--scenario",
        SCENARIO,
        "--set",
        "cgroup=chaos-none",
        "--set",
        "dependency_port=99999",
        "--set",
        "colour=red",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for needle in [
        "invalid set.colour: this scenario has no such parameter",
        "invalid set.dependency_ip: the parameter is required",
        "--set dependency_ip=",
        "invalid set.dependency_port: `99999` is not a port",
        "invalid set.health_addr",
        "window (duration, default 30s)",
    ] {
        assert!(stderr.contains(needle), "{needle} not in:\n{stderr}");
    }
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = chaos.output(&["run", "--scenario", "no-such"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(SCENARIO));
    assert_eq!(chaos.list().expect("chaos list"), json!([]));
}

impl Setup {
    /// `chaos run --scenario id` with `params`; the drill must pass with every expectation, its
    /// fault must have acted, and nothing may be left. Returns the packets or calls acted on.
    fn run_scenario(&self, id: &str, params: &[(&str, String)]) -> u64 {
        let report_dir = self.dir.0.join(format!("report-{id}"));
        let mut args: Vec<String> = vec![
            "run".into(),
            "--scenario".into(),
            id.into(),
            "--json".into(),
            "--report-dir".into(),
            report_dir.display().to_string(),
        ];
        for (k, v) in params {
            args.extend(["--set".into(), format!("{k}={v}")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let start = Instant::now();
        let out = self.chaos.output(&args);
        let took = start.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let report: Value = std::fs::read(report_dir.join("report.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        assert_eq!(out.status.code(), Some(0), "{stderr}\n{report}");
        assert_eq!(report["verdict"], "passed", "{report}");
        assert_eq!(report["experiment"]["name"], id);
        assert_eq!(report["experiment"]["source"], format!("catalog:{id}"));
        let fault = &report["faults"][0];
        assert_eq!(fault["status"], "recovered", "{fault}");
        let acted = fault["counters"]["acted"].as_u64().unwrap_or(0);
        assert!(acted >= 1, "{fault}");
        let expectations = report["expectations"].as_array().expect("expectations");
        assert!(expectations.len() >= 2, "{report}");
        for e in expectations {
            assert_eq!(e["verdict"], "pass", "{e}");
        }
        assert_eq!(report["recovery"]["verdict"], "pass", "{report}");
        println!(
            "scenario {id}: passed in {took:?}, {} expectations, acted on {acted}, recovered in {} ms",
            expectations.len(),
            report["recovery"]["time_to_recover_ms"]
        );
        self.assert_clean();
        acted
    }
}

#[test]
fn a_scenario_runs_on_a_real_workload_and_leaves_nothing() {
    let s = skip_on_err!(setup("catalog-run"));
    s.run_scenario(SCENARIO, &s.params());
}

/// A second family: the service's connect() calls refused (a syscall fault on its cgroup).
#[test]
fn the_connect_refused_scenario_runs_and_leaves_nothing() {
    let s = skip_on_err!(setup("catalog-refused"));
    s.run_scenario(
        "generic-connect-refused",
        &[
            ("cgroup", s.world.cgroup.clone()),
            ("health_addr", s.endpoint.addr.clone()),
            ("window", "5s".to_owned()),
        ],
    );
}

#[test]
fn the_daemon_serves_the_catalog_and_runs_a_scenario() {
    let s = skip_on_err!(setup("catalog-daemon"));
    let socket = s.dir.0.join("chaos.sock");
    let d = Daemon::start(&s.chaos, &["--socket", socket.to_str().unwrap()]);
    let c = d.client();

    let list = c.get("/v1/catalog");
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(list.json().as_array().map(Vec::len) >= Some(25));
    let mysql = c.get("/v1/catalog?domain=mysql").json();
    assert!(
        mysql
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["domain"] == "mysql"),
        "{mysql}"
    );
    assert_eq!(c.get("/v1/catalog?domain=nosql").status, 400);
    let one = c.get(&format!("/v1/catalog/{SCENARIO}"));
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["id"], SCENARIO);
    let none = c.get("/v1/catalog/no-such");
    assert_eq!(none.status, 404, "{}", none.body);

    // A parameter missing: 400 naming it, nothing started.
    let r = c.post(
        &format!("/v1/catalog/{SCENARIO}/run"),
        &json!({"set": {"cgroup": s.world.cgroup}}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let fields: Vec<Value> = r.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].clone())
        .collect();
    assert_eq!(
        fields,
        [
            json!("set.dependency_ip"),
            json!("set.dependency_port"),
            json!("set.health_addr")
        ],
        "{}",
        r.body
    );
    assert_eq!(c.get("/v1/experiments").json(), json!([]));

    let set: serde_json::Map<String, Value> = s
        .params()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::from(v)))
        .collect();
    let r = c.post(
        &format!("/v1/catalog/{SCENARIO}/run"),
        &json!({ "set": set }),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(r.json()["name"], SCENARIO);
    let start = Instant::now();
    let done = loop {
        let st = c.get(&format!("/v1/experiments/{id}")).json();
        if st["state"] == "done" {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{st}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(done["verdict"], "passed", "{done}");
    let report = c.get(&format!("/v1/experiments/{id}/report")).json();
    assert!(
        report["faults"][0]["counters"]["acted"].as_u64() >= Some(1),
        "{report}"
    );
    d.stop();
    s.assert_clean();
}
