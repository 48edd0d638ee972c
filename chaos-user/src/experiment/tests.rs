//! The documented examples, round trips through the three formats, and bad specs with the
//! field paths their errors must name.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::spec::{FaultSpec, NetAction};

/// The examples `docs/experiments.md` shows (the doc includes these very files).
const EXAMPLES: [(&str, &str); 3] = [
    ("pg-fsync-eio", include_str!("examples/pg-fsync-eio.yaml")),
    (
        "replica-partition",
        include_str!("examples/replica-partition.yaml"),
    ),
    ("disk-hang", include_str!("examples/disk-hang.yaml")),
];

fn parse_ok(text: &str) -> ExperimentSpec {
    from_yaml(text).unwrap_or_else(|e| panic!("does not parse:\n{e}"))
}

#[test]
fn examples_parse_and_validate() {
    for (name, text) in EXAMPLES {
        let spec = parse_ok(text);
        let schedule = spec
            .validate()
            .unwrap_or_else(|e| panic!("{name} does not validate:\n{e}"));
        assert_eq!(schedule.windows.len(), spec.faults.len(), "{name}");
    }
    let spec = parse_ok(EXAMPLES[1].1);
    let FaultSpec::Net(net) = &spec.faults[0].fault else {
        panic!("{:?}", spec.faults[0].fault)
    };
    assert_eq!(net.action, NetAction::Partition);
    assert_eq!(net.dport.as_deref(), Some("5432"));
    let schedule = spec.validate().unwrap();
    let s = Duration::from_secs;
    // In series: the loss starts 10 s after the partition's window (5 s - 35 s) ends.
    assert_eq!(
        schedule.windows,
        vec![
            Window {
                name: "partition".into(),
                start: s(5),
                end: s(35)
            },
            Window {
                name: "lossy-link".into(),
                start: s(45),
                end: s(65)
            },
        ]
    );
    assert_eq!(schedule.baseline, s(15));
    assert_eq!(schedule.recovery_within, s(30));
    assert_eq!(schedule.longest(), s(15 + 90 + 30));
    // Defaults.
    let schedule = parse_ok(EXAMPLES[2].1).validate().unwrap();
    assert_eq!(schedule.steady_for, s(5));
    assert_eq!(schedule.admission_timeout, s(60));
}

