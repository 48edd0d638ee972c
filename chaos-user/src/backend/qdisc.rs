//! Qdiscs for the faults that act on time: the `fq` root that honours the EDT timestamps the TC
//! program writes (delay, jitter, rate), `netem` children of a `prio` root that the TC program
//! steers packets into through `skb->priority` (reorder, and delay where fq is missing), and the
//! `ifb` device that ingress delay redirects to.
//!
//! Everything runs inside the interface's namespace, through `tc` and `ip` (iproute2).
//!
//! **Whose qdisc is it.** The kernel puts a *default* root on every interface (`noqueue`,
//! `pfifo_fast`, `fq_codel`, `mq` with default children, or whatever `net.core.default_qdisc`
//! names) and re-creates it whenever the root is deleted. Default qdiscs have handle `0:`, and
//! that is the kernel's own test ("it may be default qdisc, ignore it" in `tc_modify_qdisc`):
//! [`RootQdisc::is_default`] uses it. A root with any other handle is a user's, and we never
//! replace it: installing refuses with [`Error::Unsupported`] saying what to do. Roots of ours
//! carry fixed handles ([`FQ_MAJOR`], [`MQ_MAJOR`], [`PRIO_MAJOR`]), so the kernel state itself
//! says what is ours, and restoring is deleting our root (the kernel re-creates its default).
//! Roots are added with `tc qdisc add`, which the kernel refuses over a non-default root: a
//! user's qdisc that appears between our look and our change stays untouched.
//!
//! **Sharing and bookkeeping.** Records are serde types for the state store; each is enough to
//! undo its own share after a crash, in another process.
//! * [`FqRecord`]: fq keeps no per-fault state, so the caller counts. Every fault that uses fq on
//!   an interface keeps its own record; a record whose [`FqRecord::is_ours`] is true shares our
//!   root with every other record of the same interface ([`FqRecord::same_root`]). Call
//!   [`restore_fq`] only when the last such record goes (like clsact in `net.rs`); a record that
//!   is not ours needs nothing.
//! * [`NetemBand`]: the kernel counts. Each band is one netem child of our prio root;
//!   [`remove_netem_band`] removes that child and, when no other netem child is left, the prio
//!   root. Callers need no refcount, only the store lock around install and remove (two
//!   processes must not pick bands at once).
//! * [`IfbRecord`]: one device per record; bands on it are [`NetemBand`]s like any other.
//!   Faults that share an ifb must refcount it and call [`remove_ifb`] when the last one goes.
//!
//! Some stable kernels (Debian's 6.1 among them) refuse a netem with `duplicate` in a tree that
//! holds another netem, either way round; that is [`Error::Unsupported`] naming the fix.
//!
//! fq and netem cannot share a root: a netem band on an interface whose root is our fq (or the
//! reverse) is refused until the other fault is recovered.

use std::{process::Command, time::Duration};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    error::{Error, Result},
    netns::{self, NetNs},
    plan::Interface,
};

/// Handle major of our `fq` root (single-queue devices).
pub const FQ_MAJOR: u16 = 0xc4a1;
/// Handle major of our `mq` root (multi-queue devices), each class of which holds an `fq`.
pub const MQ_MAJOR: u16 = 0xc4a2;
/// Handle major of our `prio` root; `skb->priority` with this major selects a band by its minor.
pub const PRIO_MAJOR: u16 = 0xc4a0;
/// Bands of our prio root: the kernel's maximum (`TCQ_PRIO_BANDS`).
pub const PRIO_BANDS: u16 = 16;
/// First band that holds a netem child; bands 1-3 carry all other traffic by the default priomap.
pub const FIRST_NETEM_BAND: u16 = 4;
/// The netem child of band `n` has handle major `NETEM_MAJOR_BASE + n`.
pub const NETEM_MAJOR_BASE: u16 = 0xc4b0;
/// Prefix of the ifb devices we make (`chifb0`, `chifb1`...).
pub const IFB_PREFIX: &str = "chifb";
/// pfifo_fast's priomap, so bands 1-3 of our prio root behave as the default root did.
const PRIOMAP: [&str; 16] = [
    "1", "2", "2", "2", "1", "2", "0", "0", "1", "1", "1", "1", "1", "1", "1", "1",
];
/// Longest delay (and jitter) accepted: tc takes microseconds in 32 bits.
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// One qdisc as `tc -j qdisc show` reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Qdisc {
    /// `fq`, `netem`, `pfifo_fast`...
    pub kind: String,
    /// `8001:`, or `0:` for a qdisc the kernel made by itself.
    pub handle: String,
    /// `None` at the root, else the parent class (`c4a0:4`, `:1`).
    pub parent: Option<String>,
    /// `options` as tc gives them.
    #[serde(default)]
    pub options: Value,
}

