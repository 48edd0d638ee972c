//! Property tests (as `spec/fuzz.rs` for single faults): experiment parsing and validation are
//! fed arbitrary text and randomly broken experiments, and must refuse them with one line per
//! error naming a field, never panic.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::{SpecErrors, from_json, from_toml, from_value, from_yaml};

const EXAMPLES: [&str; 3] = [
    include_str!("examples/pg-fsync-eio.yaml"),
    include_str!("examples/replica-partition.yaml"),
    include_str!("examples/disk-hang.yaml"),
];

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Every error one line, naming a field, with a fix.
fn well_formed(errors: &SpecErrors) {
    assert!(!errors.0.is_empty());
    for e in &errors.0 {
        let message = e.to_string();
        let field = e.field().unwrap_or_else(|| panic!("no field: {message}"));
        assert!(
            message.starts_with(&format!("invalid {field}: ")),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message:?}");
        assert!(message.contains("; "), "{message}");
    }
}

/// Parsed, then validated if it parsed: either way, no panic and well-formed errors.
fn check(parsed: Result<super::ExperimentSpec, SpecErrors>) {
    match parsed {
        Ok(spec) => {
            if let Err(e) = spec.validate() {
                well_formed(&e);
            }
        }
        Err(e) => well_formed(&e),
    }
}

/// JSON pointers of every value in `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                pointers(
                    x,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// Values that are wrong somewhere and right elsewhere.
fn values() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            "",
            "0s",
            "30s",
            "7d 1s",
            "-1s",
            ">= 10%",
            "<= 200ms",
            "> 0",
            "== 0%",
            "150%",
            "4k",
            "0",
            "x",
            "127.0.0.1:5432",
            "http://h/",
            "https://h/",
            "eio",
            "pg-ready",
            "partition",
            "writes",
            "loss",
            "ä",
            "a\nb",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
        Just(json!([])),
        Just(json!({})),
        Just(json!(["pg-ready", 1])),
        Just(json!({"kind": "net", "action": "loss", "percent": 30})),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        check(from_yaml(&text));
        check(from_json(&text));
        check(from_toml(&text));
    }

    #[test]
    fn broken_lines_never_panic(
        which in 0..EXAMPLES.len(),
        line in any::<prop::sample::Index>(),
        how in 0..4u8,
        junk in "[ -~]{0,12}",
    ) {
        let mut lines: Vec<String> = EXAMPLES[which].lines().map(str::to_owned).collect();
        let i = line.index(lines.len());
        match how {
            0 => { lines.remove(i); }
            1 => { let l = lines[i].clone(); lines.insert(i, l); }
            2 => lines[i].push_str(&junk),
            _ => lines[i] = junk,
        }
        check(from_yaml(&lines.join("\n")));
    }

    #[test]
    fn replaced_values_never_panic(
        which in 0..EXAMPLES.len(),
        at in any::<prop::sample::Index>(),
        value in values(),
        remove in any::<bool>(),
    ) {
        let spec = from_yaml(EXAMPLES[which]).unwrap();
        let mut v = serde_json::to_value(&spec).unwrap();
        let mut all = Vec::new();
        pointers(&v, String::new(), &mut all);
        let pointer = all[at.index(all.len())].clone();
        match pointer.rsplit_once('/') {
            Some((parent, key)) if remove => {
                match v.pointer_mut(parent) {
                    Some(Value::Object(o)) => { o.remove(&key.replace("~1", "/").replace("~0", "~")); }
                    Some(Value::Array(a)) => { a.remove(key.parse::<usize>().unwrap()); }
                    _ => {}
                }
            }
            _ => {
                if let Some(slot) = v.pointer_mut(&pointer) {
                    *slot = value;
                }
            }
        }
        check(from_value(v));
    }
}

/// A name with a line break in it (found by `replaced_values_never_panic`): its own error
/// says so, and the references it no longer matches do not offer it back, which broke their
/// message across lines.
#[test]
fn an_invalid_name_is_not_offered_to_references() {
    let spec = from_yaml(EXAMPLES[1]).unwrap();
    let mut v = serde_json::to_value(&spec).unwrap();
    v["faults"][1]["name"] = json!("a\nb");
    v["probes"][0]["name"] = json!("a\nb");
    let errors = from_value(v).unwrap().validate().unwrap_err();
    well_formed(&errors);
    let text = errors.to_string();
    assert!(
        text.contains("invalid faults[1].name: \"a\\nb\" is not a name"),
        "{text}"
    );
    assert!(text.contains("name one of faults: partition"), "{text}");
    assert!(
        text.contains("name one of probes: replica-health"),
        "{text}"
    );
}
