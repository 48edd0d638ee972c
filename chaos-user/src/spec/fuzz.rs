//! Property tests (issue 7): spec parsing, planning and the value parsers are fed arbitrary input
//! and must refuse it in one line, never panic; well-typed specs survive a trip through JSON.
//! Planning only reads the system (`/proc`, sysfs, cgroupfs, `ip route`), so random specs are
//! safe to plan here; process ids are kept to ones that cannot be another process's (0, init,
//! this test, above `PID_MAX_LIMIT`) so no stranger's sockets are looked at.

use proptest::prelude::*;
use serde_json::Value;

use crate::{
    Error,
    plan::{self, parse_duration, parse_size},
    spec::{
        Direction, DiskAction, DiskSpec, Distribution, FaultSpec, IoAction, IoOp, IoSpec, KINDS,
        NetAction, NetSpec, Proto, SyscallAction, SyscallSpec, from_json,
    },
};

/// Cases per property: enough to find the odd input, few enough to run in seconds.
const CASES: u32 = 256;
/// Cases for the properties that plan (each may read /proc or run `ip`).
const PLAN_CASES: u32 = 96;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Panics found are kept as named regression tests below instead of files.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Every field name of every family, and a few near misses.
const FIELD_NAMES: &[&str] = &[
    "kind",
    "action",
    "percent",
    "correlation",
    "latency",
    "jitter",
    "distribution",
    "rate",
    "interface",
    "netns",
    "target_pid",
    "direction",
    "dst",
    "src",
    "dport",
    "sport",
    "proto",
    "cgroup",
    "pid",
    "exclude",
    "force",
    "duration",
    "syscall",
    "errno",
    "path_prefix",
    "after",
    "every",
    "max_count",
    "signal",
    "follow_children",
    "comm",
    "device",
    "path",
    "op",
    "sector_range",
    "read_bps",
    "write_bps",
    "read_iops",
    "write_iops",
    "bytes",
    "free",
    "virtual",
    "target-pid",
    "Percent",
    "",
];

/// Strings that have broken parsers before, or might: empty, huge numbers, signs, units, NUL,
/// non-ASCII, paths out of a directory, ranges, prefixes.
const ODD: &[&str] = &[
    "",
    " ",
    "\0",
    "-",
    "-1",
    "0",
    "1",
    "1.5",
    "1e309",
    "NaN",
    "inf",
    "99999999999999999999",
    "18446744073709551615",
    "18446744073709551616",
    "4294967296",
    "-2147483648",
    "2147483648",
    "18446744073709551615s",
    "584542046091y",
    "9999999999999999999999h",
    "1h 30m",
    "100ms",
    "0s",
    "1ns",
    "1.5k",
    "0.0000001t",
    "99999999t",
    "1e3mbit",
    "8bit",
    ".mbit",
    "..",
    "../..",
    "/",
    "/proc/self/ns/net",
    "/proc/self/status",
    "/dev/null",
    "/nonexistent/chaos",
    "lo",
    "chaos-nope0",
    "10.0.0.0/8",
    "10.0.0.0/33",
    "::1",
    "fd00::/129",
    "1-65535",
    "65535-1",
    "1-",
    "-1-",
    "0-0",
    "0:0",
    "7:0",
    "4294967295:4294967295",
    "EIO",
    "eio",
    "SIGKILL",
    "sig",
    "SIG",
    "openat,fsync",
    ",,,",
    "fsync,",
    "ñé漢字",
    "a\u{0}b",
    "\u{feff}30s",
];

// Strategies are boxed: the value trees of wide tuples of unboxed strategies overflow a test
// thread's 2 MiB stack in debug builds.
fn odd_string() -> BoxedStrategy<String> {
    prop_oneof![
        4 => proptest::sample::select(ODD).prop_map(str::to_owned),
        2 => "[ -~]{0,24}",
        1 => any::<String>(),
    ]
    .boxed()
}

fn odd_f64() -> BoxedStrategy<f64> {
    prop_oneof![
        2 => proptest::sample::select(&[
            0.0,
            -0.0,
            100.0,
            100.000_000_1,
            -1e-300,
            1e-300,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            f64::EPSILON,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ][..]),
        1 => -200.0..200.0f64,
        1 => any::<f64>(),
    ]
    .boxed()
}

