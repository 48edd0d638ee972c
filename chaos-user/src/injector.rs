//! The injector: probes once, then arms, lists, reports on and recovers faults, and runs whole
//! drills. The CLI, the daemon and library users all go through it.

use std::{
    borrow::Borrow,
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use chaos_common::net::NetCounters;
use serde::Serialize;

use crate::{
    backend::{deadline, disk_fill, io, net, syscall, throttle},
    clock::{boot_ns, unix_ms},
    ebpf,
    error::{Error, Result},
    experiment::{
        ExperimentSpec, SpecErrors,
        progress::{Progress, Silent},
        report::Report,
        runner,
    },
    fault_guard::FaultGuard,
    plan::{self, DiskPlan, IoEffect, PlannedFault},
    privilege,
    probe::{self, Report as ProbeReport},
    spec::FaultSpec,
    store::{BlockArmed, FaultRecord, FaultState, Store, SysArmed},
    strategy::{self, IoStrategy, Strategy, SyscallStrategy},
};

/// Arms and recovers faults, and runs drills.
///
/// Cloning is cheap (the probe's answer is shared, the store is a path): a clone is the same
/// injector, which is how a [`FaultGuard`] keeps one. Every method that changes state takes the
/// store's file lock, so clones, threads and other `chaos` processes can use it at once.
#[derive(Clone, Debug)]
pub struct Injector {
    probe: Arc<ProbeReport>,
    store: Store,
}

/// A fault just armed.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Armed {
    /// Its id.
    pub id: String,
    /// How it is made.
    pub strategy: Strategy,
    /// When it ends by itself, in the kernel, ms since the epoch.
    pub deadline_unix_ms: u64,
}

/// A fault's state and counters. Read back from the daemon's answers by `chaos --server`.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Status {
    /// The record.
    #[serde(flatten)]
    pub record: FaultRecord,
    /// Whether its in-kernel deadline has passed (it no longer acts; recovery removes the rest).
    pub expired: bool,
    /// Time left before the deadline.
    pub remaining_ms: u64,
    /// Network counters, for network faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<Counters>,
    /// Block I/O measured on the devices the fault watches, since the watch began.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io: Vec<crate::iostat::IoStats>,
}

/// Per-fault counters: packets for network faults, calls for syscall faults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Counters {
    /// Packets or calls the rule examined.
    pub seen: u64,
    /// Those of its target, within the deadline.
    pub matched: u64,
    /// Those it acted on (dropped, failed, signalled...).
    pub acted: u64,
}

impl Status {
    /// Whole seconds left before the deadline, rounded up (0 only once it has passed).
    pub fn remaining_s(&self) -> u64 {
        self.remaining_ms.div_ceil(1000)
    }
}

impl From<NetCounters> for Counters {
    fn from(c: NetCounters) -> Self {
        Counters {
            seen: c.seen,
            matched: c.matched,
            acted: c.acted,
        }
    }
}

/// Undoes a block I/O or disk fault's state (`remaining`: the other block-layer rules;
/// `throttles`: the other cgroup throttles, which compose with a throttle of the same cgroup).
fn disarm_block(
    b: &BlockArmed,
    remaining: &[&io::BioArmed],
    throttles: &[&throttle::ThrottleArmed],
) -> Result<()> {
    match b {
        BlockArmed::Bio(x) => io::disarm(x, remaining),
        BlockArmed::Throttle(t) => throttle::disarm(t, throttles),
        BlockArmed::Fill(f) => disk_fill::disarm(f),
    }
}

/// The cgroup throttles of `faults` other than fault `id`'s.
fn other_throttles<'a>(faults: &'a [FaultRecord], id: &str) -> Vec<&'a throttle::ThrottleArmed> {
    throttle::throttles(id, faults)
        .into_iter()
        .map(|(_, t)| t)
        .collect()
}

