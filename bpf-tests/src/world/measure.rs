//! Measurement tools for network fault tests: what exactly arrived (loss runs, duplicates,
//! corruption, reordering), round-trip latency, TCP bulk throughput, the kernel's SNMP counters
//! inside a namespace, and binomial acceptance intervals.
//!
//! The faults under test act on a veth between two namespaces ([`crate::TwoHosts`]). Each tool
//! here measures one property independently of the injector's own counters, so that a test can
//! compare what the injector claims against what the traffic shows:
//!
//! * [`UdpProbeSink`] + [`udp_send_seq`]: sequence-numbered datagrams with a payload derived from
//!   the sequence number ([`payload`]), so loss, duplication, reordering and single bit flips are
//!   all visible at the receiver, even when checksum offload lets a corrupted datagram through.
//! * [`UdpEcho`] + [`udp_rtt`]: one probe at a time, each on a fresh socket, timed to its echo.
//! * [`TcpSink`] + [`tcp_bulk`]: throughput measured at the receiver, excluding slow start.
//! * [`snmp`]: `/proc/net/snmp`, `snmp6` and `netstat` counters as the namespace sees them.
//! * [`binomial_interval`], [`within_binomial`]: is an observed count plausible?

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::traffic::{SO_RCVBUFFORCE, SO_SNDBUFFORCE, UdpReceiver, send_to_retrying, set_buffer};
use super::{DRAIN_QUIET, NetNs, SOCKET_BUFFER};

/// How long the background threads block in one `recv`/`accept` before checking for stop.
const POLL: Duration = Duration::from_millis(50);

// From <asm-generic/socket.h> (libc does not export them for every target).

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

fn unspecified_like(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Sequence-numbered probe datagrams
// ---------------------------------------------------------------------------------------------

/// Smallest probe payload: the 8-byte sequence number and at least 8 bytes of pattern, so that a
/// bit flipped in the sequence number itself is detectable too.
pub const MIN_PROBE_LEN: usize = 16;

/// The pattern word generator: splitmix64 seeded with the sequence number. Its output function is
/// a bijection of the state, so two different sequence numbers always give different first
/// words: a flip in the sequence-number field makes the pattern mismatch.
struct Pattern(u64);

impl Pattern {
    fn new(seq: u64) -> Self {
        // Any fixed key: the seed is a bijection of `seq`.
        Pattern(seq ^ 0x6368_616f_732d_7431)
    }

    fn next_word(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Number of bits by which `bytes` differs from the pattern, stopping early once it exceeds
    /// `limit`.
    fn distance(mut self, bytes: &[u8], limit: u32) -> u32 {
        let mut diff = 0;
        for chunk in bytes.chunks(8) {
            let word = self.next_word().to_be_bytes();
            diff += chunk
                .iter()
                .zip(word)
                .map(|(a, b)| (a ^ b).count_ones())
                .sum::<u32>();
            if diff > limit {
                break;
            }
        }
        diff
    }
}

/// The probe payload for sequence number `seq`: `seq` as a big-endian u64, then `len - 8` bytes
/// of a pseudo-random pattern derived from `seq`. Every bit of the payload depends on `seq`, so
/// any single flipped bit — in the pattern or in the sequence number — is detected by
/// [`UdpProbeSink`]. Panics if `len < MIN_PROBE_LEN`.
pub fn payload(seq: u64, len: usize) -> Vec<u8> {
    assert!(
        len >= MIN_PROBE_LEN,
        "probe payloads are at least {MIN_PROBE_LEN} bytes, not {len}"
    );
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&seq.to_be_bytes());
    let mut pattern = Pattern::new(seq);
    while out.len() < len {
        let word = pattern.next_word().to_be_bytes();
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&word[..take]);
    }
    out
}

/// What the receiver made of one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// The sequence number it carries: the one in its header when intact; when corrupted, the
    /// sequence number whose payload it differs from by exactly one bit (wherever that bit is,
    /// header included); `None` when no such sequence number exists (wrong length, or more than
    /// one bit damaged).
    pub seq: Option<u64>,
    /// Whether it is exactly [`payload`]`(seq, len)`.
    pub intact: bool,
    /// Its length in bytes.
    pub len: usize,
    /// When the sink's thread received it.
    pub at: Instant,
}

