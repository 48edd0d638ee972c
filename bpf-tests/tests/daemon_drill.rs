//! Drills through `chaos serve`: `POST /v1/experiments` starts one on the demo's workload (an
//! echo server in a network namespace, a cgroup with its traffic), `GET /v1/experiments/{id}`
//! follows it to its verdict, the report is served as JSON and HTML; a spec with several errors
//! is refused with each one's path; `DELETE` aborts a running drill and SIGTERM of the daemon
//! aborts its drills, both recovering everything (the oracle sees nothing left).

use std::time::{Duration, Instant};

use bpf_tests::{
    Oracle,
    chaos::Chaos,
    daemon::{Client, Daemon, TempDir},
    skip_on_err,
};
use chaos_user::demo::World;
use serde_json::{Value, json};

struct Setup {
    chaos: Chaos,
    world: World,
    oracle: Oracle,
    before: bpf_tests::Snapshot,
    dir: TempDir,
}

fn setup(name: &str) -> Result<Setup, String> {
    let (chaos, world, oracle, before) = bpf_tests::demo::world()?;
    Ok(Setup {
        chaos,
        world,
        oracle,
        before,
        dir: TempDir::new(name),
    })
}

impl Setup {
    fn daemon(&self) -> Daemon {
        let socket = self.dir.0.join("chaos.sock");
        Daemon::start(&self.chaos, &["--socket", socket.to_str().unwrap()])
    }

    /// A drill (as JSON) partitioning the echo server from `start` for `on`, in a fault phase
    /// of `duration`.
    fn drill(&self, start: &str, on: &str, duration: &str) -> Value {
        let server = self.world.server();
        json!({
            "name": "api-drill",
            "target": {"cgroup": self.world.cgroup},
            "probes": [{"name": "server", "tcp": server, "interval": "250ms", "timeout": "250ms"}],
            "admission": {"target_alive": false, "steady_for": "1s", "timeout": "10s"},
            "traffic": [{
                "name": "echo",
                "tcp": {"address": server, "send": "ping"},
                "rate": 50, "concurrency": 2, "timeout": "500ms",
                "cgroup": self.world.cgroup,
            }],
            "baseline": "2s",
            "duration": duration,
            "faults": [{
                "name": "cut", "start": start, "duration": on,
                "fault": {
                    "kind": "net", "action": "partition",
                    "interface": self.world.interface(),
                    "dst": [format!("{}/32", self.world.server_addr())],
                },
            }],
            "expect": [
                {"during": "cut", "settle": "500ms", "probe": "server", "fails": ">= 80%"},
                {"fault": "cut", "acted": ">= 1"},
            ],
            "recovery": {"within": "10s", "hold": "1s",
                         "expect": [{"traffic": "echo", "throughput": ">= 80%"}]},
        })
    }

    /// No fault, no chaos process (the daemon has stopped), no kernel object left.
    fn assert_clean(&self) {
        bpf_tests::demo::assert_clean(&self.chaos, &self.oracle, &self.before);
    }
}

