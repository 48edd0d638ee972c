//! `--server`: the CLI as a client of a running `chaos serve`, over its unix socket
//! (`unix:///run/chaos/chaos.sock`), HTTP or HTTPS (`https://host:port`, with `--ca-cert` for a
//! self-signed certificate).
//!
//! The commands build the same spec and print the same text as in-process; only the call in
//! between changes ([`Backend`]). The daemon answers with the library's own types, read back here
//! into [`Armed`], [`Status`] and [`Recovered`] so the printing code is shared. Its errors
//! (`{"error", "field"}`) carry the library error's message, printed as the in-process error is.
//!
//! HTTP is ureq's (blocking, rustls with ring). For unix sockets, ureq's connector API
//! (`ureq::unversioned`, pinned by Cargo.lock) gets a [`UnixConnector`]: the request is written to
//! the socket whatever host the URL names.

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use chaos_user::{Armed, FaultSpec, Recovered, Status, probe};
use serde::Deserialize;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, Transport,
};

/// The flags that send a command to a daemon. On `chaos` itself, before the subcommand:
/// `chaos --server unix:///run/chaos/chaos.sock list`.
#[derive(clap::Args, Debug, Default)]
pub struct ServerArgs {
    /// Send inject, list, status, recover and probe to a running `chaos serve`:
    /// unix:///PATH, http://HOST:PORT or https://HOST:PORT (default: $CHAOS_SERVER; in-process
    /// when neither is given).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The file holding the daemon's bearer token, for --server over TCP (default: $CHAOS_TOKEN).
    #[arg(long, value_name = "FILE")]
    token_file: Option<String>,
    /// Trust this PEM certificate for an https --server (a self-signed daemon's); the public
    /// web roots otherwise.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<String>,
}

impl ServerArgs {
    /// Whether a daemon flag was given on the command line (not from the environment).
    pub fn given(&self) -> bool {
        self.server.is_some() || self.token_file.is_some() || self.ca_cert.is_some()
    }
}

/// Where a command's work is done.
pub enum Backend {
    /// In this process, with its own injector.
    Local,
    /// By a running daemon.
    Daemon(Server),
}

impl Backend {
    /// The daemon named by `args` or `$CHAOS_SERVER`, or in-process.
    pub fn from_args(args: &ServerArgs) -> anyhow::Result<Backend> {
        let url = args.server.clone().or_else(|| {
            std::env::var("CHAOS_SERVER")
                .ok()
                .filter(|s| !s.trim().is_empty())
        });
        match url {
            Some(url) => Ok(Backend::Daemon(Server::new(&url, args)?)),
            None if args.token_file.is_some() || args.ca_cert.is_some() => bail!(
                "--token-file and --ca-cert are for a daemon: give --server URL or set CHAOS_SERVER"
            ),
            None => Ok(Backend::Local),
        }
    }
}

/// A running `chaos serve`.
pub struct Server {
    agent: ureq::Agent,
    /// `http://host:port` or `https://host:port`; `http://localhost` for a unix socket.
    base: String,
    /// As given, for messages.
    shown: String,
    token: Option<String>,
}

/// How long one call may take (arming may wait for the store's lock and the kernel).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