fn odd_u64() -> BoxedStrategy<u64> {
    prop_oneof![
        proptest::sample::select(&[0, 1, 2, u32::MAX as u64, u64::MAX - 1, u64::MAX][..]),
        any::<u64>(),
    ]
    .boxed()
}

/// Process ids that are no stranger's: 0, init, this process, none at all.
fn pid() -> BoxedStrategy<u32> {
    one_of(&[0, 1, std::process::id(), 4_194_304, u32::MAX])
}

/// One of `good` most of the time, an odd string otherwise: random specs then get past their
/// first field often enough to reach the later checks.
fn pick(good: &'static [&'static str]) -> BoxedStrategy<String> {
    prop_oneof![
        3 => proptest::sample::select(good).prop_map(str::to_owned),
        1 => odd_string(),
    ]
    .boxed()
}

/// `Some` with probability `p`.
fn maybe<T: std::fmt::Debug + Clone + 'static>(
    p: f64,
    s: BoxedStrategy<T>,
) -> BoxedStrategy<Option<T>> {
    proptest::option::weighted(p, s).boxed()
}

/// Often empty, else up to two of `good` (or odd strings).
fn list(good: &'static [&'static str]) -> BoxedStrategy<Vec<String>> {
    prop_oneof![
        2 => Just(Vec::new()),
        1 => proptest::collection::vec(pick(good), 1..3),
    ]
    .boxed()
}

fn percent() -> BoxedStrategy<f64> {
    prop_oneof![3 => 0.0..=100.0f64, 1 => odd_f64()].boxed()
}

fn count() -> BoxedStrategy<u64> {
    prop_oneof![3 => 1..1000u64, 1 => odd_u64()].boxed()
}

fn one_of<T: std::fmt::Debug + Clone + 'static>(all: &[T]) -> BoxedStrategy<T> {
    proptest::sample::select(all.to_vec()).boxed()
}

const CGROUPS: &[&str] = &["chaos-nope", "/", "", "chaos-nope/.."];
const DURATIONS: &[&str] = &["10s", "1m", "1h", "7d"];

fn net_spec() -> BoxedStrategy<NetSpec> {
    let effect = (
        one_of(&NetAction::ALL),
        maybe(0.7, percent()),
        maybe(0.2, percent()),
        maybe(0.4, pick(&["10ms", "100ms", "1s", "10s"])),
        maybe(0.2, pick(&["1ms", "5ms", "100ms"])),
        maybe(
            0.2,
            one_of(&[
                Distribution::Uniform,
                Distribution::Normal,
                Distribution::Pareto,
                Distribution::Paretonormal,
            ]),
        ),
        maybe(0.3, pick(&["1mbit", "10mbps", "500kbit"])),
    )
        .boxed();
    let place = (
        maybe(0.85, pick(&["lo", "lo", "chaos-nope0"])),
        maybe(0.15, pick(&["/proc/self/ns/net"])),
        maybe(0.05, pid()),
        maybe(
            0.3,
            one_of(&[Direction::Egress, Direction::Ingress, Direction::Both]),
        ),
    )
        .boxed();
    let select = (
        list(&["10.0.0.0/8", "127.0.0.1", "fd00::/64", "192.0.2.1"]),
        list(&["10.0.0.0/8", "::1"]),
        maybe(0.3, pick(&["80", "8000-8100", "22", "1-65535"])),
        maybe(0.2, pick(&["1024-65535", "53"])),
        maybe(0.3, one_of(&[Proto::Tcp, Proto::Udp, Proto::Icmp])),
        list(CGROUPS),
        // The sockets of no process, or of this one: never a stranger's.
        maybe(0.05, one_of(&[0, std::process::id(), 4_194_304])),
        list(&["22", "10.0.0.0/8", "80"]),
        any::<bool>(),
        maybe(0.5, pick(DURATIONS)),
    )
        .boxed();
    (effect, place, select)
        .prop_map(
            |(
                (action, percent, correlation, latency, jitter, distribution, rate),
                (interface, netns, target_pid, direction),
                (dst, src, dport, sport, proto, cgroup, pid, exclude, force, duration),
            )| NetSpec {
                action,
                percent,
                correlation,
                latency,
                jitter,
                distribution,
                rate,
                interface,
                netns,
                target_pid,
                direction,
                dst,
                src,
                dport,
                sport,
                proto,
                cgroup,
                pid,
                exclude,
                force,
                duration,
            },
        )
        .boxed()
}