/// Classifies a received datagram against the expected length.
fn classify(buf: &[u8], expected_len: usize, at: Instant) -> Arrival {
    let len = buf.len();
    let unknown = Arrival {
        seq: None,
        intact: false,
        len,
        at,
    };
    if len != expected_len || len < MIN_PROBE_LEN {
        return unknown;
    }
    let (head, body) = buf.split_at(8);
    let seq = u64::from_be_bytes(head.try_into().expect("8 bytes"));
    match Pattern::new(seq).distance(body, 1) {
        0 => Arrival {
            seq: Some(seq),
            intact: true,
            len,
            at,
        },
        // The header is intact and one pattern bit flipped.
        1 => Arrival {
            seq: Some(seq),
            intact: false,
            len,
            at,
        },
        // Either several bits or one header bit: try every single header flip.
        _ => (0..64)
            .map(|bit| seq ^ (1u64 << bit))
            .find(|&cand| Pattern::new(cand).distance(body, 0) == 0)
            .map_or(unknown, |cand| Arrival {
                seq: Some(cand),
                intact: false,
                len,
                at,
            }),
    }
}

/// What a [`UdpProbeSink`] received, against the sequence numbers `0..sent`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// How many were sent (the argument to [`UdpProbeSink::stats`]).
    pub sent: u64,
    /// Datagrams received, intact or not.
    pub received: u64,
    /// Distinct sequence numbers in `0..sent` received at least once (a corrupted datagram
    /// counts for the sequence number it was attributed to, see [`Arrival::seq`]).
    pub unique: u64,
    /// Arrivals of a sequence number in `0..sent` already received before (intact or not).
    pub duplicates: u64,
    /// Datagrams that are not exactly a probe payload of the expected length (a flipped bit, a
    /// wrong length, foreign data).
    pub corrupted: u64,
    /// Of `corrupted`, those no sequence number could be attributed to (more than one bit
    /// damaged, or a wrong length): their sequence numbers count as missing.
    pub corrupted_unattributed: u64,
    /// First arrivals of a sequence number lower than the highest one received before it.
    /// Duplicates are not counted here even when late.
    pub reordered: u64,
    /// Lengths of the runs of consecutive sequence numbers in `0..sent` never received, in
    /// order. Its sum is `sent - unique`.
    pub loss_runs: Vec<u64>,
    /// Arrivals attributed to a sequence number `>= sent` (e.g. from another sender).
    pub out_of_range: u64,
    /// The highest sequence number received (in `0..sent` or not).
    pub max_seq: Option<u64>,
}

impl SinkStats {
    /// Sequence numbers in `0..sent` never received: `sent - unique`.
    pub fn lost(&self) -> u64 {
        self.sent - self.unique
    }

    /// Computes the statistics of `arrivals` (in arrival order) against `0..sent`.
    pub fn from_arrivals(arrivals: &[Arrival], sent: u64) -> SinkStats {
        let mut s = SinkStats {
            sent,
            received: arrivals.len() as u64,
            ..SinkStats::default()
        };
        let mut seen = vec![false; sent as usize];
        let mut highest: Option<u64> = None;
        for a in arrivals {
            if !a.intact {
                s.corrupted += 1;
            }
            let Some(seq) = a.seq else {
                s.corrupted_unattributed += 1;
                continue;
            };
            s.max_seq = s.max_seq.max(Some(seq));
            if seq >= sent {
                s.out_of_range += 1;
                continue;
            }
            if seen[seq as usize] {
                s.duplicates += 1;
                continue;
            }
            seen[seq as usize] = true;
            s.unique += 1;
            if highest.is_some_and(|h| seq < h) {
                s.reordered += 1;
            }
            highest = highest.max(Some(seq));
        }
        let mut run = 0;
        for got in seen {
            if got {
                if run > 0 {
                    s.loss_runs.push(run);
                }
                run = 0;
            } else {
                run += 1;
            }
        }
        if run > 0 {
            s.loss_runs.push(run);
        }
        s
    }
}

/// Receives probe datagrams ([`payload`]) in a namespace on a background thread and records
/// every arrival for [`UdpProbeSink::stats`]. Like [`crate::UdpSink`] it has a 64 MiB receive
/// buffer, so it loses nothing on its own.
#[derive(Debug)]
pub struct UdpProbeSink {
    rx: UdpReceiver,
    len: usize,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
}

impl UdpProbeSink {
    /// Binds `addr:port` (port 0 picks one: see [`UdpProbeSink::local_addr`]) inside `ns` and
    /// starts receiving probes of `len` bytes (other lengths count as corrupted).
    pub fn bind(ns: &NetNs, addr: IpAddr, port: u16, len: usize) -> io::Result<Self> {
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let seen = arrivals.clone();
        let rx = UdpReceiver::bind(ns, addr, port, "udp-probe-sink", move |d| {
            let a = classify(d, len, Instant::now());
            seen.lock().expect("arrivals lock").push(a);
        })?;
        Ok(UdpProbeSink { rx, len, arrivals })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.rx.local_addr()
    }

    /// The expected payload length.
    pub fn expected_len(&self) -> usize {
        self.len
    }

