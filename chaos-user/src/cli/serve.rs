//! `chaos serve`.

use std::{process::ExitCode, sync::Arc};

use chaos_user::{
    Injector,
    daemon::{self, Listen, auth::Token},
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
            Listen::Tcp { addr, token }
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
    let store = injector.store().clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let bound = daemon::bind(listen)?;
        // One line on stdout, for whoever started the daemon (the port when given port 0).
        println!("listening on {}", bound.describe());
        daemon::serve(injector, bound, daemon::signalled()).await
    })?;
    // The history of the faults this daemon armed or recovered goes with it (with the store,
    // when nothing is armed any more).
    store.release(&Owner::current())?;
    Ok(ExitCode::SUCCESS)
}
