//! The CLI as a client of `chaos serve` (`--server`, `CHAOS_SERVER`): a `net loss` on a two-host
//! world armed, listed, inspected and recovered through a daemon on its unix socket and on TCP
//! with TLS, printing what the in-process commands print; the daemon's errors printed as the
//! in-process ones, with the same exit code; a wrong token refused with 401; TLS refused to a
//! plain HTTP client and to a client that does not trust the certificate; bad TLS files refused
//! at start.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    time::Duration,
};

use bpf_tests::{
    chaos::{Chaos, Failure},
    daemon::{Addr, Daemon, TempDir},
    drill::Drill,
    skip::require_root,
    skip_on_err,
};
use serde_json::{Value, json};

/// Faults armed through a daemon, recovered in-process if the test fails first.
struct Armed<'a>(&'a Chaos, Vec<String>);

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        for id in &self.1 {
            let _ = self.0.recover(id);
        }
    }
}

/// `chaos`, with arguments put before every command's (`--server URL --ca-cert FILE`).
#[derive(Clone)]
struct Cli {
    chaos: Chaos,
    prefix: Vec<String>,
}

impl Cli {
    /// `chaos` as it is (in-process, unless its environment names a server).
    fn plain(chaos: &Chaos) -> Cli {
        Cli::with(chaos, &[])
    }