impl Qdisc {
    fn from_json(v: &Value) -> Option<Qdisc> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(Qdisc {
            kind: s("kind")?,
            handle: s("handle").unwrap_or_else(|| "0:".into()),
            parent: if v.get("root").and_then(Value::as_bool) == Some(true) {
                None
            } else {
                s("parent")
            },
            options: v.get("options").cloned().unwrap_or(Value::Null),
        })
    }

    /// Whether the kernel made it by itself (handle `0:`).
    pub fn is_default(&self) -> bool {
        parse_handle(&self.handle) == Some((0, 0))
    }

    fn major(&self) -> Option<u16> {
        parse_handle(&self.handle).map(|(maj, _)| maj)
    }

    fn parent_class(&self) -> Option<(u16, u16)> {
        self.parent.as_deref().and_then(parse_handle)
    }

    fn is(&self, kind: &str, major: u16) -> bool {
        self.kind == kind && self.major() == Some(major)
    }
}

/// Whether a root qdisc of `kind` with `handle` (as `tc` shows it) is one of ours: they carry
/// fixed handles.
pub(super) fn is_our_root(kind: &str, handle: &str) -> bool {
    matches!(
        (kind, parse_handle(handle).map(|(major, _)| major)),
        ("fq", Some(FQ_MAJOR)) | ("mq", Some(MQ_MAJOR)) | ("prio", Some(PRIO_MAJOR))
    )
}

/// `maj:min` in hex, either part possibly empty (`8001:`, `:1`).
fn parse_handle(s: &str) -> Option<(u16, u16)> {
    let (maj, min) = s.split_once(':')?;
    let num = |t: &str| {
        if t.is_empty() {
            Some(0)
        } else {
            u16::from_str_radix(t, 16).ok()
        }
    };
    Some((num(maj)?, num(min)?))
}

/// What is at the root of an interface's egress: the root qdisc and the qdiscs below it (not
/// `clsact`/`ingress`, which live beside the root).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RootQdisc {
    /// The root qdisc; `None` if tc lists none.
    pub root: Option<Qdisc>,
    /// Every qdisc below the root, in tc's order.
    pub children: Vec<Qdisc>,
}

impl RootQdisc {
    fn from_json(list: &[Value]) -> RootQdisc {
        let mut root = None;
        let mut children = Vec::new();
        for q in list.iter().filter_map(Qdisc::from_json) {
            match &q.parent {
                None => root = Some(q),
                Some(p) if p.starts_with("ffff:") => {} // clsact / ingress
                Some(_) => children.push(q),
            }
        }
        RootQdisc { root, children }
    }

    /// Reads the root of `iface`.
    pub fn read(iface: &Interface) -> Result<RootQdisc> {
        in_iface(iface, || read_root(&iface.name))?.ok_or_else(|| gone_error(iface))
    }

    /// Whether the kernel made all of it by itself, so that deleting the root brings back the
    /// same state: no root, or a root and children that all have handle `0:` (`noqueue`,
    /// `noop`, `pfifo_fast`, `fq_codel`, `mq` of defaults, `net.core.default_qdisc`).
    pub fn is_default(&self) -> bool {
        self.root.as_ref().is_none_or(Qdisc::is_default)
            && self.children.iter().all(Qdisc::is_default)
    }

    /// The root's kind, `none` if there is none.
    pub fn kind(&self) -> &str {
        self.root.as_ref().map_or("none", |q| q.kind.as_str())
    }

    fn ours(&self) -> Option<Ours> {
        let root = self.root.as_ref()?;
        if root.is("fq", FQ_MAJOR) || root.is("mq", MQ_MAJOR) {
            Some(Ours::Fq)
        } else if root.is("prio", PRIO_MAJOR) {
            Some(Ours::Prio)
        } else {
            None
        }
    }

