//! Experiment specs from YAML, JSON or TOML text, with every error as one line naming the
//! field's path (`faults[1].fault.percent`, `probes[0].http.url`).
//!
//! As for single faults (`spec/json.rs`), serde alone names no field, and loses the position
//! inside the `kind`-tagged fault bodies. So the text is read in steps, each through
//! `serde_path_to_error`:
//! 1. the text into a JSON value (any of the three formats), refusing keys given twice (serde
//!    keeps the last one silently) and numbers JSON cannot hold;
//! 2. each top-level section on its own, and each item of a list on its own, so that one bad
//!    section does not hide the errors of the others; each fault body goes through
//!    [`crate::spec::from_json`], exactly as `chaos inject spec` reads it, its errors prefixed
//!    with the fault's path;
//! 3. when every part is right, the whole into [`ExperimentSpec`].
//!
//! Values of the right type (durations, names referred to, windows) are checked by
//! [`ExperimentSpec::validate`].

use std::{fmt, path::Path};

use serde::{
    Deserialize, Deserializer,
    de::{DeserializeOwned, DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor},
};
use serde_json::{Map, Value};
use serde_path_to_error::Segment;

use super::{
    AbortRule, Admission, Expectation, ExperimentSpec, FaultStep, Probe, Recovery, SpecErrors,
    Target, Traffic,
};
use crate::{error::Error, spec::json::field_name};

/// The formats an experiment spec is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// YAML (`.yaml`, `.yml`), the documented one.
    Yaml,
    /// JSON (`.json`).
    Json,
    /// TOML (`.toml`).
    Toml,
}

impl Format {
    /// The format a file's extension names (`None` for another extension).
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }

    /// Parses `text` in this format.
    pub fn parse(self, text: &str) -> Result<ExperimentSpec, SpecErrors> {
        match self {
            Format::Yaml => from_yaml(text),
            Format::Json => from_json(text),
            Format::Toml => from_toml(text),
        }
    }
}

/// The top-level fields, in the order the docs list them.
const SECTIONS: [&str; 13] = [
    "schema",
    "name",
    "description",
    "target",
    "probes",
    "admission",
    "traffic",
    "baseline",
    "duration",
    "faults",
    "expect",
    "recovery",
    "abort",
];

/// The top-level fields a spec must give.
const REQUIRED: [&str; 3] = ["name", "duration", "faults"];

/// Reads an experiment spec from YAML text. Only the shape is checked;
/// [`ExperimentSpec::validate`] checks the values.
pub fn from_yaml(text: &str) -> Result<ExperimentSpec, SpecErrors> {
    let de = serde_norway::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize::<_, Strict>(de)
        .map_err(|e| SpecErrors(vec![text_error("YAML", e)]))?;
    from_value(value.0)
}

/// Reads an experiment spec from JSON text. Only the shape is checked.
pub fn from_json(text: &str) -> Result<ExperimentSpec, SpecErrors> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize::<_, Strict>(&mut de)
        .map_err(|e| SpecErrors(vec![text_error("JSON", e)]))?;
    de.end().map_err(|e| {
        one(
            "experiment",
            one_line(&e.to_string()),
            "give exactly one JSON object, with nothing after it",
        )
    })?;
    from_value(value.0)
}

/// Reads an experiment spec from TOML text. Only the shape is checked.
pub fn from_toml(text: &str) -> Result<ExperimentSpec, SpecErrors> {
    // TOML refuses repeated keys itself; its messages span several lines (with a snippet), so
    // the message and the position are taken apart.
    let value = toml::from_str::<Strict>(text).map_err(|e| {
        let at = e
            .span()
            .map(|span| {
                // Where the span starts, kept on a character boundary.
                let mut start = span.start.min(text.len());
                while !text.is_char_boundary(start) {
                    start -= 1;
                }
                let before = &text[..start];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(" at line {line} column {column}")
            })
            .unwrap_or_default();
        one(
            "experiment",
            format!("{}{at}", one_line(e.message())),
            "fix the TOML syntax there (docs/experiments.md shows a complete example)",
        )
    })?;
    from_value(value.0)
}

