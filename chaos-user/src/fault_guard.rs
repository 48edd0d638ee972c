//! [`FaultGuard`]: a fault armed by [`Injector::inject`] that is recovered when the guard goes
//! away, for library users that want a fault to last as long as a scope, a test or an agent's
//! run, and not a moment longer.
//!
//! # Why the guard owns a handle to the injector
//!
//! A guard keeps its own [`Injector`] (a cheap clone: the probe's answer is shared, the store is
//! a path), not a borrow of the caller's. So a guard is `Send + 'static`: an agent can keep its
//! guards in a map, hand one to a thread or a tokio task, or return it from the function that
//! armed it, without tying every fault to the lifetime of one `Injector` value. Recovery needs
//! nothing else: the fault's record in the state store says what to undo.
//!
//! # What "recovered on drop" covers
//!
//! Dropping the guard recovers the fault, and so does unwinding from a panic in the guard's
//! scope. It cannot run when the process dies without unwinding: killed by a signal (SIGKILL, or
//! SIGINT/SIGTERM without a handler that returns to the guard's scope), `std::process::exit`, or
//! a binary built with `panic = "abort"`. The fault then still ends at its in-kernel deadline
//! (every fault has one; a spec without `duration` lasts 10 minutes), and `chaos recover --all`
//! (or [`Injector::recover_all`]) removes what is left.

use crate::{
    error::{Error, Result},
    injector::{Armed, Counters, Injector, Recovered, Status},
    strategy::Strategy,
};

/// A fault armed by [`Injector::inject`], recovered when the guard is dropped (also while a
/// panic unwinds), unless [`FaultGuard::recover`] already did or [`FaultGuard::keep`] handed it
/// over to its in-kernel deadline. A failed recovery on drop is logged through `tracing` (the
/// fault's deadline still ends it); call [`FaultGuard::recover`] to see the error.
///
/// ```no_run
/// # fn main() -> chaos_user::Result<()> {
/// use chaos_user::Injector;
///
/// let injector = Injector::new()?;
/// let spec = chaos_user::spec::from_json(
///     r#"{"kind": "net", "action": "loss", "percent": 30, "interface": "veth0", "duration": "60s"}"#,
/// )?;
/// {
///     let fault = injector.inject(&spec)?;
///     println!("{} armed with {}", fault.id(), fault.strategy());
///     // ... run the workload ...
///     println!("dropped so far: {:?}", fault.counters()?);
/// } // recovered here, or by a panic unwinding through the block
/// # Ok(())
/// # }
/// ```
#[must_use = "dropping the guard recovers the fault at once; bind it, or call `keep()`"]
#[derive(Debug)]
pub struct FaultGuard {
    injector: Injector,
    armed: Armed,
    /// Ours to recover: false once recovered or kept.
    live: bool,
}

impl FaultGuard {
    /// Guards fault `armed`, just armed by `injector`.
    pub(crate) fn new(injector: Injector, armed: Armed) -> FaultGuard {
        FaultGuard {
            injector,
            armed,
            live: true,
        }
    }

    /// The fault's id, as `chaos list` and `chaos status` show it.
    pub fn id(&self) -> &str {
        &self.armed.id
    }

    /// What arming returned: the id, the strategy and the in-kernel deadline.
    pub fn armed(&self) -> &Armed {
        &self.armed
    }

    /// How the fault is made on this kernel (`tcx-bpf`, `kprobe-override`, `cgroup-io-max`...).
    pub fn strategy(&self) -> Strategy {
        self.armed.strategy
    }

    /// The fault's record, time left and counters, read now. Once its deadline has passed the
    /// fault no longer acts (`expired`); its record may even be gone, reaped by another arming
    /// ([`Error::NotFound`]).
    pub fn status(&self) -> Result<Status> {
        self.injector.status(&self.armed.id)
    }

    /// The rule's counters now: packets (network faults) or calls (syscall faults, `io fail`)
    /// seen, matched and acted on since it was armed. `None` for faults made outside BPF,
    /// which count nothing (`io slow` / `hang`, `disk fill`).
    pub fn counters(&self) -> Result<Option<Counters>> {
        Ok(self.status()?.counters)
    }

    /// Recovers the fault now and says what was removed. A fault already gone (its deadline
    /// passed and it was reaped, or someone ran `chaos recover`) is not an error: the answer then
    /// names no fault. On error the fault may be partly armed still: its deadline ends it, and
    /// [`Injector::recover_all`] removes the rest; the guard does not try again on drop.
    pub fn recover(mut self) -> Result<Recovered> {
        self.live = false;
        recover(&self.injector, &self.armed.id)
    }

