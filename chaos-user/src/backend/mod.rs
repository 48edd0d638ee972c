//! Backends: turning a plan and its strategy into kernel state (BPF map entries, links, qdiscs,
//! cgroup files) and undoing it. One fault family per file.

pub mod net;
pub mod qdisc;