    /// fq already serves every queue: an fq root, or an mq root whose every child is fq.
    fn has_fq(&self) -> bool {
        match &self.root {
            Some(r) if r.kind == "fq" => true,
            Some(r) if r.kind == "mq" => {
                let direct: Vec<_> = self
                    .children
                    .iter()
                    .filter(|c| c.parent_class().map(|p| p.0) == r.major())
                    .collect();
                !direct.is_empty() && direct.iter().all(|c| c.kind == "fq")
            }
            _ => false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ours {
    Fq,
    Prio,
}

/// What [`install_fq`] did, to undo it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FqRecord {
    /// The interface.
    pub interface: Interface,
    /// Its root before the call.
    pub before: RootQdisc,
    /// Whether the fq root is the injector's (made by this call or by another fault on the same
    /// interface). `false`: the user's fq, which we use and never touch.
    pub ours: bool,
}

impl FqRecord {
    /// Whether restoring this record deletes anything. See the module docs for who may call
    /// [`restore_fq`].
    pub fn is_ours(&self) -> bool {
        self.ours
    }

    /// Whether `other` uses the same fq root of ours: the caller restores only when the last
    /// record for which this holds goes.
    pub fn same_root(&self, other: &FqRecord) -> bool {
        self.ours && other.ours && same_interface(&self.interface, &other.interface)
    }
}

/// Whether two interfaces are the same one (same namespace identity and index).
pub fn same_interface(a: &Interface, b: &Interface) -> bool {
    a.ifindex == b.ifindex
        && match (&a.netns, &b.netns) {
            (Some(x), Some(y)) => x.id == y.id,
            (None, None) => true,
            _ => false,
        }
}

/// Makes `fq` the root of `iface` (fq under each class of an `mq` root on multi-queue devices),
/// or uses an fq that is there already. Refuses a user's non-default root.
pub fn install_fq(iface: &Interface) -> Result<FqRecord> {
    in_iface(iface, || {
        let before = read_root(&iface.name)?;
        if before.has_fq() {
            let ours = before.ours() == Some(Ours::Fq);
            return Ok(FqRecord {
                interface: iface.clone(),
                before,
                ours,
            });
        }
        check_replaceable(iface, &before, "fq", Ours::Fq)?;
        let dev = iface.name.as_str();
        if before.kind() == "mq" {
            // One fq per tx queue: our own mq (its classes are the device's queues), then fq in
            // each class.
            let mq = format!("{MQ_MAJOR:x}:");
            tc_ok(
                iface,
                "fq",
                &["qdisc", "add", "dev", dev, "root", "handle", &mq, "mq"],
            )?;
            let undo = || del_root(dev);
            let classes: Vec<String> = match read_root(dev) {
                Ok(r) => r
                    .children
                    .iter()
                    .filter(|c| c.parent_class().map(|p| p.0) == Some(MQ_MAJOR))
                    .filter_map(|c| c.parent.clone())
                    .collect(),
                Err(e) => {
                    undo();
                    return Err(e);
                }
            };
            for class in classes {
                let args = ["qdisc", "add", "dev", dev, "parent", &class, "fq"];
                if let Err(e) = tc_ok(iface, "fq", &args) {
                    undo();
                    return Err(e);
                }
            }
        } else {
            let h = format!("{FQ_MAJOR:x}:");
            tc_ok(
                iface,
                "fq",
                &["qdisc", "add", "dev", dev, "root", "handle", &h, "fq"],
            )?;
        }
        Ok(FqRecord {
            interface: iface.clone(),
            before,
            ours: true,
        })
    })?
    .ok_or_else(|| gone_error(iface))
}

/// Undoes [`install_fq`]: deletes our fq (or mq) root so the kernel re-creates its default.
/// Leaves anything that is not ours; idempotent; a gone interface or namespace is success.
pub fn restore_fq(record: &FqRecord) -> Result<()> {
    if !record.ours {
        return Ok(());
    }
    restore_root(&record.interface, Ours::Fq)
}

fn restore_root(iface: &Interface, which: Ours) -> Result<()> {
    in_iface(iface, || {
        let now = read_root(&iface.name)?;
        if now.ours() == Some(which) {
            tc_ok(iface, "", &["qdisc", "del", "dev", &iface.name, "root"])?;
        }
        Ok(())
    })
    .map(drop)
}

/// How netem spreads the delay between `delay - jitter` and `delay + jitter`: the spec's own
/// type (uniform is netem's default, no table; the others are iproute2's tables).
pub use crate::spec::Distribution;

/// What a netem band does to the packets steered into it. Percentages are 0-100; a zero field
/// is left out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetemParams {
    /// Added delay.
    pub delay: Duration,
    /// Random variation of the delay, either way.
    pub jitter: Duration,
    /// Shape of the variation (needs a jitter).
    pub distribution: Distribution,
    /// Correlation of successive delays, percent.
    pub delay_correlation: f64,
    /// Packets dropped, percent.
    pub loss: f64,
    /// Correlation of successive losses, percent.
    pub loss_correlation: f64,
    /// Packets sent at once instead of delayed, percent (needs a delay).
    pub reorder: f64,
    /// Correlation of successive reorder decisions, percent.
    pub reorder_correlation: f64,
    /// Packets sent twice, percent.
    pub duplicate: f64,
    /// Packets with one bit flipped, percent.
    pub corrupt: f64,
    /// Rate limit in bits per second.
    pub rate_bit_per_s: Option<u64>,
    /// Packets netem holds at most (tc's default is 1000: with long delays and fast senders,
    /// raise it or netem drops the excess).
    pub limit: Option<u32>,
}

impl NetemParams {
    /// Checks the parameters and turns them into `tc ... netem` arguments.
    pub fn tc_args(&self) -> Result<Vec<String>> {
        let pct = |field: &'static str, v: f64| -> Result<String> {
            if !(0.0..=100.0).contains(&v) {
                return Err(Error::invalid(
                    field,
                    format!("{v} is outside 0-100"),
                    "give a percentage between 0 and 100",
                ));
            }
            Ok(format!("{v}%"))
        };
        let us = |field: &'static str, d: Duration| -> Result<String> {
            if d > MAX_DELAY {
                return Err(Error::invalid(
                    field,
                    format!("{} is longer than 1h", humantime::format_duration(d)),
                    "give at most 1h",
                ));
            }
            Ok(format!("{}us", d.as_micros()))
        };
        let mut a: Vec<String> = vec!["netem".into()];
        let mut push = |items: &[String]| a.extend(items.iter().cloned());
        if let Some(limit) = self.limit {
            if limit == 0 {
                return Err(Error::invalid(
                    "limit",
                    "0 packets",
                    "give at least 1, or leave it out for tc's default of 1000",
                ));
            }
            push(&["limit".into(), limit.to_string()]);
        }
        if !self.delay.is_zero() || !self.jitter.is_zero() {
            push(&["delay".into(), us("delay", self.delay)?]);
            if !self.jitter.is_zero() {
                push(&[
                    us("jitter", self.jitter)?,
                    pct("delay_correlation", self.delay_correlation)?,
                ]);
                let dist = match self.distribution {
                    Distribution::Uniform => None,
                    Distribution::Normal => Some("normal"),
                    Distribution::Pareto => Some("pareto"),
                    Distribution::Paretonormal => Some("paretonormal"),
                };
                if let Some(d) = dist {
                    push(&["distribution".into(), d.into()]);
                }
            }
        }
        for (name, field, v, corr_field, corr) in [
            (
                "loss",
                "loss",
                self.loss,
                "loss_correlation",
                self.loss_correlation,
            ),
            (
                "reorder",
                "reorder",
                self.reorder,
                "reorder_correlation",
                self.reorder_correlation,
            ),
            ("duplicate", "duplicate", self.duplicate, "", 0.0),
            ("corrupt", "corrupt", self.corrupt, "", 0.0),
        ] {
            let p = pct(field, v)?;
            if v > 0.0 {
                push(&[name.into(), p]);
                if !corr_field.is_empty() {
                    push(&[pct(corr_field, corr)?]);
                }
            }
        }
        if self.reorder > 0.0 && self.delay.is_zero() {
            return Err(Error::invalid(
                "reorder",
                "reordering needs a delay",
                "give a delay too (netem reorders by sending some packets at once and delaying the rest)",
            ));
        }
        if let Some(rate) = self.rate_bit_per_s {
            if rate == 0 {
                return Err(Error::invalid(
                    "rate",
                    "0 bit/s",
                    "give a rate above 0, e.g. 1mbit, or leave it out",
                ));
            }
            push(&["rate".into(), format!("{rate}bit")]);
        }
        Ok(a)
    }
}

