//! `chaos serve`.

use std::{process::ExitCode, sync::Arc};

use chaos_user::{
    Injector,
    daemon::{self, Listen, auth::Token, tls::TlsFiles},
    store::{Owner, OwnerKind},
};

/// Arguments of `chaos serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The unix socket to listen on (mode 0600). Not with --listen.
    #[arg(long, conflicts_with = "listen", default_value = daemon::DEFAULT_SOCKET)]
    socket: String,
    /// Listen on TCP at ADDR (host:port) instead, with a bearer token from --token-file or
    /// CHAOS_TOKEN.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// The file holding the bearer token TCP clients must send.
    #[arg(long, requires = "listen")]
    token_file: Option<String>,
    /// Also write each drill's report to DIR/ID/report.{json,html} (they are served at
    /// /v1/experiments/ID/report either way).
    #[arg(long, value_name = "DIR")]
    report_dir: Option<std::path::PathBuf>,
    /// Serve TLS on --listen with this PEM certificate (chain, the server's first).
    #[arg(long, value_name = "FILE", requires_all = ["listen", "tls_key"])]
    tls_cert: Option<String>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires_all = ["listen", "tls_cert"])]
    tls_key: Option<String>,
    /// Recover every fault (and every trace) left by earlier runs before serving, also those
    /// armed from the command line or by another daemon. Without it, only the faults of
    /// daemons that are gone (killed before they could recover them) and expired ones are.
    #[arg(long)]
    recover_on_start: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let listen = match args.listen {
        Some(addr) => {
            let token = match (args.token_file, std::env::var("CHAOS_TOKEN")) {
                (Some(file), _) => Token::from_file(&file)?,
                (None, Ok(t)) => Token::new(&t)?,
                (None, Err(_)) => anyhow::bail!(
                    "--listen needs a bearer token: give --token-file FILE or set CHAOS_TOKEN"
                ),
            };
            let tls = match (args.tls_cert, args.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.into(),
                    key: key.into(),
                }),
                (None, None) => None,
                _ => anyhow::bail!("TLS needs both --tls-cert FILE and --tls-key FILE"),
            };
            Listen::Tcp { addr, token, tls }
        }
        None => Listen::Unix(args.socket.into()),
    };
    // Faults armed through the API are this daemon's: the next daemon recovers them if this
    // one dies without doing so.
    Owner::set_process_kind(OwnerKind::Daemon);
    let injector = Injector::new()?;
    let out = if args.recover_on_start {
        injector.recover_all()?
    } else {
        injector.recover_orphans()?
    };
    for u in &out.unreadable {
        eprintln!("warning: removed unreadable state: {u}");
    }
    if !out.faults.is_empty() {
        eprintln!(
            "recovered {} fault(s) left by earlier runs ({})",
            out.faults.len(),
            out.faults.join(", ")
        );
    }
    let injector = Arc::new(injector);
    // The traffic workers of drills are this binary (`chaos __traffic-worker`).
    let worker_exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("finding the chaos binary (it runs drills' traffic): {e}"))?;
    let experiments = Arc::new(daemon::experiments::Experiments::new(
        injector.clone(),
        worker_exe,
        args.report_dir,
    ));
    let store = injector.store().clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let bound = daemon::bind(listen)?;
        let stop = daemon::signalled()?;
        // One line on stdout, for whoever started the daemon (the port when given port 0).
        println!("listening on {}", bound.describe());
        daemon::serve(injector, experiments, bound, stop).await
    })?;
    // The history of the faults this daemon armed or recovered goes with it (with the store,
    // when nothing is armed any more).
    store.release(&Owner::current())?;
    Ok(ExitCode::SUCCESS)
}