/// The armed syscall rules of `faults` other than fault `id`'s.
fn other_syscalls<'a>(faults: &'a [FaultRecord], id: &str) -> Vec<&'a SysArmed> {
    faults
        .iter()
        .filter(|f| f.id != id)
        .filter_map(|f| f.syscall.as_ref())
        .collect()
}

/// What `recover` removed.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct Recovered {
    /// Fault ids recovered.
    pub faults: Vec<String>,
    /// Attachments detached.
    pub attachments: usize,
    /// State files that could not be read and were removed, with what they held. What they
    /// named is found by the sweep.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
    /// Traces no record named, found in the kernel's own state and removed (`recover --all`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub swept: Vec<String>,
}

impl Injector {
    /// Checks privileges, probes the kernel (or reuses the cached answer while it holds) and
    /// opens the state store.
    pub fn new() -> Result<Injector> {
        privilege::check(privilege::INJECT)?;
        let store = Store::open_default()?;
        Ok(Injector {
            probe: Arc::new(probe::cached(&store.probe_cache())),
            store,
        })
    }

    /// An injector for commands that only read or undo state (list, status, recover): checks
    /// privileges and opens the store, without probing. It cannot arm faults.
    pub fn without_probe() -> Result<Injector> {
        privilege::check(privilege::INJECT)?;
        Ok(Injector {
            probe: Arc::new(ProbeReport::unprobed()),
            store: Store::open_default()?,
        })
    }

    /// An injector with a given probe report and store (tests, daemons that probe once).
    pub fn with(probe: ProbeReport, store: Store) -> Injector {
        Injector {
            probe: Arc::new(probe),
            store,
        }
    }

    /// What the kernel allows.
    pub fn probe(&self) -> &ProbeReport {
        &self.probe
    }

    /// The state store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Validates, plans and arms `spec`, and returns a [`FaultGuard`] that recovers the fault
    /// when it is dropped (also by a panic unwinding). Either the fault is fully armed or
    /// nothing is left. `spec` may be a [`FaultSpec`] or a reference to one.
    ///
    /// [`FaultGuard::keep`] lets the fault run to its deadline instead, as
    /// [`Injector::arm`] does.
    ///
    /// It returns once the fault's attachments are handed over ([`Injector::hand_over`]).
    pub fn inject(&self, spec: impl Borrow<FaultSpec>) -> Result<FaultGuard> {
        let armed = self.arm(spec.borrow())?;
        let guard = FaultGuard::new(self.clone(), armed);
        self.hand_over_or_log();
        Ok(guard)
    }

    /// Moves the network attachments that faults were armed through as clsact filters
    /// (strategy `clsact-tcx-bpf`) to TCX links, whose per-packet path costs about half as
    /// much. [`Injector::arm`] returns as soon as the fault acts, before this step: a TCX link
    /// waits for an RCU grace period (tens of ms), and the first one per direction also
    /// verifies the program copy it runs. So call it after arming: `chaos inject` does before
    /// it exits, the daemon right after it answers, a drill once the fault is armed. An
    /// attachment left waiting is moved by the next call, whoever makes it; one that cannot
    /// move stays on its filter, which serves as well (the log says why). Err only when the
    /// store cannot be read.
    pub fn hand_over(&self) -> Result<()> {
        // Without a state directory there is nothing to move, and making one would leave a
        // trace: a handover run beside a drill or after a daemon's answer may come after the
        // fault it was for was recovered, and the directory removed with it.
        let Some(_lock) = self.store.lock_existing()? else {
            return Ok(());
        };
        net::hand_over(&self.store)
    }

    /// [`Injector::hand_over`], its failure logged rather than returned: the faults stand
    /// either way, on their clsact filters.
    pub fn hand_over_or_log(&self) {
        if let Err(e) = self.hand_over() {
            tracing::warn!("the faults stay on their clsact filters: {e}");
        }
    }

