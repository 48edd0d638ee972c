//! `chaos discover`: what a process does, watched from the raw tracepoints `sys_enter` and
//! `sys_exit` and the `sched_process_fork` tracepoint. Nothing here changes what a process does.
//!
//! The programs follow the processes in [`DISC_WATCH_MAP`] (the target and, as they are born,
//! its descendants) and send [`DiscEvent`]s through the ring buffer [`DISC_EVENTS_MAP`]: files
//! opened, the first write and the first sync of each open descriptor (later ones are counted in
//! [`DISC_FDS_MAP`], and the counts sent when the descriptor is closed or reused), connections,
//! binds and datagrams to port 53 (DNS). A busy database writes thousands of times a second; it
//! costs one hash update per write, not an event.
//!
//! The maps are not pinned: they live as long as the `chaos discover` that loaded them.

/// Name of the hash map from process id (tgid) to 1: the processes watched.
pub const DISC_WATCH_MAP: &str = "CHAOS_DISC_WATCH";
/// Name of the hash map from [`DiscFdKey`] to [`DiscFdCounts`]: descriptors written or synced
/// since they were opened.
pub const DISC_FDS_MAP: &str = "CHAOS_DISC_FDS";
/// Name of the ring buffer of [`DiscEvent`]s.
pub const DISC_EVENTS_MAP: &str = "CHAOS_DISC_EVENTS";
/// Name of the per-CPU array (one entry) counting events the full ring buffer refused.
pub const DISC_LOST_MAP: &str = "CHAOS_DISC_LOST";

/// Bytes of a path an [`kind::OPEN`] event carries (longer ones are cut, NUL-terminated).
pub const DISC_PATH_LEN: usize = 256;

/// Processes watched at once (the target and its descendants).
pub const DISC_MAX_WATCHED: u32 = 8192;
/// Open descriptors counted at once.
pub const DISC_MAX_FDS: u32 = 65536;

/// What an event tells.
pub mod kind {
    /// A file opened: `fd` (the result), `flags` (the open flags), `dirfd`, `path` as the
    /// process gave it (relative to `dirfd` or its working directory).
    pub const OPEN: u32 = 1;
    /// The first write to `fd` since it was opened (or since the watch began).
    pub const WRITE: u32 = 2;
    /// The first fsync, fdatasync or sync_file_range of `fd` since it was opened.
    pub const SYNC: u32 = 3;
    /// `fd` closed (or reused by an open) after writes or syncs: `writes`, `syncs` count them.
    pub const DONE: u32 = 4;
    /// connect(2) of `fd` to `family`/`addr`/`port`.
    pub const CONNECT: u32 = 5;
    /// bind(2) of `fd` to `family`/`addr`/`port`.
    pub const BIND: u32 = 6;
    /// sendto(2) of a datagram to port 53 (a DNS query).
    pub const DNS: u32 = 7;
    /// A new process (`tgid`) of a watched parent, at its first syscall.
    pub const NEW_PROCESS: u32 = 8;
    /// `fd` made a copy of `dirfd` (dup, dup2, dup3, fcntl F_DUPFD): a shell's `>> file`
    /// opens the file and moves it to descriptor 1.
    pub const DUP: u32 = 9;
}

/// Key of [`DISC_FDS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DiscFdKey {
    /// Process id.
    pub tgid: u32,
    /// Descriptor.
    pub fd: u32,
}

/// Value of [`DISC_FDS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiscFdCounts {
    /// write, pwrite64, writev, pwritev, pwritev2 calls.
    pub writes: u64,
    /// fsync, fdatasync, sync_file_range calls.
    pub syncs: u64,
}

/// One event of the ring buffer (fields not used by its [`kind`] are zero).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DiscEvent {
    /// One of [`kind`].
    pub kind: u32,
    /// Process id (in the controller's pid namespace).
    pub tgid: u32,
    /// The descriptor the call used or returned.
    pub fd: i32,
    /// Open flags ([`kind::OPEN`]).
    pub flags: u32,
    /// The directory descriptor a path is relative to ([`kind::OPEN`]; -100 is the working
    /// directory).
    pub dirfd: i32,
    /// Address family (`AF_INET`, `AF_INET6`, `AF_UNIX`).
    pub family: u16,
    /// Port, host order.
    pub port: u16,
    /// Counts ([`kind::DONE`]).
    pub writes: u64,
    /// Counts ([`kind::DONE`]).
    pub syncs: u64,
    /// IPv4 in the first 4 bytes, or IPv6; network order.
    pub addr: [u8; 16],
    /// NUL-terminated path ([`kind::OPEN`]).
    pub path: [u8; DISC_PATH_LEN],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data, no padding holes that matter, any bit pattern valid.
    unsafe impl aya::Pod for super::DiscFdKey {}
    unsafe impl aya::Pod for super::DiscFdCounts {}
}
