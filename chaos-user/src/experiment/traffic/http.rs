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
    let builder = ureq::http::Request::builder()
        .method(method_name(method))
        .uri(url);
    let bad = |e: ureq::http::Error| format!("bad request ({e})");
    // Without a body, none is sent (no `content-length: 0` on a GET).
    let sent = match body {
        Some(b) => agent.run(builder.body(b.to_owned()).map_err(bad)?),
        None => agent.run(builder.body(()).map_err(bad)?),
    };
    let mut response = sent.map_err(|e| describe(&e, timeout))?;
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
        collections::HashMap,
        io::{BufRead, BufReader, Read, Write},
        net::{SocketAddr, TcpListener},
        sync::{Mutex, OnceLock},
    };

    use super::*;
    use crate::experiment::{Traffic, traffic::worker::tests::run_for};

    /// What the test server saw of one test's requests (by the path's first segment).
    #[derive(Clone, Debug, Default)]
    pub(crate) struct Seen {
        pub(crate) connections: usize,
        pub(crate) requests: usize,
        pub(crate) last_line: String,
    }

    /// One HTTP/1.1 server on 127.0.0.1 for every unit test (the planner's tests count this
    /// process's listeners, so tests do not each open their own). `/<tag>/<status>/<delay_ms>`
    /// answers `status` after `delay_ms`; a request whose path ends in `/api/v1/query` gets the
    /// fake Prometheus answer named by `tag`. Connections are kept alive.
    fn server() -> SocketAddr {
        static ADDR: OnceLock<SocketAddr> = OnceLock::new();
        *ADDR.get_or_init(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { break };
                    std::thread::spawn(move || serve(stream));
                }
            });
            addr
        })
    }

    fn seen_map() -> &'static Mutex<HashMap<String, Seen>> {
        static SEEN: OnceLock<Mutex<HashMap<String, Seen>>> = OnceLock::new();
        SEEN.get_or_init(Default::default)
    }

    /// What the server saw of `tag`'s requests.
    pub(crate) fn seen(tag: &str) -> Seen {
        seen_map()
            .lock()
            .unwrap()
            .get(tag)
            .cloned()
            .unwrap_or_default()
    }

    /// The fake Prometheus answers.
    fn prometheus_answer(tag: &str) -> &'static str {
        match tag {
            "prom-vector" => {
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"a"},"value":[1700000000.1,"7.5"]},{"metric":{},"value":[1,"0"]}]}}"#
            }
            "prom-scalar" => {
                r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#
            }
            _ => r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
        }
    }

    fn serve(stream: std::net::TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut out = stream;
        let mut first = true;
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                return;
            }
            let mut length = 0usize;
            loop {
                let mut line = String::new();
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
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let path = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
            let path = path.split('?').next().unwrap_or("/");
            let mut parts = path.trim_start_matches('/').split('/');
            let tag = parts.next().unwrap_or("").to_owned();
            let status: u16 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(200);
            let delay: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            {
                let mut map = seen_map().lock().unwrap();
                let seen = map.entry(tag.clone()).or_default();
                seen.connections += usize::from(first);
                seen.requests += 1;
                seen.last_line = request_line.trim_end().to_owned();
            }
            first = false;
            std::thread::sleep(Duration::from_millis(delay));
            let answer = if path.ends_with("/api/v1/query") {
                prometheus_answer(&tag)
            } else {
                "ok"
            };
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n{answer}",
                answer.len()
            );
            if out.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    }

    /// The test server's URL for `path`.
    pub(crate) fn url(path: &str) -> String {
        format!("http://{}{path}", server())
    }

    fn load(path: &str) -> Traffic {
        Traffic {
            name: "h".into(),
            http: Some(HttpLoad {
                url: url(path),
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
        let (log, _) = run_for(&load("/keep/200/0"), Duration::from_millis(500));
        let ops = log.ops();
        assert!((35..=60).contains(&ops.len()), "{} ops", ops.len());
        assert!(ops.iter().all(|o| o.ok), "{:?}", log.last_error());
        let seen = seen("keep");
        assert_eq!(seen.requests, ops.len());
        assert_eq!(seen.last_line, "POST /keep/200/0 HTTP/1.1");
        // One connection per worker, kept alive.
        assert!(seen.connections <= 2, "{} connections", seen.connections);
    }

    #[test]
    fn a_failing_status_is_an_error_unless_expected() {
        let (log, _) = run_for(&load("/fail/503/0"), Duration::from_millis(300));
        assert!(!log.ops().is_empty());
        assert!(log.ops().iter().all(|o| !o.ok));
        assert_eq!(log.last_error().as_deref(), Some("status 503"));

        let mut spec = load("/fail/503/0");
        spec.http.as_mut().unwrap().status = Some(503);
        let (log, _) = run_for(&spec, Duration::from_millis(300));
        assert!(!log.ops().is_empty());
        assert!(log.ops().iter().all(|o| o.ok), "{:?}", log.last_error());
    }

    #[test]
    fn a_slow_server_times_out() {
        let mut spec = load("/slow/200/400");
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