    /// `chaos prefix...`.
    fn with(chaos: &Chaos, prefix: &[&str]) -> Cli {
        Cli {
            chaos: chaos.clone(),
            prefix: prefix.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn run(&self, args: &[&str]) -> Result<String, Failure> {
        let mut full: Vec<&str> = self.prefix.iter().map(String::as_str).collect();
        full.extend_from_slice(args);
        self.chaos.run(&full)
    }

    /// Must succeed: its standard output.
    fn ok(&self, args: &[&str]) -> String {
        self.run(args)
            .unwrap_or_else(|f| panic!("chaos {:?} {args:?}: {f}", self.prefix))
    }

    /// Must fail: its exit code and standard error.
    fn fails(&self, args: &[&str]) -> (Option<i32>, String) {
        match self.run(args) {
            Ok(out) => panic!("chaos {:?} {args:?} succeeded: {out}", self.prefix),
            Err(Failure { code, stderr, .. }) => (code, stderr),
        }
    }

    /// Prints JSON.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("chaos {args:?}: not JSON ({e}): {out}"))
    }
}

/// `v` without the fields that move between two reads (time left, live counters).
fn still(mut v: Value) -> Value {
    let strip = |o: &mut Value| {
        if let Some(o) = o.as_object_mut() {
            o.remove("remaining_ms");
            o.remove("counters");
        }
    };
    match v.as_array_mut() {
        Some(a) => a.iter_mut().for_each(strip),
        None => strip(&mut v),
    }
    v
}

/// The `chaos inject net loss` arguments for 100 % egress loss on host A.
fn loss_args(d: &Drill, percent: &str) -> Vec<String> {
    [
        "inject",
        "net",
        "loss",
        "--percent",
        percent,
        "--direction",
        "egress",
        "--interface",
        &d.world.a.ifname,
        "--netns",
        d.world.a.ns.name(),
        "--duration",
        "60s",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Arms, lists, inspects and recovers a fault with `remote` (chaos talking to a daemon) and
/// checks every answer against the in-process `d.chaos`.
fn round_trip(d: &Drill, remote: &Cli) {
    let local = &Cli::plain(&d.chaos);
    assert_eq!(d.send_v4(200), 200, "no loss before the fault");

    // probe: the same strategy table (the daemon's probe is its own, of the same kernel).
    let rp = remote.json(&["probe", "--json"]);
    let lp = local.json(&["probe", "--json"]);
    assert_eq!(
        rp["faults"], lp["faults"],
        "probe --json through the daemon"
    );
    assert_eq!(rp["probe"]["kernel"], lp["probe"]["kernel"]);
    let text = remote.ok(&["probe"]);
    assert!(text.contains("strategy on this kernel"), "{text}");

    let mut args = loss_args(d, "100");
    args.push("--json".to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let armed = remote.json(&args);
    println!("inject through the daemon: {armed}");
    let id = armed["id"].as_str().expect("id").to_owned();
    let mut guard = Armed(&d.chaos, vec![id.clone()]);
    let mut keys: Vec<&String> = armed.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["deadline_unix_ms", "id", "strategy"], "{armed}");
    assert_eq!(d.send_v4(200), 0, "all dropped while armed");

    let rs = remote.json(&["status", &id, "--json"]);
    let ls = local.json(&["status", &id, "--json"]);
    assert!(rs["counters"]["acted"].as_u64().unwrap() >= 200, "{rs}");
    assert_eq!(still(rs), still(ls), "status --json through the daemon");
    let rl = remote.json(&["list", "--json"]);
    assert_eq!(
        still(rl),
        still(local.json(&["list", "--json"])),
        "list --json through the daemon"
    );
    // The very text of --json, but for the lines of the counters and the time left.
    let fixed_json = |t: String| -> String {
        t.lines()
            .filter(|l| {
                !["\"seen\"", "\"matched\"", "\"acted\"", "\"remaining_ms\""]
                    .iter()
                    .any(|k| l.contains(k))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        fixed_json(remote.ok(&["status", &id, "--json"])),
        fixed_json(local.ok(&["status", &id, "--json"])),
        "status --json text"
    );
    // The text: the same lines but for the counters and the time left.
    let rt = remote.ok(&["status", &id]);
    let lt = local.ok(&["status", &id]);
    let fixed = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("spec:") || l.starts_with("ends:") || l.starts_with("id "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(fixed(&rt), fixed(&lt), "status text:\n{rt}\nvs\n{lt}");
    assert_eq!(fixed(&rt).len(), 3, "{rt}");

    // Errors: the library's message and exit code, as in-process.
    let unknown = ["status", "0123456789", "--json"];
    let (rc, re) = remote.fails(&unknown);
    let (lc, le) = local.fails(&unknown);
    assert_eq!((rc, re.as_str()), (lc, le.as_str()), "unknown id");
    let bad = loss_args(d, "150");
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    let (rc, re) = remote.fails(&bad);
    let (lc, le) = local.fails(&bad);
    println!("percent 150 through the daemon: {rc:?} {re}");
    assert_eq!((rc, re.as_str()), (lc, le.as_str()), "bad percent");
    assert!(re.contains("percent"), "{re}");
    let (code, e) = remote.fails(&[&bad[..], &["--dry-run"]].concat());
    assert_eq!(code, Some(1));
    assert!(e.contains("in-process only"), "{e}");

    let out = remote.json(&["recover", &id, "--json"]);
    assert_eq!(out["faults"], json!([id]), "{out}");
    assert!(out["attachments"].is_u64(), "{out}");
    guard.1.clear();
    assert_eq!(d.send_v4(200), 200, "recovered");
    let (rc, re) = remote.fails(&["recover", &id]);
    let (lc, le) = local.fails(&["recover", &id]);
    assert_eq!((rc, re.as_str()), (lc, le.as_str()), "recovering twice");

    // recover --all, through DELETE /v1/faults.
    let args = loss_args(d, "100");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let text = remote.ok(&args);
    println!("inject (text) through the daemon: {text}");
    assert!(text.contains(" armed with "), "{text}");
    let id = text.split_whitespace().next().unwrap().to_owned();
    let guard = Armed(&d.chaos, vec![id.clone()]);
    let out = remote.json(&["recover", "--all", "--json"]);
    assert_eq!(out["faults"], json!([id]), "{out}");
    std::mem::forget(guard);
    assert_eq!(remote.json(&["list", "--json"]), json!([]));
    assert_eq!(remote.ok(&["list"]).trim(), "no faults armed");
    assert_eq!(d.send_v4(200), 200, "recovered by --all");
}

/// Through the unix socket, named by `--server` and by `CHAOS_SERVER`.
#[test]
fn cli_through_unix_socket() {
    let d = skip_on_err!(Drill::new("any"));
    let dir = TempDir::new("client-unix");
    let sock = dir.0.join("chaos.sock");
    let daemon = Daemon::start(&d.chaos, &["--socket", sock.to_str().unwrap()]);
    let url = format!("unix://{}", sock.display());
    round_trip(&d, &Cli::plain(&d.chaos.env("CHAOS_SERVER", &url)));
    let plain = Cli::plain(&d.chaos);

    // --server itself, and the address as `chaos serve` prints it.
    let list = plain.json(&["--server", &url, "list", "--json"]);
    assert_eq!(list, json!([]));
    let short = format!("unix:{}", sock.display());
    assert_eq!(
        plain.json(&["--server", &short, "list", "--json"]),
        json!([])
    );
    // Commands the daemon does not serve refuse --server rather than run in-process.
    let (code, e) = plain.fails(&["--server", &url, "run", "/nonexistent.yaml"]);
    assert_eq!(code, Some(1), "{e}");
    assert!(e.contains("--server"), "{e}");
    daemon.stop();

    // No daemon there: a clear error, exit 1.
    let (code, e) = plain.fails(&["--server", &url, "list"]);
    println!("no daemon: {e}");
    assert_eq!(code, Some(1));
    assert!(
        e.contains("cannot talk to the daemon") && e.contains("chaos serve"),
        "{e}"
    );
    d.assert_clean();
}

/// A self-signed certificate for 127.0.0.1 and localhost: (certificate PEM, key PEM).
fn self_signed() -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("rcgen");
    (c.cert.pem(), c.signing_key.serialize_pem())
}

/// `chaos serve` refuses TLS flags it cannot use, before listening.
#[test]
fn tls_flags_refused() {
    skip_on_err!(require_root());
    let chaos = skip_on_err!(Chaos::from_env());
    let dir = TempDir::new("client-tls-flags");
    let (cert, key) = self_signed();
    let (_, other_key) = self_signed();
    let p = |name: &str, text: &str| {
        let f = dir.0.join(name);
        std::fs::write(&f, text).unwrap();
        f.to_str().unwrap().to_owned()
    };
    let (cert, key, other_key, token) = (
        p("cert.pem", &cert),
        p("key.pem", &key),
        p("other.pem", &other_key),
        p("token", "s3cret\n"),
    );
    let refused = |args: &[&str], expect: &str| {
        let err = Daemon::try_start(&chaos, args)
            .err()
            .unwrap_or_else(|| panic!("chaos serve {args:?} must be refused"));
        println!("chaos serve {args:?}: {}", err.trim());
        assert!(err.contains(expect), "{args:?}: {err}");
    };
    let listen = ["--listen", "127.0.0.1:0", "--token-file", &token];
    refused(&["--tls-cert", &cert, "--tls-key", &key], "--listen");
    refused(&[&listen[..], &["--tls-cert", &cert]].concat(), "--tls-key");
    refused(
        &[&listen[..], &["--tls-cert", &cert, "--tls-key", &other_key]].concat(),
        "is not the key of the certificate",
    );
    refused(
        &[&listen[..], &["--tls-cert", &key, "--tls-key", &key]].concat(),
        "holds no certificate",
    );
    refused(
        &[&listen[..], &["--tls-cert", &cert, "--tls-key", &cert]].concat(),
        "holds no private key",
    );
    // TLS does not replace the token.
    refused(
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        "token",
    );
}

/// Through TCP with TLS and a token; the wrong token, an untrusted certificate and plain HTTP
/// refused.
#[test]
fn cli_through_tls() {
    let d = skip_on_err!(Drill::new("any"));
    let dir = TempDir::new("client-tls");
    let (cert_pem, key_pem) = self_signed();
    let cert = dir.0.join("cert.pem");
    let key = dir.0.join("key.pem");
    let token = dir.0.join("token");
    let wrong = dir.0.join("wrong");
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    std::fs::write(&token, "correct-horse-battery-staple\n").unwrap();
    std::fs::write(&wrong, "incorrect-horse\n").unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let cert_s = s(&cert);
    let daemon = Daemon::start(
        &d.chaos,
        &[
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            &s(&token),
            "--tls-cert",
            &s(&cert),
            "--tls-key",
            &s(&key),
        ],
    );
    let Addr::Tcp(addr) = daemon.addr.clone() else {
        panic!("a TCP daemon")
    };
    let url = format!("https://{addr}");
    let plain = Cli::plain(&d.chaos);
    // CHAOS_SERVER and CHAOS_TOKEN from the environment, the certificate through --ca-cert.
    let env = Cli::with(
        &d.chaos
            .env("CHAOS_SERVER", &url)
            .env("CHAOS_TOKEN", "correct-horse-battery-staple"),
        &["--ca-cert", &s(&cert)],
    );
    assert_eq!(env.json(&["list", "--json"]), json!([]));

    // The whole round trip, with the flags.
    let remote = Cli::with(
        &d.chaos,
        &[
            "--server",
            &url,
            "--token-file",
            &s(&token),
            "--ca-cert",
            &s(&cert),
        ],
    );
    round_trip(&d, &remote);

    // A wrong token and no token: 401, said plainly, exit 1.
    for tok in [Some(&wrong), None] {
        let mut args = vec!["--server", &url, "--ca-cert", &cert_s];
        let t;
        if let Some(w) = tok {
            t = s(w);
            args.extend(["--token-file", &t]);
        }
        args.push("list");
        let (code, e) = plain.fails(&args);
        println!("token {tok:?}: {e}");
        assert_eq!(code, Some(1));
        assert!(e.contains("401") && e.contains("refused the token"), "{e}");
    }
    // The certificate not trusted: refused, with the hint.
    let (code, e) = Cli::plain(&d.chaos.env("CHAOS_SERVER", &url)).fails(&["list"]);
    println!("untrusted certificate: {e}");
    assert_eq!(code, Some(1));
    assert!(e.contains("--ca-cert"), "{e}");
    // Plain HTTP to the TLS port: no HTTP answer.
    let (code, e) = plain.fails(&[
        "--server",
        &format!("http://{addr}"),
        "--token-file",
        &s(&token),
        "list",
    ]);
    println!("plain http to the TLS port: {e}");
    assert_eq!(code, Some(1));
    assert!(e.contains("cannot talk to the daemon"), "{e}");
    let mut raw = TcpStream::connect(&addr).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1"),
        "plain HTTP answered over the TLS port: {answer:?}"
    );
    daemon.stop();
    d.assert_clean();
}
