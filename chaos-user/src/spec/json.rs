//! Specs from JSON text, as `chaos inject spec FILE` and the HTTP API take them. A malformed
//! spec is refused with one line that names the field (its path, e.g. `dst[1]`) and the fix.
//!
//! serde alone says `invalid type: string "ten", expected f64 at line 1 column 20`, which names
//! no field, and loses even the position inside the `kind`-tagged enum (serde buffers the
//! object before it knows the family). So the object is read in two steps, each through
//! `serde_path_to_error`, which records where the deserializer was when it failed: first its
//! top-level fields as JSON values (duplicates kept, to refuse them), then, once `kind` is known,
//! the family's struct from the remaining fields. Values of the right type are checked later,
//! by [`crate::plan`].

use std::fmt;

use serde::{
    Deserialize, Deserializer,
    de::{DeserializeOwned, MapAccess, Visitor},
};
use serde_json::{Map, Value};
use serde_path_to_error::Segment;

use super::{DiskAction, DiskSpec, FaultSpec, IoAction, IoSpec, NetAction, NetSpec};
use super::{SyscallAction, SyscallSpec};
use crate::error::{Error, Result};

/// The fault kinds, as `kind` takes them.
pub const KINDS: [&str; 4] = ["net", "syscall", "io", "disk"];

/// Parses one fault spec from JSON text, e.g.
/// `{"kind": "net", "action": "loss", "percent": 30, "interface": "eth0", "duration": "60s"}`.
/// Only the shape is checked here (types, known fields, `kind` and `action`); [`crate::plan::plan`]
/// checks the values. Errors are [`Error::InvalidField`], naming the field.
pub fn from_json(text: &str) -> Result<FaultSpec> {
    let mut de = serde_json::Deserializer::from_str(text);
    let fields: Fields =
        serde_path_to_error::deserialize(&mut de).map_err(|e| field_error(None, e))?;
    de.end().map_err(|e| {
        invalid(
            "spec",
            e.to_string(),
            "give exactly one JSON object, with nothing after it",
        )
    })?;
    let mut map = Map::new();
    for (key, value) in fields.0 {
        if map.contains_key(&key) {
            let name = field_name(&key);
            return Err(invalid(
                &name,
                "given twice",
                format!(
                    "keep one {}",
                    serde_json::to_string(&key).unwrap_or_default()
                ),
            ));
        }
        map.insert(key, value);
    }
    let kind = match map.remove("kind") {
        Some(Value::String(kind)) => kind,
        Some(other) => {
            return Err(invalid(
                "kind",
                format!("{other} is not a fault kind"),
                kind_fix(),
            ));
        }
        None => return Err(invalid("kind", "missing", kind_fix())),
    };
    let actions: Vec<&str> = match kind.as_str() {
        "net" => NetAction::ALL.iter().map(|a| a.as_str()).collect(),
        "syscall" => SyscallAction::ALL.iter().map(|a| a.as_str()).collect(),
        "io" => IoAction::ALL.iter().map(|a| a.as_str()).collect(),
        "disk" => DiskAction::ALL.iter().map(|a| a.as_str()).collect(),
        _ => {
            return Err(invalid(
                "kind",
                format!("{kind:?} is not a fault kind"),
                kind_fix(),
            ));
        }
    };
    if !map.contains_key("action") {
        return Err(invalid(
            "action",
            format!("a {kind} fault needs an action"),
            format!("add \"action\": {}", quoted_list(&actions)),
        ));
    }
    let value = Value::Object(map);
    Ok(match kind.as_str() {
        "net" => FaultSpec::Net(family::<NetSpec>(&kind, value)?),
        "syscall" => FaultSpec::Syscall(family::<SyscallSpec>(&kind, value)?),
        "io" => FaultSpec::Io(family::<IoSpec>(&kind, value)?),
        _ => FaultSpec::Disk(family::<DiskSpec>(&kind, value)?),
    })
}

/// The spec of family `kind` from its fields (`kind` removed).
fn family<T: DeserializeOwned>(kind: &str, value: Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| field_error(Some(kind), e))
}