    /// Datagrams received so far, without waiting.
    pub fn count_now(&self) -> u64 {
        self.rx.count_now()
    }

    /// Datagrams received, once the count has not changed for [`DRAIN_QUIET`].
    pub fn count(&self) -> u64 {
        self.drain(DRAIN_QUIET)
    }

    /// Waits until the count has not changed for `quiet` (at most 30 s), then returns it.
    pub fn drain(&self, quiet: Duration) -> u64 {
        self.rx.drain(quiet)
    }

    /// The statistics against `0..sent`, once nothing has arrived for [`DRAIN_QUIET`]: call it
    /// after the sender finished. With a delay fault armed, use [`UdpProbeSink::drain`] with a
    /// longer quiet time first.
    pub fn stats(&self, sent: u64) -> SinkStats {
        self.drain(DRAIN_QUIET);
        self.stats_now(sent)
    }

    /// The statistics against `0..sent` of what arrived so far, without waiting.
    pub fn stats_now(&self, sent: u64) -> SinkStats {
        SinkStats::from_arrivals(&self.arrivals.lock().expect("arrivals lock"), sent)
    }

    /// Every arrival so far, in arrival order (for reordering distances, arrival rates, ...).
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().expect("arrivals lock").clone()
    }

    /// Forgets every arrival (e.g. between two phases of a test).
    pub fn reset(&self) {
        let mut arrivals = self.arrivals.lock().expect("arrivals lock");
        arrivals.clear();
        self.rx.reset();
    }
}

/// Sends probe datagrams [`payload`]`(seq, len)` for `seq` in `0..count` from inside `from` to
/// `to`, and returns how many the kernel accepted (all of them, or an error).
///
/// The socket is unconnected, has a 64 MiB send buffer, and retries a send that fails for lack of
/// buffer space, like [`crate::udp_blast`]. With `pace`, datagram `i` is sent no earlier than
/// `i * pace` after the first (the average rate is exact; single gaps may be longer); without,
/// as fast as the kernel takes them.
pub fn udp_send_seq(
    from: &NetNs,
    to: SocketAddr,
    count: u64,
    len: usize,
    pace: Option<Duration>,
) -> io::Result<u64> {
    if len < MIN_PROBE_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("probe payloads are at least {MIN_PROBE_LEN} bytes, not {len}"),
        ));
    }
    from.run(|| {
        let socket = UdpSocket::bind(SocketAddr::new(unspecified_like(to.ip()), 0))?;
        set_buffer(
            socket.as_raw_fd(),
            SO_SNDBUFFORCE,
            libc::SO_SNDBUF,
            SOCKET_BUFFER,
        );
        let start = Instant::now();
        let mut sent = 0u64;
        for seq in 0..count {
            if let Some(pace) = pace {
                let due = start + pace.saturating_mul(seq.min(u32::MAX as u64) as u32);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            send_to_retrying(&socket, &payload(seq, len), to)?;
            sent += 1;
        }
        Ok(sent)
    })
}

// ---------------------------------------------------------------------------------------------
// UDP round-trip latency
// ---------------------------------------------------------------------------------------------

/// Per-probe timeout of [`udp_rtt`]: a probe whose echo has not come back by then is lost.
pub const RTT_TIMEOUT: Duration = Duration::from_secs(1);