fn syscall_spec() -> BoxedStrategy<SyscallSpec> {
    let what = (
        one_of(&SyscallAction::ALL),
        proptest::collection::vec(
            pick(&["fsync", "openat", "write", "connect", "read,write", "257"]),
            0..3,
        ),
        maybe(0.7, pick(&["EIO", "ENOSPC", "5"])),
        maybe(0.3, percent()),
        maybe(0.3, pick(&["/var/lib/db", "/tmp"])),
        maybe(0.2, count()),
        maybe(0.2, count()),
        maybe(0.2, count()),
        maybe(0.3, pick(&["200ms", "1s", "60s"])),
        maybe(0.2, pick(&["SIGKILL", "TERM", "6"])),
    )
        .boxed();
    let whom = (
        maybe(0.4, pid()),
        any::<bool>(),
        maybe(0.2, pick(CGROUPS)),
        maybe(0.4, pick(&["chaos-nobody", "postgres"])),
        any::<bool>(),
        maybe(0.5, pick(DURATIONS)),
    )
        .boxed();
    (what, whom)
        .prop_map(
            |(
                (
                    action,
                    syscall,
                    errno,
                    percent,
                    path_prefix,
                    after,
                    every,
                    max_count,
                    latency,
                    signal,
                ),
                (pid, follow_children, cgroup, comm, force, duration),
            )| SyscallSpec {
                action,
                syscall,
                errno,
                percent,
                path_prefix,
                after,
                every,
                max_count,
                latency,
                signal,
                pid,
                follow_children,
                cgroup,
                comm,
                force,
                duration,
            },
        )
        .boxed()
}

fn io_spec() -> BoxedStrategy<IoSpec> {
    let what = (
        one_of(&IoAction::ALL),
        maybe(
            0.7,
            pick(&["/dev/chaos-nope0", "/", "7:0", "/dev/null", "/proc"]),
        ),
        maybe(0.3, pick(&["/", "/tmp", "/nonexistent/chaos"])),
        maybe(
            0.3,
            one_of(&[
                IoOp::Read,
                IoOp::Write,
                IoOp::Flush,
                IoOp::Discard,
                IoOp::Any,
            ]),
        ),
        maybe(0.3, pick(&["EIO", "ENOSPC"])),
        maybe(0.3, percent()),
        maybe(0.2, pick(&["0-2047", "5-1"])),
    )
        .boxed();
    let limits = (
        maybe(0.3, pick(&["2mb", "1k", "1"])),
        maybe(0.3, pick(&["2mb", "10G"])),
        maybe(0.2, count()),
        maybe(0.2, count()),
    )
        .boxed();
    let whom = (
        maybe(0.4, pid()),
        maybe(0.3, pick(CGROUPS)),
        any::<bool>(),
        maybe(0.5, pick(DURATIONS)),
    )
        .boxed();
    (what, limits, whom)
        .prop_map(
            |(
                (action, device, path, op, errno, percent, sector_range),
                (read_bps, write_bps, read_iops, write_iops),
                (pid, cgroup, force, duration),
            )| IoSpec {
                action,
                device,
                path,
                op,
                errno,
                percent,
                sector_range,
                read_bps,
                write_bps,
                read_iops,
                write_iops,
                pid,
                cgroup,
                force,
                duration,
            },
        )
        .boxed()
}

fn disk_spec() -> BoxedStrategy<DiskSpec> {
    (
        pick(&["/", "/tmp", "/dev", "/nonexistent/chaos", ""]),
        maybe(0.5, percent()),
        maybe(0.3, pick(&["1M", "10G", "0"])),
        maybe(0.3, pick(&["100M", "1T"])),
        any::<bool>(),
        maybe(0.3, pid()),
        maybe(0.2, pick(CGROUPS)),
        any::<bool>(),
        maybe(0.5, pick(DURATIONS)),
    )
        .prop_map(
            |(path, percent, bytes, free, virtual_fill, pid, cgroup, force, duration)| DiskSpec {
                action: DiskAction::Fill,
                path,
                percent,
                bytes,
                free,
                virtual_fill,
                pid,
                cgroup,
                force,
                duration,
            },
        )
        .boxed()
}

