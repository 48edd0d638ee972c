//! Syscall faults through seccomp user notification, for `chaos exec`: a classic-BPF filter
//! ([`filter`]) sends each planned call of the command to the supervisor ([`notify`]), which
//! decides and answers. Works on any kernel with seccomp user notification (5.0; letting a call
//! run needs `SECCOMP_USER_NOTIF_FLAG_CONTINUE`, 5.5), no BPF privileges needed.

pub mod filter;
pub mod notify;
