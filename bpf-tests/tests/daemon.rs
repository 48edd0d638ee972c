//! `chaos serve` end to end through the real binary: HTTP/1.1 over its unix socket and over TCP
//! with a bearer token, a `net loss` armed, inspected, counted in /metrics and recovered through
//! the API on a veth of a two-host world, bad specs refused with the field named, concurrent
//! arm/recover cycles that leak nothing, and the socket file's life (mode 0600, refused while
//! another daemon listens, replaced when stale, removed on SIGTERM).
//! (Daemons killed with -9 and restarted: daemon_crash.rs.)

use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    time::{Duration, Instant},
};

use bpf_tests::{
    chaos::Chaos,
    daemon::{Daemon, TempDir},
    drill::Drill,
    skip::require_root,
    skip_on_err,
};
use serde_json::{Value, json};

/// A `net loss` spec on host A's veth, as `chaos inject spec` takes it.
fn loss_spec(d: &Drill, percent: f64, duration: &str) -> Value {
    json!({
        "kind": "net",
        "action": "loss",
        "percent": percent,
        "interface": d.world.a.ifname,
        "netns": d.world.a.ns.name(),
        "direction": "egress",
        "duration": duration,
    })
}

/// Faults armed through the API, recovered through the CLI if the test fails first.
struct Armed<'a>(&'a Chaos, Vec<String>);

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        for id in &self.1 {
            let _ = self.0.recover(id);
        }
    }
}

