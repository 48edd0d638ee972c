//! The chaos fault injector's controller, as a library.
//!
//! Data flows one way: [`spec`] (what the user asked, serde) -> [`plan`] (validated and resolved)
//! -> [`strategy`] (chosen from the [`probe`] of the running kernel) -> [`backend`] (BPF map
//! entries, links, qdiscs, cgroup files) -> counters and status ([`injector`]). The [`store`]
//! records every fault before it is armed, so recovery works after any crash.
#![deny(missing_docs)]

pub mod backend;
pub mod btf;
pub mod catalog;
pub mod clock;
pub mod daemon;
pub mod demo;
pub mod ebpf;
pub mod error;
pub mod exec;
pub mod experiment;
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
pub use injector::{Armed, Counters, DryRun, Injector, Recovered, Status};
pub use spec::FaultSpec;
