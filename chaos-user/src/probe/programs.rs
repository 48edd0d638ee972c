//! Program rows: each program type is loaded as `r0 = N; exit` and attached where that is
//! harmless (a scratch namespace's `lo`, an empty scratch cgroup, a no-op on a tracepoint), and
//! helpers are checked with aya's verifier-log probe.

use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{programs::ProgramType, sys::BpfHelper};
use aya_obj::btf::BtfKind;

use super::{
    Feature, Rows,
    sys::{self, Refusal, attach_type as at, prog_type as pt},
};
use crate::{mounts, netns};

pub(super) fn probe(rows: &mut Rows, btf: &Result<aya::Btf, String>) {
    // A socket-free type every kernel with bpf() has: tells "no bpf at all" apart.
    match sys::load_trivial(pt::SCHED_CLS, 0, 0, -1) {
        Ok(_) => rows.yes(Feature::BpfSyscall, "loaded a sched_cls program"),
        Err(r) => rows.no(Feature::BpfSyscall, format!("BPF_PROG_LOAD refused: {r}")),
    }
    tc(rows);
    cgroup_programs(rows);
    tracing_programs(rows);
    btf_programs(rows, btf);
    helpers(rows);
}

fn tc(rows: &mut Rows) {
    let prog = match sys::load_trivial(pt::SCHED_CLS, 0, 0, -1) {
        Ok(p) => p,
        Err(r) => {
            rows.no(Feature::TcClsact, format!("load: {r}"));
            rows.no(Feature::Tcx, format!("load: {r}"));
            return;
        }
    };
    let result = netns::run_in_scratch(|| {
        let lo = netns::ifindex("lo").unwrap_or(1);
        let tcx = sys::link_create(&prog, lo, at::TCX_EGRESS).map(drop);
        let clsact = clsact_attach(&prog);
        Ok((tcx, clsact))
    });
    match result {
        Ok((tcx, clsact)) => {
            match tcx {
                Ok(()) => rows.yes(Feature::Tcx, "attached a tcx egress link on a scratch lo"),
                Err(r) => rows.no(
                    Feature::Tcx,
                    format!("BPF_LINK_CREATE tcx: {r} (needs 6.6+)"),
                ),
            }
            match clsact {
                Ok(()) => rows.yes(Feature::TcClsact, "clsact + egress filter on a scratch lo"),
                Err(e) => rows.no(Feature::TcClsact, e),
            }
        }
        Err(e) => {
            rows.no(Feature::Tcx, e.to_string());
            rows.no(Feature::TcClsact, e.to_string());
        }
    }
}

/// Attaches through a clsact qdisc with aya's netlink path, the same code the injector uses.
fn clsact_attach(prog: &OwnedFd) -> Result<(), String> {
    use aya::programs::{
        SchedClassifier, TcAttachType,
        tc::{NlOptions, TcAttachOptions, qdisc_add_clsact},
    };
    mounts::ensure_bpffs().map_err(|e| e.to_string())?;
    let pin = PathBuf::from(format!("{PIN_PREFIX}{}", std::process::id()));
    sys::obj_pin(prog, &pin).map_err(|r| format!("pinning: {r}"))?;
    let result = (|| {
        let mut program = SchedClassifier::from_pin(&pin).map_err(|e| e.to_string())?;
        qdisc_add_clsact("lo").map_err(|e| format!("adding clsact: {e}"))?;
        program
            .attach_with_options(
                "lo",
                TcAttachType::Egress,
                TcAttachOptions::Netlink(NlOptions::default()),
            )
            .map_err(|e| format!("attaching the filter: {e}"))?;
        Ok(())
    })();
    let _ = std::fs::remove_file(&pin);
    result
}

/// The probe's scratch pin, `PREFIX<pid>` (aya takes a program from a pin, not a descriptor).
const PIN_PREFIX: &str = "/sys/fs/bpf/chaos_probe_";
/// The probe's scratch cgroup v2, `<root>/PREFIX<pid>`.
const CGROUP_PREFIX: &str = "chaos-probe-";

/// Removes the scratch pin and cgroup of probes that were killed before they could (a pin keeps
/// its program loaded for good; an empty cgroup directory stays). Those of a live chaos process
/// are left to it.
pub fn sweep_stale() {
    let pin = Path::new(PIN_PREFIX);
    let mut found: Vec<PathBuf> = Vec::new();
    let mut collect = |dir: &Path, prefix: &str| {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name();
                let stale = name
                    .to_str()
                    .and_then(|n| n.strip_prefix(prefix))
                    .and_then(|pid| pid.parse::<u32>().ok())
                    .is_some_and(|pid| !crate::guard::is_ours(pid));
                if stale {
                    found.push(e.path());
                }
            }
        }
    };
    if let (Some(dir), Some(prefix)) = (pin.parent(), pin.file_name()) {
        collect(dir, &prefix.to_string_lossy());
    }
    if let Some(root) = mounts::CgroupMounts::read().ok().and_then(|m| m.v2) {
        collect(&root, CGROUP_PREFIX);
    }
    for path in found {
        let _ = std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir(&path));
        tracing::info!(
            "removed {}, left by a probe that was killed",
            path.display()
        );
    }
}

