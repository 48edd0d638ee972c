//! Test support for the chaos fault injector: disposable test worlds, the skip convention shared
//! with the VM/native runner, and an independent oracle that lists what the injector left behind.
//!
//! * [`world`]: RAII guards for network namespaces, veth pairs, loop devices, cgroups and child
//!   processes, plus traffic helpers. Everything a guard makes is removed by its `Drop`, even when
//!   the test panics; [`world::sweep_stale`] removes what crashed runs left.
//! * [`skip`]: `CHAOS-SKIP <test>: <reason>` lines for tests the kernel cannot run
//!   ([`skip_unless!`], [`skip_on_err!`]).
//! * [`oracle`]: lists BPF programs, maps, links, pins, tc filters and qdiscs, cgroup I/O limits
//!   and state files of the injector, through libbpf, `tc` and cgroupfs rather than aya.
#![deny(missing_docs)]

pub mod bench;
pub mod chaos;
pub mod checkup;
pub mod cmd;
pub mod daemon;
pub mod demo;
pub mod drill;
pub mod oracle;
pub mod redis;
pub mod skip;
pub mod world;

pub use oracle::{Leftover, LeftoverKind, Oracle, Snapshot};
pub use world::{
    ChildProcess, LoopDevice, NetNs, TcpEcho, TestCgroup, TwoHosts, UdpSink, VethPair, udp_blast,
};
pub use world::{TcpSink, UdpEcho, UdpProbeSink, snmp, tcp_bulk, udp_rtt, udp_send_seq};