/// One netem band of our prio root, to undo it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetemBand {
    /// The interface (an ifb of ours for ingress).
    pub interface: Interface,
    /// The prio band, [`FIRST_NETEM_BAND`]..=[`PRIO_BANDS`].
    pub band: u16,
    /// What the TC program writes into `skb->priority` to send a packet through this band.
    pub priority: u32,
    /// The root before this call (our prio if another band made it).
    pub before: RootQdisc,
}

impl NetemBand {
    fn netem_handle(&self) -> String {
        format!("{:x}:", NETEM_MAJOR_BASE + self.band)
    }
}

/// The `skb->priority` that steers a packet into `band` of our prio root.
pub fn band_priority(band: u16) -> u32 {
    (u32::from(PRIO_MAJOR) << 16) | u32::from(band)
}

/// Adds a netem child with `params` on a free band of our prio root of `iface`, making that
/// root (16 bands, the first 3 as `pfifo_fast`) if needed. Refuses a user's non-default root.
pub fn install_netem_band(iface: &Interface, params: &NetemParams) -> Result<NetemBand> {
    let netem = params.tc_args()?;
    in_iface(iface, || {
        let before = read_root(&iface.name)?;
        let dev = iface.name.as_str();
        let made_root = before.ours() != Some(Ours::Prio);
        if made_root {
            add_prio_root(iface, &before)?;
        }
        let undo = || {
            if made_root {
                del_root(dev);
            }
        };
        let band = match read_root(dev).map(|r| free_band(&r)) {
            Ok(Some(band)) => band,
            Ok(None) => {
                undo();
                return Err(Error::Unsupported {
                    what: format!("add another netem band on {dev}"),
                    why: format!(
                        "all {} bands are in use; recover some faults on {dev} first",
                        PRIO_BANDS - FIRST_NETEM_BAND + 1
                    ),
                });
            }
            Err(e) => {
                undo();
                return Err(e);
            }
        };
        let parent = format!("{PRIO_MAJOR:x}:{band:x}");
        let handle = format!("{:x}:", NETEM_MAJOR_BASE + band);
        let mut args: Vec<&str> = vec!["qdisc", "add", "dev", dev, "parent", &parent];
        args.extend(["handle", &handle]);
        args.extend(netem.iter().map(String::as_str));
        if let Err(e) = tc_ok(iface, "netem", &args) {
            undo();
            return Err(e);
        }
        Ok(NetemBand {
            interface: iface.clone(),
            band,
            priority: band_priority(band),
            before,
        })
    })?
    .ok_or_else(|| gone_error(iface))
}