/// A UDP echo server inside a namespace: every datagram goes back to its sender unchanged.
#[derive(Debug)]
pub struct UdpEcho {
    local: SocketAddr,
    echoed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    /// Binds `addr:port` (0 picks a port) inside `ns` and starts echoing.
    pub fn start(ns: &NetNs, addr: IpAddr, port: u16) -> io::Result<Self> {
        let socket = ns.run(|| UdpSocket::bind(SocketAddr::new(addr, port)))?;
        set_buffer(
            socket.as_raw_fd(),
            SO_RCVBUFFORCE,
            libc::SO_RCVBUF,
            SOCKET_BUFFER,
        );
        set_buffer(
            socket.as_raw_fd(),
            SO_SNDBUFFORCE,
            libc::SO_SNDBUF,
            SOCKET_BUFFER,
        );
        socket.set_read_timeout(Some(POLL))?;
        let local = socket.local_addr()?;
        let echoed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (echoed, stop) = (echoed.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("udp-echo-{local}"))
                .spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while !stop.load(Ordering::Relaxed) {
                        match socket.recv_from(&mut buf) {
                            Ok((n, peer)) => {
                                if send_to_retrying(&socket, &buf[..n], peer).is_ok() {
                                    echoed.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(e) if is_transient(&e) => {}
                            Err(_) => std::thread::sleep(Duration::from_millis(10)),
                        }
                    }
                })?
        };
        Ok(UdpEcho {
            local,
            echoed,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Datagrams echoed so far.
    pub fn echoed(&self) -> u64 {
        self.echoed.load(Ordering::Relaxed)
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// [`udp_rtt_with`] with the per-probe timeout [`RTT_TIMEOUT`].
pub fn udp_rtt(
    from: &NetNs,
    to: SocketAddr,
    count: usize,
    interval: Duration,
) -> io::Result<Vec<Option<Duration>>> {
    udp_rtt_with(from, to, count, interval, RTT_TIMEOUT)
}

/// Sends `count` probes from inside `from` to a [`UdpEcho`] at `to`, one at a time, and times
/// each one's echo: element `i` is probe `i`'s round-trip time, or `None` when its echo did not
/// come back intact within `timeout` (lost or corrupted either way).
///
/// Each probe uses a fresh socket (a new source port), so probes are separate flows: per-flow
/// queueing (fq) or a late echo of an earlier probe cannot delay or answer a later one. Probe
/// `i` is sent `i * interval` after the first, or as soon as probe `i - 1` is done if that is
/// later. Fails if no echo server listens at `to` (ICMP port unreachable).
pub fn udp_rtt_with(
    from: &NetNs,
    to: SocketAddr,
    count: usize,
    interval: Duration,
    timeout: Duration,
) -> io::Result<Vec<Option<Duration>>> {
    // Marks this run's probes apart from any other's.
    let nonce = (u64::from(std::process::id()) << 32)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
    from.run(|| {
        let any = SocketAddr::new(unspecified_like(to.ip()), 0);
        let first = Instant::now();
        let mut rtts = Vec::with_capacity(count);
        for i in 0..count {
            let due = first + interval.saturating_mul(i.min(u32::MAX as usize) as u32);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let socket = UdpSocket::bind(any)?;
            socket.connect(to)?;
            let mut probe = [0u8; 16];
            probe[..8].copy_from_slice(&(i as u64).to_be_bytes());
            probe[8..].copy_from_slice(&nonce.to_be_bytes());
            let start = Instant::now();
            socket.send(&probe)?;
            let mut back = [0u8; 64];
            let rtt = loop {
                let left = timeout.saturating_sub(start.elapsed());
                if left.is_zero() {
                    break None;
                }
                socket.set_read_timeout(Some(left))?;
                match socket.recv(&mut back) {
                    Ok(n) if back[..n] == probe => break Some(start.elapsed()),
                    // A damaged echo: keep waiting for an intact one.
                    Ok(_) => {}
                    Err(e) if is_transient(&e) => {}
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("no UDP echo server at {to}: {e}"),
                        ));
                    }
                    Err(e) => return Err(e),
                }
            };
            rtts.push(rtt);
        }
        Ok(rtts)
    })
}

/// Summary statistics of a set of durations (see [`summary`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencyStats {
    /// Number of samples.
    pub count: usize,
    /// Arithmetic mean.
    pub mean: Duration,
    /// Sample standard deviation (divides by `count - 1`; zero for fewer than two samples).
    pub stddev: Duration,
    /// Median (nearest rank).
    pub p50: Duration,
    /// 90th percentile (nearest rank).
    pub p90: Duration,
    /// 99th percentile (nearest rank).
    pub p99: Duration,
    /// Smallest sample.
    pub min: Duration,
    /// Largest sample.
    pub max: Duration,
}