#[test]
fn the_doc_shows_the_examples() {
    let doc = include_str!("../../../docs/experiments.md");
    for (name, text) in EXAMPLES {
        // The doc quotes each file whole, in a yaml block.
        assert!(
            doc.contains(&format!("```yaml\n{text}```")),
            "docs/experiments.md does not show examples/{name}.yaml as it is"
        );
    }
    // The short example at the top is a valid experiment too.
    let first = doc
        .split_once("## A first look\n\n```yaml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("a first look");
    let spec = parse_ok(first);
    let schedule = spec.validate().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(schedule.windows[0].end, Duration::from_secs(40));
    // Its TOML form, shown next, is the same experiment.
    let toml = doc
        .split_once("```toml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("a TOML example");
    assert_eq!(from_toml(toml).unwrap_or_else(|e| panic!("{e}")), spec);
}

#[test]
fn round_trips_through_every_format() {
    for (name, text) in EXAMPLES {
        let spec = parse_ok(text);
        let yaml = serde_norway::to_string(&spec).unwrap();
        assert_eq!(parse_ok(&yaml), spec, "{name} through YAML:\n{yaml}");
        let json = serde_json::to_string_pretty(&spec).unwrap();
        let back = from_json(&json).unwrap_or_else(|e| panic!("{name}: {e}\n{json}"));
        assert_eq!(back, spec, "{name} through JSON");
        let toml = toml::to_string(&spec).unwrap();
        let back = from_toml(&toml).unwrap_or_else(|e| panic!("{name}: {e}\n{toml}"));
        assert_eq!(back, spec, "{name} through TOML:\n{toml}");
        // serde's own reading agrees with the path-naming one.
        assert_eq!(serde_json::from_str::<ExperimentSpec>(&json).unwrap(), spec);
    }
}

#[test]
fn formats_by_extension() {
    use std::path::Path;
    assert_eq!(Format::from_path(Path::new("a.yml")), Some(Format::Yaml));
    assert_eq!(Format::from_path(Path::new("a/b.yaml")), Some(Format::Yaml));
    assert_eq!(Format::from_path(Path::new("a.json")), Some(Format::Json));
    assert_eq!(Format::from_path(Path::new("a.toml")), Some(Format::Toml));
    assert_eq!(Format::from_path(Path::new("a.txt")), None);
    let e = from_path(Path::new("/nonexistent/drill.txt")).unwrap_err();
    assert_eq!(e.fields(), ["experiment"]);
    let e = from_path(Path::new("/nonexistent/drill.yaml")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/drill.yaml"), "{e}");
}

/// A small valid experiment; the bad specs below are this with a few fields changed.
fn base() -> Value {
    json!({
        "name": "drill",
        "target": {"pid": 4242},
        "probes": [{"name": "up", "tcp": "127.0.0.1:5432"}],
        "traffic": [{"name": "load", "http": {"url": "http://127.0.0.1:8080/"}, "rate": 10}],
        "duration": "60s",
        "faults": [{
            "name": "eio",
            "duration": "20s",
            "fault": {"kind": "syscall", "action": "fail", "syscall": ["fsync"], "errno": "EIO"}
        }],
        "expect": [{"during": "eio", "traffic": "load", "error_rate": ">= 10%"}],
        "recovery": {"within": "30s"},
        "abort": [{"probe": "up", "down_for": "60s"}]
    })
}

/// Sets (or with `None`, removes) the value at a JSON pointer; `-` appends to a list.
fn set(v: &mut Value, pointer: &str, value: Option<Value>) {
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    let parent = v
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent}"));
    match (parent, value) {
        (Value::Object(o), Some(value)) => {
            o.insert(last.to_owned(), value);
        }
        (Value::Object(o), None) => {
            o.remove(last);
        }
        (Value::Array(a), Some(value)) if last == "-" => a.push(value),
        (Value::Array(a), Some(value)) => a[last.parse::<usize>().unwrap()] = value,
        (Value::Array(a), None) => {
            a.remove(last.parse::<usize>().unwrap());
        }
        (other, _) => panic!("{pointer}: {other}"),
    }
}

/// Parses then validates; the fields the errors name (empty if the spec is good).
fn error_fields(v: Value) -> (Vec<String>, String) {
    let errors = match from_value(v) {
        Ok(spec) => match spec.validate() {
            Ok(_) => return (Vec::new(), String::new()),
            Err(e) => e,
        },
        Err(e) => e,
    };
    for e in &errors.0 {
        let field = e.field().expect("a field error");
        let message = e.to_string();
        assert!(
            message.starts_with(&format!("invalid {field}: ")),
            "{message}"
        );
        assert!(!message.contains('\n'), "one line: {message:?}");
        assert!(message.contains("; "), "a fix: {message}");
    }
    let fields = errors.fields().iter().map(|f| f.to_string()).collect();
    (fields, errors.to_string())
}

#[test]
fn the_base_spec_is_good() {
    assert_eq!(error_fields(base()).0, Vec::<String>::new());
}

type Patch = (&'static str, Option<Value>);

#[test]
fn bad_specs_name_their_fields() {
    let cases: Vec<(Vec<Patch>, Vec<&str>)> = vec![
        // Shape: types, unknown and missing fields, fault bodies.
        (vec![("/name", None)], vec!["name"]),
        (vec![("/faults", None)], vec!["faults"]),
        (vec![("/duration", Some(json!(60)))], vec!["duration"]),
        (vec![("/nmae", Some(json!("x")))], vec!["nmae"]),
        (vec![("/target/pid", Some(json!(-1)))], vec!["target.pid"]),
        (
            vec![("/target/process", Some(json!(1)))],
            vec!["target.process"],
        ),
        (
            vec![("/probes/0/tcp", Some(json!(5432)))],
            vec!["probes[0].tcp"],
        ),
        (
            vec![("/probes/0/http", Some(json!({"uri": "http://x/"})))],
            vec!["probes[0].http.uri"],
        ),
        (
            vec![("/traffic/0/rate", Some(json!("fast")))],
            vec!["traffic[0].rate"],
        ),
        (
            vec![(
                "/traffic/0/command",
                Some(json!({"run": ["pgbench", "-c", 8]})),
            )],
            vec!["traffic[0].command.run[2]"],
        ),
        (
            vec![("/faults/0/fault/kind", Some(json!("nett")))],
            vec!["faults[0].fault.kind"],
        ),
        (
            vec![("/faults/0/fault/percent", Some(json!("ten")))],
            vec!["faults[0].fault.percent"],
        ),
        (
            vec![("/faults/0/fault/sycall", Some(json!(["read"])))],
            vec!["faults[0].fault.sycall"],
        ),
        (
            vec![("/faults/0/fault", Some(json!("net loss")))],
            vec!["faults[0].fault"],
        ),
        (vec![("/faults/0/duration", None)], vec!["faults[0]"]),
        (
            vec![("/expect/0/error_rate", Some(json!(10)))],
            vec!["expect[0].error_rate"],
        ),
        (
            vec![("/admission", Some(json!({"unsupported": "ignore"})))],
            vec!["admission.unsupported"],
        ),
        (vec![("/abort/0/for", Some(json!(5)))], vec!["abort[0].for"]),
        // Several sections wrong at once: each is reported.
        (
            vec![
                ("/duration", Some(json!(60))),
                ("/probes/0/tcp", Some(json!(5432))),
                ("/faults/0/fault/kind", Some(json!("nett"))),
                ("/faults/0/start", Some(json!(5))),
            ],
            vec![
                "probes[0].tcp",
                "duration",
                "faults[0].fault.kind",
                "faults[0].start",
            ],
        ),
        // Values and the rules across fields.
        (
            vec![("/schema", Some(json!("chaos.experiment/v2")))],
            vec!["schema"],
        ),
        (vec![("/name", Some(json!("my drill")))], vec!["name"]),
        (vec![("/baseline", Some(json!("soon")))], vec!["baseline"]),
        (vec![("/duration", Some(json!("0s")))], vec!["duration"]),
        (
            vec![("/target", Some(json!({})))],
            vec!["target", "faults[0].fault"],
        ),
        (
            vec![("/target/cgroup", Some(json!("db.slice")))],
            vec!["target"],
        ),
        (
            vec![("/target", Some(json!({"comm": "postgres-checkpointer"})))],
            vec!["target.comm"],
        ),
        (
            vec![("/target", Some(json!({"container": "web-1"})))],
            vec!["target.container"],
        ),
        (
            vec![("/target", Some(json!({"address": "10.0.0.1"})))],
            vec!["target.address", "faults[0].fault"],
        ),
        (
            vec![("/probes/0/http", Some(json!({"url": "http://x/"})))],
            vec!["probes[0]"],
        ),
        (
            vec![("/probes/0", Some(json!({"name": "up"})))],
            vec!["probes[0]"],
        ),
        (
            vec![("/probes/-", Some(json!({"name": "up", "tcp": "h:1"})))],
            vec!["probes[1].name"],
        ),
        (
            vec![("/probes/0/tcp", Some(json!("127.0.0.1:99999")))],
            vec!["probes[0].tcp"],
        ),
        (
            vec![(
                "/probes/-",
                Some(json!({"name": "api", "http": {"url": "https://x/health"}})),
            )],
            vec!["probes[1].http.url"],
        ),
        (
            vec![(
                "/probes/-",
                Some(json!({"name": "api", "http": {"url": "http://x/", "status": 42}})),
            )],
            vec!["probes[1].http.status"],
        ),
        (
            vec![(
                "/probes/-",
                Some(json!({"name": "pg", "command": {"run": []}})),
            )],
            vec!["probes[1].command.run"],
        ),
        (
            vec![(
                "/probes/-",
                Some(json!({"name": "lag", "prometheus":
                    {"url": "http://127.0.0.1:9090", "query": "lag", "threshold": "5"}})),
            )],
            vec!["probes[1].prometheus.threshold"],
        ),
        (
            vec![("/probes/0/interval", Some(json!("0s")))],
            vec!["probes[0].interval"],
        ),
        (
            vec![("/admission", Some(json!({"steady_state": ["up", "down"]})))],
            vec!["admission.steady_state[1]"],
        ),
        (
            vec![(
                "/admission",
                Some(json!({"steady_for": "2m", "timeout": "1m"})),
            )],
            vec!["admission.steady_for"],
        ),
        (
            vec![(
                "/admission",
                Some(json!({"free_disk": [{"path": "data", "min": "2 parsecs"}]})),
            )],
            vec!["admission.free_disk[0].path", "admission.free_disk[0].min"],
        ),
        (
            vec![("/admission", Some(json!({"min_kernel": "six"})))],
            vec!["admission.min_kernel"],
        ),
        (
            vec![("/traffic/0/file", Some(json!({"path": "/data"})))],
            vec!["traffic[0]"],
        ),
        (
            vec![("/traffic/0/rate", Some(json!(0)))],
            vec!["traffic[0].rate"],
        ),
        (
            vec![("/traffic/0/concurrency", Some(json!(0)))],
            vec!["traffic[0].concurrency"],
        ),
        (
            vec![(
                "/traffic/-",
                Some(json!({"name": "bench", "command": {"run": ["pgbench"]}, "rate": 5})),
            )],
            vec!["traffic[1].rate"],
        ),
        (
            vec![(
                "/traffic/-",
                Some(json!({"name": "disk", "file":
                    {"path": "/data", "block_size": "1M", "file_size": "4k"}})),
            )],
            vec!["traffic[1].file.file_size"],
        ),
        (
            vec![(
                "/traffic/-",
                Some(json!({"name": "load", "tcp": {"address": "h:1"}})),
            )],
            vec!["traffic[1].name"],
        ),
        (
            vec![("/faults", Some(json!([])))],
            vec!["faults", "expect[0].during"],
        ),
        (
            vec![("/faults/0/start", Some(json!("later")))],
            vec!["faults[0].start"],
        ),
        (
            vec![("/faults/0/duration", Some(json!("90s")))],
            vec!["faults[0].duration"],
        ),
        (
            vec![("/faults/0/after", Some(json!("eio")))],
            vec!["faults[0].after"],
        ),
        (
            vec![("/faults/0/after", Some(json!("warmup")))],
            vec!["faults[0].after"],
        ),
        (
            vec![("/faults/0/fault/duration", Some(json!("20s")))],
            vec!["faults[0].fault.duration"],
        ),
        (vec![("/target", None)], vec!["faults[0].fault"]),
        (
            vec![(
                "/faults/-",
                Some(json!({"name": "eio", "after": "eio", "duration": "50s",
                    "fault": {"kind": "net", "action": "loss", "percent": 5}})),
            )],
            vec!["faults[1].name", "faults[1].duration"],
        ),
        (vec![("/expect/0/traffic", None)], vec!["expect[0]"]),
        (
            vec![("/expect/0/probe", Some(json!("up")))],
            vec!["expect[0]"],
        ),
        (
            vec![("/expect/0/traffic", Some(json!("writes")))],
            vec!["expect[0].traffic"],
        ),
        (
            vec![("/expect/0/during", Some(json!("partition")))],
            vec!["expect[0].during"],
        ),
        (vec![("/expect/0/error_rate", None)], vec!["expect[0]"]),
        (
            vec![("/expect/0/error_rate", Some(json!("10%")))],
            vec!["expect[0].error_rate"],
        ),
        (
            vec![("/expect/0/error_rate", Some(json!(">= 10")))],
            vec!["expect[0].error_rate"],
        ),
        (
            vec![("/expect/0/error_rate", Some(json!(">= 150%")))],
            vec!["expect[0].error_rate"],
        ),
        (
            vec![("/expect/0/p99", Some(json!(">= fast")))],
            vec!["expect[0].p99"],
        ),
        (
            vec![("/expect/0/fails", Some(json!("> 0%")))],
            vec!["expect[0].fails"],
        ),
        (
            vec![("/expect/0/settle", Some(json!("20s")))],
            vec!["expect[0].settle"],
        ),
        (
            vec![(
                "/expect/-",
                Some(json!({"fault": "eio", "acted": ">= 1.5"})),
            )],
            vec!["expect[1].acted"],
        ),
        (
            vec![
                (
                    "/traffic/-",
                    Some(json!({"name": "bench", "command": {"run": ["pgbench"]}})),
                ),
                ("/expect/0/traffic", Some(json!("bench"))),
            ],
            vec!["expect[0].error_rate"],
        ),
        (
            vec![
                ("/baseline", Some(json!("0s"))),
                ("/expect/0/throughput", Some(json!("<= 50%"))),
            ],
            vec!["expect[0].throughput"],
        ),
        (
            vec![("/recovery/within", Some(json!("0s")))],
            vec!["recovery.within"],
        ),
        (
            vec![("/recovery/hold", Some(json!("1m")))],
            vec!["recovery.hold"],
        ),
        (
            vec![("/recovery/probes", Some(json!(["down"])))],
            vec!["recovery.probes[0]"],
        ),
        (
            vec![(
                "/recovery/expect",
                Some(json!([{"during": "eio", "traffic": "load", "error_rate": "<= 1%"}])),
            )],
            vec!["recovery.expect[0].during"],
        ),
        (
            vec![(
                "/recovery/expect",
                Some(json!([{"fault": "eio", "acted": ">= 1"}])),
            )],
            vec!["recovery.expect[0].fault", "recovery.expect[0]"],
        ),
        (vec![("/abort/0/down_for", None)], vec!["abort[0]"]),
        (
            vec![("/abort/0/error_rate", Some(json!("> 50%")))],
            vec!["abort[0].error_rate"],
        ),
        (
            vec![(
                "/abort/-",
                Some(json!({"traffic": "load", "down_for": "5s"})),
            )],
            vec!["abort[1].down_for", "abort[1]"],
        ),
        (
            vec![("/abort/-", Some(json!({"traffic": "lod", "p99": "> 5s"})))],
            vec!["abort[1].traffic"],
        ),
        (
            vec![("/abort/-", Some(json!({"error_rate": "> 5%"})))],
            vec!["abort[1]"],
        ),
        (
            vec![(
                "/abort/-",
                Some(json!({"traffic": "load", "error_rate": "> 5%", "for": "ever"})),
            )],
            vec!["abort[1].for"],
        ),
    ];
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for (patches, want) in cases {
        let mut v = base();
        for (pointer, value) in &patches {
            set(&mut v, pointer, value.clone());
        }
        let (got, message) = error_fields(v);
        if got != want {
            wrong.push(format!("{patches:?}: want {want:?}, got:\n{message}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn text_errors_name_their_fields() {
    let yaml = EXAMPLES[0].1;
    let cases: Vec<(Format, String, &str)> = vec![
        // The parser reads lazily: a syntax error names where it was, with line and column.
        (Format::Yaml, "name: [".into(), "name"),
        (Format::Yaml, "\tname: x\n".into(), "experiment"),
        (Format::Yaml, "- just\n- a list\n".into(), "experiment"),
        (Format::Yaml, String::new(), "experiment"),
        (
            Format::Yaml,
            yaml.replace("    interval: 1s\n", "    interval: 1s\n    interval: 2s\n"),
            "probes[0].interval",
        ),
        (Format::Yaml, format!("{yaml}name: again\n"), "name"),
        (
            Format::Yaml,
            yaml.replace("    interval: 1s\n", "    interval: .nan\n"),
            "probes[0].interval",
        ),
        (
            Format::Yaml,
            yaml.replace("\"5432\", -t", "5432, -t"),
            "probes[0].command.run[4]",
        ),
        (
            Format::Yaml,
            yaml.replace("errno: EIO", "errno: EIO\n      prcent: 5"),
            "faults[0].fault.prcent",
        ),
        (Format::Json, "{\"name\": \"x\"} {}".into(), "experiment"),
        (
            Format::Json,
            "{\"name\": \"x\", \"name\": \"y\"}".into(),
            "name",
        ),
        (
            Format::Json,
            "{\"name\": \"x\", \"duration\": \"1m\", \"faults\": [{\"name\": 7}]}".into(),
            "faults[0].name",
        ),
        (Format::Toml, "name = ".into(), "experiment"),
        (
            Format::Toml,
            "name = \"x\"\nduration = 60\nfaults = []\n".into(),
            "duration",
        ),
    ];
    let mut wrong = Vec::new();
    for (format, text, field) in cases {
        let e = format.parse(&text).unwrap_err();
        if e.fields().first().copied() != Some(field) {
            wrong.push(format!("{format:?} {text:?}: want {field}, got:\n{e}"));
        }
        for line in &e.0 {
            let message = line.to_string();
            assert!(!message.contains('\n'), "{message:?}");
            assert!(message.contains("; "), "a fix: {message}");
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn comparisons() {
    let c = parse_comparison(">= 10%", Measure::Percent).unwrap();
    assert_eq!(c.op, CmpOp::Ge);
    assert_eq!(c.value, Quantity::Percent(10.0));
    assert_eq!(
        parse_comparison("<=200ms", Measure::Latency).unwrap().value,
        Quantity::Millis(200.0)
    );
    assert_eq!(
        parse_comparison(" > 1s 500ms", Measure::Latency)
            .unwrap()
            .value,
        Quantity::Millis(1500.0)
    );
    assert_eq!(
        parse_comparison("!= 0", Measure::Count).unwrap().op,
        CmpOp::Ne
    );
    assert_eq!(
        parse_comparison("< 50%", Measure::Throughput)
            .unwrap()
            .value,
        Quantity::Percent(50.0)
    );
    assert_eq!(
        parse_comparison("> 120.5", Measure::Throughput)
            .unwrap()
            .value,
        Quantity::Number(120.5)
    );
    assert_eq!(
        parse_comparison("== -3", Measure::Number).unwrap().value,
        Quantity::Number(-3.0)
    );
    for (text, measure) in [
        ("10%", Measure::Percent),
        ("=> 10%", Measure::Percent),
        (">= 10", Measure::Percent),
        (">= -1%", Measure::Percent),
        (">= 1", Measure::Latency),
        (">= 1.5", Measure::Count),
        (">= -5", Measure::Throughput),
        ("< NaN", Measure::Number),
        ("< inf", Measure::Number),
        ("", Measure::Number),
    ] {
        assert!(
            parse_comparison(text, measure).is_err(),
            "{text:?} as {measure:?}"
        );
    }
    assert!(CmpOp::Ge.holds(10.0, 10.0));
    assert!(!CmpOp::Gt.holds(10.0, 10.0));
    assert!(CmpOp::Lt.holds(1.0, 2.0));
    assert!(CmpOp::Le.holds(2.0, 2.0));
    assert!(CmpOp::Eq.holds(0.0, 0.0));
    assert!(CmpOp::Ne.holds(1.0, 0.0));
}

#[test]
fn the_doc_shows_real_errors() {
    let doc = include_str!("../../../docs/experiments.md");
    let section = doc
        .split_once("## Errors\n")
        .and_then(|(_, rest)| rest.split_once("\n## "))
        .map(|(section, _)| section)
        .expect("an Errors section");
    let blocks = |tag: &str| -> Vec<&str> {
        section
            .split(&format!("```{tag}\n"))
            .skip(1)
            .filter_map(|b| b.split_once("```").map(|(b, _)| b))
            .collect()
    };
    let (specs, outputs) = (blocks("yaml"), blocks("text"));
    assert_eq!(specs.len(), 2, "two bad specs");
    assert_eq!(specs.len(), outputs.len());
    for (spec, output) in specs.iter().zip(outputs) {
        let errors = match from_yaml(spec) {
            Ok(s) => s.validate().expect_err("a bad spec"),
            Err(e) => e,
        };
        assert_eq!(errors.to_string(), output.trim_end(), "{spec}");
    }
}