impl Server {
    /// A client of the daemon at `url`, with the token and CA certificate of `args`.
    pub fn new(url: &str, args: &ServerArgs) -> anyhow::Result<Server> {
        let token = match (&args.token_file, std::env::var("CHAOS_TOKEN")) {
            (Some(f), _) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("reading the token {f}"))?
                    .trim()
                    .to_owned(),
            ),
            (None, Ok(t)) => Some(t.trim().to_owned()),
            (None, Err(_)) => None,
        }
        .filter(|t| !t.is_empty());
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(CALL_TIMEOUT))
            .user_agent(concat!("chaos/", env!("CARGO_PKG_VERSION")));
        let bad_url = || {
            anyhow!(
                "--server {url}: give unix:///PATH (the daemon's socket), http://HOST:PORT or \
                 https://HOST:PORT"
            )
        };
        let (agent, base) = if let Some(path) = url.strip_prefix("unix://").or_else(|| {
            // `unix:/path`, as `chaos serve` prints it.
            url.strip_prefix("unix:").filter(|p| p.starts_with('/'))
        }) {
            if !path.starts_with('/') {
                return Err(bad_url());
            }
            if args.ca_cert.is_some() {
                bail!("--ca-cert is for an https --server; a unix socket has no TLS");
            }
            let connector = UnixConnector(path.into());
            let resolver = ureq::unversioned::resolver::DefaultResolver::default();
            (
                ureq::Agent::with_parts(config.build(), connector, resolver),
                "http://localhost".to_owned(),
            )
        } else if let Some(rest) = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
        {
            let host = rest.trim_end_matches('/');
            if host.is_empty() || host.contains('/') {
                return Err(bad_url());
            }
            let https = url.starts_with("https://");
            if let Some(ca) = &args.ca_cert {
                if !https {
                    bail!("--ca-cert is for an https --server; {url} is plain http");
                }
                config = config.tls_config(
                    ureq::tls::TlsConfig::builder()
                        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(read_ca(ca)?)))
                        .build(),
                );
            }
            (
                config.build().new_agent(),
                url.trim_end_matches('/').to_owned(),
            )
        } else {
            return Err(bad_url());
        };
        Ok(Server {
            agent,
            base,
            shown: url.to_owned(),
            token,
        })
    }

    /// `method path` with an optional JSON body; the answer's body on success, the daemon's
    /// error as an error otherwise.
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = match (method, body) {
            ("GET", _) => with_auth(self.agent.get(&url), &auth).call(),
            ("DELETE", _) => with_auth(self.agent.delete(&url), &auth).call(),
            ("POST", Some(b)) => with_auth(self.agent.post(&url), &auth)
                .header("content-type", "application/json")
                .send(b),
            _ => unreachable!("only GET, DELETE and POST with a body are sent"),
        };
        let mut resp = result.map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the answer of {}", self.shown))?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or_else(|_| format!("HTTP {status}: {}", text.trim()));
        if status == 401 {
            bail!(
                "the daemon at {} refused the token (401: {message}); give its token with \
                 --token-file FILE or CHAOS_TOKEN",
                self.shown
            );
        }
        // The library error's own message: printed as the in-process command prints it.
        Err(anyhow!(message))
    }

    /// A failure to reach the daemon, with where it was looked for.
    fn transport_error(&self, e: ureq::Error) -> anyhow::Error {
        let text = e.to_string();
        let tls = matches!(e, ureq::Error::Tls(_) | ureq::Error::Rustls(_))
            || text.contains("certificate");
        let hint = if text.contains("CaUsedAsEndEntity") {
            "; its certificate says CA:TRUE, which rustls refuses for a server: make it with \
             basicConstraints CA:FALSE (see docs/daemon.md)"
        } else if tls {
            "; for a self-signed certificate give it with --ca-cert FILE"
        } else if matches!(e, ureq::Error::Protocol(_)) && self.base.starts_with("http://") {
            "; if it serves TLS, use https://"
        } else if matches!(
            e,
            ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound
        ) {
            "; is `chaos serve` running there?"
        } else {
            ""
        };
        anyhow!("cannot talk to the daemon at {}: {e}{hint}", self.shown)
    }

    /// `POST /v1/faults`.
    pub fn inject(&self, spec: &FaultSpec) -> anyhow::Result<Armed> {
        let text = self.call("POST", "/v1/faults", Some(&serde_json::to_string(spec)?))?;
        self.parse(&text)
    }

    /// `GET /v1/faults`.
    pub fn list(&self) -> anyhow::Result<Vec<Status>> {
        let text = self.call("GET", "/v1/faults", None)?;
        self.parse(&text)
    }

    /// `GET /v1/faults/{id}`.
    pub fn status(&self, id: &str) -> anyhow::Result<Status> {
        let text = self.call("GET", &format!("/v1/faults/{}", path_segment(id)), None)?;
        self.parse(&text)
    }

    /// `DELETE /v1/faults/{id}`, or `DELETE /v1/faults` for every fault.
    pub fn recover(&self, id: Option<&str>) -> anyhow::Result<Recovered> {
        let path = match id {
            Some(id) => format!("/v1/faults/{}", path_segment(id)),
            None => "/v1/faults".to_owned(),
        };
        let text = self.call("DELETE", &path, None)?;
        self.parse(&text)
    }

    /// `GET /v1/probe`: the daemon's probe report (the strategy table follows from it).
    pub fn probe(&self) -> anyhow::Result<probe::Report> {
        #[derive(Deserialize)]
        struct Answer {
            probe: probe::Report,
        }
        let text = self.call("GET", "/v1/probe", None)?;
        Ok(self.parse::<Answer>(&text)?.probe)
    }

    /// An answer read back, or an error saying the daemon speaks another version.
    fn parse<T: serde::de::DeserializeOwned>(&self, text: &str) -> anyhow::Result<T> {
        serde_json::from_str(text).with_context(|| {
            format!(
                "the daemon at {} answered what this chaos cannot read (another version?)",
                self.shown
            )
        })
    }
}