fn add_prio_root(iface: &Interface, before: &RootQdisc) -> Result<()> {
    check_replaceable(iface, before, "netem", Ours::Prio)?;
    let h = format!("{PRIO_MAJOR:x}:");
    let bands = PRIO_BANDS.to_string();
    let mut args = vec![
        "qdisc",
        "add",
        "dev",
        &iface.name,
        "root",
        "handle",
        &h,
        "prio",
        "bands",
        &bands,
        "priomap",
    ];
    args.extend(PRIOMAP);
    tc_ok(iface, "prio", &args)
}

/// The first netem band with no qdisc of anyone's but the kernel's default.
fn free_band(root: &RootQdisc) -> Option<u16> {
    (FIRST_NETEM_BAND..=PRIO_BANDS).find(|&b| !band_used(root, b))
}

fn band_used(root: &RootQdisc, band: u16) -> bool {
    root.children
        .iter()
        .any(|c| c.parent_class() == Some((PRIO_MAJOR, band)) && !c.is_default())
}

/// Removes a netem band; when no other netem band of ours is left, deletes our prio root so the
/// kernel re-creates its default. Idempotent; a gone interface or namespace is success.
pub fn remove_netem_band(band: &NetemBand) -> Result<()> {
    let iface = &band.interface;
    in_iface(iface, || {
        let dev = iface.name.as_str();
        let now = read_root(dev)?;
        if now.ours() != Some(Ours::Prio) {
            return Ok(());
        }
        let handle = band.netem_handle();
        let parent = format!("{PRIO_MAJOR:x}:{:x}", band.band);
        let ours = now.children.iter().any(|c| {
            c.kind == "netem" && c.handle == handle && c.parent.as_deref() == Some(&parent)
        });
        if ours {
            tc_ok(
                iface,
                "",
                &[
                    "qdisc", "del", "dev", dev, "parent", &parent, "handle", &handle,
                ],
            )?;
        }
        let now = read_root(dev)?;
        if !(FIRST_NETEM_BAND..=PRIO_BANDS).any(|b| band_used(&now, b)) {
            tc_ok(iface, "", &["qdisc", "del", "dev", dev, "root"])?;
        }
        Ok(())
    })
    .map(drop)
}