/// Reads an experiment spec from a file, in the format its extension names (`.yaml`, `.yml`,
/// `.json`, `.toml`).
pub fn from_path(path: &Path) -> Result<ExperimentSpec, SpecErrors> {
    let format = Format::from_path(path).ok_or_else(|| {
        one(
            "experiment",
            format!("{} has no known extension", path.display()),
            "name the file .yaml, .yml, .json or .toml",
        )
    })?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecErrors(vec![Error::io(format!("reading {}", path.display()), e)]))?;
    format.parse(&text)
}

/// Reads an experiment spec from a JSON value (as an HTTP API receives it). Every section and
/// every list item is read on its own, so all of their errors are reported.
pub fn from_value(value: Value) -> Result<ExperimentSpec, SpecErrors> {
    let mut top = match value {
        Value::Object(top) => top,
        other => {
            return Err(one(
                "experiment",
                format!("{} is not a mapping", describe(&other)),
                "give the experiment as a mapping of its sections: name, duration, faults, ...",
            ));
        }
    };
    let mut errors = Vec::new();
    let mut checked = Map::new();
    // In the documented order, so the errors come in the order a reader meets the sections.
    let mut fields: Vec<(String, Value)> = SECTIONS
        .iter()
        .filter_map(|s| top.remove(*s).map(|v| ((*s).to_owned(), v)))
        .collect();
    fields.extend(top);
    for (key, value) in fields {
        let ok = match key.as_str() {
            "schema" | "description" | "baseline" => {
                section::<Option<String>>(&key, value, &mut errors)
            }
            "name" | "duration" => section::<String>(&key, value, &mut errors),
            "target" => section::<Option<Target>>(&key, value, &mut errors),
            "probes" => list::<Probe>(&key, value, &mut errors),
            "admission" => section::<Option<Admission>>(&key, value, &mut errors),
            "traffic" => list::<Traffic>(&key, value, &mut errors),
            "faults" => faults(value, &mut errors),
            "expect" => list::<Expectation>(&key, value, &mut errors),
            "recovery" => section::<Option<Recovery>>(&key, value, &mut errors),
            "abort" => list::<AbortRule>(&key, value, &mut errors),
            _ => {
                errors.push(invalid(
                    field_name(&key),
                    "unknown field",
                    format!(
                        "remove it, or correct its spelling (the sections are {})",
                        SECTIONS.join(", ")
                    ),
                ));
                None
            }
        };
        if let Some(value) = ok {
            checked.insert(key, value);
        }
    }
    for field in REQUIRED {
        // A field given but refused above is not missing.
        let refused = errors.iter().any(|e| {
            e.field().is_some_and(|f| {
                f.strip_prefix(field)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['[', '.']))
            })
        });
        if !checked.contains_key(field) && !refused {
            errors.push(invalid(field.to_owned(), "missing", missing_fix(field)));
        }
    }
    if !errors.is_empty() {
        return Err(SpecErrors(errors));
    }
    serde_path_to_error::deserialize(Value::Object(checked))
        .map_err(|e| SpecErrors(vec![value_error("", e)]))
}

/// Checks one section as a `T`; returns its value if it is one.
fn section<T: DeserializeOwned>(
    path: &str,
    value: Value,
    errors: &mut Vec<Error>,
) -> Option<Value> {
    reads_as::<T>(path, &value, errors).then_some(value)
}

/// Whether `value` reads as a `T`; if not, the error, its path under `path`, is pushed.
fn reads_as<T: DeserializeOwned>(path: &str, value: &Value, errors: &mut Vec<Error>) -> bool {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(_) => true,
        Err(e) => {
            errors.push(value_error(path, e));
            false
        }
    }
}

