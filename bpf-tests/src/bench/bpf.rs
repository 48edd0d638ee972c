//! What the kernel says about our programs and maps, read through libbpf (not through the
//! injector): which of our programs an interface runs, their run-time statistics, and the memory
//! of the maps they use.

use std::{
    fs, io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use libbpf_rs::libbpf_sys;

use crate::{oracle::PROG_PREFIX, world::NetNs};

/// Turns a libbpf return value (a descriptor, or minus an errno) into an owned descriptor.
fn owned_fd(r: i32, what: &str) -> io::Result<OwnedFd> {
    if r < 0 {
        let e = io::Error::from_raw_os_error(-r);
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    // SAFETY: libbpf returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// BPF run-time statistics (`run_time_ns`, `run_cnt` of every program) are collected while this
/// guard lives: it holds the descriptor `BPF_ENABLE_STATS` returns, and the kernel stops
/// collecting when the last such descriptor closes, so nothing needs restoring afterwards (unlike
/// the `kernel.bpf_stats_enabled` sysctl). Collecting costs every program on the machine two
/// clock reads per run, so throughput is measured without it.
pub struct RunStats {
    _fd: OwnedFd,
}

impl RunStats {
    /// Enables the statistics (Linux 5.8+).
    pub fn enable() -> io::Result<RunStats> {
        // SAFETY: a plain syscall wrapper taking an enum value.
        let r = unsafe { libbpf_sys::bpf_enable_stats(libbpf_sys::BPF_STATS_RUN_TIME) };
        Ok(RunStats {
            _fd: owned_fd(r, "BPF_ENABLE_STATS")?,
        })
    }
}

/// A program's identity and counters, from `bpf_prog_info`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgInfo {
    /// Its id.
    pub id: u32,
    /// Its name as the kernel keeps it (at most 15 bytes).
    pub name: String,
    /// Total time spent running it while statistics were enabled.
    pub run_time_ns: u64,
    /// Runs counted while statistics were enabled.
    pub run_cnt: u64,
    /// The maps it uses.
    pub map_ids: Vec<u32>,
}

/// Reads program `id`'s info.
pub fn prog_info(id: u32) -> io::Result<ProgInfo> {
    // SAFETY: a plain syscall wrapper.
    let fd = owned_fd(
        unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) },
        &format!("program id {id}"),
    )?;
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: `info` is a bpf_prog_info of `len` bytes; every pointer field in it is null.
    let r = unsafe {
        libbpf_sys::bpf_obj_get_info_by_fd(
            fd.as_raw_fd(),
            (&mut info as *mut libbpf_sys::bpf_prog_info).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::from_raw_os_error(-r));
    }
    let mut map_ids = vec![0u32; info.nr_map_ids as usize];
    if !map_ids.is_empty() {
        let mut again = libbpf_sys::bpf_prog_info {
            nr_map_ids: map_ids.len() as u32,
            map_ids: map_ids.as_mut_ptr() as u64,
            ..Default::default()
        };
        let mut len = std::mem::size_of_val(&again) as u32;
        // SAFETY: `map_ids` has room for `nr_map_ids` ids and outlives the call.
        let r = unsafe {
            libbpf_sys::bpf_obj_get_info_by_fd(
                fd.as_raw_fd(),
                (&mut again as *mut libbpf_sys::bpf_prog_info).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::from_raw_os_error(-r));
        }
        map_ids.truncate(again.nr_map_ids as usize);
    }
    let name: Vec<u8> = info
        .name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok(ProgInfo {
        id,
        name: String::from_utf8_lossy(&name).into_owned(),
        run_time_ns: info.run_time_ns,
        run_cnt: info.run_cnt,
        map_ids,
    })
}

/// The memory the kernel charges to map `id` (`memlock:` of its fdinfo), in bytes.
pub fn map_memlock(id: u32) -> io::Result<u64> {
    // SAFETY: a plain syscall wrapper.
    let fd = owned_fd(
        unsafe { libbpf_sys::bpf_map_get_fd_by_id(id) },
        &format!("map id {id}"),
    )?;
    let text = fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no memlock in the fdinfo of map {id}")))
}

/// The memory of every map the programs `progs` use, each map counted once, in bytes.
pub fn maps_memlock(progs: &[u32]) -> io::Result<u64> {
    let mut ids: Vec<u32> = Vec::new();
    for &p in progs {
        ids.extend(prog_info(p)?.map_ids);
    }
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter().map(map_memlock).sum()
}

/// The ids of our programs (named `chaos_*`) on interface `ifname` of namespace `ns` in
/// direction `egress` (else ingress): TCX attachments first, else clsact filters as `tc` shows
/// them.
pub fn our_tc_programs(ns: &NetNs, ifname: &str, egress: bool) -> io::Result<Vec<u32>> {
    let on = OurTc::read(ns, ifname, egress)?;
    Ok(if on.tcx.is_empty() { on.clsact } else { on.tcx })
}

/// Our programs (named `chaos_*`) on one interface and direction, by how they are attached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OurTc {
    /// Program ids of TCX links.
    pub tcx: Vec<u32>,
    /// Program ids of clsact filters.
    pub clsact: Vec<u32>,
}

impl OurTc {
    /// What is on interface `ifname` of namespace `ns` in direction `egress` (else ingress).
    pub fn read(ns: &NetNs, ifname: &str, egress: bool) -> io::Result<OurTc> {
        let name = std::ffi::CString::new(ifname).map_err(io::Error::other)?;
        let attach = if egress {
            libbpf_sys::BPF_TCX_EGRESS
        } else {
            libbpf_sys::BPF_TCX_INGRESS
        };
        let tcx: Vec<u32> = ns.run(|| {
            // SAFETY: `name` is NUL-terminated.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if ifindex == 0 {
                return Err(io::Error::last_os_error());
            }
            // Empty where the kernel has no TCX (or nothing is attached).
            Ok(crate::oracle::tc::tcx_query(ifindex, attach))
        })?;
        let tcx = tcx
            .into_iter()
            .filter(|&id| prog_info(id).is_ok_and(|p| p.name.starts_with(PROG_PREFIX)))
            .collect();
        let dir = if egress { "egress" } else { "ingress" };
        let out = ns
            .exec(&["tc", "-j", "filter", "show", "dev", ifname, dir])
            .unwrap_or_default();
        let filters: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
        let mut clsact = Vec::new();
        for f in filters.as_array().into_iter().flatten() {
            let prog = &f["options"]["prog"];
            if let (Some(id), Some(name)) = (prog["id"].as_u64(), prog["name"].as_str())
                && name.starts_with(PROG_PREFIX)
            {
                clsact.push(id as u32);
            }
        }
        Ok(OurTc { tcx, clsact })
    }
}

/// Summed run-time counters of a set of programs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunTotals {
    /// Total `run_time_ns`.
    pub ns: u64,
    /// Total `run_cnt`.
    pub runs: u64,
}

impl RunTotals {
    /// The sums over `progs` now.
    pub fn read(progs: &[u32]) -> io::Result<RunTotals> {
        let mut t = RunTotals::default();
        for &p in progs {
            let i = prog_info(p)?;
            t.ns += i.run_time_ns;
            t.runs += i.run_cnt;
        }
        Ok(t)
    }

    /// Nanoseconds per run between `earlier` and `self`; `None` without runs.
    pub fn ns_per_run_since(&self, earlier: &RunTotals) -> Option<f64> {
        let runs = self.runs.checked_sub(earlier.runs)?;
        let ns = self.ns.checked_sub(earlier.ns)?;
        (runs > 0).then(|| ns as f64 / runs as f64)
    }
}