fn invalid(field: &str, problem: impl Into<String>, fix: impl Into<String>) -> Error {
    Error::InvalidField {
        field: field.to_owned(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

fn kind_fix() -> String {
    format!("give \"kind\": {}", quoted_list(&KINDS))
}

/// `"a", "b" or "c"`.
fn quoted_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

/// A serde error at a path, as [`Error::InvalidField`] naming the field (`spec` for the whole,
/// or where the text breaks off before a field's name).
fn field_error(kind: Option<&str>, e: serde_path_to_error::Error<serde_json::Error>) -> Error {
    let mut path = String::new();
    let mut top = None;
    for segment in e.path().iter() {
        match segment {
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&field_name(key));
                top.get_or_insert_with(|| key.clone());
            }
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Unknown => break,
        }
    }
    // One line, whatever the input held (serde quotes an unknown field's name as it was).
    let problem: String = e
        .into_inner()
        .to_string()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let Some(top) = top else {
        return invalid(
            "spec",
            problem,
            "give one JSON object, e.g. {\"kind\": \"net\", \"action\": \"loss\", \"percent\": \
             30, \"interface\": \"eth0\"}",
        );
    };
    let fix = if problem.starts_with("unknown field") {
        format!(
            "remove {}, or correct its spelling",
            serde_json::to_string(&top).unwrap_or_default()
        )
    } else {
        match example(kind, &top) {
            Some(value) => format!("write it as e.g. \"{top}\": {value}"),
            None => "see `chaos inject --help` for the fields and their values".to_owned(),
        }
    };
    invalid(&path, problem, fix)
}

/// A field's name as messages show it: as is if it is a plain word, else quoted and escaped as
/// in JSON (an empty name, spaces, control characters), so the message stays one readable line.
pub(crate) fn field_name(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        key.to_owned()
    } else {
        serde_json::to_string(key).unwrap_or_else(|_| "\"?\"".to_owned())
    }
}

/// An example value of field `field` (of a `kind` spec, where it matters), with its type.
fn example(kind: Option<&str>, field: &str) -> Option<String> {
    let actions = |all: Vec<&str>| format!("{:?} (one of {})", all[0], all.join(", "));
    Some(match (kind, field) {
        (Some("net"), "action") => actions(NetAction::ALL.iter().map(|a| a.as_str()).collect()),
        (Some("syscall"), "action") => {
            actions(SyscallAction::ALL.iter().map(|a| a.as_str()).collect())
        }
        (Some("io"), "action") => actions(IoAction::ALL.iter().map(|a| a.as_str()).collect()),
        (Some("disk"), "action") => actions(DiskAction::ALL.iter().map(|a| a.as_str()).collect()),
        (_, "kind") => format!("\"net\" (one of {})", KINDS.join(", ")),
        (_, "percent" | "correlation") => "30 (a number, 0-100)".into(),
        (_, "duration") => "\"30s\" (a string with a unit)".into(),
        (_, "latency" | "jitter") => "\"100ms\" (a string with a unit)".into(),
        (_, "distribution") => "\"normal\" (uniform, normal, pareto or paretonormal)".into(),
        (_, "rate") => "\"1mbit\" (a string with a unit)".into(),
        (_, "interface") => "\"eth0\"".into(),
        (_, "netns") => "\"db-replica\" (a name from `ip netns list`, or a path)".into(),
        (_, "pid" | "target_pid") => "4242 (a process id)".into(),
        (_, "direction") => "\"egress\" (egress, ingress or both)".into(),
        (_, "dst" | "src") => "[\"10.0.0.0/8\"] (a list of addresses or prefixes)".into(),
        (_, "dport" | "sport") => "\"5432\" (a string: a port, or a range \"8000-8100\")".into(),
        (_, "proto") => "\"tcp\" (tcp, udp or icmp)".into(),
        (Some("net"), "cgroup") => "[\"system.slice/db.service\"] (a list)".into(),
        (_, "cgroup") => "\"system.slice/db.service\"".into(),
        (_, "exclude") => "[\"22\", \"10.0.0.0/8\"] (a list of ports and prefixes)".into(),
        (_, "force" | "follow_children" | "virtual") => "true".into(),
        (_, "syscall") => "[\"openat\", \"fsync\"] (a list of names)".into(),
        (_, "errno") => "\"EIO\" (a name or a number, as a string)".into(),
        (_, "signal") => "\"SIGKILL\" (a name or a number, as a string)".into(),
        (_, "comm") => "\"postgres\"".into(),
        (_, "path_prefix") => "\"/var/lib/db\"".into(),
        (_, "after" | "every" | "max_count" | "read_iops" | "write_iops") => {
            "100 (a whole number)".into()
        }
        (_, "device") => "\"/dev/sdb\" (a device, MAJ:MIN, or a path on its filesystem)".into(),
        (_, "path") => "\"/data\"".into(),
        (_, "op") => "\"write\" (read, write, flush, discard or any)".into(),
        (_, "sector_range") => "\"0-2047\"".into(),
        (_, "read_bps" | "write_bps") => "\"2mb\" (a string with a unit)".into(),
        (_, "bytes") => "\"10G\"".into(),
        (_, "free") => "\"100M\"".into(),
        _ => return None,
    })
}