/// Mean, standard deviation, percentiles (nearest-rank: the smallest sample with at least `p` %
/// of the samples at or below it), minimum and maximum of `samples`. All zero when empty.
/// Lost probes of [`udp_rtt`] are left out by the caller:
/// `summary(&rtts.iter().flatten().copied().collect::<Vec<_>>())`.
pub fn summary(samples: &[Duration]) -> LatencyStats {
    if samples.is_empty() {
        return LatencyStats::default();
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    let secs: Vec<f64> = sorted.iter().map(Duration::as_secs_f64).collect();
    let mean = secs.iter().sum::<f64>() / n as f64;
    let var = if n > 1 {
        secs.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    let rank = |p: f64| sorted[((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1];
    LatencyStats {
        count: n,
        mean: Duration::from_secs_f64(mean),
        stddev: Duration::from_secs_f64(var.sqrt()),
        p50: rank(50.0),
        p90: rank(90.0),
        p99: rank(99.0),
        min: sorted[0],
        max: sorted[n - 1],
    }
}

// ---------------------------------------------------------------------------------------------
// TCP bulk throughput
// ---------------------------------------------------------------------------------------------

/// First byte of a connection to a [`TcpSink`]: a data stream follows (after an 8-byte id).
const TCP_DATA: u8 = b'D';
/// First byte of a connection to a [`TcpSink`]: send back the progress of data stream `id`.
const TCP_REPORT: u8 = b'R';

static BULK_ID: AtomicU64 = AtomicU64::new(1);

/// Receiver-side progress of one data connection.
#[derive(Debug, Default)]
struct Progress {
    /// `(time since the connection's header arrived, bytes received by then)`, at most one per
    /// millisecond.
    samples: Vec<(Duration, u64)>,
    /// The latest read.
    last: (Duration, u64),
}

type ProgressMap = Arc<Mutex<HashMap<u64, Arc<Mutex<Progress>>>>>;

/// A TCP receiver inside a namespace for [`tcp_bulk`]: reads and discards everything, counting
/// bytes and recording, per connection, how many had arrived when (the receiver-side timeline
/// [`tcp_bulk`] computes its rate from).
///
/// Protocol: each connection starts with one byte and an 8-byte big-endian id. `D` is a data
/// stream: the rest is read and discarded. `R` asks for the timeline of data stream `id` so far:
/// the sink answers with a big-endian u32 count and that many `(nanoseconds, bytes)` u64 pairs,
/// then closes.
#[derive(Debug)]
pub struct TcpSink {
    local: SocketAddr,
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpSink {
    /// Listens on `addr:port` (0 picks a port) inside `ns`.
    pub fn start(ns: &NetNs, addr: IpAddr, port: u16) -> io::Result<Self> {
        let listener = ns.run(|| TcpListener::bind(SocketAddr::new(addr, port)))?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (bytes, stop) = (bytes.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("tcp-sink-{local}"))
                .spawn(move || {
                    let progress = ProgressMap::default();
                    let mut workers = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((conn, _)) => {
                                let (bytes, stop, progress) =
                                    (bytes.clone(), stop.clone(), progress.clone());
                                workers.push(std::thread::spawn(move || {
                                    sink_conn(conn, &bytes, &stop, &progress)
                                }));
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(10)),
                        }
                        workers.retain(|w: &JoinHandle<()>| !w.is_finished());
                    }
                    for w in workers {
                        let _ = w.join();
                    }
                })?
        };
        Ok(TcpSink {
            local,
            bytes,
            stop,
            thread: Some(thread),
        })
    }

    /// The listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Data bytes received so far over all connections.
    pub fn bytes_now(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for TcpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads exactly `buf.len()` bytes, giving up when `stop` is set or on EOF/error.
fn read_exact_until(conn: &mut TcpStream, buf: &mut [u8], stop: &AtomicBool) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("stopped"));
        }
        match conn.read(&mut buf[got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if is_transient(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn sink_conn(mut conn: TcpStream, bytes: &AtomicU64, stop: &AtomicBool, progress: &ProgressMap) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(POLL));
    let mut header = [0u8; 9];
    if read_exact_until(&mut conn, &mut header, stop).is_err() {
        return;
    }
    let id = u64::from_be_bytes(header[1..].try_into().expect("8 bytes"));
    match header[0] {
        TCP_DATA => {
            let start = Instant::now();
            let mine = Arc::new(Mutex::new(Progress::default()));
            progress
                .lock()
                .expect("progress lock")
                .insert(id, mine.clone());
            let mut buf = vec![0u8; 256 << 10];
            let mut total = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match conn.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        total += n as u64;
                        bytes.fetch_add(n as u64, Ordering::Relaxed);
                        let t = start.elapsed();
                        let mut p = mine.lock().expect("progress lock");
                        if p.samples
                            .last()
                            .is_none_or(|&(last, _)| t >= last + Duration::from_millis(1))
                        {
                            p.samples.push((t, total));
                        }
                        p.last = (t, total);
                    }
                    Err(e) if is_transient(&e) => {}
                    Err(_) => return,
                }
            }
        }
        TCP_REPORT => {
            let entry = progress.lock().expect("progress lock").remove(&id);
            let mut samples = Vec::new();
            if let Some(entry) = entry {
                let p = entry.lock().expect("progress lock");
                samples.extend_from_slice(&p.samples);
                if p.samples.last() != Some(&p.last) && p.last.1 > 0 {
                    samples.push(p.last);
                }
            }
            let mut out = Vec::with_capacity(4 + 16 * samples.len());
            out.extend_from_slice(&(samples.len() as u32).to_be_bytes());
            for (t, b) in samples {
                out.extend_from_slice(&(t.as_nanos() as u64).to_be_bytes());
                out.extend_from_slice(&b.to_be_bytes());
            }
            let _ = conn.write_all(&out);
        }
        _ => {}
    }
}

