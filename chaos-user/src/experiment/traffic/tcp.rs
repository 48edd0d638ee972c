//! The TCP load: each operation connects, sends `send` if given, waits for a reply of at least
//! one byte, and closes. The connect and each read and write are bounded by what is left of the
//! operation's timeout. Also the TCP probe's connect.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    time::{Duration, Instant},
};

use super::{
    human,
    worker::{OpError, Operation},
};
use crate::experiment::TcpLoad;

/// An I/O error in a few words: `connection refused`, `timed out after 1s`, ...
pub(crate) fn describe_io(e: &std::io::Error, timeout: Duration) -> String {
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => {
            format!("timed out after {}", human(timeout))
        }
        ErrorKind::ConnectionReset => "connection reset".into(),
        ErrorKind::ConnectionAborted => "connection aborted".into(),
        ErrorKind::BrokenPipe => "connection closed while sending".into(),
        ErrorKind::HostUnreachable => "host unreachable".into(),
        ErrorKind::NetworkUnreachable => "network unreachable".into(),
        _ => {
            let text = e.to_string();
            // "Permission denied (os error 13)" -> "permission denied"
            let text = text.split(" (os error").next().unwrap_or(&text);
            let mut c = text.chars();
            c.next()
                .map(|f| f.to_lowercase().chain(c).collect())
                .unwrap_or_default()
        }
    }
}

/// `HOST:PORT` resolved (the first address).
pub(crate) fn resolve(address: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = address.parse() {
        return Ok(a);
    }
    address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address} ({e})"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to no address"))
}

/// Connects to `address` within `timeout`.
pub(crate) fn connect(address: &str, timeout: Duration) -> Result<TcpStream, String> {
    let addr = resolve(address)?;
    TcpStream::connect_timeout(&addr, timeout).map_err(|e| describe_io(&e, timeout))
}

/// The TCP load's operation.
#[derive(Debug)]
pub(crate) struct TcpOp {
    address: String,
    send: Option<Vec<u8>>,
}

impl TcpOp {
    pub(crate) fn new(spec: &TcpLoad) -> TcpOp {
        TcpOp {
            address: spec.address.clone(),
            send: spec.send.as_ref().map(|s| s.as_bytes().to_vec()),
        }
    }
}

impl Operation for TcpOp {
    fn run(&mut self, timeout: Duration) -> Result<(), OpError> {
        let deadline = Instant::now() + timeout;
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        };
        let fail = |e: std::io::Error| OpError::Failed(describe_io(&e, timeout));
        let mut stream = connect(&self.address, timeout).map_err(OpError::Failed)?;
        let _ = stream.set_nodelay(true);
        if let Some(send) = &self.send {
            stream.set_write_timeout(Some(left())).map_err(fail)?;
            stream.write_all(send).map_err(fail)?;
        }
        stream.set_read_timeout(Some(left())).map_err(fail)?;
        let mut buf = [0u8; 512];
        match stream.read(&mut buf) {
            Ok(0) => Err(OpError::Failed("closed without a reply".into())),
            Ok(_) => Ok(()),
            Err(e) => Err(fail(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;
    use crate::experiment::{Traffic, traffic::worker::tests::run_for};

    /// One server on 127.0.0.1 for these tests (the planner's tests count this process's
    /// listeners): it reads what it is sent and answers "ok", or holds the connection without a
    /// word when sent "hush".
    fn server() -> SocketAddr {
        static ADDR: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();
        *ADDR.get_or_init(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut s) = stream else { break };
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 64];
                        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                        let n = s.read(&mut buf).unwrap_or(0);
                        if buf[..n].starts_with(b"hush") {
                            std::thread::sleep(Duration::from_secs(3));
                        } else {
                            let _ = s.write_all(b"ok\n");
                        }
                    });
                }
            });
            addr
        })
    }

    fn load(addr: SocketAddr) -> Traffic {
        Traffic {
            name: "t".into(),
            tcp: Some(TcpLoad {
                address: addr.to_string(),
                send: Some("ping\n".into()),
            }),
            rate: Some(100.0),
            concurrency: Some(2),
            ..Traffic::default()
        }
    }

    #[test]
    fn operations_succeed_against_an_echoing_server() {
        let (log, exit) = run_for(&load(server()), Duration::from_millis(500));
        let ops = log.ops();
        assert!(
            (35..=60).contains(&ops.len()),
            "{} ops in 0.5 s at 100/s",
            ops.len()
        );
        assert!(ops.iter().all(|o| o.ok), "{:?}", log.last_error());
        assert!(exit.is_none());
    }

    #[test]
    fn refused_connections_are_errors() {
        // A port nobody listens on: bind, note it, close.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (log, _) = run_for(&load(addr), Duration::from_millis(300));
        let ops = log.ops();
        assert!(!ops.is_empty());
        assert!(ops.iter().all(|o| !o.ok));
        assert_eq!(log.last_error().as_deref(), Some("connection refused"));
    }

    #[test]
    fn a_silent_server_times_out() {
        let mut spec = load(server());
        spec.tcp.as_mut().unwrap().send = Some("hush\n".into());
        spec.timeout = Some("200ms".into());
        spec.concurrency = Some(1);
        let (log, _) = run_for(&spec, Duration::from_millis(700));
        let ops = log.ops();
        assert!(!ops.is_empty());
        for op in &ops {
            assert!(!op.ok);
            assert!(
                (190_000..600_000).contains(&op.latency_us),
                "latency {}us",
                op.latency_us
            );
        }
        assert_eq!(log.last_error().as_deref(), Some("timed out after 200ms"));
    }
}
