//! `chaos serve`: the injector behind an HTTP API (axum on tokio), JSON, versioned under `/v1`.
//!
//! The daemon holds one [`Injector`] (probed once at start) and calls its blocking methods on
//! tokio's blocking pool, so the store's file lock and the BPF calls never stall the event loop.
//! The request bodies and answers are the CLI's: `POST /v1/faults` takes exactly the spec of
//! `chaos inject spec`, and the answers are what `chaos inject/list/status/recover --json` print.
//!
//! It listens on a unix socket (mode 0600, only root talks to it) by default, or on TCP with a
//! bearer token ([`auth`]), in TLS when given a certificate ([`tls`]). See [`api`] for the routes
//! and [`openapi`] for the document.

pub mod api;
pub mod auth;
pub mod experiments;
pub mod metrics;
pub mod openapi;
pub mod tls;

use std::{
    future::Future,
    os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use crate::{
    Injector,
    error::{Error, IoContext, Result},
};

/// Where the daemon listens when not told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/chaos/chaos.sock";

/// Largest request body accepted; larger ones get 413. A fault spec is a few hundred bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Where and how the daemon listens.
#[derive(Debug)]
pub enum Listen {
    /// A unix socket at this path, mode 0600. No token: the file mode is the access control.
    Unix(PathBuf),
    /// TCP at this address; every request but `/healthz` must carry the token.
    Tcp {
        /// `host:port`; port 0 picks a free port (printed at start).
        addr: String,
        /// The bearer token.
        token: auth::Token,
        /// Serve TLS with this certificate and key; plain HTTP when `None`.
        tls: Option<tls::TlsFiles>,
    },
}

/// A bound listener, ready to serve.
pub enum Bound {
    /// A unix socket, removed when this is dropped.
    Unix(tokio::net::UnixListener, SocketFile),
    /// A TCP listener, the token its requests must carry, and its TLS configuration if any.
    Tcp(
        tokio::net::TcpListener,
        auth::Token,
        Option<Arc<rustls::ServerConfig>>,
    ),
}

impl Bound {
    /// Where it listens, as a URL-like string (`unix:/run/chaos/chaos.sock`,
    /// `http://127.0.0.1:8080`, `https://127.0.0.1:8443`).
    pub fn describe(&self) -> String {
        match self {
            Bound::Unix(_, f) => format!("unix:{}", f.path.display()),
            Bound::Tcp(l, _, tls) => {
                let scheme = if tls.is_some() { "https" } else { "http" };
                match l.local_addr() {
                    Ok(a) => format!("{scheme}://{a}"),
                    Err(_) => scheme.to_owned(),
                }
            }
        }
    }
}

/// The socket file this daemon made; removed on drop if it is still ours (same inode).
pub struct SocketFile {
    path: PathBuf,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds `listen`. Must be called inside a tokio runtime.
///
/// A unix socket path where another daemon answers is refused; a socket file nobody listens on
/// (a crashed daemon's) is replaced; any other file there is refused. TLS files are read and
/// checked before the port is bound.
pub fn bind(listen: Listen) -> Result<Bound> {
    match listen {
        Listen::Unix(path) => bind_unix(&path),
        Listen::Tcp { addr, token, tls } => {
            let tls = tls.as_ref().map(tls::server_config).transpose()?;
            let l = std::net::TcpListener::bind(&addr).ctx(|| format!("listening on {addr}"))?;
            l.set_nonblocking(true)
                .ctx(|| format!("listening on {addr}"))?;
            let l = tokio::net::TcpListener::from_std(l).ctx(|| format!("listening on {addr}"))?;
            Ok(Bound::Tcp(l, token, tls))
        }
    }
}

fn bind_unix(path: &Path) -> Result<Bound> {
    let shown = path.display().to_string();
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Error::Invalid {
                    field: "socket",
                    problem: format!("another daemon is listening on {shown}"),
                    fix: "stop it, or give another --socket".into(),
                });
            }
            // Nobody answers: a daemon that died without removing it.
            std::fs::remove_file(path).ctx(|| format!("removing the stale socket {shown}"))?;
        }
        Ok(_) => {
            return Err(Error::Invalid {
                field: "socket",
                problem: format!("{shown} exists and is not a socket"),
                fix: "give another --socket".into(),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("looking at {shown}"), e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    }
    // Created with no access for group and others (umask), so there is no moment when another
    // user could connect; chmod again in case the umask was ignored.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let std_listener = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let std_listener = std_listener.ctx(|| format!("listening on {shown}"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .ctx(|| format!("chmod 0600 {shown}"))?;
    let ino = std::fs::symlink_metadata(path)
        .ctx(|| format!("looking at {shown}"))?
        .ino();
    let file = SocketFile {
        path: path.to_owned(),
        ino,
    };
    std_listener
        .set_nonblocking(true)
        .ctx(|| format!("listening on {shown}"))?;
    let l =
        tokio::net::UnixListener::from_std(std_listener).ctx(|| format!("listening on {shown}"))?;
    Ok(Bound::Unix(l, file))
}

/// Serves the API on `bound` until `shutdown` completes, then finishes the requests in flight,
/// aborts the drills still running and waits for their recovery, and removes the socket file.
pub async fn serve(
    injector: Arc<Injector>,
    experiments: Arc<experiments::Experiments>,
    bound: Bound,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let r = match bound {
        Bound::Unix(l, file) => {
            let app = api::router(injector, experiments.clone(), None);
            let r = axum::serve(l, app).with_graceful_shutdown(shutdown).await;
            drop(file);
            r
        }
        Bound::Tcp(l, token, None) => {
            let app = api::router(injector, experiments.clone(), Some(token));
            axum::serve(l, app).with_graceful_shutdown(shutdown).await
        }
        Bound::Tcp(l, token, Some(config)) => {
            let app = api::router(injector, experiments.clone(), Some(token));
            let handle = axum_server::Handle::new();
            let on_signal = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                on_signal.graceful_shutdown(Some(GRACE));
            });
            let std_listener = l.into_std().ctx(|| "serving the API")?;
            axum_server::from_tcp_rustls(
                std_listener,
                axum_server::tls_rustls::RustlsConfig::from_config(config),
            )
            .ctx(|| "serving the API")?
            .handle(handle)
            .http1_only()
            .serve(app.into_make_service())
            .await
        }
    };
    let drills = experiments.clone();
    let _ = tokio::task::spawn_blocking(move || drills.shutdown()).await;
    r.ctx(|| "serving the API")
}

/// How long requests in flight may take to finish once a TLS daemon is told to stop.
const GRACE: Duration = Duration::from_secs(30);

/// Catches SIGINT and SIGTERM from now on, and returns the future that completes on the first
/// of them. Call it before telling anyone the daemon listens: a handler installed only when the
/// server first polls its shutdown future leaves a window in which SIGTERM kills the daemon
/// outright, without its drills recovered. Must run inside the runtime.
pub fn signalled() -> Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).ctx(|| "catching SIGINT")?;
    let mut term = signal(SignalKind::terminate()).ctx(|| "catching SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
