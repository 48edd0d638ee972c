//! tc state (clsact qdiscs, BPF filters) of every interface of a set of namespaces.

use std::collections::BTreeSet;
use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::path::Path;
use std::process::Command;

use libbpf_rs::libbpf_sys;
use nix::sched::{CloneFlags, setns};
use serde_json::Value;

use crate::world::{NETNS_RUN_DIR, command_in_netns};

/// A qdisc seen on an interface: `(namespace, interface, kind, handle)`, the namespace being
/// `"host"` for the oracle's own.
pub type QdiscKey = (String, String, String, String);

/// A BPF tc filter seen on an interface.
#[derive(Clone, Debug)]
pub struct TcFilter {
    /// Namespace (`"host"` for the oracle's own).
    pub netns: String,
    /// Interface name.
    pub ifname: String,
    /// `ingress` or `egress`.
    pub direction: &'static str,
    /// The filter's priority.
    pub pref: u64,
    /// The name tc shows for the filter (`bpf_name`).
    pub bpf_name: String,
    /// The attached program's id, if shown.
    pub prog_id: Option<u32>,
    /// The attached program's name, if shown.
    pub prog_name: String,
}

/// What `tc` shows for one namespace.
#[derive(Debug, Default)]
pub struct TcState {
    /// Qdiscs of kind `clsact` or `ingress`.
    pub qdiscs: BTreeSet<QdiscKey>,
    /// BPF filters.
    pub filters: Vec<TcFilter>,
    /// The interfaces, with their TCX programs.
    pub interfaces: Vec<Interface>,
}

/// Display name of a namespace: `host` for `None`.
pub fn ns_label(ns: Option<&str>) -> String {
    ns.unwrap_or("host").to_owned()
}

/// An interface as seen from inside its namespace.
#[derive(Clone, Debug)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its index.
    pub ifindex: u32,
    /// Programs attached to it through TCX (kernel 6.6+) on ingress.
    pub tcx_ingress: Vec<u32>,
    /// Programs attached to it through TCX on egress.
    pub tcx_egress: Vec<u32>,
}

/// The interfaces of namespace `ns` (`None`: the caller's), or `Ok(None)` when that namespace no
/// longer exists.
pub fn interfaces(ns: Option<&str>) -> io::Result<Option<Vec<Interface>>> {
    let fd = match ns {
        None => None,
        Some(name) => match File::open(Path::new(NETNS_RUN_DIR).join(name)) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        },
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(f) = &fd {
                setns(f, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            }
            if_names().map(Some)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("interface listing thread panicked")))
    })
}

/// Ids of the programs attached to `ifindex` with attach type `ty`; empty where the kernel has no
/// TCX.
pub(crate) fn tcx_query(ifindex: u32, ty: libbpf_sys::bpf_attach_type) -> Vec<u32> {
    let mut ids = [0u32; 64];
    let mut count = ids.len() as u32;
    let mut flags = 0u32;
    // SAFETY: the pointers are valid for the sizes given; for TCX the target is an ifindex.
    let r = unsafe {
        libbpf_sys::bpf_prog_query(
            ifindex as i32,
            ty,
            0,
            &mut flags,
            ids.as_mut_ptr(),
            &mut count,
        )
    };
    if r < 0 {
        return Vec::new();
    }
    ids[..(count as usize).min(ids.len())].to_vec()
}

/// `if_nameindex()` of the calling thread's namespace, with the TCX programs of each interface.
fn if_names() -> io::Result<Vec<Interface>> {
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Err(io::Error::last_os_error());
        }
        let mut names = Vec::new();
        let mut p = list;
        while (*p).if_index != 0 {
            let ifindex = (*p).if_index;
            names.push(Interface {
                name: CStr::from_ptr((*p).if_name).to_string_lossy().into_owned(),
                ifindex,
                tcx_ingress: tcx_query(ifindex, libbpf_sys::BPF_TCX_INGRESS),
                tcx_egress: tcx_query(ifindex, libbpf_sys::BPF_TCX_EGRESS),
            });
            p = p.add(1);
        }
        libc::if_freenameindex(list);
        Ok(names)
    }
}

fn tc(ns: Option<&str>, args: &[&str]) -> io::Result<Value> {
    let mut cmd = match ns {
        None => Command::new("tc"),
        Some(name) => command_in_netns(name, "tc")?,
    };
    cmd.args(args);
    let out = crate::cmd::run(&mut cmd)?;
    if out.trim().is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    serde_json::from_str(&out)
        .map_err(|e| io::Error::other(format!("`tc {}` printed bad JSON: {e}", args.join(" "))))
}

/// Reads the tc state of every interface of namespace `ns` (`None`: the caller's). `Ok(None)`
/// when the namespace no longer exists.
pub fn tc_state(ns: Option<&str>) -> io::Result<Option<TcState>> {
    let Some(ifaces) = interfaces(ns)? else {
        return Ok(None);
    };
    let label = ns_label(ns);
    let mut state = TcState::default();
    for iface in &ifaces {
        let ifname = &iface.name;
        let qdiscs = match tc(ns, &["-j", "qdisc", "show", "dev", ifname]) {
            Ok(v) => v,
            // The interface (or namespace) went away meanwhile.
            Err(_) if !still_there(ns, ifname) => continue,
            Err(e) => return Err(e),
        };
        let mut has_hook = false;
        for q in qdiscs.as_array().into_iter().flatten() {
            let kind = q["kind"].as_str().unwrap_or("");
            if kind == "clsact" || kind == "ingress" {
                has_hook = true;
                let handle = q["handle"].as_str().unwrap_or("").to_owned();
                state
                    .qdiscs
                    .insert((label.clone(), ifname.clone(), kind.to_owned(), handle));
            }
        }
        if !has_hook {
            // No clsact/ingress qdisc: no classic tc filter can be attached.
            continue;
        }
        for direction in ["ingress", "egress"] {
            let filters = match tc(ns, &["-j", "filter", "show", "dev", ifname, direction]) {
                Ok(v) => v,
                Err(_) if !still_there(ns, ifname) => continue,
                Err(e) => return Err(e),
            };
            for f in filters.as_array().into_iter().flatten() {
                // tc prints a header entry per priority, without options, then the filters.
                if f["kind"].as_str() != Some("bpf") || f.get("options").is_none() {
                    continue;
                }
                let o = &f["options"];
                state.filters.push(TcFilter {
                    netns: label.clone(),
                    ifname: ifname.clone(),
                    direction,
                    pref: f["pref"].as_u64().unwrap_or(0),
                    bpf_name: o["bpf_name"].as_str().unwrap_or("").to_owned(),
                    prog_id: o["prog"]["id"].as_u64().map(|id| id as u32),
                    prog_name: o["prog"]["name"].as_str().unwrap_or("").to_owned(),
                });
            }
        }
    }
    state.interfaces = ifaces;
    Ok(Some(state))
}

fn still_there(ns: Option<&str>, ifname: &str) -> bool {
    matches!(interfaces(ns), Ok(Some(list)) if list.iter().any(|i| i.name == ifname))
}