    /// Validates, plans and arms `spec`, which then lasts until its in-kernel deadline (or
    /// [`Injector::recover`]), whatever becomes of this process: what `chaos inject` and the
    /// daemon do. Either the fault is fully armed or nothing is left.
    pub fn arm(&self, spec: &FaultSpec) -> Result<Armed> {
        let (plan, strategy) = self.admit(spec)?;
        // Reaped under a lock of its own: reaping the last faults removes the state directory
        // with its lock file, and a lock on a removed file excludes nobody after that.
        self.reap_expired()?;
        let _lock = self.store.lock()?;
        let faults = self.store.faults()?;
        let now_boot = boot_ns();
        let now_unix = unix_ms();
        let mut record = FaultRecord {
            id: crate::store::new_fault_id(),
            spec: spec.clone(),
            strategy,
            state: FaultState::Arming,
            created_unix_ms: now_unix,
            deadline_unix_ms: now_unix + plan.duration.as_millis() as u64,
            deadline_boot_ns: now_boot + plan.duration.as_nanos() as u64,
            net: None,
            syscall: None,
            block: None,
            owner: Some(crate::store::Owner::current()),
            recovered_unix_ms: None,
            recovered_by: None,
            final_counters: None,
        };
        // Recorded before the kernel is touched: a crash from here on leaves a record that
        // `recover --all` undoes. The deadline is provisional until the rule goes live.
        self.store.put_fault(&record)?;
        // Measured from before the fault acts, so its whole window is seen, and so the
        // measurement's setup does not eat into the fault's duration.
        self.measure_locked(&record);
        match self.arm_locked(&mut record, &plan, &faults) {
            Ok(deadline) => {
                // The fault lasts its full duration from the moment its rule went live.
                record.deadline_boot_ns = deadline;
                record.deadline_unix_ms =
                    unix_ms() + deadline.saturating_sub(boot_ns()) / 1_000_000;
                record.state = FaultState::Armed;
                if let Err(e) = self.store.put_fault(&record) {
                    let _ = self.recover_locked(&record);
                    return Err(e);
                }
            }
            Err(e) => {
                // What was prepared (and maybe half applied) outside BPF is undone with it.
                if let Some(b) = &record.block {
                    let _ = disarm_block(b, &[], &other_throttles(&faults, &record.id));
                }
                let _ = self.store.remove_fault(&record.id);
                let _ = self.cleanup_unused_locked();
                return Err(e);
            }
        }
        // State outside BPF (limits, fills, qdiscs) ends only if someone ends it: without a
        // keeper, no fault.
        if deadline::needs_keeper(&record)
            && let Err(e) = deadline::ensure_running(&self.store)
        {
            let _ = self.recover_locked(&record);
            let _ = self.cleanup_unused_locked();
            return Err(e);
        }
        Ok(Armed {
            id: record.id,
            strategy,
            deadline_unix_ms: record.deadline_unix_ms,
        })
    }

    /// Validates and plans `spec`, chooses its strategy and makes the refusals due before
    /// anything is recorded: what [`Injector::arm`] and [`Injector::dry_run`] share.
    fn admit(&self, spec: &FaultSpec) -> Result<(plan::Plan, Strategy)> {
        let plan = plan::plan(spec)?;
        let strategy = strategy::choose(&plan, &self.probe)?;
        let outside_bpf = matches!(
            strategy,
            Strategy::Io(IoStrategy::CgroupIoMax | IoStrategy::CgroupBlkio | IoStrategy::Fallocate)
        );
        if !outside_bpf && !ebpf::has_object() {
            return Err(Error::NoEbpfObject);
        }
        if let (PlannedFault::Syscall(_), Strategy::Syscall(SyscallStrategy::SeccompNotify)) =
            (&plan.fault, strategy)
        {
            return Err(Error::Unsupported {
                what: "arm a seccomp fault on a running process".into(),
                why: "seccomp filters are installed by the process itself: run the command \
                      under chaos exec"
                    .into(),
            });
        }
        Ok((plan, strategy))
    }

