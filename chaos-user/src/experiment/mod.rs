//! Experiments (drills): a whole fault-injection cycle described in one file, as
//! `docs/experiments.md` documents it. An experiment names its target, the admission checks that
//! must pass before anything is injected, the traffic that runs for the whole drill, the faults
//! with their start offsets and durations, what must happen while they are on, how fast the
//! steady state must come back, and when to abort.
//!
//! Data flows as for single faults: [`from_yaml`] / [`from_json`] / [`from_toml`] check the
//! shape (types, known fields, the fault bodies exactly as `chaos inject spec` reads them) and
//! [`ExperimentSpec::validate`] the rules across fields (durations parse, faults fit in the
//! drill, names referred to exist), giving a [`Schedule`]. Both report every error they find,
//! one line each, naming the field's path (`faults[1].fault.percent`). What depends on the
//! running system (a process, a cgroup, what the kernel allows) is checked at admission, by the
//! runner.

pub mod html;
pub mod judge;
pub mod lock;
mod parse;
pub mod present;
pub mod probes;
pub mod progress;
pub mod record;
pub mod report;
pub mod runner;
pub mod sample;
mod spec;
pub mod stats;
pub mod summary;
pub mod target;
pub mod traffic;
mod validate;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

pub use self::{
    parse::{Format, from_json, from_path, from_toml, from_value, from_yaml},
    spec::*,
    validate::{CmpOp, Comparison, Measure, Quantity, Schedule, Window, parse_comparison},
};

/// Every error found in an experiment spec, each one line naming its field's path
/// ([`crate::Error::InvalidField`]). Displayed one per line.
#[derive(Debug)]
pub struct SpecErrors(pub Vec<crate::Error>);

impl SpecErrors {
    /// The field paths the errors name, in order.
    pub fn fields(&self) -> Vec<&str> {
        self.0.iter().filter_map(|e| e.field()).collect()
    }
}

impl std::fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// Writes `report` to `dir` (made if missing) as `report.json` and `report.html`; returns the
/// two paths.
pub fn write_report(
    dir: &std::path::Path,
    report: &report::Report,
) -> crate::Result<(std::path::PathBuf, std::path::PathBuf)> {
    use crate::error::IoContext;
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let json = dir.join("report.json");
    let html = dir.join("report.html");
    let text = serde_json::to_vec_pretty(report)
        .map_err(|e| crate::Error::io("encoding the report", std::io::Error::other(e)))?;
    std::fs::write(&json, text).ctx(|| format!("writing {}", json.display()))?;
    std::fs::write(&html, html::render(report)).ctx(|| format!("writing {}", html.display()))?;
    Ok((json, html))
}