/// The outcome of [`tcp_bulk_report`].
#[derive(Debug, Clone, PartialEq)]
pub struct BulkReport {
    /// Bytes the sender's kernel accepted.
    pub sent_bytes: u64,
    /// Bytes the receiver had read when the sender stopped and asked.
    pub received_bytes: u64,
    /// The warm-up excluded from [`BulkReport::steady_rate`].
    pub warmup: Duration,
    /// Received bytes per second from the connection's start to the last read.
    pub overall_rate: f64,
    /// Received bytes per second from `warmup` after the connection's start to the last read;
    /// `None` when nothing arrived after the warm-up.
    pub steady_rate: Option<f64>,
    /// The receiver's timeline: `(time since the connection started, bytes received by then)`,
    /// at most one sample per millisecond, the last one being the last read.
    pub samples: Vec<(Duration, u64)>,
}

/// The default warm-up of [`tcp_bulk`]: 1 s, or half of `duration` when that is shorter than
/// 2 s.
pub fn default_warmup(duration: Duration) -> Duration {
    Duration::from_secs(1).min(duration / 2)
}

/// Sends as much as TCP takes from inside `from` to a [`TcpSink`] at `to` for `duration`, and
/// returns the bytes per second received over the steady part (after [`default_warmup`], so slow
/// start is excluded). See [`tcp_bulk_report`] for both rates and the timeline.
pub fn tcp_bulk(from: &NetNs, to: SocketAddr, duration: Duration) -> io::Result<f64> {
    let report = tcp_bulk_report(from, to, duration, default_warmup(duration))?;
    report.steady_rate.ok_or_else(|| {
        io::Error::other(format!(
            "no data arrived at {to} after the warm-up ({} bytes in all)",
            report.received_bytes
        ))
    })
}

/// Like [`tcp_bulk`], with the warm-up given, returning the whole [`BulkReport`].
///
/// Rates are measured at the receiver: once `duration` has passed, the sender stops writing,
/// asks the sink over a second connection for the data connection's timeline so far, and then
/// resets the data connection, so that data still queued at the sender (which could take long
/// under a rate limit) neither delays the result nor lingers into the next measurement.
pub fn tcp_bulk_report(
    from: &NetNs,
    to: SocketAddr,
    duration: Duration,
    warmup: Duration,
) -> io::Result<BulkReport> {
    let id = BULK_ID.fetch_add(1, Ordering::Relaxed);
    from.run(|| {
        let mut data = TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .map_err(|e| io::Error::new(e.kind(), format!("connect to {to}: {e}")))?;
        let mut header = [TCP_DATA; 9];
        header[1..].copy_from_slice(&id.to_be_bytes());
        data.set_write_timeout(Some(Duration::from_secs(5)))?;
        data.write_all(&header)?;
        // Short write timeouts so the deadline is kept even when the connection stalls.
        data.set_write_timeout(Some(Duration::from_millis(100)))?;
        let chunk = vec![0xa5u8; 128 << 10];
        let start = Instant::now();
        let mut sent_bytes = 0u64;
        while start.elapsed() < duration {
            match data.write(&chunk) {
                Ok(n) => sent_bytes += n as u64,
                Err(e) if is_transient(&e) => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("send to {to}: {e}"))),
            }
        }

        let mut report = TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .map_err(|e| io::Error::new(e.kind(), format!("connect to {to} for a report: {e}")))?;
        report.set_read_timeout(Some(Duration::from_secs(10)))?;
        report.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut ask = [TCP_REPORT; 9];
        ask[1..].copy_from_slice(&id.to_be_bytes());
        report.write_all(&ask)?;
        let mut answer = Vec::new();
        report.read_to_end(&mut answer)?;
        reset_on_close(&data);
        drop(data);

        let samples = parse_report(&answer)?;
        let (t_last, received_bytes) = samples.last().copied().unwrap_or_default();
        let rate = |(t0, b0): (Duration, u64)| {
            let dt = t_last.saturating_sub(t0).as_secs_f64();
            (dt > 0.0).then(|| (received_bytes - b0) as f64 / dt)
        };
        let overall_rate = rate((Duration::ZERO, 0)).unwrap_or(0.0);
        let steady_rate = samples
            .iter()
            .find(|&&(t, _)| t >= warmup)
            .and_then(|&s| rate(s));
        Ok(BulkReport {
            sent_bytes,
            received_bytes,
            warmup,
            overall_rate,
            steady_rate,
            samples,
        })
    })
}

fn parse_report(answer: &[u8]) -> io::Result<Vec<(Duration, u64)>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed report from the sink");
    let n = u32::from_be_bytes(answer.get(..4).ok_or_else(bad)?.try_into().expect("4")) as usize;
    let body = &answer[4..];
    if body.len() != n * 16 {
        return Err(bad());
    }
    Ok(body
        .chunks_exact(16)
        .map(|c| {
            let ns = u64::from_be_bytes(c[..8].try_into().expect("8"));
            let b = u64::from_be_bytes(c[8..].try_into().expect("8"));
            (Duration::from_nanos(ns), b)
        })
        .collect())
}