    /// Starts measuring the block device a block I/O or disk fault acts on, for as long as the
    /// fault exists (its latency and IOPS then show in its status). The measurement is an aid:
    /// where it cannot be made, the fault stands and the reason is logged.
    fn measure_locked(&self, record: &FaultRecord) {
        let on = match &record.spec {
            FaultSpec::Io(s) => s.device.as_deref().or(s.path.as_deref()),
            FaultSpec::Disk(d) => Some(d.path.as_str()),
            _ => None,
        };
        let Some(on) = on else { return };
        let watched = crate::iostat::Device::resolve(on).and_then(|device| {
            crate::iostat::watch_locked(
                &self.store,
                &device,
                crate::iostat::Owner::Fault {
                    fault: record.id.clone(),
                },
            )
        });
        if let Err(e) = watched {
            tracing::warn!(fault = %record.id, "no I/O measurement for {on}: {e}");
        }
    }

    /// Arms `plan` for `record` (stored, `Arming`); fills in the record's backend parts and
    /// returns the in-kernel deadline (boot ns).
    fn arm_locked(
        &self,
        record: &mut FaultRecord,
        plan: &plan::Plan,
        faults: &[FaultRecord],
    ) -> Result<u64> {
        let duration = plan.duration;
        let prepared = |record: &mut FaultRecord, block: BlockArmed| -> Result<()> {
            // Stored before anything changes: recovery then knows what to restore.
            record.block = Some(block);
            self.store.put_fault(record)
        };
        match (&plan.fault, record.strategy) {
            (PlannedFault::Net(p), Strategy::Net(s)) => {
                let (n, deadline) = net::arm(&self.store, faults, p, s, duration)?;
                record.net = Some(n);
                Ok(deadline)
            }
            (PlannedFault::Syscall(p), Strategy::Syscall(s)) => {
                let (x, deadline) = syscall::arm(&self.store, faults, p, s, duration)?;
                record.syscall = Some(x);
                Ok(deadline)
            }
            (PlannedFault::Io(p), Strategy::Syscall(_)) => {
                let strategy::IoChoice::Files(files, s) = strategy::choose_io(p, &self.probe)?
                else {
                    unreachable!("a syscall strategy serves the file-call form")
                };
                let (x, deadline) = syscall::arm(&self.store, faults, &files, s, duration)?;
                record.syscall = Some(x);
                Ok(deadline)
            }
            (PlannedFault::Io(p), Strategy::Io(IoStrategy::BioKprobe)) => {
                let IoEffect::Fail { bio: Some(bio), .. } = &p.effect else {
                    unreachable!("the block layer serves io fail on a device")
                };
                let (b, deadline) = io::arm(&self.store, faults, bio, duration)?;
                record.block = Some(BlockArmed::Bio(b));
                Ok(deadline)
            }
            (
                PlannedFault::Io(p),
                Strategy::Io(IoStrategy::CgroupIoMax | IoStrategy::CgroupBlkio),
            ) => {
                let IoEffect::Throttle {
                    device,
                    limits,
                    target,
                } = &p.effect
                else {
                    unreachable!("cgroup limits serve io slow and hang")
                };
                let t = throttle::prepare(&record.id, device, limits, target, faults)?;
                prepared(record, BlockArmed::Throttle(t.clone()))?;
                throttle::apply(&t, &other_throttles(faults, &record.id))?;
                Ok(boot_ns() + duration.as_nanos() as u64)
            }
            (PlannedFault::Disk(DiskPlan::Fill(f)), Strategy::Io(IoStrategy::Fallocate)) => {
                let mut x = disk_fill::prepare(&record.id, f)?;
                prepared(record, BlockArmed::Fill(x.clone()))?;
                disk_fill::apply(&mut x)?;
                // With what was taken, for `chaos status`.
                record.block = Some(BlockArmed::Fill(x));
                Ok(boot_ns() + duration.as_nanos() as u64)
            }
            (fault, strategy) => unreachable!("{strategy} chosen for {fault:?}"),
        }
    }