/// An ifb device of ours, made for ingress delay on `parent`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IfbRecord {
    /// The ifb device (same namespace as `parent`): the TC program redirects to its ifindex, and
    /// [`install_netem_band`] on it adds bands.
    pub ifb: Interface,
    /// The interface whose ingress it serves.
    pub parent: Interface,
}

/// Returns `known` if its device still exists, else makes a new ifb device (`chifb<n>`) in
/// `iface`'s namespace, up, with our prio root ready for netem bands.
pub fn ensure_ifb(iface: &Interface, known: Option<&IfbRecord>) -> Result<IfbRecord> {
    if let Some(k) = known
        && in_iface(&k.ifb, || Ok(()))?.is_some()
    {
        return Ok(k.clone());
    }
    in_iface(iface, || {
        let mut last = String::new();
        for n in 0..1000 {
            let name = format!("{IFB_PREFIX}{n}");
            if netns::ifindex(&name).is_some() {
                continue;
            }
            match run("ip", &["link", "add", &name, "type", "ifb"])? {
                Ok(_) => return setup_ifb(iface, name),
                // Another process took the name between our look and our add.
                Err(e) if e.contains("File exists") => last = e,
                Err(e) if e.contains("Unknown device type") || e.contains("not supported") => {
                    return Err(Error::Unsupported {
                        what: format!("create an ifb device for ingress delay on {}", iface.name),
                        why: format!(
                            "no ifb driver ({e}); load it with `modprobe ifb` (CONFIG_IFB)"
                        ),
                    });
                }
                Err(e) => return Err(cmd_error(&format!("ip link add {name} type ifb"), &e)),
            }
        }
        Err(cmd_error("finding a free ifb name", &last))
    })?
    .ok_or_else(|| gone_error(iface))
}

fn setup_ifb(parent: &Interface, name: String) -> Result<IfbRecord> {
    let result = (|| {
        if let Err(e) = run("ip", &["link", "set", &name, "up"])? {
            return Err(cmd_error(&format!("ip link set {name} up"), &e));
        }
        let ifindex = netns::ifindex(&name)
            .ok_or_else(|| cmd_error(&format!("finding {name}"), "it vanished"))?;
        let ifb = Interface {
            netns: parent.netns.clone(),
            name: name.clone(),
            ifindex,
        };
        add_prio_root(&ifb, &read_root(&name)?)?;
        Ok(IfbRecord {
            ifb,
            parent: parent.clone(),
        })
    })();
    if result.is_err() {
        let _ = run("ip", &["link", "del", &name]);
    }
    result
}

/// Deletes an ifb device of ours (with its qdiscs). Idempotent; a gone namespace is success.
pub fn remove_ifb(record: &IfbRecord) -> Result<()> {
    let ifb = &record.ifb;
    in_iface(ifb, || match run("ip", &["link", "del", &ifb.name])? {
        Ok(_) => Ok(()),
        Err(_) if netns::ifindex(&ifb.name).is_none() => Ok(()),
        Err(e) => Err(cmd_error(&format!("ip link del {}", ifb.name), &e)),
    })
    .map(drop)
}

/// Refuses a root that is not the kernel's default (nor ours of the wanted kind).
fn check_replaceable(iface: &Interface, root: &RootQdisc, want: &str, for_: Ours) -> Result<()> {
    let dev = &iface.name;
    match root.ours() {
        Some(o) if o == for_ => Ok(()),
        Some(Ours::Fq) => Err(Error::Unsupported {
            what: format!("add {} qdisc on {dev}", article(want)),
            why: format!(
                "{dev} has the fq root another fault of ours uses for delay; recover that fault first (`chaos list`)"
            ),
        }),
        Some(Ours::Prio) => Err(Error::Unsupported {
            what: format!("add an fq root on {dev}"),
            why: format!(
                "{dev} has the prio/netem root another fault of ours uses; recover that fault first (`chaos list`)"
            ),
        }),
        None if root.is_default() => Ok(()),
        None => Err(Error::Unsupported {
            what: format!("add {} qdisc on {dev}", article(want)),
            why: format!(
                "{dev} has a {} qdisc of someone else at its root{}, which chaos leaves untouched; remove it (`tc qdisc del dev {dev} root`) or aim the fault at another interface",
                root.kind(),
                root.root
                    .as_ref()
                    .map(|r| format!(" (handle {})", r.handle))
                    .unwrap_or_default()
            ),
        }),
    }
}

