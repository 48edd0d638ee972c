//! State that survives crashes (issue 9), through the real binary on a two-host world: a
//! `chaos serve` killed with -9 while its fault drops every packet leaves that fault to the next
//! daemon, which recovers it at start with no flag (and still answers for it, as recovered),
//! while a fault armed from the command line outlives any number of daemon restarts until
//! `--recover-on-start` asks for everything; `chaos recover --all` with no daemon running clears
//! what a killed daemon left, from the store, or from what the kernel shows when the store's
//! database is damaged.

use std::path::PathBuf;

use bpf_tests::{
    daemon::{Daemon, TempDir},
    drill::Drill,
    skip_on_err,
};
use serde_json::{Value, json};

/// A `net loss` of every packet A sends, as the API takes it.
fn loss_spec(d: &Drill) -> Value {
    json!({
        "kind": "net",
        "action": "loss",
        "percent": 100.0,
        "interface": d.world.a.ifname,
        "netns": d.world.a.ns.name(),
        "direction": "egress",
        "duration": "120s",
    })
}

/// Port B sends back to A on (B's loss is the command line's fault).
const BACK: u16 = 47_001;

/// Starts a daemon on a socket in `dir`, arms A's loss through it, and kills the daemon with -9;
/// returns the fault's id.
fn arm_and_kill(d: &Drill, dir: &TempDir) -> String {
    let sock = dir.0.join("chaos.sock");
    let daemon = Daemon::start(&d.chaos, &["--socket", sock.to_str().unwrap()]);
    let r = daemon.client().post("/v1/faults", &loss_spec(d));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let status = d.chaos.status(&id).expect("status");
    assert_eq!(status["owner"]["kind"], "daemon", "{status}");
    assert_eq!(status["owner"]["pid"], daemon.child.id(), "{status}");
    daemon.kill9();
    assert_eq!(d.send_v4(300), 0, "the fault outlives the killed daemon");
    id
}

/// The state directory the binary uses.
fn state_dir() -> PathBuf {
    std::env::var_os(bpf_tests::oracle::STATE_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(bpf_tests::oracle::DEFAULT_STATE_DIR))
}

/// Recovers the listed faults through the CLI if the test fails before it did.
struct Guard<'a>(&'a Drill, Vec<String>);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        for id in &self.1 {
            let _ = self.0.chaos.recover(id);
        }
    }
}

/// A restarted daemon, given no flag, recovers the fault of the daemon killed with -9 and
/// answers for it as recovered; it leaves the fault armed from the command line, which outlives
/// its clean stop too, until a daemon started with --recover-on-start recovers everything.
#[test]
fn a_restarted_daemon_recovers_what_a_killed_one_left() {
    let d = skip_on_err!(Drill::new("any"));
    let dir = TempDir::new("daemon-crash");
    let sock = dir.0.join("chaos.sock");
    let sock_s = sock.to_str().unwrap();
    let cli = d.loss(&d.world.b, 100.0, "egress", "120s");
    assert_eq!(
        d.chaos.status(&cli).expect("status")["owner"]["kind"],
        "cli"
    );
    let id = arm_and_kill(&d, &dir);
    let _guard = Guard(&d, vec![id.clone(), cli.clone()]);
    assert_eq!(d.send_back(BACK, 300), 0, "the command line's fault acts");

    let daemon = Daemon::start(&d.chaos, &["--socket", sock_s]);
    let c = daemon.client();
    assert_eq!(
        d.send_v4(300),
        300,
        "the killed daemon's fault is recovered at start"
    );
    assert_eq!(d.send_back(BACK, 300), 0, "the command line's fault stays");
    let listed: Vec<Value> = c.get("/v1/faults").json().as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], cli.as_str());
    let r = c.get(&format!("/v1/faults/{id}"));
    println!("GET the recovered fault: {} {}", r.status, r.body);
    assert_eq!(r.status, 200, "{}", r.body);
    let status = r.json();
    assert_eq!(status["state"], "recovered");
    assert_eq!(status["expired"], true);
    assert_eq!(status["recovered_by"]["pid"], daemon.child.id());
    assert!(
        status["recovered_unix_ms"].as_u64().unwrap()
            >= status["created_unix_ms"].as_u64().unwrap()
    );
    assert!(
        status["final_counters"]["acted"].as_u64().unwrap() >= 300,
        "the packets it dropped are kept: {status}"
    );
    assert_eq!(
        c.delete(&format!("/v1/faults/{id}")).status,
        404,
        "recovered once"
    );
    daemon.stop();
    assert_eq!(
        d.send_back(BACK, 300),
        0,
        "a clean stop leaves the command line's fault"
    );
    assert!(
        d.chaos.status(&id).is_err(),
        "the daemon's history went with it"
    );

    let daemon = Daemon::start(&d.chaos, &["--socket", sock_s, "--recover-on-start"]);
    assert_eq!(daemon.client().get("/v1/faults").json(), json!([]));
    assert_eq!(
        d.send_back(BACK, 300),
        300,
        "--recover-on-start recovers everything"
    );
    daemon.stop();
    assert!(!sock.exists());
    assert!(!state_dir().exists(), "no trace of the store is left");
    d.assert_clean();
}

/// With no daemon running, `chaos recover --all` clears what a killed daemon and the command
/// line left.
#[test]
fn recover_all_without_a_daemon_after_a_kill() {
    let d = skip_on_err!(Drill::new("any"));
    let dir = TempDir::new("daemon-crash-all");
    let cli = d.loss(&d.world.b, 100.0, "egress", "120s");
    let id = arm_and_kill(&d, &dir);
    let _guard = Guard(&d, vec![id.clone(), cli.clone()]);
    let out = d.chaos.recover_all().expect("recover --all");
    println!("recover --all: {out}");
    let mut ids: Vec<&str> = out["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = [id.as_str(), cli.as_str()];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(d.send_v4(300), 300);
    assert_eq!(d.send_back(BACK, 300), 300);
    assert!(!state_dir().exists(), "no trace of the store is left");
    d.assert_clean();
}

/// A state database that is not one (damaged while a killed daemon's fault is armed) does not
/// stop `chaos recover --all`: it is moved aside, and what it named is removed from what the
/// kernel shows (pins, links, qdiscs).
#[test]
fn recover_all_with_a_damaged_store() {
    let d = skip_on_err!(Drill::new("any"));
    let dir = TempDir::new("daemon-crash-bad");
    let id = arm_and_kill(&d, &dir);
    let _guard = Guard(&d, vec![id.clone()]);
    let db = state_dir().join("chaos.db");
    std::fs::write(&db, vec![0x5a; 16384]).expect("damaging the database");
    let failed = d.chaos.list().expect_err("the damaged store is refused");
    println!("chaos list on the damaged store: {failed}");
    let out = d.chaos.recover_all().expect("recover --all");
    println!("recover --all: {out}");
    let unreadable = out["unreadable"]
        .as_array()
        .expect("the database is reported");
    assert_eq!(unreadable.len(), 1, "{out}");
    let aside = PathBuf::from(
        unreadable[0]
            .as_str()
            .unwrap()
            .rsplit("moved to ")
            .next()
            .unwrap(),
    );
    assert!(aside.exists(), "{out}");
    std::fs::remove_file(&aside).expect("removing the database moved aside");
    assert_eq!(d.send_v4(300), 300, "the fault is gone");
    assert!(!state_dir().exists(), "no trace of the store is left");
    d.assert_clean();
}