/// Checks a list section item by item, so each bad item is reported.
fn list<T: DeserializeOwned>(path: &str, value: Value, errors: &mut Vec<Error>) -> Option<Value> {
    let Value::Array(items) = &value else {
        return section::<Vec<T>>(path, value, errors);
    };
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        ok &= reads_as::<T>(&format!("{path}[{i}]"), item, errors);
    }
    ok.then_some(value)
}

/// Checks the faults: each body as `chaos inject spec` reads it, then the rest of its step.
fn faults(value: Value, errors: &mut Vec<Error>) -> Option<Value> {
    let Value::Array(items) = value else {
        return section::<Vec<FaultStep>>("faults", value, errors);
    };
    let mut ok = true;
    let mut out = Vec::with_capacity(items.len());
    for (i, mut item) in items.into_iter().enumerate() {
        let path = format!("faults[{i}]");
        if let Some(body) = item.as_object_mut().and_then(|o| o.get_mut("fault")) {
            match crate::spec::from_json(&body.to_string()) {
                // The canonical form, which the step's own deserializer reads back.
                Ok(spec) => *body = serde_json::to_value(&spec).unwrap_or(Value::Null),
                Err(e) => {
                    ok = false;
                    errors.push(prefixed(&format!("{path}.fault"), e));
                    // A body that reads, so the step's other fields are checked too; the
                    // error above already refuses the spec.
                    *body = serde_json::json!({"kind": "disk", "action": "fill"});
                }
            }
        }
        ok &= reads_as::<FaultStep>(&path, &item, errors);
        out.push(item);
    }
    ok.then_some(Value::Array(out))
}

/// A fault body's error, its field put under `prefix` (`spec`, the whole body, becomes the
/// prefix itself).
fn prefixed(prefix: &str, e: Error) -> Error {
    let under = |field: &str| {
        if field == "spec" {
            prefix.to_owned()
        } else {
            format!("{prefix}.{field}")
        }
    };
    match e {
        Error::InvalidField {
            field,
            problem,
            fix,
        } => invalid(under(&field), problem, fix),
        Error::Invalid {
            field,
            problem,
            fix,
        } => invalid(under(field), problem, fix),
        other => other,
    }
}

fn invalid(field: String, problem: impl Into<String>, fix: impl Into<String>) -> Error {
    Error::InvalidField {
        field,
        problem: problem.into(),
        fix: fix.into(),
    }
}

fn one(field: &str, problem: impl Into<String>, fix: impl Into<String>) -> SpecErrors {
    SpecErrors(vec![invalid(field.to_owned(), problem, fix)])
}

/// A message on one line: control characters (newlines included) become spaces.
fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    flat.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What a JSON value is, for messages.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "an empty document",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A syntax error (or a key given twice) while reading the text of `format`.
fn text_error<E: fmt::Display>(format: &str, e: serde_path_to_error::Error<E>) -> Error {
    let path = path_string("", e.path());
    let problem = one_line(&e.into_inner().to_string());
    if path.is_empty() {
        return invalid(
            "experiment".to_owned(),
            problem,
            format!("fix the {format} syntax there (docs/experiments.md shows complete examples)"),
        );
    }
    let fix = if problem.contains("given twice") {
        "keep one of them".to_owned()
    } else {
        format!("fix the {format} there")
    };
    invalid(path, problem, fix)
}

/// A type error at a path below `prefix`.
fn value_error(prefix: &str, e: serde_path_to_error::Error<serde_json::Error>) -> Error {
    let path = path_string(prefix, e.path());
    let last = e
        .path()
        .iter()
        .filter_map(|s| match s {
            Segment::Map { key } => Some(key.clone()),
            _ => None,
        })
        .next_back()
        .unwrap_or_else(|| prefix.to_owned());
    let problem = one_line(&e.into_inner().to_string());
    let fix = if problem.starts_with("unknown field") {
        "remove it, or correct its spelling".to_owned()
    } else if problem.starts_with("missing field") {
        "add it (docs/experiments.md lists every field)".to_owned()
    } else {
        match example(&last) {
            Some(example) => format!("write it as e.g. {example}"),
            None => "see docs/experiments.md for the field's type".to_owned(),
        }
    };
    let path = if path.is_empty() {
        "experiment".to_owned()
    } else {
        path
    };
    invalid(path, problem, fix)
}

