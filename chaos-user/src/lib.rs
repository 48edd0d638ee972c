//! The chaos fault injector's controller, as a library.
//!
//! Data flows one way: [`spec`] (what the user asked, serde) -> [`plan`] (validated and resolved)
//! -> [`strategy`] (chosen from the [`probe`] of the running kernel) -> [`backend`] (BPF map
//! entries, links, qdiscs, cgroup files) -> counters and status ([`injector`]). The [`store`]
//! records every fault before it is armed, so recovery works after any crash.
//!
//! # As a library
//!
//! [`Injector::new`] checks privileges (root, or CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN and
//! CAP_PERFMON) and probes the kernel once. [`Injector::inject`] arms a [`FaultSpec`] (the same
//! JSON as `chaos inject spec` and the daemon's `POST /v1/faults`) and returns a [`FaultGuard`]:
//! its [`status`](FaultGuard::status) and [`counters`](FaultGuard::counters) read the rule as it
//! acts, and dropping it (or a panic unwinding through its scope) recovers the fault.
//! [`Injector::run`] runs a whole drill ([`ExperimentSpec`], as `chaos run` reads it) and returns
//! its [`Report`]. Every fault also carries an in-kernel deadline, so it ends on time even if the
//! process dies without unwinding.
//!
//! ```no_run
//! use chaos_user::{FaultSpec, Injector};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // A drill with traffic starts its workers from this program (`RunOptions::worker_exe`).
//!     chaos_user::serve_traffic_worker();
//!     let injector = Injector::new()?;
//!
//!     let spec: FaultSpec = chaos_user::spec::from_json(
//!         r#"{"kind": "net", "action": "loss", "percent": 30,
//!             "interface": "veth0", "duration": "30s"}"#,
//!     )?;
//!     let fault = injector.inject(&spec)?;
//!     std::thread::sleep(std::time::Duration::from_secs(5));
//!     if let Some(c) = fault.counters()? {
//!         println!("{}: seen {} dropped {}", fault.id(), c.seen, c.acted);
//!     }
//!     fault.recover()?; // or let it drop
//!
//!     let drill = chaos_user::experiment::from_yaml(
//!         r#"
//! name: short-loss
//! baseline: 1s
//! duration: 5s
//! faults:
//!   - name: loss
//!     start: 1s
//!     duration: 3s
//!     fault: {kind: net, action: loss, percent: 50, interface: veth0}
//! expect:
//!   - {fault: loss, acted: "> 0"}
//! "#,
//!     )?;
//!     let report = injector.run(&drill)?;
//!     println!("{}: {}", report.experiment.name, report.verdict.as_str());
//!     Ok(())
//! }
//! ```
//!
//! `chaos-user/examples/agent.rs` is a small agent built this way.
#![deny(missing_docs)]

pub mod backend;
pub mod btf;
pub mod catalog;
pub mod checkup;
pub mod clock;
pub mod daemon;
pub mod demo;
pub mod discover;
pub mod ebpf;
pub mod error;
pub mod exec;
pub mod experiment;
pub mod fault_guard;
pub mod guard;
pub mod injector;
pub mod iostat;
pub mod mounts;
pub mod netns;
pub mod plan;
pub mod privilege;
pub mod probe;
pub mod seccomp;
pub mod sockets;
pub mod spec;
pub mod store;
pub mod strategy;
pub mod testbed;

pub use error::{Error, Result};
pub use experiment::{ExperimentSpec, report::Report};
pub use fault_guard::FaultGuard;
pub use injector::{Armed, Counters, DryRun, Injector, Recovered, RunOptions, Status};
pub use spec::FaultSpec;
pub use strategy::Strategy;

/// Serves a drill's traffic generator when this process was started as one, and exits; returns
/// at once otherwise. Call it first thing in `main` of a program that runs drills with
/// [`Injector::run`]: their traffic runs in worker processes started from the current
/// executable as `PROGRAM __traffic-worker` (unless [`RunOptions::worker_exe`] names a `chaos`
/// binary), in the generator's cgroup, so that a fault aimed at the traffic reaches the workers
/// and nothing else.
pub fn serve_traffic_worker() {
    let first = std::env::args_os().nth(1);
    if first.as_deref() != Some(std::ffi::OsStr::new(experiment::traffic::WORKER_SUBCOMMAND)) {
        return;
    }
    let code = match experiment::traffic::worker_main() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("traffic worker: {e}");
            1
        }
    };
    std::process::exit(code);
}