/// `Authorization` on a request, when there is a token.
fn with_auth<B>(r: ureq::RequestBuilder<B>, auth: &Option<String>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => r.header("authorization", a),
        None => r,
    }
}

/// `id` percent-encoded for a path segment (ids are `[0-9a-f]`; anything else is escaped so a
/// typo reaches the daemon as the unknown id it is, not as another route).
fn path_segment(id: &str) -> String {
    let mut out = String::new();
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-_~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The certificates in the PEM file `path`.
fn read_ca(path: &str) -> anyhow::Result<Vec<ureq::tls::Certificate<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading --ca-cert {path}"))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(c) =
            item.map_err(|e| anyhow!("--ca-cert {path} is not a readable PEM file: {e}"))?
        {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        bail!("--ca-cert {path} holds no certificate (-----BEGIN CERTIFICATE-----)");
    }
    Ok(certs)
}

/// The daemon's error body.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// Connects every request to the unix socket at its path, whatever the URL's host.
#[derive(Debug)]
struct UnixConnector(PathBuf);

impl Connector<()> for UnixConnector {
    type Out = UnixTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _chained: Option<()>,
    ) -> Result<Option<UnixTransport>, ureq::Error> {
        let stream = UnixStream::connect(&self.0).map_err(|e| {
            ureq::Error::Io(std::io::Error::new(
                e.kind(),
                format!("connecting to {}: {e}", self.0.display()),
            ))
        })?;
        Ok(Some(UnixTransport {
            stream,
            buffers: LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            ),
        }))
    }
}

/// One connection to the daemon's socket.
#[derive(Debug)]
struct UnixTransport {
    stream: UnixStream,
    buffers: LazyBuffers,
}

/// `e` as ureq's timeout error when the socket timed out.
fn io_error(e: std::io::Error, timeout: &NextTimeout) -> ureq::Error {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            ureq::Error::Timeout(timeout.reason)
        }
        _ => ureq::Error::Io(e),
    }
}

impl Transport for UnixTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        self.stream
            .set_write_timeout(timeout.not_zero().map(|t| *t))
            .map_err(ureq::Error::Io)?;
        let output = &self.buffers.output()[..amount];
        self.stream
            .write_all(output)
            .map_err(|e| io_error(e, &timeout))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        self.stream
            .set_read_timeout(timeout.not_zero().map(|t| *t))
            .map_err(ureq::Error::Io)?;
        let n = loop {
            match self.stream.read(self.buffers.input_append_buf()) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(e, &timeout)),
            }
        };
        self.buffers.input_appended(n);
        Ok(n > 0)
    }

    fn is_open(&mut self) -> bool {
        // One request per connection is all the CLI makes; never reuse one.
        false
    }
}

