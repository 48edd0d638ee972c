//! What a drill measures, as it happens: every traffic operation and every probe check, stamped
//! on one monotonic clock. Generators and probes only append here; [`super::stats`] turns the
//! records into windows, per-second series and percentiles, so every figure of the report comes
//! from the same raw records.

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

use nix::time::{ClockId, clock_gettime};
use serde::{Deserialize, Serialize};

/// `CLOCK_MONOTONIC` now, in ns. Shared by every process of a drill (traffic workers stamp their
/// operations with it), so stamps from a worker and from the runner compare directly.
pub fn mono_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// A drill's time origin: `t = 0` of every `*_ms` / `t_ms` field of the report.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Clock {
    /// [`mono_ns`] at `t = 0`.
    pub origin_ns: u64,
    /// Wall-clock time at `t = 0`, ms since the epoch.
    pub origin_unix_ms: u64,
}

impl Clock {
    /// A clock whose `t = 0` is now.
    pub fn start() -> Clock {
        Clock {
            origin_ns: mono_ns(),
            origin_unix_ms: crate::clock::unix_ms(),
        }
    }

    /// Time since `t = 0`, µs.
    pub fn now_us(&self) -> u64 {
        self.us(mono_ns())
    }

    /// Time since `t = 0`, ms.
    pub fn now_ms(&self) -> u64 {
        self.now_us() / 1000
    }

    /// A [`mono_ns`] stamp as µs since `t = 0` (0 for a stamp before it).
    pub fn us(&self, mono_ns: u64) -> u64 {
        mono_ns.saturating_sub(self.origin_ns) / 1000
    }
}

/// One finished traffic operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// When it started, µs since `t = 0`.
    pub start_us: u64,
    /// How long it took, µs.
    pub latency_us: u64,
    /// Whether it succeeded.
    pub ok: bool,
}

impl Op {
    /// An operation started at `start_ms` that took `latency_ms` (for tests).
    #[cfg(test)]
    pub(crate) fn ms(start_ms: u64, latency_ms: u64, ok: bool) -> Op {
        Op {
            start_us: start_ms * 1000,
            latency_us: latency_ms * 1000,
            ok,
        }
    }

    /// When it ended, µs since `t = 0`.
    pub fn end_us(&self) -> u64 {
        self.start_us + self.latency_us
    }
}

/// No operation in flight on a worker.
const IDLE: u64 = u64::MAX;

/// The operations of one traffic generator: those finished, and the one each worker has in
/// flight (an operation stuck in a hung disk is measured by how long it has been waiting).
#[derive(Debug)]
pub struct OpLog {
    done: Mutex<Vec<Op>>,
    in_flight: Vec<AtomicU64>,
    last_error: Mutex<Option<String>>,
}

impl OpLog {
    /// A log for `workers` workers.
    pub fn new(workers: usize) -> OpLog {
        OpLog {
            done: Mutex::new(Vec::new()),
            in_flight: (0..workers).map(|_| AtomicU64::new(IDLE)).collect(),
            last_error: Mutex::new(None),
        }
    }

    /// Worker `worker` started an operation at `start_us`.
    pub fn begin(&self, worker: usize, start_us: u64) {
        if let Some(slot) = self.in_flight.get(worker) {
            slot.store(start_us, Ordering::Relaxed);
        }
    }

    /// Worker `worker` finished `op` (`error`: why it failed, kept as the last error seen).
    pub fn end(&self, worker: usize, op: Op, error: Option<String>) {
        if let Some(slot) = self.in_flight.get(worker) {
            slot.store(IDLE, Ordering::Relaxed);
        }
        self.done.lock().unwrap_or_else(|e| e.into_inner()).push(op);
        if let Some(e) = error {
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
        }
    }

    /// The finished operations so far, in the order they finished.
    pub fn ops(&self) -> Vec<Op> {
        self.done.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The start times (µs) of the operations in flight now.
    pub fn in_flight(&self) -> Vec<u64> {
        self.in_flight
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&s| s != IDLE)
            .collect()
    }

    /// The last error an operation ended with.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// One probe check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// When it started, ms since `t = 0`.
    pub t_ms: u64,
    /// Whether the probe was up.
    pub ok: bool,
    /// How long the check took, ms.
    pub latency_ms: f64,
    /// The value read (Prometheus probes).
    pub value: Option<f64>,
    /// Why it failed.
    pub detail: Option<String>,
}

/// The checks of one probe, in the order they started.
#[derive(Debug, Default)]
pub struct CheckLog {
    checks: Mutex<Vec<Check>>,
}

impl CheckLog {
    /// Appends a check.
    pub fn push(&self, check: Check) {
        self.checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(check);
    }

    /// The checks so far.
    pub fn checks(&self) -> Vec<Check> {
        self.checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