/// The top-level fields of a JSON object in order, duplicates kept.
struct Fields(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;

        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object (one fault spec)")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<Value>()?;
                    fields.push((key, value));
                }
                Ok(Fields(fields))
            }
        }

        deserializer.deserialize_map(FieldsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Proto;

    fn err(text: &str) -> (String, String) {
        let e = from_json(text).unwrap_err();
        (e.field().unwrap_or_default().to_owned(), e.to_string())
    }

    #[test]
    fn parses_every_family() {
        let net =
            from_json(r#"{"kind":"net","action":"partition","dst":["10.0.0.0/8"],"proto":"tcp"}"#)
                .unwrap();
        let FaultSpec::Net(n) = &net else {
            panic!("{net:?}")
        };
        assert_eq!(n.proto, Some(Proto::Tcp));
        for text in [
            r#"{"kind":"syscall","action":"fail","syscall":["fsync"],"errno":"EIO","pid":42}"#,
            r#"{"action":"slow","kind":"io","device":"7:0","write_bps":"2mb","cgroup":"db"}"#,
            r#"{"kind":"disk","action":"fill","path":"/data","virtual":true,"pid":42}"#,
        ] {
            let spec = from_json(text).unwrap();
            // The same as serde's own reading of the tagged enum.
            assert_eq!(spec, serde_json::from_str::<FaultSpec>(text).unwrap());
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"kind":"net","action":"loss","percent":"ten"}"#,
                "percent",
            ),
            (
                r#"{"kind":"net","action":"loss","dst":["10.0.0.0/8",7]}"#,
                "dst[1]",
            ),
            (r#"{"kind":"net","action":"loss","prcent":3}"#, "prcent"),
            (r#"{"kind":"net","action":"los"}"#, "action"),
            (r#"{"kind":"net"}"#, "action"),
            (r#"{"action":"loss"}"#, "kind"),
            (r#"{"kind":"nett","action":"loss"}"#, "kind"),
            (r#"{"kind":5,"action":"loss"}"#, "kind"),
            (r#"{"kind":"syscall","action":"fail","pid":-1}"#, "pid"),
            (r#"{"kind":"syscall","action":"fail","after":1e3}"#, "after"),
            (
                r#"{"kind":"io","action":"fail","percent":1e999}"#,
                "percent",
            ),
            (
                r#"{"kind":"disk","action":"fill","virtual":"yes"}"#,
                "virtual",
            ),
            (
                r#"{"kind":"net","action":"loss","percent":1,"percent":2}"#,
                "percent",
            ),
            (r#"{"kind":"net","action":"loss","":1}"#, r#""""#),
            (r#"{"kind":"net","action":"loss","a\nb":1}"#, r#""a\nb""#),
            (
                r#"{"kind":"net","action":"loss","a b":1,"a b":2}"#,
                r#""a b""#,
            ),
            (r#"[1, 2]"#, "spec"),
            (r#"{"kind":"net","action":"loss"} {}"#, "spec"),
            (r#"{"kind":"net","#, "spec"),
            ("", "spec"),
        ];
        for (text, field) in cases {
            let (got, message) = err(text);
            assert_eq!(got, field, "{text}: {message}");
            assert!(
                message.starts_with(&format!("invalid {field}: ")),
                "{text}: {message}"
            );
            assert!(!message.contains('\n'), "{message}");
            assert!(message.contains("; "), "a fix: {message}");
        }
        let (_, message) = err(r#"{"kind":"net","action":"loss","percent":"ten"}"#);
        assert!(message.contains("\"percent\": 30"), "{message}");
        let (_, message) = err(r#"{"kind":"net"}"#);
        assert!(message.contains("\"reorder\""), "{message}");
    }

    #[test]
    fn every_action_is_listed() {
        for a in NetAction::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        for a in SyscallAction::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        for a in IoAction::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        for a in DiskAction::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        assert_eq!(quoted_list(&["a"]), "\"a\"");
        assert_eq!(quoted_list(&["a", "b", "c"]), "\"a\", \"b\" or \"c\"");
    }
}