#[cfg(test)]
mod tests {
    use chaos_user::{Counters, iostat, store::FaultRecord, strategy::Strategy};

    use super::*;

    #[test]
    fn escapes_ids() {
        assert_eq!(path_segment("0a1b"), "0a1b");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(path_segment(".."), "%2E%2E");
    }

    #[test]
    fn refuses_bad_urls() {
        let a = ServerArgs::default();
        for url in [
            "ftp://x",
            "unix://relative",
            "http://",
            "http://h/path",
            "h:1",
        ] {
            let e = Server::new(url, &a).err().expect(url).to_string();
            assert!(e.contains("unix:///PATH"), "{url}: {e}");
        }
        let a = ServerArgs {
            ca_cert: Some("/x".into()),
            ..ServerArgs::default()
        };
        let e = Server::new("http://h:1", &a).err().unwrap().to_string();
        assert!(e.contains("plain http"), "{e}");
    }

    /// What the daemon sends, read back and printed again, is the same text: the serde remote
    /// definitions lose nothing (`io` and `counters` included).
    #[test]
    fn answers_read_back_print_the_same() {
        use chaos_user::{
            spec::NetSpec,
            store::FaultState,
            strategy::{Attach, NetStrategy, Shaping},
        };
        let row = |op: Option<&str>, cgroup: Option<&str>| iostat::IoRow {
            op: op.map(str::to_owned),
            cgroup_id: cgroup.map(|_| 42),
            cgroup: cgroup.map(str::to_owned),
            ops: 7,
            bytes: 4096,
            errors: 1,
            iops: 3.5,
            bytes_per_s: 0.1 + 0.2,
            mean_us: 12.25,
            p50_us: 10.0,
            p90_us: 20.0,
            p99_us: 1e-7,
            max_us: 99.0,
            hist: Vec::new(),
        };
        let status = Status {
            record: FaultRecord {
                id: "f-0a1b2c3d".into(),
                spec: FaultSpec::Net(NetSpec {
                    percent: Some(30.0),
                    interface: Some("veth0".into()),
                    duration: Some("60s".into()),
                    ..NetSpec::default()
                }),
                strategy: Strategy::Net(NetStrategy {
                    attach: Attach::Tcx,
                    shaping: Shaping::None,
                    cgroup_ingress: false,
                }),
                state: FaultState::Armed,
                created_unix_ms: 1,
                deadline_unix_ms: 2,
                deadline_boot_ns: 3,
                net: None,
                syscall: None,
                block: None,
                owner: None,
                recovered_unix_ms: None,
                recovered_by: None,
                final_counters: None,
            },
            expired: false,
            remaining_ms: 1234,
            counters: Some(Counters {
                seen: 1,
                matched: 2,
                acted: 3,
            }),
            io: vec![iostat::IoStats {
                device: iostat::Device {
                    major: 7,
                    minor: 0,
                    name: "loop0".into(),
                },
                interval_ms: 1000,
                total: row(None, None),
                by_op: vec![row(Some("read"), None)],
                by_cgroup: vec![row(None, Some("/a"))],
                rows: vec![row(Some("write"), Some("/a"))],
                untracked: 5,
            }],
        };
        let sent = serde_json::to_string(&status).unwrap();
        let back: Status = serde_json::from_str(&sent).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), sent);

        let armed = Armed {
            id: "f-1".into(),
            strategy: status.record.strategy,
            deadline_unix_ms: 9,
        };
        let sent = serde_json::to_string(&armed).unwrap();
        let back: Armed = serde_json::from_str(&sent).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), sent);

        for rec in [
            Recovered::default(),
            Recovered {
                faults: vec!["f-1".into()],
                attachments: 2,
                unreadable: vec!["x".into()],
                swept: vec!["y".into()],
            },
        ] {
            let sent = serde_json::to_string(&rec).unwrap();
            let back: Recovered = serde_json::from_str(&sent).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), sent);
        }
    }
}
