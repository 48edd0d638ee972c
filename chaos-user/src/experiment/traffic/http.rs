//! The HTTP load (one request per operation, on a kept-alive connection: one `ureq` agent per
//! worker), and the HTTP exchange the HTTP and Prometheus probes share.

use std::{io::Read, time::Duration};

use super::{
    human,
    tcp::describe_io,
    worker::{OpError, Operation},
};
use crate::experiment::{HttpLoad, HttpMethod};

/// An agent for plain HTTP whose every request ends within `timeout`: statuses are answers
/// (not errors) to judge, redirects are not followed (the status is the server's), and no proxy
/// from the environment is used (a drill measures the service, not a proxy).
pub(crate) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .max_redirects_will_error(false)
        .proxy(None)
        .user_agent(concat!("chaos/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

/// The method's name.
pub(crate) fn method_name(m: Option<HttpMethod>) -> &'static str {
    match m.unwrap_or_default() {
        HttpMethod::Get => "GET",
        HttpMethod::Head => "HEAD",
        HttpMethod::Post => "POST",
        HttpMethod::Put => "PUT",
        HttpMethod::Delete => "DELETE",
    }
}

/// A `ureq` error in a few words.
pub(crate) fn describe(e: &ureq::Error, timeout: Duration) -> String {
    match e {
        ureq::Error::Timeout(_) => format!("timed out after {}", human(timeout)),
        ureq::Error::Io(io) => describe_io(io, timeout),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        other => other.to_string(),
    }
}

/// Whether `status` is a success: `expected`, or any 2xx when none is given.
pub(crate) fn status_ok(status: u16, expected: Option<u16>) -> bool {
    match expected {
        Some(s) => status == s,
        None => (200..300).contains(&status),
    }
}

/// One request; the response's status and, with `keep`, its body (otherwise read and dropped,
/// so that the connection can be used again).
pub(crate) fn exchange(
    agent: &ureq::Agent,
    method: Option<HttpMethod>,
    url: &str,
    body: Option<&str>,
    timeout: Duration,
    keep: bool,
) -> Result<(u16, String), String> {
    let request = ureq::http::Request::builder()
        .method(method_name(method))
        .uri(url)
        .body(body.unwrap_or_default().to_owned())
        .map_err(|e| format!("bad request ({e})"))?;
    let mut response = agent.run(request).map_err(|e| describe(&e, timeout))?;
    let status = response.status().as_u16();
    let mut text = String::new();
    let mut reader = response.body_mut().as_reader();
    let read = if keep {
        reader.read_to_string(&mut text).map(drop)
    } else {
        std::io::copy(&mut reader, &mut std::io::sink()).map(drop)
    };
    read.map_err(|e| format!("reading the response: {}", describe_io(&e, timeout)))?;
    Ok((status, text))
}

/// The HTTP load's operation.
#[derive(Debug)]
pub(crate) struct HttpOp {
    agent: ureq::Agent,
    spec: HttpLoad,
}

impl HttpOp {
    pub(crate) fn new(spec: &HttpLoad, timeout: Duration) -> HttpOp {
        HttpOp {
            agent: agent(timeout),
            spec: spec.clone(),
        }
    }
}

impl Operation for HttpOp {
    fn run(&mut self, timeout: Duration) -> Result<(), OpError> {
        let s = &self.spec;
        let (status, _) = exchange(
            &self.agent,
            s.method,
            &s.url,
            s.body.as_deref(),
            timeout,
            false,
        )
        .map_err(OpError::Failed)?;
        if status_ok(status, s.status) {
            Ok(())
        } else {
            Err(OpError::Failed(format!("status {status}")))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{
        io::{BufRead, BufReader, Read, Write},
        net::{SocketAddr, TcpListener},
        sync::{
            Arc,
            atomic::{AtomicU16, AtomicUsize, Ordering},
        },
    };

    use super::*;
    use crate::experiment::{Traffic, traffic::worker::tests::run_for};

    /// A tiny HTTP/1.1 server on 127.0.0.1 for tests: answers every request with the status in
    /// `status` (after `delay`), keeps connections alive, and counts connections and requests.
    pub(crate) struct TestServer {
        pub(crate) addr: SocketAddr,
        pub(crate) status: Arc<AtomicU16>,
        pub(crate) connections: Arc<AtomicUsize>,
        pub(crate) requests: Arc<AtomicUsize>,
    }

    impl TestServer {
        pub(crate) fn start(status: u16, delay: Duration, body: &'static str) -> TestServer {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let server = TestServer {
                addr: listener.local_addr().unwrap(),
                status: Arc::new(AtomicU16::new(status)),
                connections: Arc::new(AtomicUsize::new(0)),
                requests: Arc::new(AtomicUsize::new(0)),
            };
            let (st, conns, reqs) = (
                server.status.clone(),
                server.connections.clone(),
                server.requests.clone(),
            );
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { break };
                    conns.fetch_add(1, Ordering::Relaxed);
                    let (st, reqs) = (st.clone(), reqs.clone());
                    std::thread::spawn(move || {
                        let mut reader = BufReader::new(stream.try_clone().unwrap());
                        let mut out = stream;
                        loop {
                            let mut length = 0usize;
                            let mut line = String::new();
                            // Request line and headers.
                            loop {
                                line.clear();
                                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                    return;
                                }
                                let l = line.trim_end().to_ascii_lowercase();
                                if let Some(v) = l.strip_prefix("content-length:") {
                                    length = v.trim().parse().unwrap_or(0);
                                }
                                if l.is_empty() {
                                    break;
                                }
                            }
                            let mut request = vec![0u8; length];
                            if reader.read_exact(&mut request).is_err() {
                                return;
                            }
                            reqs.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(delay);
                            let status = st.load(Ordering::Relaxed);
                            let answer = format!(
                                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if out.write_all(answer.as_bytes()).is_err() {
                                return;
                            }
                        }
                    });
                }
            });
            server
        }

        pub(crate) fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }
    }

    fn load(server: &TestServer) -> Traffic {
        Traffic {
            name: "h".into(),
            http: Some(HttpLoad {
                url: server.url("/"),
                method: Some(HttpMethod::Post),
                body: Some("hello".into()),
                status: None,
            }),
            rate: Some(100.0),
            concurrency: Some(2),
            ..Traffic::default()
        }
    }

    #[test]
    fn requests_succeed_on_kept_alive_connections() {
        let server = TestServer::start(200, Duration::ZERO, "fine");
        let (log, _) = run_for(&load(&server), Duration::from_millis(500));
        let ops = log.ops();
        assert!((35..=60).contains(&ops.len()), "{} ops", ops.len());
        assert!(ops.iter().all(|o| o.ok), "{:?}", log.last_error());
        assert_eq!(server.requests.load(Ordering::Relaxed), ops.len());
        // One connection per worker, kept alive.
        assert!(server.connections.load(Ordering::Relaxed) <= 2);
    }

    #[test]
    fn a_failing_status_is_an_error_unless_expected() {
        let server = TestServer::start(503, Duration::ZERO, "down");
        let (log, _) = run_for(&load(&server), Duration::from_millis(300));
        assert!(!log.ops().is_empty());
        assert!(log.ops().iter().all(|o| !o.ok));
        assert_eq!(log.last_error().as_deref(), Some("status 503"));

        let mut spec = load(&server);
        spec.http.as_mut().unwrap().status = Some(503);
        let (log, _) = run_for(&spec, Duration::from_millis(300));
        assert!(!log.ops().is_empty());
        assert!(log.ops().iter().all(|o| o.ok), "{:?}", log.last_error());
    }

    #[test]
    fn a_slow_server_times_out() {
        let server = TestServer::start(200, Duration::from_millis(400), "slow");
        let mut spec = load(&server);
        spec.timeout = Some("100ms".into());
        spec.concurrency = Some(1);
        let (log, _) = run_for(&spec, Duration::from_millis(400));
        let ops = log.ops();
        assert!(!ops.is_empty());
        assert!(ops.iter().all(|o| !o.ok && o.latency_us < 400_000));
        assert_eq!(log.last_error().as_deref(), Some("timed out after 100ms"));
    }

    #[test]
    fn statuses_are_judged() {
        assert!(status_ok(204, None));
        assert!(!status_ok(302, None));
        assert!(status_ok(302, Some(302)));
        assert!(!status_ok(200, Some(302)));
    }
}