/// A cgroup v2 made for the probe; removed on drop.
struct ScratchCgroup {
    path: PathBuf,
    dir: std::fs::File,
}

impl ScratchCgroup {
    fn new() -> Result<ScratchCgroup, String> {
        let mounts = mounts::CgroupMounts::read().map_err(|e| e.to_string())?;
        let root = mounts.v2.ok_or("no cgroup v2 mounted")?;
        let path = root.join(format!("{CGROUP_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        let dir = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(ScratchCgroup { path, dir })
    }
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

fn cgroup_programs(rows: &mut Rows) {
    let cases = [
        (
            Feature::CgroupSkb,
            pt::CGROUP_SKB,
            at::CGROUP_INET_EGRESS,
            "egress",
        ),
        (
            Feature::CgroupSockAddr,
            pt::CGROUP_SOCK_ADDR,
            at::CGROUP_INET4_CONNECT,
            "connect4",
        ),
        (
            Feature::CgroupSockopt,
            pt::CGROUP_SOCKOPT,
            at::CGROUP_GETSOCKOPT,
            "getsockopt",
        ),
        (
            Feature::SockOps,
            pt::SOCK_OPS,
            at::CGROUP_SOCK_OPS,
            "sock_ops",
        ),
    ];
    let cgroup = ScratchCgroup::new();
    for (feature, prog_type, attach, what) in cases {
        // 1 = allow, for every cgroup program type.
        let prog = match sys::load_trivial(prog_type, attach, 0, 1) {
            Ok(p) => p,
            Err(r) => {
                rows.no(feature, format!("load: {r}"));
                continue;
            }
        };
        match &cgroup {
            Ok(cg) => match sys::link_create(&prog, cg.dir.as_raw_fd() as u32, attach) {
                Ok(_link) => rows.yes(feature, format!("{what} link on a scratch cgroup v2")),
                Err(r) => rows.no(feature, format!("attach {what}: {r}")),
            },
            Err(e) => rows.no(feature, format!("loads, but cannot attach: {e}")),
        }
    }
}

fn tracing_programs(rows: &mut Rows) {
    // Tracepoint, through perf.
    let tp = match mounts::ensure_tracefs() {
        Ok(root) => {
            let id_path = root.join("events/syscalls/sys_enter_getppid/id");
            match std::fs::read_to_string(&id_path) {
                Ok(id) => match id.trim().parse::<u64>() {
                    Ok(id) => sys::load_trivial(pt::TRACEPOINT, 0, 0, 0)
                        .and_then(|p| sys::tracepoint_attach(&p, id).map(drop))
                        .map_err(|r| r.to_string()),
                    Err(e) => Err(format!("{}: {e}", id_path.display())),
                },
                Err(e) => Err(format!("{}: {e}", id_path.display())),
            }
        }
        Err(e) => Err(e.to_string()),
    };
    match tp {
        Ok(()) => rows.yes(
            Feature::Tracepoint,
            "attached to syscalls/sys_enter_getppid",
        ),
        Err(e) => rows.no(Feature::Tracepoint, e),
    }
    // Raw tracepoint.
    let raw = sys::load_trivial(pt::RAW_TRACEPOINT, 0, 0, 0)
        .and_then(|p| sys::raw_tracepoint_open(&p, Some(c"sys_enter")).map(drop));
    match raw {
        Ok(()) => rows.yes(Feature::RawTracepoint, "attached to sys_enter"),
        Err(r) => rows.no(Feature::RawTracepoint, r.to_string()),
    }
    // kprobe through the perf kprobe PMU.
    let pmu = std::fs::read_to_string("/sys/bus/event_source/devices/kprobe/type")
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok());
    let kprobe = match pmu {
        None => Err("no kprobe PMU (/sys/bus/event_source/devices/kprobe)".to_owned()),
        Some(pmu) => {
            let func = CString::new("do_sys_openat2").expect("no NUL");
            sys::load_trivial(pt::KPROBE, 0, 0, 0)
                .and_then(|p| sys::perf_attach(&p, pmu, 0, Some(&func)).map(drop))
                .map_err(|r| format!("kprobe on do_sys_openat2: {r}"))
        }
    };
    match &kprobe {
        Ok(()) => rows.yes(Feature::Kprobe, "attached a kprobe on do_sys_openat2"),
        Err(e) => rows.no(Feature::Kprobe, e.clone()),
    }
    let override_ok = helper(ProgramType::KProbe, BpfHelper::BPF_FUNC_override_return);
    match (&kprobe, override_ok) {
        (Ok(()), Ok(true)) => rows.yes(
            Feature::KprobeOverride,
            "kprobes work and bpf_override_return is known (CONFIG_BPF_KPROBE_OVERRIDE)",
        ),
        (Err(e), _) => rows.no(Feature::KprobeOverride, format!("no kprobes: {e}")),
        (_, Ok(false)) => rows.no(
            Feature::KprobeOverride,
            "bpf_override_return unknown (CONFIG_BPF_KPROBE_OVERRIDE off)",
        ),
        (_, Err(e)) => rows.no(Feature::KprobeOverride, e),
    }
}

/// Loads a BTF-targeted program on `func` and attaches it.
fn btf_attach(
    btf: &Result<aya::Btf, String>,
    prog_type: u32,
    attach: u32,
    func: &str,
) -> Result<(), String> {
    let btf = btf.as_ref().map_err(|e| format!("no kernel BTF: {e}"))?;
    let id = btf
        .id_by_type_name_kind(func, BtfKind::Func)
        .map_err(|_| format!("{func} is not in the kernel's BTF"))?;
    let prog = sys::load_trivial(prog_type, attach, id, 0).map_err(|r| format!("load: {r}"))?;
    sys::raw_tracepoint_open(&prog, None)
        .map(drop)
        .map_err(|r: Refusal| format!("attach: {r}"))
}

fn btf_programs(rows: &mut Rows, btf: &Result<aya::Btf, String>) {
    let cases = [
        (
            Feature::Fentry,
            pt::TRACING,
            at::TRACE_FENTRY,
            "bpf_fentry_test1",
        ),
        (
            Feature::FmodRet,
            pt::TRACING,
            at::MODIFY_RETURN,
            "security_file_open",
        ),
        (Feature::Lsm, pt::LSM, at::LSM_MAC, "bpf_lsm_file_open"),
        (
            Feature::ErrorInjectionBio,
            pt::TRACING,
            at::MODIFY_RETURN,
            "should_fail_bio",
        ),
        (
            Feature::ErrorInjectionSyscall,
            pt::TRACING,
            at::MODIFY_RETURN,
            "__x64_sys_fsync",
        ),
    ];
    for (feature, prog_type, attach, func) in cases {
        match btf_attach(btf, prog_type, attach, func) {
            Ok(()) => rows.yes(feature, format!("attached to {func}")),
            Err(e) => rows.no(feature, format!("{func}: {e}")),
        }
    }
    if !rows.has(Feature::Lsm) {
        let active = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
        if active.split(',').any(|l| l.trim() == "bpf") {
            let detail = rows.detail(Feature::Lsm);
            rows.no(
                Feature::Lsm,
                format!("{detail} (bpf is listed in /sys/kernel/security/lsm, yet refused)"),
            );
        }
    }
}

fn helper(prog_type: ProgramType, helper: BpfHelper) -> Result<bool, String> {
    aya::sys::is_helper_supported(prog_type, helper).map_err(|e| e.to_string())
}

fn helpers(rows: &mut Rows) {
    let cases = [
        (
            Feature::HelperSetRetval,
            ProgramType::CgroupSockopt,
            BpfHelper::BPF_FUNC_set_retval,
            "cgroup_sockopt",
        ),
        (
            Feature::HelperSkbCgroupId,
            ProgramType::SchedClassifier,
            BpfHelper::BPF_FUNC_skb_cgroup_id,
            "sched_cls",
        ),
        (
            Feature::HelperSendSignal,
            ProgramType::TracePoint,
            BpfHelper::BPF_FUNC_send_signal,
            "tracepoint",
        ),
        (
            Feature::HelperKtimeBootNs,
            ProgramType::SchedClassifier,
            BpfHelper::BPF_FUNC_ktime_get_boot_ns,
            "sched_cls",
        ),
        (
            Feature::HelperCloneRedirect,
            ProgramType::SchedClassifier,
            BpfHelper::BPF_FUNC_clone_redirect,
            "sched_cls",
        ),
    ];
    for (feature, prog_type, id, from) in cases {
        match helper(prog_type, id) {
            Ok(true) => rows.yes(feature, format!("callable from {from}")),
            Ok(false) => rows.no(feature, format!("not callable from {from}")),
            Err(e) => rows.no(feature, format!("probe failed: {e}")),
        }
    }
}