/// The unix socket end to end: health, probe, arm, status, list, metrics, recover, 404s, bad
/// specs, body limit, the socket's mode and life.
#[test]
fn unix_socket_end_to_end() {
    let d = skip_on_err!(Drill::new("any"));
    let dir = TempDir::new("daemon-unix");
    let sock = dir.0.join("chaos.sock");
    let sock_s = sock.to_str().unwrap();
    let daemon = Daemon::start(&d.chaos, &["--socket", sock_s]);
    let mode = std::fs::metadata(&sock)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    let c = daemon.client();

    let r = c.get("/healthz");
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
    let r = c.get("/v1/probe");
    assert_eq!(r.status, 200);
    assert!(r.json()["probe"]["kernel"].is_string(), "{}", r.body);
    assert!(r.json()["faults"].is_array(), "{}", r.body);
    let r = c.get("/v1/openapi.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["openapi"], "3.1.0");

    // Another daemon on the same socket is refused while this one listens.
    let second = Daemon::try_start(&d.chaos, &["--socket", sock_s]);
    let err = second
        .err()
        .expect("a second daemon on the same socket must be refused");
    assert!(err.contains("another daemon"), "{err}");
    assert_eq!(c.get("/healthz").status, 200, "the first still answers");

    assert_eq!(d.send_v4(300), 300, "no loss before the fault");
    let t = Instant::now();
    let r = c.post("/v1/faults", &loss_spec(&d, 100.0, "60s"));
    println!(
        "POST /v1/faults: {} in {:?}: {}",
        r.status,
        t.elapsed(),
        r.body
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let armed = r.json();
    let id = armed["id"].as_str().expect("id").to_owned();
    let mut guard = Armed(&d.chaos, vec![id.clone()]);
    assert!(armed["strategy"].is_string() && armed["deadline_unix_ms"].is_u64());
    assert_eq!(d.send_v4(300), 0, "all dropped while armed");

    let r = c.get(&format!("/v1/faults/{id}"));
    assert_eq!(r.status, 200, "{}", r.body);
    let status = r.json();
    assert_eq!(status["id"], id.as_str());
    assert_eq!(status["strategy"], armed["strategy"]);
    assert_eq!(status["expired"], false);
    let acted = status["counters"]["acted"].as_u64().expect("acted");
    assert!(acted >= 300, "acted {acted}");
    // The same document as `chaos status --json` (but for the time left and the counters,
    // which move).
    let mut cli = d.chaos.status(&id).expect("chaos status");
    let mut api = status.clone();
    for v in [&mut cli, &mut api] {
        v.as_object_mut().unwrap().remove("remaining_ms");
        v.as_object_mut().unwrap().remove("counters");
    }
    assert_eq!(api, cli, "GET /v1/faults/ID is chaos status --json");

    let r = c.get("/v1/faults");
    assert_eq!(r.status, 200);
    let list = r.json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);

    let r = c.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        r.headers
    );
    println!("/metrics:\n{}", r.body);
    assert!(r.body.contains("\nchaos_faults_active 1\n"), "{}", r.body);
    let prefix = format!(
        "chaos_fault_acted_total{{id=\"{id}\",kind=\"net loss\",strategy=\"{}\"}} ",
        armed["strategy"].as_str().unwrap()
    );
    let line = r
        .body
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {}", r.body));
    let n: u64 = line[prefix.len()..].parse().expect("a count");
    assert!(n >= 300, "{line}");

    let r = c.delete(&format!("/v1/faults/{id}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["faults"], json!([id]));
    guard.1.clear();
    assert_eq!(d.send_v4(300), 300, "recovered");
    let r = c.delete(&format!("/v1/faults/{id}"));
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains(&id));
    // The daemon still answers for the fault it recovered (issue 9).
    let r = c.get(&format!("/v1/faults/{id}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "recovered", "{}", r.body);
    assert_eq!(c.get("/v1/faults/..%2Fx").status, 404);
    assert_eq!(c.get("/v1/nothing").status, 404);
    let r = c.request("PUT", "/v1/faults", b"{}");
    assert_eq!(r.status, 405, "{}", r.body);
    assert!(r.json()["error"].is_string(), "{}", r.body);
    assert!(c.get("/metrics").body.contains("\nchaos_faults_active 0\n"));

    // Bad specs: 400 naming the field, nothing armed.
    let mut bad = loss_spec(&d, 150.0, "60s");
    let r = c.post("/v1/faults", &bad);
    println!("percent 150: {} {}", r.status, r.body);
    assert_eq!(
        (r.status, r.json()["field"].clone()),
        (400, json!("percent")),
        "{}",
        r.body
    );
    bad["percent"] = json!(30);
    bad["percnt"] = json!(30);
    let r = c.post("/v1/faults", &bad);
    println!("unknown field: {} {}", r.status, r.body);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["field"], "percnt", "{}", r.body);
    let r = c.request("POST", "/v1/faults", b"{\"kind\": ");
    println!("truncated JSON: {} {}", r.status, r.body);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["field"].is_string(), "{}", r.body);
    let r = c.post("/v1/faults", &json!({"kind": "net", "action": "loss", "percent": 10, "interface": "chaos-none0", "duration": "10s"}));
    println!("missing interface: {} {}", r.status, r.body);
    assert_eq!(r.status, 400, "{}", r.body);
    let big = vec![b' '; 65 * 1024];
    let r = c.request("POST", "/v1/faults", &big);
    println!("65 KiB body: {} {}", r.status, r.body);
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.json()["error"].is_string());
    let r = c.get("/v1/faults");
    assert_eq!(r.json(), json!([]), "nothing armed by the bad specs");

    // A daemon killed -9 leaves its socket; the next one replaces it. SIGTERM removes it.
    daemon.kill9();
    assert!(sock.exists(), "a killed daemon cannot remove its socket");
    let daemon = Daemon::start(&d.chaos, &["--socket", sock_s]);
    assert_eq!(daemon.client().get("/healthz").status, 200);
    daemon.stop();
    assert!(!sock.exists(), "SIGTERM removes the socket");

    assert_eq!(d.chaos.list().expect("list"), json!([]));
    d.assert_clean();
}