    /// Every known fault with its counters.
    pub fn list(&self) -> Result<Vec<Status>> {
        self.store
            .faults()?
            .into_iter()
            .map(|r| self.status_of(r))
            .collect()
    }

    /// One fault: armed, or recovered while the store keeps its history (then with the counters
    /// it had when it was recovered).
    pub fn status(&self, id: &str) -> Result<Status> {
        let r = self.store.fault_any(id)?;
        if r.state == FaultState::Recovered {
            return Ok(Status {
                expired: true,
                remaining_ms: 0,
                counters: r.final_counters,
                io: Vec::new(),
                record: r,
            });
        }
        self.status_of(r)
    }

    fn status_of(&self, record: FaultRecord) -> Result<Status> {
        let now = boot_ns();
        let counters = self.counters_of(&record)?;
        Ok(Status {
            expired: now >= record.deadline_boot_ns,
            remaining_ms: record.deadline_boot_ns.saturating_sub(now) / 1_000_000,
            counters,
            io: crate::iostat::fault_stats(&self.store, &record.id)?,
            record,
        })
    }

    /// The counters of a live fault's rule, where it has one.
    fn counters_of(&self, record: &FaultRecord) -> Result<Option<Counters>> {
        Ok(match (&record.net, &record.syscall, &record.block) {
            (Some(n), _, _) => Some(net::counters(n.slot)?.into()),
            (_, _, Some(BlockArmed::Bio(b))) => Some(io::counters(b.slot)?),
            (_, Some(s), _) => {
                let c = syscall::counters(s.slot)?;
                Some(Counters {
                    seen: c.seen,
                    matched: c.matched,
                    acted: c.acted,
                })
            }
            _ => None,
        })
    }

    /// Recovers one fault.
    pub fn recover(&self, id: &str) -> Result<Recovered> {
        // An unknown id fails before the lock, which would create the state directory.
        self.store.fault(id)?;
        let _lock = self.store.lock()?;
        // Recovered meanwhile by another (the deadline keeper, at its deadline)? Then this is
        // NotFound, and the directory the lock made again goes with the lock.
        let record = self.store.fault(id)?;
        let mut out = self.recover_locked(&record)?;
        out.attachments += self.cleanup_unused_locked()?;
        Ok(out)
    }