    /// Lets the fault outlive the guard: it stays armed until its in-kernel deadline, as one
    /// armed by `chaos inject` does, and can be recovered by id later
    /// ([`Injector::recover`], `chaos recover ID`). Returns what arming returned.
    pub fn keep(mut self) -> Armed {
        self.live = false;
        self.armed.clone()
    }

    /// [`FaultGuard::keep`], returning only the fault's id.
    pub fn into_id(self) -> String {
        self.keep().id
    }
}

/// Recovers fault `id`; a fault that is already gone counts as recovered.
fn recover(injector: &Injector, id: &str) -> Result<Recovered> {
    match injector.recover(id) {
        Err(Error::NotFound(_)) => Ok(Recovered::default()),
        other => other,
    }
}

impl Drop for FaultGuard {
    fn drop(&mut self) {
        if !self.live {
            return;
        }
        self.live = false;
        let id = &self.armed.id;
        match recover(&self.injector, id) {
            Ok(r) if r.faults.is_empty() => {
                tracing::debug!(fault = %id, "fault already gone when its guard dropped")
            }
            Ok(_) => tracing::debug!(fault = %id, "fault recovered by its guard"),
            Err(e) => tracing::error!(
                fault = %id,
                "could not recover the fault when its guard dropped: {e}; its in-kernel \
                 deadline ends it, `chaos recover --all` removes the rest"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Only what needs no kernel: a guard whose fault is present in a scratch store is never
    //! recovered here (recovery resynchronises the machine's pinned maps), so these tests check
    //! the paths that leave it alone and the one where the fault is already gone.
    use super::*;
    use crate::{
        probe,
        spec::{FaultSpec, NetSpec},
        store::{FaultRecord, FaultState, Store},
        strategy::{Attach, NetStrategy, Shaping},
    };

    fn scratch(name: &str) -> (std::path::PathBuf, Injector) {
        let dir =
            std::env::temp_dir().join(format!("chaos-guard-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        (dir, Injector::with(probe::Report::unprobed(), store))
    }

    fn tcx() -> Strategy {
        Strategy::Net(NetStrategy {
            attach: Attach::Tcx,
            shaping: Shaping::None,
            cgroup_ingress: false,
        })
    }

    /// A record with no backend part: reading its status touches no kernel state.
    fn record(id: &str) -> FaultRecord {
        FaultRecord {
            id: id.into(),
            spec: FaultSpec::Net(NetSpec {
                percent: Some(10.0),
                interface: Some("veth0".into()),
                duration: Some("10s".into()),
                ..NetSpec::default()
            }),
            strategy: tcx(),
            state: FaultState::Armed,
            created_unix_ms: 1,
            deadline_unix_ms: 2,
            deadline_boot_ns: u64::MAX,
            net: None,
            syscall: None,
            block: None,
            owner: None,
            recovered_unix_ms: None,
            recovered_by: None,
            final_counters: None,
        }
    }

    fn armed(id: &str) -> Armed {
        Armed {
            id: id.into(),
            strategy: tcx(),
            deadline_unix_ms: 2,
        }
    }

    #[test]
    fn a_guard_can_go_to_another_thread() {
        fn send_static<T: Send + 'static>() {}
        send_static::<FaultGuard>();
    }

    #[test]
    fn recovering_a_fault_already_gone_names_nothing() {
        let (dir, injector) = scratch("gone");
        let guard = FaultGuard::new(injector.clone(), armed("f-gone0000"));
        let r = guard
            .recover()
            .expect("a fault already gone counts as recovered");
        assert!(r.faults.is_empty(), "{r:?}");
        // Dropping one is quiet too, and makes no state directory.
        drop(FaultGuard::new(injector, armed("f-gone0001")));
        assert!(!dir.exists(), "nothing to recover must write nothing");
    }

    #[test]
    fn keep_leaves_the_fault_armed() {
        let (dir, injector) = scratch("keep");
        injector.store().put_fault(&record("f-keep0000")).unwrap();
        injector.store().put_fault(&record("f-keep0001")).unwrap();
        let guard = FaultGuard::new(injector.clone(), armed("f-keep0000"));
        assert_eq!(guard.id(), "f-keep0000");
        assert_eq!(guard.strategy(), tcx());
        let status = guard.status().unwrap();
        assert_eq!(status.record.id, "f-keep0000");
        assert!(!status.expired);
        assert_eq!(
            guard.counters().unwrap(),
            None,
            "no backend part, no counters"
        );
        let kept = guard.keep();
        assert_eq!(kept.id, "f-keep0000");
        let id = FaultGuard::new(injector.clone(), armed("f-keep0001")).into_id();
        assert_eq!(id, "f-keep0001");
        let left: Vec<String> = injector
            .store()
            .faults()
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect();
        assert_eq!(left, ["f-keep0000", "f-keep0001"], "kept faults stay armed");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