/// Polls the drill until `done(status)` holds (at most `limit`), returning the last status.
fn wait_for(c: &Client, id: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let r = c.get(&format!("/v1/experiments/{id}"));
        assert_eq!(r.status, 200, "{}", r.body);
        let s = r.json();
        if done(&s) {
            return s;
        }
        assert!(start.elapsed() < limit, "drill {id} after {limit:?}: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn has_event(s: &Value, kind: &str) -> bool {
    s["events"]
        .as_array()
        .is_some_and(|e| e.iter().any(|e| e["event"] == kind))
}

#[test]
fn a_drill_posted_to_the_daemon_runs_and_reports() {
    let s = skip_on_err!(setup("drill-run"));
    let d = s.daemon();
    let c = d.client();
    // YAML as chaos run reads it, to show the Content-Type is honoured (JSON is the default).
    let yaml = serde_norway::to_string(&s.drill("1s", "3s", "4s")).unwrap();
    let r = c.request_with_type(
        "POST",
        "/v1/experiments",
        "application/yaml",
        yaml.as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let started = r.json();
    let id = started["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("x-"), "{started}");
    assert_eq!(started["state"], "running");
    assert_eq!(started["name"], "api-drill");

    // While it runs: its phase and events show, its report is not there yet.
    let live = wait_for(&c, &id, Duration::from_secs(120), |s| has_event(s, "armed"));
    assert_eq!(live["state"], "running", "{live}");
    assert!(live["phase"].is_string(), "{live}");
    let early = c.get(&format!("/v1/experiments/{id}/report"));
    assert_eq!(early.status, 409, "{}", early.body);
    // The fault the drill armed is a fault like any other.
    let faults = c.get("/v1/faults").json();
    assert_eq!(faults.as_array().map(Vec::len), Some(1), "{faults}");

    let done = wait_for(&c, &id, Duration::from_secs(180), |s| s["state"] == "done");
    assert_eq!(done["verdict"], "passed", "{done}");
    assert_eq!(done["report"], format!("/v1/experiments/{id}/report"));
    assert!(has_event(&done, "recovered"), "{done}");
    assert!(done["last_second"]["traffic"].is_array(), "{done}");

    let report = c.get(&format!("/v1/experiments/{id}/report"));
    assert_eq!(report.status, 200);
    let report = report.json();
    assert_eq!(report["schema"], "chaos.report/v1");
    assert_eq!(report["verdict"], "passed");
    assert_eq!(report["faults"][0]["status"], "recovered");
    assert!(report["faults"][0]["counters"]["acted"].as_u64() > Some(0));
    let html = c.get(&format!("/v1/experiments/{id}/report.html"));
    assert_eq!(html.status, 200);
    assert!(html.headers.to_ascii_lowercase().contains("text/html"));
    assert!(html.body.contains("<svg") && html.body.contains("PASSED"));

    // The list is a summary; a finished drill is forgotten on DELETE.
    let list = c.get("/v1/experiments").json();
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["events"], json!([]));
    assert_eq!(c.delete(&format!("/v1/experiments/{id}")).status, 200);
    assert_eq!(c.get(&format!("/v1/experiments/{id}")).status, 404);
    assert_eq!(c.get(&format!("/v1/experiments/{id}/report")).status, 404);
    d.stop();
    s.assert_clean();
}

#[test]
fn a_drill_with_errors_is_refused_with_each_one() {
    let s = skip_on_err!(setup("drill-bad"));
    let d = s.daemon();
    let c = d.client();
    let mut bad = s.drill("1s", "3s", "4s");
    bad["expect"][0]["during"] = json!("nosuch");
    bad["expect"][1]["fault"] = json!("other");
    let r = c.post("/v1/experiments", &bad);
    assert_eq!(r.status, 400, "{}", r.body);
    let body = r.json();
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors list: {body}"))
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert!(fields == ["expect[0].during", "expect[1].fault"], "{body}");
    assert_eq!(body["field"], body["errors"][0]["field"]);
    // Not even parsed: the field is the body's.
    let r = c.request("POST", "/v1/experiments", b"{not json");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains("JSON"));
    assert_eq!(c.get("/v1/experiments").json(), json!([]));
    assert_eq!(c.get("/v1/experiments/x-00000000").status, 404);
    d.stop();
    s.assert_clean();
}

#[test]
fn delete_aborts_a_running_drill_and_sigterm_aborts_them_all() {
    let s = skip_on_err!(setup("drill-abort"));
    let d = s.daemon();
    let c = d.client();
    let r = c.post("/v1/experiments", &s.drill("0s", "60s", "60s"));
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    wait_for(&c, &id, Duration::from_secs(120), |s| has_event(s, "armed"));
    let t = Instant::now();
    let r = c.delete(&format!("/v1/experiments/{id}"));
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["abort_requested"], true);
    let done = wait_for(&c, &id, Duration::from_secs(60), |s| s["state"] == "done");
    assert_eq!(done["verdict"], "aborted", "{done}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let report = c.get(&format!("/v1/experiments/{id}/report")).json();
    assert_eq!(report["faults"][0]["ended_by"], "abort", "{report}");
    assert_eq!(c.get("/v1/faults").json(), json!([]));

    // A second drill, then the daemon stops: it aborts the drill and recovers before exiting.
    let r = c.post("/v1/experiments", &s.drill("0s", "60s", "60s"));
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    wait_for(&c, &id, Duration::from_secs(120), |s| has_event(s, "armed"));
    d.stop();
    s.assert_clean();
}