    /// Recovers every fault and removes every trace: attachments, pins, the state directory.
    pub fn recover_all(&self) -> Result<Recovered> {
        let _lock = self.store.lock()?;
        let mut out = Recovered {
            unreadable: self.store.purge_unreadable()?,
            ..Recovered::default()
        };
        deadline::forget_if_dead(&self.store);
        crate::backend::keeper::forget_if_dead(&self.store);
        probe::sweep_stale();
        let mut first_err = None;
        if let Err(e) = crate::iostat::unwatch_all_locked(&self.store) {
            first_err.get_or_insert(e);
        }
        for record in self.store.faults()? {
            match self.recover_locked(&record) {
                Ok(r) => out.faults.extend(r.faults),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match self.cleanup_unused_locked() {
            Ok(n) => out.attachments += n,
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        // What no record named (a record purged above, a state directory deleted): found by
        // the marks the kernel shows.
        out.swept = crate::backend::sweep::sweep();
        // Lock files of drills killed before they could remove them.
        out.swept
            .extend(crate::experiment::lock::sweep(self.store.dir()));
        // Nothing of ours should be left; remove pins the store did not know about. (The
        // probe's cached answer stays: it describes the kernel, not a fault.)
        ebpf::remove_all_pins()?;
        Ok(out)
    }

    /// Recovers faults whose in-kernel deadline has passed.
    pub fn reap_expired(&self) -> Result<Recovered> {
        let _lock = self.store.lock()?;
        self.reap_expired_locked()
    }

    fn reap_expired_locked(&self) -> Result<Recovered> {
        let now = boot_ns();
        let mut out = Recovered::default();
        for record in self.store.faults()? {
            if now >= record.deadline_boot_ns {
                out.faults.extend(self.recover_locked(&record)?.faults);
            }
        }
        out.attachments += self.cleanup_unused_locked()?;
        Ok(out)
    }

    /// Recovers the faults of daemons that are gone (a `chaos serve` killed before it could
    /// recover what it armed: nobody else will), and those past their deadline. Faults armed
    /// from the command line, a library or a running daemon stay.
    pub fn recover_orphans(&self) -> Result<Recovered> {
        let _lock = self.store.lock()?;
        let mut out = Recovered::default();
        for record in self.store.faults()? {
            if record
                .owner
                .is_some_and(|o| o.kind == crate::store::OwnerKind::Daemon && !o.is_alive())
            {
                out.faults.extend(self.recover_locked(&record)?.faults);
            }
        }
        let reaped = self.reap_expired_locked()?;
        out.faults.extend(reaped.faults);
        out.attachments += reaped.attachments;
        Ok(out)
    }

    fn recover_locked(&self, record: &FaultRecord) -> Result<Recovered> {
        // Kept with the record: what the fault did, for whoever asks after it is gone.
        let counters = self.counters_of(record).ok().flatten();
        if let Some(n) = &record.net {
            let others = self.store.faults()?;
            let remaining: Vec<_> = others
                .iter()
                .filter(|f| f.id != record.id)
                .filter_map(|f| f.net.as_ref())
                .collect();
            net::disarm(n, &remaining)?;
        }
        if let Some(x) = &record.syscall {
            let others = self.store.faults()?;
            syscall::disarm(x, &other_syscalls(&others, &record.id))?;
        } else if record.state == FaultState::Arming
            && let Ok(plan::Plan {
                fault: PlannedFault::Syscall(p),
                ..
            }) = plan::plan(&record.spec)
        {
            // Killed while arming: its rule may have gone live, and stopped its target, before
            // the record said so.
            let others = self.store.faults()?;
            syscall::disarm_unrecorded(&p, &other_syscalls(&others, &record.id))?;
        }
        if let Some(b) = &record.block {
            let others = self.store.faults()?;
            let remaining: Vec<_> = others
                .iter()
                .filter(|f| f.id != record.id)
                .filter_map(|f| match &f.block {
                    Some(BlockArmed::Bio(b)) => Some(b),
                    _ => None,
                })
                .collect();
            disarm_block(b, &remaining, &other_throttles(&others, &record.id))?;
        }
        self.store.mark_recovered(&record.id, counters)?;
        Ok(Recovered {
            faults: vec![record.id.clone()],
            ..Recovered::default()
        })
    }

    /// Detaches attachments no fault uses; when nothing is left, removes pins and the state dir.
    fn cleanup_unused_locked(&self) -> Result<usize> {
        let faults = self.store.faults()?;
        let watching = crate::iostat::prune_locked(&self.store)?;
        let mut n = 0;
        for a in self.store.attachments()? {
            let used = faults.iter().any(|f| {
                f.net
                    .as_ref()
                    .is_some_and(|x| x.attachments.contains(&a.id))
                    || f.syscall
                        .as_ref()
                        .is_some_and(|x| x.attachments.contains(&a.id))
                    || matches!(&f.block, Some(BlockArmed::Bio(b)) if b.attachments.contains(&a.id))
                    || (f.state == FaultState::Arming
                        && f.net.is_none()
                        && f.syscall.is_none()
                        && f.block.is_none())
            });
            let used = used || (watching && crate::iostat::is_measurement_hook(&a.hook));
            if !used {
                crate::backend::detach(&a)?;
                self.store.remove_attachment(a.id)?;
                n += 1;
            }
        }
        if self.store.faults()?.is_empty()
            && self.store.attachments()?.is_empty()
            && self.store.watches()?.is_empty()
        {
            ebpf::remove_all_pins()?;
            self.store.remove_if_empty()?;
        }
        Ok(n)
    }

    /// Waits until fault `id`'s deadline passes (or `stop` returns true), calling `tick` about
    /// every `every` with its status; then recovers it.
    pub fn hold(
        &self,
        id: &str,
        every: Duration,
        mut tick: impl FnMut(&Status),
        stop: impl Fn() -> bool,
    ) -> Result<Status> {
        let mut last = self.status(id)?;
        while !last.expired && !stop() {
            std::thread::sleep(every.min(Duration::from_millis(last.remaining_ms.max(1))));
            last = self.status(id)?;
            tick(&last);
        }
        self.recover(id)?;
        Ok(last)
    }
}

/// How [`Injector::run_with`] runs a drill. The default is what [`Injector::run`] uses: no
/// report files, no progress output, no way to stop early, traffic workers started from the
/// current executable.
pub struct RunOptions {
    /// Write `report.json` and `report.html` to this directory (made if missing); `None`: the
    /// report is only returned.
    pub report_dir: Option<PathBuf>,
    /// Where the drill's events go as it runs ([`Silent`] by default;
    /// [`JsonLines`](crate::experiment::progress::JsonLines) prints one JSON object a line).
    pub progress: Box<dyn Progress>,
    /// Set it (from a signal handler, another thread) to abort the drill: it is then recovered
    /// and reported like any abort.
    pub stop: Arc<AtomicBool>,
    /// The program that runs the drill's traffic generators, started as `PROGRAM
    /// __traffic-worker`: a `chaos` binary, or a program that calls
    /// [`serve_traffic_worker`](crate::serve_traffic_worker) first thing in `main`. `None`: the
    /// current executable. Not used by a drill without `traffic`.
    pub worker_exe: Option<PathBuf>,
    /// Where the spec came from (a file name), recorded in the report.
    pub source: Option<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            report_dir: None,
            progress: Box::new(Silent),
            stop: Arc::new(AtomicBool::new(false)),
            worker_exe: None,
            source: None,
        }
    }
}

impl Injector {
    /// Runs drill `spec` as `chaos run` does (admission, traffic, faults, recovery, verdicts)
    /// with the default [`RunOptions`], and returns its report, whatever the verdict. Blocks
    /// for the drill's length. Every fault it armed is recovered before it returns.
    ///
    /// A spec that does not validate is refused before anything runs; see
    /// [`Injector::run_with`].
    pub fn run(&self, spec: &ExperimentSpec) -> Result<Report> {
        self.run_with(spec, RunOptions::default())
    }

