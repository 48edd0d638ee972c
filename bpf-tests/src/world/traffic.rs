//! Traffic helpers: counted UDP blasts and sinks, and a TCP echo check.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::NetNs;

// From <asm-generic/socket.h> (libc does not export them for every target).
pub(crate) const SO_SNDBUFFORCE: libc::c_int = 32;
pub(crate) const SO_RCVBUFFORCE: libc::c_int = 33;

/// Socket buffer size asked for on both ends: enough for 20,000 small datagrams queued at once,
/// so that neither end loses any on its own.
pub const SOCKET_BUFFER: usize = 64 << 20;

/// How long [`UdpSink::count`] waits for the count to stop changing.
pub const DRAIN_QUIET: Duration = Duration::from_millis(200);

/// Gives `socket` a [`SOCKET_BUFFER`] receive buffer, so bursts of datagrams queue instead of
/// overflowing it.
pub fn big_receive_buffer(socket: &impl AsRawFd) {
    set_buffer(
        socket.as_raw_fd(),
        SO_RCVBUFFORCE,
        libc::SO_RCVBUF,
        SOCKET_BUFFER,
    );
}

/// Sets a socket buffer, bypassing `rmem_max`/`wmem_max` (we are root), else as large as allowed.
pub(crate) fn set_buffer(fd: libc::c_int, force: libc::c_int, plain: libc::c_int, size: usize) {
    let size = size as libc::c_int;
    let set = |opt| {
        // SAFETY: setsockopt reads one c_int we own.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if set(force) != 0 {
        set(plain);
    }
}

/// A UDP socket in a namespace, read on a background thread until dropped: the common part of
/// [`UdpSink`] and [`crate::UdpProbeSink`].
#[derive(Debug)]
pub(crate) struct UdpReceiver {
    local: SocketAddr,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpReceiver {
    /// Binds `addr:port` inside `ns` with a [`SOCKET_BUFFER`] receive buffer and hands every
    /// datagram to `on_datagram` (then counts it) on a thread named after `what`.
    pub(crate) fn bind(
        ns: &NetNs,
        addr: IpAddr,
        port: u16,
        what: &str,
        mut on_datagram: impl FnMut(&[u8]) + Send + 'static,
    ) -> io::Result<Self> {
        let socket = ns.run(|| UdpSocket::bind(SocketAddr::new(addr, port)))?;
        big_receive_buffer(&socket);
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let local = socket.local_addr()?;
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (count, stop) = (count.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("{what}-{local}"))
                .spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while !stop.load(Ordering::Relaxed) {
                        match socket.recv(&mut buf) {
                            Ok(n) => {
                                on_datagram(&buf[..n]);
                                count.fetch_add(1, Ordering::Release);
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    io::ErrorKind::WouldBlock
                                        | io::ErrorKind::TimedOut
                                        | io::ErrorKind::Interrupted
                                ) => {}
                            Err(_) => std::thread::sleep(Duration::from_millis(10)),
                        }
                    }
                })?
        };
        Ok(UdpReceiver {
            local,
            count,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Datagrams received so far, without waiting.
    pub(crate) fn count_now(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until the count has not changed for `quiet` (at most 30 s), then returns it.
    pub(crate) fn drain(&self, quiet: Duration) -> u64 {
        let start = Instant::now();
        let mut last = self.count_now();
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(10));
            let now = self.count_now();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet || start.elapsed() > Duration::from_secs(30) {
                return now;
            }
        }
    }

    /// Sets the count back to zero.
    pub(crate) fn reset(&self) {
        self.count.store(0, Ordering::Release);
    }
}

impl Drop for UdpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Receives UDP datagrams in a namespace on a background thread and counts them.
#[derive(Debug)]
pub struct UdpSink {
    rx: UdpReceiver,
    bytes: Arc<AtomicU64>,
}

impl UdpSink {
    /// Binds `addr:port` (port 0 picks one: see [`UdpSink::local_addr`]) inside `ns`, with a
    /// 64 MiB receive buffer, and starts counting.
    pub fn bind(ns: &NetNs, addr: IpAddr, port: u16) -> io::Result<Self> {
        let bytes = Arc::new(AtomicU64::new(0));
        let counted = bytes.clone();
        let rx = UdpReceiver::bind(ns, addr, port, "udp-sink", move |d| {
            counted.fetch_add(d.len() as u64, Ordering::Relaxed);
        })?;
        Ok(UdpSink { rx, bytes })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.rx.local_addr()
    }

    /// Datagrams received so far, without waiting.
    pub fn count_now(&self) -> u64 {
        self.rx.count_now()
    }

