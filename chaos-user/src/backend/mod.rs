//! Backends: turning a plan and its strategy into kernel state (BPF map entries, links, qdiscs,
//! cgroup files) and undoing it. One fault family per file; what they share is here.

pub mod deadline;
pub mod disk_fill;
pub mod dist;
pub mod io;
pub mod keeper;
pub mod net;
pub mod qdisc;
mod rtnl;
pub mod shaping;
pub mod sweep;
pub mod syscall;
pub mod throttle;

use std::path::Path;

use aya::{
    maps::{HashMap, MapData},
    programs::{
        CgroupSkb, CgroupSockAddr, CgroupSockopt, CgroupSysctl, KProbe, RawTracePoint,
        SchedClassifier, TracePoint,
        links::{FdLink, PinnedLink},
    },
};

use crate::{
    ebpf,
    error::{Error, Result},
    store::{AttachLink, Attachment, Hook, Store},
};

/// The attachment for `hook`, existing or made by `attach` (given the new attachment's id and the
/// existing attachments) and recorded; `true` if made now. Nothing is left if recording fails.
pub(crate) fn find_or_attach(
    store: &Store,
    hook: Hook,
    attach: impl FnOnce(&Hook, u32, &[Attachment]) -> Result<AttachLink>,
) -> Result<(Attachment, bool)> {
    let existing = store.attachments()?;
    if let Some(a) = existing.iter().find(|a| net::same_hook(&a.hook, &hook)) {
        return Ok((a.clone(), false));
    }
    // The lowest free id: network program instances index an array by it.
    let id = (1..chaos_common::net::MAX_ATTACHMENTS)
        .find(|id| !existing.iter().any(|a| a.id == *id))
        .ok_or_else(|| Error::Unsupported {
            what: "attach another program".into(),
            why: format!(
                "all {} attachments are in use; recover some faults first",
                chaos_common::net::MAX_ATTACHMENTS
            ),
        })?;
    let link = attach(&hook, id, &existing)?;
    let a = Attachment { id, hook, link };
    if let Err(e) = store.put_attachment(&a) {
        let _ = detach(&a);
        return Err(e);
    }
    Ok((a, true))
}

fn map_err(what: &str) -> impl FnOnce(aya::maps::MapError) -> Error + '_ {
    move |e| Error::bpf(what.to_owned(), e)
}

/// Makes hash map `map` hold exactly `wanted`: new values first, then stale keys removed.
fn replace_all<K, V>(
    map: &mut HashMap<MapData, K, V>,
    wanted: &std::collections::BTreeMap<K, V>,
) -> Result<()>
where
    K: aya::Pod + Ord,
    V: aya::Pod,
{
    for (k, v) in wanted {
        map.insert(k, v, 0)
            .map_err(map_err("updating a selector map"))?;
    }
    let stale: Vec<K> = map
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| !wanted.contains_key(k))
        .collect();
    for k in stale {
        let _ = map.remove(&k);
    }
    Ok(())
}

/// Program `name` of a freshly loaded object, loaded into the kernel.
pub(crate) fn load_program<'a, P>(bpf: &'a mut aya::Ebpf, name: &str) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    P: LoadProgram,
{
    let program: &mut P = find_program(bpf, name)?;
    program
        .load_program()
        .map_err(|e| Error::bpf(format!("loading {name}"), e))?;
    Ok(program)
}

/// Program `name` of a freshly loaded object, as its type, not yet loaded.
pub(crate) fn find_program<'a, P>(bpf: &'a mut aya::Ebpf, name: &str) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    bpf.program_mut(name)
        .ok_or_else(|| {
            Error::bpf(
                format!("finding {name}"),
                aya::programs::ProgramError::NotLoaded,
            )
        })?
        .try_into()
        .map_err(|e| Error::bpf(format!("finding {name}"), e))
}

/// aya's program types each have their own `load`.
pub(crate) trait LoadProgram {
    fn load_program(&mut self) -> std::result::Result<(), aya::programs::ProgramError>;
}

macro_rules! load_program_for {
    ($($t:ty),*) => {$(
        impl LoadProgram for $t {
            fn load_program(&mut self) -> std::result::Result<(), aya::programs::ProgramError> {
                self.load()
            }
        }
    )*};
}

load_program_for!(
    SchedClassifier,
    CgroupSkb,
    CgroupSockAddr,
    CgroupSockopt,
    CgroupSysctl,
    KProbe,
    RawTracePoint,
    TracePoint
);

/// Loads the object with `globals`, attaches its kprobe `program` to kernel function `function`
/// (an error-injecting kprobe: the program may override the function's return) and pins the
/// link as `name`.
pub(crate) fn attach_kprobe(
    globals: &[(&str, u32)],
    program: &str,
    function: &str,
    name: &str,
) -> Result<AttachLink> {
    let mut bpf = ebpf::load(globals)?;
    let kprobe: &mut KProbe = load_program(&mut bpf, program)?;
    let link_id = kprobe.attach(function, 0).map_err(|e| {
        Error::bpf(
            format!("attaching an error-injecting kprobe to {function}"),
            e,
        )
    })?;
    let link: FdLink = kprobe
        .take_link(link_id)
        .map_err(|e| Error::bpf("taking the kprobe link", e))?
        .try_into()
        .map_err(|e| Error::bpf("kprobe link as fd link", e))?;
    pin_link(link, name)
}

/// Pins `link` as `name` under the link pin directory, so it outlives this process.
pub(crate) fn pin_link(link: FdLink, name: &str) -> Result<AttachLink> {
    let pin = ebpf::link_pin(name);
    link.pin(&pin)
        .map_err(|e| Error::bpf(format!("pinning {}", pin.display()), e))?;
    Ok(AttachLink::Link { pin })
}

/// Removes a pinned link: unpinned and closed, the kernel detaches it. Already gone is success.
fn unpin_link(pin: &Path) -> Result<()> {
    match PinnedLink::from_pin(pin) {
        Ok(link) => {
            let fd_link = link
                .unpin()
                .map_err(|e| Error::io(format!("unpinning {}", pin.display()), e))?;
            drop(fd_link);
            Ok(())
        }
        Err(_) if !pin.exists() => Ok(()),
        Err(e) => Err(Error::bpf(format!("opening {}", pin.display()), e)),
    }
}

/// Detaches an attachment of any family. A hook that no longer exists (interface, namespace)
/// took the attachment with it; that is success.
pub(crate) fn detach(a: &Attachment) -> Result<()> {
    match &a.link {
        AttachLink::Tcx { pin, .. } | AttachLink::Link { pin } => unpin_link(pin)?,
        AttachLink::Clsact { .. } => net::detach_clsact(a)?,
    }
    net::unregister_shared(a)
}