/// Makes closing `conn` send a RST and discard unsent data (`SO_LINGER` with a zero timeout).
fn reset_on_close(conn: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads one `linger` we own.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel counters
// ---------------------------------------------------------------------------------------------

/// The kernel's protocol counters as seen inside `ns`, keyed `Proto.Field`:
/// `/proc/net/snmp` (`Ip.InReceives`, `Udp.InDatagrams`, `Udp.InCsumErrors`, `Tcp.RetransSegs`,
/// ...), `/proc/net/snmp6` (`Ip6.InReceives`, `Udp6.InDatagrams`, `Udp6.InCsumErrors`, ...; absent
/// without IPv6) and `/proc/net/netstat` (`TcpExt.TCPLostRetransmit`, `IpExt.InOctets`, ...).
/// Negative values (`Tcp.MaxConn` is -1) are left out.
///
/// The files are read through `/proc/thread-self/net` from a thread inside `ns`: `/proc/net` is
/// `/proc/self/net`, which shows the namespace of the process's main thread, not of the caller.
pub fn snmp(ns: &NetNs) -> io::Result<HashMap<String, u64>> {
    ns.run(|| {
        let mut out = HashMap::new();
        let read = |name: &str, required: bool| -> io::Result<Option<String>> {
            let path = format!("/proc/thread-self/net/{name}");
            match std::fs::read_to_string(&path) {
                Ok(s) => Ok(Some(s)),
                Err(e) if !required && e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io::Error::new(e.kind(), format!("{path}: {e}"))),
            }
        };
        if let Some(text) = read("snmp", true)? {
            parse_paired(&text, &mut out);
        }
        if let Some(text) = read("netstat", false)? {
            parse_paired(&text, &mut out);
        }
        if let Some(text) = read("snmp6", false)? {
            parse_snmp6(&text, &mut out);
        }
        Ok(out)
    })
}

/// `Proto: Name1 Name2` / `Proto: 1 2` line pairs (`snmp`, `netstat`).
fn parse_paired(text: &str, out: &mut HashMap<String, u64>) {
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((proto, names)), Some((_, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = value.parse::<u64>() {
                out.insert(format!("{proto}.{name}"), v);
            }
        }
    }
}

/// `Udp6InDatagrams   12` lines (`snmp6`): the protocol is the name up to its first `6`.
fn parse_snmp6(text: &str, out: &mut HashMap<String, u64>) {
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(name), Some(value)) = (fields.next(), fields.next()) else {
            continue;
        };
        let (Some(i), Ok(v)) = (name.find('6'), value.parse::<u64>()) else {
            continue;
        };
        out.insert(format!("{}.{}", &name[..=i], &name[i + 1..]), v);
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

/// z for a two-sided 99.9 % interval of the normal distribution.
pub const Z_999: f64 = 3.29;

/// The interval `n p ± z √(n p (1 − p))` of counts of successes in `n` trials of probability `p`
/// (normal approximation to the binomial), clamped to `[0, n]`. With `z = 3.29` (= [`Z_999`]) a
/// correct implementation falls outside it once in a thousand runs; use `z = 1.96` for 95 %.
/// The approximation is good when `n p` and `n (1 − p)` are both at least ~10.
pub fn binomial_interval(n: u64, p: f64, z: f64) -> (f64, f64) {
    let n = n as f64;
    let p = p.clamp(0.0, 1.0);
    let mean = n * p;
    let half = z * (n * p * (1.0 - p)).sqrt();
    ((mean - half).max(0.0), (mean + half).min(n))
}

/// z for a two-sided interval a correct implementation leaves once in a million runs.
///
/// The suite makes about fifty binomial checks per CI run (a dozen tests on four kernels). At
/// [`Z_999`] one run in twenty would fail by chance alone, which happened; at this z it is one in
/// twenty thousand. At 20,000 trials the interval is still ±0.75 points at 5 % and ±1.7 at
/// 50 %, so a real bias of two points is caught.
pub const Z_SUITE: f64 = 4.89;