/// `prefix` followed by the path's segments: `faults[0].fault`, `probes[1].http.url`.
fn path_string(prefix: &str, path: &serde_path_to_error::Path) -> String {
    let mut out = prefix.to_owned();
    for segment in path.iter() {
        match segment {
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&field_name(key));
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Unknown => break,
        }
    }
    out
}

fn missing_fix(field: &str) -> &'static str {
    match field {
        "name" => "add e.g. name: pg-fsync-eio",
        "duration" => "add the fault phase's length, e.g. duration: 2m",
        _ => {
            "add at least one fault, e.g. faults: [{name: loss, duration: 30s, fault: {kind: net, action: loss, percent: 30, interface: eth0}}]"
        }
    }
}

/// An example value of a field, by its name.
fn example(field: &str) -> Option<&'static str> {
    Some(match field {
        "baseline" | "duration" | "start" | "interval" | "timeout" | "steady_for" | "within"
        | "hold" | "settle" | "down_for" | "for" => {
            "\"30s\" (a string with a unit: 500ms, 30s, 5m)"
        }
        "max_latency" => "\"500ms\" (a string; a quoted comparison such as \">= 1s\" in expect)",
        "error_rate" | "fails" => "\">= 10%\" (a quoted comparison)",
        "throughput" => "\">= 100\" (per second) or \"<= 50%\" (of the baseline), quoted",
        "p50" | "p90" | "p99" => "\">= 200ms\" (a quoted comparison)",
        "acted" => "\">= 1\" (a quoted comparison)",
        "threshold" => "\"< 5\" (a quoted comparison)",
        "rate" => "100 (operations per second, a number)",
        "concurrency" => "4 (a whole number)",
        "pid" => "4242 (a process id)",
        "status" => "200 (an HTTP status)",
        "exit_code" => "0 (a whole number)",
        "run" => "[pgbench, -c, \"8\"] (a list of strings: quote numbers)",
        "steady_state" | "probes" => "[pg-ready] (a list of probe names)",
        "target_alive" | "exclusive" | "fsync" | "repeat" => "true",
        "unsupported" => "skip (fail or skip)",
        "method" => "GET (GET, HEAD, POST, PUT or DELETE)",
        "min_kernel" => "\"6.1\" (quoted)",
        "target" => "{cgroup: system.slice/postgresql.service}",
        "name" | "after" | "during" | "traffic" | "probe" | "fault" => {
            "pg-ready (a name, as a string)"
        }
        _ => return None,
    })
}

/// A JSON value read from any format, refusing a key given twice in a mapping (serde_json's
/// own `Value` keeps the last one) and numbers JSON cannot hold (YAML's `.nan`, `.inf`).
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Strict, E> {
        serde_json::Number::from_f64(v)
            .map(|n| Strict(Value::Number(n)))
            .ok_or_else(|| E::custom(format!("{v} is not a finite number")))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_owned())))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Strict, D::Error> {
        Strict::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Strict(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                // Refused from inside the value, so the error's path names the key.
                map.next_value_seed(GivenTwice)?;
                return Err(A::Error::custom("given twice"));
            }
            let Strict(value) = map.next_value()?;
            out.insert(key, value);
        }
        Ok(Strict(Value::Object(out)))
    }
}

/// The value of a key given twice: refused.
struct GivenTwice;

impl<'de> DeserializeSeed<'de> for GivenTwice {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
        Err(D::Error::custom("given twice"))
    }
}
