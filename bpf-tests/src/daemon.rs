//! Helpers for the tests of `chaos serve`: start a daemon and wait for its "listening on" line,
//! and a hand-written HTTP/1.1 client over its unix socket or TCP (the point is to see the bytes
//! the daemon sends, not to trust a client library's reading of them).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    os::unix::net::UnixStream,
    path::PathBuf,
    process::{Child, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::chaos::Chaos;

/// A private directory under /run for one test's socket and token, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Makes `/run/chaos-test-NAME-PID`, empty.
    pub fn new(name: &str) -> TempDir {
        let p = PathBuf::from(format!("/run/chaos-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("creating the test directory");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a daemon listens.
#[derive(Clone)]
pub enum Addr {
    /// A unix socket.
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
}

/// A running `chaos serve`, killed on drop.
pub struct Daemon {
    /// The `chaos serve` process.
    pub child: Child,
    /// Where it listens.
    pub addr: Addr,
}

impl Daemon {
    /// Starts `chaos serve args...` and waits for its "listening on" line.
    pub fn start(chaos: &Chaos, args: &[&str]) -> Daemon {
        Daemon::try_start(chaos, args).unwrap_or_else(|e| panic!("chaos serve {args:?}: {e}"))
    }

    /// Like [`Daemon::start`]; `Err` holds what it printed when it did not start.
    pub fn try_start(chaos: &Chaos, args: &[&str]) -> Result<Daemon, String> {
        let mut full = vec!["serve"];
        full.extend_from_slice(args);
        let mut child = chaos
            .command(&full)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning chaos serve");
        let line = first_line(child.stdout.take().expect("stdout"));
        let Some(at) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let out = child.wait_with_output().expect("waiting for chaos serve");
            return Err(format!(
                "did not start ({}): {}{}",
                out.status,
                line,
                String::from_utf8_lossy(&out.stderr)
            ));
        };
        let tcp = at
            .strip_prefix("http://")
            .or_else(|| at.strip_prefix("https://"));
        let addr = match (at.strip_prefix("unix:"), tcp) {
            (Some(p), _) => Addr::Unix(p.into()),
            // An https listener's address too (the hand-written client speaks no TLS).
            (_, Some(a)) => Addr::Tcp(a.to_owned()),
            _ => panic!("unexpected address {at}"),
        };
        Ok(Daemon { child, addr })
    }

    /// A client without a token.
    pub fn client(&self) -> Client {
        Client {
            addr: self.addr.clone(),
            token: None,
        }
    }

    /// SIGTERM, then waits for a clean exit (at most 20 s).
    pub fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "chaos serve exited with {status}");
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chaos serve still running 20 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One answer.
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The status line and headers.
    pub headers: String,
    /// The body (de-chunked).
    pub body: String,
}

impl Reply {
    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// A hand-written HTTP/1.1 client: one connection per request, `Connection: close`.
#[derive(Clone)]
pub struct Client {
    /// Where the daemon listens.
    pub addr: Addr,
    /// The bearer token sent, if any.
    pub token: Option<String>,
}

impl Client {
    /// The same client, sending `token`.
    pub fn with_token(&self, token: &str) -> Client {
        Client {
            addr: self.addr.clone(),
            token: Some(token.to_owned()),
        }
    }

    /// Sends one request with a JSON body and reads the whole answer.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        self.request_with_type(method, path, "application/json", body)
    }

    /// Sends one request whose body is of `content_type` and reads the whole answer.
    pub fn request_with_type(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Reply {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: chaos\r\nConnection: close\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        head.push_str("\r\n");
        let mut raw = Vec::new();
        let mut exchange = |s: &mut dyn ReadWrite| {
            s.write_all(head.as_bytes()).expect("sending");
            // A body over the limit may be refused before it is all read: keep the answer.
            let _ = s.write_all(body);
            let _ = s.read_to_end(&mut raw);
        };
        match &self.addr {
            Addr::Unix(p) => exchange(&mut UnixStream::connect(p).expect("connecting")),
            Addr::Tcp(a) => exchange(&mut TcpStream::connect(a).expect("connecting")),
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (headers, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no answer to {method} {path}: {text:?}"));
        let status = headers
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line: {headers}"));
        let body = if headers
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Reply {
            status,
            headers: headers.to_owned(),
            body,
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, b"")
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.request("POST", path, body.to_string().as_bytes())
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, b"")
    }
}

/// A stream to talk HTTP over.
pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A chunked body's data.
pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// The first line a daemon prints (its "listening on" line), waiting at most 60 s; empty if
/// none came.
pub fn first_line(out: impl Read + Send + 'static) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default()
}
