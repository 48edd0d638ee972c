//! The qdisc side of time-based network faults: which fq roots, netem bands and ifb devices a
//! fault needs, made before its rule goes live and undone after it is cleared, with the sharing
//! rules of [`super::qdisc`] (fq roots and ifbs are counted across faults here; netem bands are
//! one per fault).

use serde::{Deserialize, Serialize};

use super::qdisc::{self, FqRecord, IfbRecord, NetemBand, NetemParams};
use crate::{
    error::{Error, Result},
    plan::{Effect, NetPlan},
    spec::Direction,
    store::NetArmed,
    strategy::Shaping,
};

/// What one fault holds of the interfaces' qdiscs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Shaped {
    /// fq roots it relies on (one record per interface).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fq: Vec<FqRecord>,
    /// Its netem band.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub band: Option<NetemBand>,
    /// The ifb its ingress traffic goes through (shared with other faults on that interface).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifb: Option<IfbRecord>,
}

impl Shaped {
    /// Whether it holds qdisc state of ours (an fq root we added, a netem band, an ifb): state
    /// outside BPF, which someone must remove at the fault's deadline.
    pub fn holds_qdiscs(&self) -> bool {
        self.fq.iter().any(FqRecord::is_ours) || self.band.is_some() || self.ifb.is_some()
    }

    /// The (skb priority, redirect ifindex) the rule must set to use the band.
    pub fn band(&self) -> (u32, u32) {
        match (&self.band, &self.ifb) {
            (Some(b), Some(ifb)) => (b.priority, ifb.ifb.ifindex),
            (Some(b), None) => (b.priority, 0),
            _ => (0, 0),
        }
    }
}

fn netem_params(effect: &Effect) -> NetemParams {
    match effect {
        Effect::Delay {
            latency,
            jitter,
            distribution,
        } => NetemParams {
            delay: *latency,
            jitter: *jitter,
            distribution: *distribution,
            ..NetemParams::default()
        },
        Effect::Rate { bytes_per_s } => NetemParams {
            rate_bit_per_s: Some(bytes_per_s * 8),
            ..NetemParams::default()
        },
        Effect::Reorder { percent, latency } => NetemParams {
            delay: *latency,
            reorder: *percent,
            ..NetemParams::default()
        },
        // Drop, corrupt and duplicate never reach a netem band.
        Effect::Drop(_) | Effect::Corrupt(_) | Effect::Duplicate(_) => NetemParams::default(),
    }
}

/// Makes what `plan` needs with `shaping`; `others` are the armed faults, for sharing. On error
/// nothing of this call is left.
pub(crate) fn prepare(plan: &NetPlan, shaping: Shaping, others: &[&NetArmed]) -> Result<Shaped> {
    let mut shaped = Shaped::default();
    let result = (|| {
        match shaping {
            Shaping::None => {}
            Shaping::Fq => {
                for iface in &plan.interfaces {
                    shaped.fq.push(qdisc::install_fq(iface)?);
                }
            }
            Shaping::Netem => {
                let [iface] = plan.interfaces.as_slice() else {
                    return Err(Error::invalid(
                        "interface",
                        format!(
                            "net {} through netem acts on one interface, not {}",
                            plan.action.as_str(),
                            plan.interfaces.len()
                        ),
                        "give --interface, and arm one fault per interface",
                    ));
                };
                let params = netem_params(&plan.effect);
                match plan.direction {
                    Direction::Egress => {
                        shaped.band = Some(qdisc::install_netem_band(iface, &params)?)
                    }
                    Direction::Ingress => {
                        let known = others
                            .iter()
                            .filter_map(|a| a.shaping.ifb.as_ref())
                            .find(|i| qdisc::same_interface(&i.parent, iface));
                        let ifb = qdisc::ensure_ifb(iface, known)?;
                        let shared = known.is_some_and(|k| k.ifb == ifb.ifb);
                        shaped.ifb = Some(ifb.clone());
                        match qdisc::install_netem_band(&ifb.ifb, &params) {
                            Ok(b) => shaped.band = Some(b),
                            Err(e) => {
                                if !shared {
                                    let _ = qdisc::remove_ifb(&ifb);
                                }
                                shaped.ifb = None;
                                return Err(e);
                            }
                        }
                    }
                    Direction::Both => {
                        return Err(Error::invalid(
                            "direction",
                            format!(
                                "net {} through netem takes one direction at a time",
                                plan.action.as_str()
                            ),
                            "arm one fault with --direction egress and one with --direction ingress",
                        ));
                    }
                }
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(shaped),
        Err(e) => {
            let _ = release(&shaped, others);
            Err(e)
        }
    }
}

/// Undoes `shaped` once its rule is cleared; `remaining` are the other armed faults, whose shares
/// stay.
pub(crate) fn release(shaped: &Shaped, remaining: &[&NetArmed]) -> Result<()> {
    let mut first_err = None;
    if let Some(band) = &shaped.band
        && let Err(e) = qdisc::remove_netem_band(band)
    {
        first_err.get_or_insert(e);
    }
    if let Some(ifb) = &shaped.ifb {
        let shared = remaining
            .iter()
            .any(|a| a.shaping.ifb.as_ref().is_some_and(|i| i.ifb == ifb.ifb));
        if !shared && let Err(e) = qdisc::remove_ifb(ifb) {
            first_err.get_or_insert(e);
        }
    }
    for fq in shaped.fq.iter().filter(|f| f.is_ours()) {
        let shared = remaining
            .iter()
            .flat_map(|a| a.shaping.fq.iter())
            .any(|other| other.same_root(fq));
        if !shared && let Err(e) = qdisc::restore_fq(fq) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}