fn any_spec() -> impl Strategy<Value = FaultSpec> {
    prop_oneof![
        net_spec().prop_map(FaultSpec::Net),
        syscall_spec().prop_map(FaultSpec::Syscall),
        io_spec().prop_map(FaultSpec::Io),
        disk_spec().prop_map(FaultSpec::Disk),
    ]
}

/// Any JSON value, nested a little, with keys that are often real field names.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        odd_f64().prop_map(Value::from),
        odd_string().prop_map(Value::from),
        proptest::sample::select(KINDS.to_vec()).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(FIELD_NAMES).prop_map(str::to_owned),
        1 => odd_string(),
    ]
}

/// An object with a real kind and action and random other fields.
fn near_spec() -> impl Strategy<Value = Value> {
    let actions: Vec<(&str, &str)> = NetAction::ALL
        .iter()
        .map(|a| ("net", a.as_str()))
        .chain(SyscallAction::ALL.iter().map(|a| ("syscall", a.as_str())))
        .chain(IoAction::ALL.iter().map(|a| ("io", a.as_str())))
        .chain(DiskAction::ALL.iter().map(|a| ("disk", a.as_str())))
        .collect();
    (
        proptest::sample::select(actions),
        proptest::collection::vec((key(), json_value()), 0..6),
    )
        .prop_map(|((kind, action), fields)| {
            let mut map = serde_json::Map::new();
            map.insert("kind".into(), kind.into());
            map.insert("action".into(), action.into());
            map.extend(fields);
            Value::Object(map)
        })
}

/// A refusal must be one line; a refusal of JSON must name a field.
fn check_refusal(e: &Error) -> Result<(), TestCaseError> {
    let message = e.to_string();
    prop_assert!(!message.contains('\n'), "not one line: {message:?}");
    Ok(())
}

fn check_json(text: &str) -> Result<(), TestCaseError> {
    if let Err(e) = from_json(text) {
        check_refusal(&e)?;
        prop_assert!(
            e.field().is_some_and(|f| !f.is_empty()),
            "names no field: {e}"
        );
    }
    Ok(())
}