/// Runs `f` inside `iface`'s namespace if the namespace and the interface are still the ones
/// recorded; `None` when either is gone.
fn in_iface<T: Send>(iface: &Interface, f: impl FnOnce() -> Result<T> + Send) -> Result<Option<T>> {
    if let Some(ns) = &iface.netns {
        if !ns.path.exists() {
            return Ok(None);
        }
        match NetNs::resolve(&ns.path.to_string_lossy(), "netns") {
            Ok(now) if now.id == ns.id => {}
            _ => return Ok(None),
        }
    }
    netns::run_in(iface.netns.as_ref(), || {
        if netns::ifindex(&iface.name) != Some(iface.ifindex) {
            return Ok(None);
        }
        f().map(Some)
    })
}

fn gone_error(iface: &Interface) -> Error {
    let where_ = iface.netns.as_ref().map_or_else(
        || "this network namespace".to_owned(),
        |ns| format!("network namespace {}", ns.path.display()),
    );
    Error::invalid(
        "interface",
        format!(
            "no interface {} with index {} in {where_}",
            iface.name, iface.ifindex
        ),
        "check the interface and namespace (`ip link`) and ask again",
    )
}

/// Runs a command in the calling thread's namespace: `Ok(Ok(stdout))`, `Ok(Err(stderr))` on a
/// non-zero exit, `Err` when it cannot run.
pub(super) fn run(program: &str, args: &[&str]) -> Result<std::result::Result<String, String>> {
    let out = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Unsupported {
                    what: "manage qdiscs".into(),
                    why: format!("`{program}` is not installed; install iproute2"),
                }
            } else {
                Error::io(format!("running {program}"), e)
            }
        })?;
    if out.status.success() {
        Ok(Ok(String::from_utf8_lossy(&out.stdout).into_owned()))
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Ok(Err(err.split_whitespace().collect::<Vec<_>>().join(" ")))
    }
}

fn cmd_error(what: &str, stderr: &str) -> Error {
    Error::io(what.to_owned(), std::io::Error::other(stderr.to_owned()))
}

/// `tc args`, failing with an error that names the interface; `kind` is the qdisc being added
/// (for the unknown-kind error), empty for deletions.
fn tc_ok(iface: &Interface, kind: &str, args: &[&str]) -> Result<()> {
    match run("tc", args)? {
        Ok(_) => Ok(()),
        Err(e) if e.contains("kind is unknown") || e.contains("Unknown qdisc") => {
            Err(Error::Unsupported {
                what: format!("add {} qdisc on {}", article(kind), iface.name),
                why: format!(
                    "the kernel has no {kind} qdisc (CONFIG_NET_SCH_{}); load it with `modprobe sch_{kind}` or use a kernel that has it",
                    kind.to_uppercase()
                ),
            })
        }
        // Stable kernels with the 2025 restriction on duplicating netems (e.g. Debian's 6.1).
        Err(e) if e.contains("duplicating netems") => Err(Error::Unsupported {
            what: format!(
                "mix a duplicating netem band with other netem bands on {}",
                iface.name
            ),
            why: format!(
                "this kernel refuses to mix them in one qdisc tree ({e}); recover the other delay/reorder faults on {} first, or arm the duplicate fault alone",
                iface.name
            ),
        }),
        Err(e) if e.contains("distribution") => Err(Error::Unsupported {
            what: format!("add a netem delay distribution on {}", iface.name),
            why: format!(
                "{e}; install iproute2's distribution tables or use the uniform distribution"
            ),
        }),
        Err(e) if e.contains("NLM_F_REPLACE") || e.contains("Exclusivity") => {
            Err(Error::Unsupported {
                what: format!("add {} qdisc on {}", article(kind), iface.name),
                why: format!(
                    "someone else's qdisc took its place while chaos looked ({e}); check `tc qdisc show dev {}` and try again",
                    iface.name
                ),
            })
        }
        Err(e) => Err(cmd_error(
            &format!("`tc {}` on {}", args.join(" "), iface.name),
            &e,
        )),
    }
}

/// `a netem`, `an fq`.
fn article(kind: &str) -> String {
    match kind {
        "fq" | "mq" => format!("an {kind}"),
        "" => "a".into(),
        _ => format!("a {kind}"),
    }
}

fn del_root(dev: &str) {
    let _ = run("tc", &["qdisc", "del", "dev", dev, "root"]);
}