    /// [`Injector::run`] with options: a report directory, a progress sink, a stop flag, the
    /// traffic worker's program.
    ///
    /// Errors: a spec that does not validate (one error as it is; several as one
    /// [`Error::InvalidField`] listing them all; [`ExperimentSpec::validate`] gives them one by
    /// one); the current executable not found; the report not written. A drill that fails,
    /// is refused at admission or aborted is not an error: its report says so
    /// ([`Report::verdict`]).
    pub fn run_with(&self, spec: &ExperimentSpec, opts: RunOptions) -> Result<Report> {
        spec.validate().map_err(spec_error)?;
        let worker_exe = match opts.worker_exe {
            Some(p) => p,
            None => std::env::current_exe()
                .map_err(|e| Error::io("finding the current executable (the traffic worker)", e))?,
        };
        let report = runner::run(
            spec,
            self,
            runner::Options {
                source: opts.source,
                worker_exe,
                stop: opts.stop,
                progress: opts.progress,
            },
        )
        .map_err(spec_error)?;
        if let Some(dir) = &opts.report_dir {
            crate::experiment::write_report(dir, &report)?;
        }
        Ok(report)
    }
}

/// A drill's spec errors as one [`Error`]: the only one as it is, several listed in one.
fn spec_error(errors: SpecErrors) -> Error {
    let mut all = errors.0;
    if all.len() == 1 {
        return all.remove(0);
    }
    Error::InvalidField {
        field: "experiment".into(),
        problem: format!(
            "{} errors: {}",
            all.len(),
            all.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(" | ")
        ),
        fix: "ExperimentSpec::validate lists them one by one".into(),
    }
}

/// What [`Injector::arm`] would arm for a spec, as [`Injector::dry_run`] finds it.
#[derive(Clone, Debug, Serialize)]
pub struct DryRun {
    /// The fault kind and action, e.g. `net loss`.
    pub fault: String,
    /// The strategy that would serve it.
    pub strategy: Strategy,
    /// How long it would last once armed.
    pub duration_ms: u64,
    /// Where and on whom it would act, resolved: interfaces, calls and target, device, directory.
    pub acts_on: String,
    /// The spec.
    pub spec: FaultSpec,
}

impl Injector {
    /// Validates and plans `spec` and chooses its strategy, as [`Injector::arm`] does before
    /// it arms, and says what would be armed. Arms nothing and writes nothing (no state file, no
    /// BPF object loaded, no cgroup or qdisc touched); refuses what `arm` would refuse before
    /// touching the kernel, with the same errors.
    pub fn dry_run(&self, spec: &FaultSpec) -> Result<DryRun> {
        let (plan, strategy) = self.admit(spec)?;
        Ok(DryRun {
            fault: spec.name(),
            strategy,
            duration_ms: plan.duration.as_millis() as u64,
            acts_on: acts_on(&plan.fault),
            spec: spec.clone(),
        })
    }
}

/// Where a planned fault acts, in a few words.
fn acts_on(fault: &PlannedFault) -> String {
    use plan::{BioTarget, SyscallTarget};
    let syscall_target = |t: &SyscallTarget| match t {
        SyscallTarget::Pid {
            pid,
            follow_children,
        } => format!(
            "process {pid}{}",
            if *follow_children {
                " and its future children"
            } else {
                ""
            }
        ),
        SyscallTarget::Cgroup(c) => format!("cgroup {}", c.path.display()),
        SyscallTarget::Comm(c) => format!("processes named {c}"),
        SyscallTarget::Exec => "the command chaos exec starts".into(),
    };
    let calls = |p: &plan::SyscallPlan| {
        let names: Vec<&str> = p.syscalls.iter().map(|c| c.name).collect();
        let under = p
            .path_prefix
            .as_ref()
            .map(|d| format!(" under {}", d.display()))
            .unwrap_or_default();
        format!(
            "{}{under} of {}",
            names.join(","),
            syscall_target(&p.target)
        )
    };
    match fault {
        PlannedFault::Net(n) => {
            let ifaces: Vec<String> = n
                .interfaces
                .iter()
                .map(|i| match &i.netns {
                    Some(ns) => format!("{} in {}", i.name, ns.path.display()),
                    None => i.name.clone(),
                })
                .collect();
            format!("{} ({})", ifaces.join(", "), n.direction.as_str())
        }
        PlannedFault::Syscall(p) => calls(p),
        PlannedFault::Io(p) => match &p.effect {
            IoEffect::Fail { bio, files, .. } => match (bio, files) {
                (Some(b), _) => format!(
                    "{} I/O to {} of {}",
                    b.op.as_str(),
                    b.device.name,
                    match &b.target {
                        BioTarget::All => "everyone".to_owned(),
                        BioTarget::Pid(pid) => format!("process {pid}"),
                        BioTarget::Cgroup(c) => format!("cgroup {}", c.path.display()),
                    }
                ),
                (None, Some(f)) => calls(f),
                (None, None) => "nothing".into(),
            },
            IoEffect::Throttle { device, target, .. } => format!(
                "I/O to {} of {}",
                device.name,
                match target.pid {
                    Some(pid) => format!("process {pid}"),
                    None => format!("cgroup {}", target.cgroup.path.display()),
                }
            ),
        },
        PlannedFault::Disk(DiskPlan::Fill(f)) => {
            format!("{} ({} bytes now)", f.dir.display(), f.bytes)
        }
    }
}