fn check_plan(spec: &FaultSpec) -> Result<(), TestCaseError> {
    match plan::plan(spec) {
        Ok(_) => Ok(()),
        Err(e) => check_refusal(&e),
    }
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn any_text_is_refused_or_read(text in any::<String>()) {
        check_json(&text)?;
    }

    #[test]
    fn any_json_is_refused_or_read(value in json_value()) {
        check_json(&value.to_string())?;
    }

    #[test]
    fn near_specs_are_refused_or_read(value in near_spec()) {
        check_json(&value.to_string())?;
    }

    #[test]
    fn broken_spec_text_is_refused_or_read(
        spec in any_spec(),
        cuts in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4),
    ) {
        // Well-formed JSON of a spec, then a few bytes replaced: quotes, braces and digits
        // land anywhere.
        const PUNCTUATION: &[u8] = b"{}[]\",:0-9.e \\";
        let mut bytes = serde_json::to_string(&spec).unwrap().into_bytes();
        for (at, b) in cuts {
            let i = at.index(bytes.len());
            bytes[i] = PUNCTUATION[b as usize % PUNCTUATION.len()];
        }
        check_json(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn well_typed_specs_round_trip(spec in any_spec()) {
        // JSON has no NaN or infinity: serde_json writes them as null.
        let finite = |x: Option<f64>| x.is_none_or(f64::is_finite);
        let representable = match &spec {
            FaultSpec::Net(n) => finite(n.percent) && finite(n.correlation),
            FaultSpec::Syscall(s) => finite(s.percent),
            FaultSpec::Io(s) => finite(s.percent),
            FaultSpec::Disk(s) => finite(s.percent),
        };
        prop_assume!(representable);
        let text = serde_json::to_string(&spec).unwrap();
        prop_assert_eq!(&from_json(&text).unwrap(), &spec);
        prop_assert_eq!(&serde_json::from_str::<FaultSpec>(&text).unwrap(), &spec);
    }

    #[test]
    fn value_parsers_refuse_or_parse(text in odd_string(), n in any::<i32>(), x in odd_f64()) {
        for result in [
            parse_duration("duration", &text).map(drop),
            plan::fault_duration(Some(&text)).map(drop),
            parse_size("bytes", &text).map(drop),
            plan::parse_rate("rate", &text).map(drop),
            plan::parse_ports("dport", &text).map(drop),
            plan::parse_net("dst", &text).map(drop),
            plan::parse_syscall(&text).map(drop),
            plan::parse_errno(&text).map(drop),
            plan::parse_errno(&n.to_string()).map(drop),
            plan::parse_signal(&text).map(drop),
            plan::parse_signal(&n.to_string()).map(drop),
            plan::check_percent("percent", x).map(drop),
            plan::resolve_interface(None, &text).map(drop),
            plan::resolve_device(&text).map(drop),
        ] {
            if let Err(e) = result {
                check_refusal(&e)?;
            }
        }
        let _ = plan::errno_name(n);
        let _ = chaos_common::percent_to_threshold(x);
    }

    #[test]
    fn parsed_values_are_in_range(text in odd_string()) {
        if let Ok(d) = parse_duration("duration", &text) {
            prop_assert!(!d.is_zero() && d <= plan::MAX_DURATION);
        }
        if let Ok((lo, hi)) = plan::parse_ports("dport", &text) {
            prop_assert!(lo >= 1 && lo <= hi);
        }
        if let Ok(bytes) = plan::parse_rate("rate", &text) {
            prop_assert!(bytes >= 1);
        }
        if let Ok(n) = plan::parse_errno(&text) {
            prop_assert!(n > 0 && n < 4096);
        }
    }
}

proptest! {
    #![proptest_config(config(PLAN_CASES))]

    #[test]
    fn random_net_specs_plan_or_refuse(spec in net_spec()) {
        check_plan(&FaultSpec::Net(spec))?;
    }

    #[test]
    fn random_syscall_specs_plan_or_refuse(spec in syscall_spec()) {
        let exec = plan::plan_exec(&spec);
        if let Err(e) = &exec {
            check_refusal(e)?;
        }
        check_plan(&FaultSpec::Syscall(spec))?;
    }

    #[test]
    fn random_io_specs_plan_or_refuse(spec in io_spec()) {
        check_plan(&FaultSpec::Io(spec))?;
    }

    #[test]
    fn random_disk_specs_plan_or_refuse(spec in disk_spec()) {
        check_plan(&FaultSpec::Disk(spec))?;
    }
}

/// Found while building the bad-spec corpus: `..` spelled the root cgroup past the root-cgroup
/// guards (they compared paths as written), and could name a directory of another hierarchy.
mod root_cgroup_by_another_name {
    use std::path::Path;

    use crate::{
        mounts::CgroupMounts,
        plan,
        spec::{FaultSpec, SyscallAction, SyscallSpec},
    };

    fn name(root: &Path) -> String {
        root.file_name()
            .expect("a hierarchy below /")
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn is_the_root_cgroup_v2() {
        let root = CgroupMounts::read()
            .expect("mounts")
            .v2
            .expect("a cgroup v2 hierarchy");
        let name = name(&root);
        for spelling in [
            format!("../{name}"),
            format!("{}/../{name}", root.display()),
            format!("./../{name}/."),
        ] {
            let spec = SyscallSpec {
                action: SyscallAction::Fail,
                syscall: vec!["connect".into()],
                errno: Some("ECONNREFUSED".into()),
                cgroup: Some(spelling.clone()),
                ..SyscallSpec::default()
            };
            let err = plan::plan(&FaultSpec::Syscall(spec))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("invalid cgroup: the root cgroup"),
                "{spelling}: {err}"
            );
        }
    }

    #[test]
    fn is_the_root_of_the_io_hierarchy() {
        let Ok((root, _)) = plan::io_hierarchy() else {
            // Neither io (v2) nor blkio (v1) is mounted: no io cgroup resolves at all.
            assert!(plan::resolve_io_cgroup("x").is_err());
            return;
        };
        let cg = plan::resolve_io_cgroup(&format!("../{}", name(&root))).unwrap();
        assert!(cg.root, "{cg:?}");
        let err = plan::resolve_io_cgroup("../..").unwrap_err().to_string();
        assert!(err.starts_with("invalid cgroup:"), "{err}");
    }
}