    /// Payload bytes received so far.
    pub fn bytes_now(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// Datagrams received, once the count has not changed for [`DRAIN_QUIET`]: call it after the
    /// sender finished.
    pub fn count(&self) -> u64 {
        self.drain(DRAIN_QUIET)
    }

    /// Waits until the count has not changed for `quiet` (at most 30 s), then returns it.
    pub fn drain(&self, quiet: Duration) -> u64 {
        self.rx.drain(quiet)
    }

    /// Datagrams received once `expected` have arrived, or after `patience` (then fewer): for
    /// a check that nothing is lost, where a receiver starved on a busy host (a TCG VM) must not
    /// read as loss.
    pub fn count_expecting(&self, expected: u64, patience: Duration) -> u64 {
        let start = Instant::now();
        loop {
            let now = self.count_now();
            if now >= expected || start.elapsed() >= patience {
                return now;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sets the count back to zero (e.g. between two phases of a test).
    pub fn reset(&self) {
        self.rx.reset();
        self.bytes.store(0, Ordering::Release);
    }
}

/// Sends `count` UDP datagrams of `payload_len` bytes (each starting with its sequence number,
/// big-endian u64, when long enough) from inside `from` to `to:port`, and returns how many the
/// kernel accepted. The socket is unconnected and has a 64 MiB send buffer; a send that fails for
/// lack of buffer space (`ENOBUFS`, `EAGAIN`) is retried after 1 ms, so the sender itself loses
/// nothing. Packets a TC program drops on egress are still counted as sent: the kernel hides that
/// drop from UDP senders without `IP_RECVERR`.
pub fn udp_blast(
    from: &NetNs,
    to: IpAddr,
    port: u16,
    count: u64,
    payload_len: usize,
) -> io::Result<u64> {
    let dest = SocketAddr::new(to, port);
    from.run(|| {
        let any: IpAddr = match to {
            IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let socket = UdpSocket::bind(SocketAddr::new(any, 0))?;
        set_buffer(
            socket.as_raw_fd(),
            SO_SNDBUFFORCE,
            libc::SO_SNDBUF,
            SOCKET_BUFFER,
        );
        let mut payload = vec![0x5au8; payload_len];
        let mut sent = 0u64;
        for seq in 0..count {
            if payload_len >= 8 {
                payload[..8].copy_from_slice(&seq.to_be_bytes());
            }
            send_to_retrying(&socket, &payload, dest)?;
            sent += 1;
        }
        Ok(sent)
    })
}

/// Sends one datagram with `send`, retrying after 1 ms (up to 1000 times) while the kernel has
/// no buffer space for it (`ENOBUFS`, `EAGAIN`) or the call was interrupted, so a sender that
/// outruns its device loses nothing itself.
pub fn send_retrying(mut send: impl FnMut() -> io::Result<usize>) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match send() {
            Ok(_) => return Ok(()),
            Err(e)
                if tries < 1000
                    && (e.raw_os_error() == Some(libc::ENOBUFS)
                        || e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted) =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// [`send_retrying`] of `data` to `dest` on an unconnected socket; an error names `dest`.
pub fn send_to_retrying(socket: &UdpSocket, data: &[u8], dest: SocketAddr) -> io::Result<()> {
    send_retrying(|| socket.send_to(data, dest))
        .map_err(|e| io::Error::new(e.kind(), format!("send to {dest}: {e}")))
}

/// A TCP echo server inside a namespace: every connection gets back what it sends.
#[derive(Debug)]
pub struct TcpEcho {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpEcho {
    /// Listens on `addr:port` (0 picks a port) inside `ns`.
    pub fn start(ns: &NetNs, addr: IpAddr, port: u16) -> io::Result<Self> {
        let listener = ns.run(|| TcpListener::bind(SocketAddr::new(addr, port)))?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("tcp-echo-{local}"))
                .spawn(move || {
                    let mut workers = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((conn, _)) => {
                                let stop = stop.clone();
                                workers.push(std::thread::spawn(move || echo(conn, &stop)));
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(10)),
                        }
                    }
                    for w in workers {
                        let _ = w.join();
                    }
                })?
        };
        Ok(TcpEcho {
            local,
            stop,
            thread: Some(thread),
        })
    }

    /// The listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

fn echo(mut conn: TcpStream, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from inside `from` to `to`, sends a line and reads it back within `timeout`;
/// returns the round-trip time.
pub fn tcp_check(from: &NetNs, to: SocketAddr, timeout: Duration) -> io::Result<Duration> {
    from.run(|| {
        let start = Instant::now();
        let mut conn = TcpStream::connect_timeout(&to, timeout)?;
        let left = timeout
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(1));
        conn.set_read_timeout(Some(left))?;
        conn.set_write_timeout(Some(left))?;
        let msg = b"chaos-ping\n";
        conn.write_all(msg)?;
        let mut back = [0u8; 11];
        conn.read_exact(&mut back)?;
        if &back != msg {
            return Err(io::Error::other("echo returned different bytes"));
        }
        Ok(start.elapsed())
    })
}
