//! Backends: turning a plan and its strategy into kernel state (BPF map entries, links, qdiscs,
//! cgroup files) and undoing it. One fault family per file.

pub mod dist;
pub mod net;
pub mod qdisc;
pub mod shaping;