/// Whether `observed` successes out of `n` trials are plausible for probability `p`: inside
/// [`binomial_interval`]`(n, p, Z_SUITE)` widened by 0.5 on each side (continuity correction,
/// which also makes `p = 0` accept exactly 0 and `p = 1` exactly `n`).
pub fn within_binomial(n: u64, p: f64, observed: u64) -> bool {
    let (lo, hi) = binomial_interval(n, p, Z_SUITE);
    let x = observed as f64;
    x >= lo - 0.5 && x <= hi + 0.5
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(seq: Option<u64>, intact: bool) -> Arrival {
        Arrival {
            seq,
            intact,
            len: 64,
            at: Instant::now(),
        }
    }

    #[test]
    fn payload_shape() {
        let p = payload(0x0102_0304_0506_0708, 37);
        assert_eq!(p.len(), 37);
        assert_eq!(&p[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_ne!(payload(1, 64), payload(2, 64));
        assert_eq!(&payload(9, 64)[..30], &payload(9, 30)[..]);
    }

    #[test]
    fn every_single_bit_flip_is_detected_and_attributed() {
        for len in [16, 17, 64, 1400] {
            for seq in [0u64, 1, 12_345, u64::MAX] {
                let good = payload(seq, len);
                let ok = classify(&good, len, Instant::now());
                assert_eq!((ok.seq, ok.intact), (Some(seq), true));
                for bit in 0..len * 8 {
                    let mut bad = good.clone();
                    bad[bit / 8] ^= 0x80 >> (bit % 8);
                    let a = classify(&bad, len, Instant::now());
                    assert_eq!(
                        (a.seq, a.intact),
                        (Some(seq), false),
                        "len {len} seq {seq} bit {bit}"
                    );
                }
            }
        }
    }

    #[test]
    fn wrong_length_and_multi_bit_damage_are_unattributed() {
        let good = payload(5, 64);
        let a = classify(&good[..63], 64, Instant::now());
        assert_eq!((a.seq, a.intact), (None, false));
        let mut bad = good.clone();
        bad[0] ^= 1;
        bad[20] ^= 1;
        let a = classify(&bad, 64, Instant::now());
        assert_eq!((a.seq, a.intact), (None, false));
    }

    #[test]
    fn stats_from_arrivals() {
        let seqs = [0, 1, 4, 3, 3, 7, 9, 2, 20];
        let mut arrivals: Vec<Arrival> = seqs.iter().map(|&s| arrival(Some(s), true)).collect();
        arrivals.push(arrival(Some(6), false));
        arrivals.push(arrival(None, false));
        let s = SinkStats::from_arrivals(&arrivals, 12);
        assert_eq!(s.received, 11);
        // 0 1 2 3 4 6 7 9 of 0..12; missing 5, 8, 10 11.
        assert_eq!(s.unique, 8);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.corrupted, 2);
        assert_eq!(s.corrupted_unattributed, 1);
        // 3 after 4, 2 after 9, 6 after 9.
        assert_eq!(s.reordered, 3);
        assert_eq!(s.loss_runs, vec![1, 1, 2]);
        assert_eq!(s.lost(), 4);
        assert_eq!(s.out_of_range, 1);
        assert_eq!(s.max_seq, Some(20));
        let none = SinkStats::from_arrivals(&[], 3);
        assert_eq!(none.loss_runs, vec![3]);
        assert_eq!(none.max_seq, None);
    }

    #[test]
    fn summary_of_durations() {
        let ms = Duration::from_millis;
        let s = summary(&(1..=100).rev().map(ms).collect::<Vec<_>>());
        assert_eq!(s.count, 100);
        assert_eq!((s.min, s.max), (ms(1), ms(100)));
        assert_eq!((s.p50, s.p90, s.p99), (ms(50), ms(90), ms(99)));
        assert!((s.mean.as_secs_f64() - 0.0505).abs() < 1e-9);
        // Sample standard deviation of 1..=100 ms: 29.011 ms.
        assert!((s.stddev.as_secs_f64() - 0.029_011).abs() < 1e-5, "{s:?}");
        let one = summary(&[ms(7)]);
        assert_eq!(
            (one.mean, one.stddev, one.p99),
            (ms(7), Duration::ZERO, ms(7))
        );
        assert_eq!(summary(&[]), LatencyStats::default());
    }

    #[test]
    fn snmp_parsers() {
        let mut out = HashMap::new();
        parse_paired(
            "Ip: Forwarding DefaultTTL\nIp: 2 64\nTcp: MaxConn ActiveOpens\nTcp: -1 3\n",
            &mut out,
        );
        parse_snmp6(
            "Ip6InReceives                   \t5\nUdp6InCsumErrors 1\nIcmp6OutType133 2\n",
            &mut out,
        );
        assert_eq!(out["Ip.DefaultTTL"], 64);
        assert_eq!(out["Tcp.ActiveOpens"], 3);
        assert!(!out.contains_key("Tcp.MaxConn"));
        assert_eq!(out["Ip6.InReceives"], 5);
        assert_eq!(out["Udp6.InCsumErrors"], 1);
        assert_eq!(out["Icmp6.OutType133"], 2);
    }
}