fn read_root(dev: &str) -> Result<RootQdisc> {
    match run("tc", &["-j", "qdisc", "show", "dev", dev])? {
        Ok(out) if out.trim().is_empty() => Ok(RootQdisc::from_json(&[])),
        Ok(out) => {
            let list: Vec<Value> = serde_json::from_str(out.trim()).map_err(|e| {
                cmd_error(
                    &format!("reading `tc -j qdisc show dev {dev}`"),
                    &e.to_string(),
                )
            })?;
            Ok(RootQdisc::from_json(&list))
        }
        Err(e) => Err(cmd_error(&format!("tc qdisc show dev {dev}"), &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(json: &str) -> RootQdisc {
        let v: Vec<Value> = serde_json::from_str(json).unwrap();
        RootQdisc::from_json(&v)
    }

    #[test]
    fn defaults_by_handle() {
        assert!(q(r#"[{"kind":"noqueue","handle":"0:","root":true,"options":{}}]"#).is_default());
        assert!(q("[]").is_default());
        let mq = q(r#"[{"kind":"mq","handle":"0:","root":true,"options":{}},
            {"kind":"pfifo_fast","handle":"0:","parent":":1","options":{}},
            {"kind":"clsact","handle":"ffff:","parent":"ffff:fff1","options":{}}]"#);
        assert!(mq.is_default());
        assert_eq!(mq.children.len(), 1);
        let tbf = q(r#"[{"kind":"tbf","handle":"8001:","root":true,"options":{}}]"#);
        assert!(!tbf.is_default());
        let mq_user_child = q(r#"[{"kind":"mq","handle":"0:","root":true,"options":{}},
            {"kind":"fq","handle":"8002:","parent":":1","options":{}}]"#);
        assert!(!mq_user_child.is_default());
        assert!(mq_user_child.has_fq());
        let ours = q(
            r#"[{"kind":"prio","handle":"c4a0:","root":true,"options":{}},
            {"kind":"netem","handle":"c4b4:","parent":"c4a0:4","options":{}},
            {"kind":"pfifo","handle":"0:","parent":"c4a0:5","options":{}}]"#,
        );
        assert_eq!(ours.ours(), Some(Ours::Prio));
        assert!(band_used(&ours, 4));
        assert!(!band_used(&ours, 5));
        assert_eq!(free_band(&ours), Some(5));
    }

    #[test]
    fn priority_value() {
        assert_eq!(band_priority(4), 0xc4a0_0004);
    }

    #[test]
    fn netem_args() {
        let p = NetemParams {
            delay: Duration::from_millis(50),
            jitter: Duration::from_millis(10),
            distribution: Distribution::Normal,
            delay_correlation: 25.0,
            loss: 0.5,
            reorder: 10.0,
            duplicate: 1.0,
            corrupt: 0.1,
            rate_bit_per_s: Some(1_000_000),
            limit: Some(10_000),
            ..Default::default()
        };
        assert_eq!(
            p.tc_args().unwrap().join(" "),
            "netem limit 10000 delay 50000us 10000us 25% distribution normal loss 0.5% 0% \
             reorder 10% 0% duplicate 1% corrupt 0.1% rate 1000000bit"
        );
        let plain = NetemParams {
            delay: Duration::from_millis(50),
            distribution: Distribution::Pareto,
            ..Default::default()
        };
        assert_eq!(plain.tc_args().unwrap().join(" "), "netem delay 50000us");
        for (bad, field) in [
            (
                NetemParams {
                    loss: 150.0,
                    ..Default::default()
                },
                "invalid loss:",
            ),
            (
                NetemParams {
                    reorder: 5.0,
                    ..Default::default()
                },
                "invalid reorder:",
            ),
            (
                NetemParams {
                    corrupt: f64::NAN,
                    ..Default::default()
                },
                "invalid corrupt:",
            ),
            (
                NetemParams {
                    delay: Duration::from_secs(7200),
                    ..Default::default()
                },
                "invalid delay:",
            ),
            (
                NetemParams {
                    rate_bit_per_s: Some(0),
                    ..Default::default()
                },
                "invalid rate:",
            ),
        ] {
            let e = bad.tc_args().unwrap_err().to_string();
            assert!(e.starts_with(field), "{e}");
        }
    }

    #[test]
    fn handles() {
        assert_eq!(parse_handle("8001:"), Some((0x8001, 0)));
        assert_eq!(parse_handle(":1"), Some((0, 1)));
        assert_eq!(parse_handle("c4a0:10"), Some((0xc4a0, 0x10)));
        assert_eq!(parse_handle("x"), None);
    }
}