/// TCP needs a token: refused to start without one; 401 without or with a wrong one, 200 with
/// it; /healthz open.
#[test]
fn tcp_needs_a_token() {
    skip_on_err!(require_root());
    let chaos = skip_on_err!(Chaos::from_env());
    let dir = TempDir::new("daemon-tcp");
    let refused = Daemon::try_start(&chaos, &["--listen", "127.0.0.1:0"]);
    let err = refused
        .err()
        .expect("--listen without a token must be refused");
    assert!(err.contains("token"), "{err}");

    let token_file = dir.0.join("token");
    std::fs::write(&token_file, "correct-horse-battery-staple\n").unwrap();
    let daemon = Daemon::start(
        &chaos,
        &[
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let c = daemon.client();
    let r = c.get("/v1/faults");
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        r.json()["error"].as_str().unwrap().contains("token"),
        "{}",
        r.body
    );
    assert_eq!(
        c.with_token("correct-horse-battery-stapl")
            .get("/v1/faults")
            .status,
        401
    );
    assert_eq!(c.with_token("wrong").get("/metrics").status, 401);
    assert_eq!(
        c.post("/v1/faults", &json!({})).status,
        401,
        "no token: not even parsed"
    );
    let r = c
        .with_token("correct-horse-battery-staple")
        .get("/v1/faults");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json().is_array());
    assert_eq!(c.get("/healthz").status, 200, "/healthz needs no token");
    daemon.stop();

    // CHAOS_TOKEN instead of a file.
    let daemon = Daemon::start(
        &chaos.env("CHAOS_TOKEN", "from-env"),
        &["--listen", "127.0.0.1:0"],
    );
    let c = daemon.client();
    assert_eq!(c.get("/v1/probe").status, 401);
    assert_eq!(c.with_token("from-env").get("/v1/probe").status, 200);
    daemon.stop();
}

/// 200 clients at once (released together) each arm a fault and recover it: every
/// request succeeds, or is refused with 422 while the kernel side's 64 rule slots are all in use
/// (the client then tries again), and nothing is left (no fault listed, the oracle finds the
/// world as before).
#[test]
fn concurrent_cycles_leak_nothing() {
    const CLIENTS: usize = 200;
    const CYCLES: usize = 1;
    let d = skip_on_err!(Drill::new("any"));
    let dir = TempDir::new("daemon-conc");
    let sock = dir.0.join("chaos.sock");
    let daemon = Daemon::start(&d.chaos, &["--socket", sock.to_str().unwrap()]);
    let c = daemon.client();
    let spec = loss_spec(&d, 50.0, "120s");
    let go = std::sync::Barrier::new(CLIENTS + 1);
    let full = std::sync::atomic::AtomicUsize::new(0);
    let mut start = Instant::now();
    let times: Vec<(Duration, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let c = c.clone();
                let spec = spec.clone();
                let (go, full) = (&go, &full);
                s.spawn(move || {
                    go.wait();
                    let (mut arm, mut recover) = (Duration::ZERO, Duration::ZERO);
                    for _ in 0..CYCLES {
                        let t = Instant::now();
                        let r = loop {
                            let r = c.post("/v1/faults", &spec);
                            // More clients than the kernel side has rule slots: a full table is
                            // refused cleanly (nothing armed) and the client tries again.
                            if r.status == 422 && r.body.contains("rule slots are in use") {
                                full.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                assert!(t.elapsed() < Duration::from_secs(300), "{}", r.body);
                                std::thread::sleep(Duration::from_millis(20));
                                continue;
                            }
                            break r;
                        };
                        arm = arm.max(t.elapsed());
                        assert_eq!(r.status, 201, "{}", r.body);
                        let id = r.json()["id"].as_str().unwrap().to_owned();
                        let t = Instant::now();
                        let r = c.delete(&format!("/v1/faults/{id}"));
                        recover = recover.max(t.elapsed());
                        assert_eq!(r.status, 200, "{}", r.body);
                        assert_eq!(r.json()["faults"], json!([id]));
                    }
                    (arm, recover)
                })
            })
            .collect();
        go.wait();
        start = Instant::now();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    // Recover whatever the failed clients left before failing the test.
                    let _ = d.chaos.recover_all();
                    panic!("a client failed")
                })
            })
            .collect()
    });
    let max_arm = times.iter().map(|t| t.0).max().unwrap();
    let max_rec = times.iter().map(|t| t.1).max().unwrap();
    println!(
        "{CLIENTS} clients x {CYCLES} arm+recover cycles in {:?} (slowest arm {max_arm:?}, slowest \
         recover {max_rec:?}; {} arms refused while the rule table was full)",
        start.elapsed(),
        full.into_inner()
    );
    assert_eq!(c.get("/v1/faults").json(), json!([]));
    assert!(c.get("/metrics").body.contains("\nchaos_faults_active 0\n"));
    daemon.stop();
    assert!(!Path::new(&sock).exists());
    assert_eq!(d.chaos.list().expect("list"), json!([]));
    assert_eq!(d.send_v4(300), 300, "no loss left");
    d.assert_clean();
}
