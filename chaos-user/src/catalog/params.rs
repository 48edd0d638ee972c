//! A scenario's parameters: their types, how a value given with `--set key=value` is checked,
//! and how `${name}` placeholders in the scenario's experiment are filled in.
//!
//! A string that is exactly one placeholder (`pid: "${pid}"`) becomes the value with its type
//! (a number for `pid`, `percent` and `count`, a string otherwise), so the experiment reads as
//! if the value had been written there; a placeholder inside a longer string
//! (`tcp: "${host}:${port}"`) is replaced by the value's text.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

/// What a parameter holds; a value is checked against it before anything is filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// A process id (a positive integer).
    Pid,
    /// A cgroup, as `--cgroup` takes it (`system.slice/redis.service`).
    Cgroup,
    /// An absolute path (a directory or a file).
    Path,
    /// A block device: `/dev/X`, `MAJ:MIN`, or any absolute path on its filesystem.
    Device,
    /// A TCP or UDP port, 1-65535.
    Port,
    /// `HOST:PORT`, IPv6 in brackets.
    Address,
    /// An IPv4 or IPv6 address, or a CIDR block.
    Ip,
    /// A network interface name.
    Interface,
    /// A duration: `500ms`, `30s`, `5m`.
    Duration,
    /// A size: `4096`, `4k`, `64M`, `2G`.
    Size,
    /// A percentage, 0-100.
    Percent,
    /// A whole number.
    Count,
    /// A plain HTTP URL.
    Url,
    /// Free text.
    Text,
}

impl ParamType {
    /// The type's name, as written in scenario files.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Pid => "pid",
            ParamType::Cgroup => "cgroup",
            ParamType::Path => "path",
            ParamType::Device => "device",
            ParamType::Port => "port",
            ParamType::Address => "address",
            ParamType::Ip => "ip",
            ParamType::Interface => "interface",
            ParamType::Duration => "duration",
            ParamType::Size => "size",
            ParamType::Percent => "percent",
            ParamType::Count => "count",
            ParamType::Url => "url",
            ParamType::Text => "text",
        }
    }

    /// What a value of this type looks like, for error messages.
    fn expected(self) -> &'static str {
        match self {
            ParamType::Pid => "a process id (a positive integer)",
            ParamType::Cgroup => "a cgroup path relative to the hierarchy's root, without `..`",
            ParamType::Path => "an absolute path",
            ParamType::Device => "a block device: /dev/X, MAJ:MIN or an absolute path on it",
            ParamType::Port => "a port, 1-65535",
            ParamType::Address => "HOST:PORT (IPv6 in brackets)",
            ParamType::Ip => "an IP address or CIDR block (10.0.2.7, 10.0.2.0/24, fd00::1)",
            ParamType::Interface => "an interface name (1-15 characters, no `/` or space)",
            ParamType::Duration => "a duration (500ms, 30s, 5m)",
            ParamType::Size => "a size (4096, 4k, 64M, 2G)",
            ParamType::Percent => "a percentage, 0-100",
            ParamType::Count => "a whole number",
            ParamType::Url => "an http:// URL",
            ParamType::Text => "some text",
        }
    }

    /// Checks `text` and gives the JSON value a whole-string placeholder becomes; `Err` says
    /// what is wrong.
    pub fn check(self, text: &str) -> Result<Value, String> {
        let bad = || Err(format!("`{text}` is not {}", self.expected()));
        if text.is_empty() {
            return Err(format!("it is empty; give {}", self.expected()));
        }
        match self {
            ParamType::Pid => match text.parse::<u32>() {
                Ok(p) if p > 0 => Ok(Value::from(p)),
                _ => bad(),
            },
            ParamType::Count => match text.parse::<u64>() {
                Ok(n) => Ok(Value::from(n)),
                _ => bad(),
            },
            ParamType::Percent => match text.parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Ok(Value::from(p)),
                _ => bad(),
            },
            ParamType::Cgroup => {
                if text.split('/').any(|c| c == "..") || text.contains(char::is_whitespace) {
                    bad()
                } else {
                    Ok(text.into())
                }
            }
            ParamType::Path => {
                if text.starts_with('/') && !text.contains('\0') {
                    Ok(text.into())
                } else {
                    bad()
                }
            }
            ParamType::Device => {
                let majmin = text
                    .split_once(':')
                    .is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok());
                if text.starts_with('/') || majmin {
                    Ok(text.into())
                } else {
                    bad()
                }
            }
            ParamType::Port => match text.parse::<u16>() {
                Ok(p) if p > 0 => Ok(text.into()),
                _ => bad(),
            },
            ParamType::Address => {
                let ok = text.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty()
                        && port.parse::<u16>().is_ok_and(|p| p > 0)
                        && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')))
                });
                if ok { Ok(text.into()) } else { bad() }
            }
            ParamType::Ip => {
                let (addr, len) = match text.split_once('/') {
                    Some((a, l)) => (a, Some(l)),
                    None => (text, None),
                };
                let ok = match (addr.parse::<IpAddr>(), len) {
                    (Ok(_), None) => true,
                    (Ok(ip), Some(l)) => l
                        .parse::<u8>()
                        .is_ok_and(|l| l <= if ip.is_ipv4() { 32 } else { 128 }),
                    (Err(_), _) => false,
                };
                if ok { Ok(text.into()) } else { bad() }
            }
            ParamType::Interface => {
                if text.len() <= 15 && !text.contains(['/', ' ', '\t', '\n', ':']) {
                    Ok(text.into())
                } else {
                    bad()
                }
            }
            ParamType::Duration => match crate::plan::parse_duration("value", text) {
                Ok(_) => Ok(text.into()),
                Err(_) => bad(),
            },
            ParamType::Size => match crate::plan::parse_size("value", text) {
                Ok(_) => Ok(text.into()),
                Err(_) => bad(),
            },
            ParamType::Url => {
                if text.starts_with("http://") && text.len() > "http://".len() {
                    Ok(text.into())
                } else {
                    bad()
                }
            }
            ParamType::Text => Ok(text.into()),
        }
    }
}

/// One parameter of a scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    /// Its name, as `${name}` in the experiment and `--set name=...` on the command line.
    pub name: String,
    /// What it holds.
    #[serde(rename = "type")]
    pub ty: ParamType,
    /// What to give, in plain words.
    pub description: String,
    /// A value that fits; the catalog's tests run every scenario with its examples.
    pub example: String,
    /// The value when none is given; without one the parameter is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

impl Parameter {
    /// Whether a value must be given.
    pub fn required(&self) -> bool {
        self.default.is_none()
    }

    /// One line for messages: `name (type, required): description, e.g. example`.
    pub fn describe(&self) -> String {
        let need = match &self.default {
            Some(d) => format!("default {d}"),
            None => "required".into(),
        };
        format!(
            "{} ({}, {need}): {}, e.g. {}",
            self.name,
            self.ty.as_str(),
            self.description,
            self.example
        )
    }
}

/// The values of `params` from `given` (`--set` pairs) and the defaults, each checked against
/// its type. Every problem is reported: unknown keys, missing required parameters, bad values,
/// each naming the parameter (`set.NAME`) and what is expected.
pub fn bind(
    params: &[Parameter],
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, (String, Value)>, Vec<Error>> {
    let mut errors = Vec::new();
    let known: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
    for key in given.keys() {
        if !known.contains(&key.as_str()) {
            errors.push(Error::InvalidField {
                field: format!("set.{key}"),
                problem: "this scenario has no such parameter".into(),
                fix: format!("its parameters are: {}", known.join(", ")),
            });
        }
    }
    let mut values = BTreeMap::new();
    for p in params {
        let text = match (given.get(&p.name), &p.default) {
            (Some(v), _) => v.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) => {
                errors.push(Error::InvalidField {
                    field: format!("set.{}", p.name),
                    problem: format!("the parameter is required: {}", p.description),
                    fix: format!(
                        "give it with --set {}=VALUE ({}), e.g. --set {}={}",
                        p.name,
                        p.ty.expected(),
                        p.name,
                        p.example
                    ),
                });
                continue;
            }
        };
        match p.ty.check(&text) {
            Ok(v) => {
                values.insert(p.name.clone(), (text, v));
            }
            Err(problem) => errors.push(Error::InvalidField {
                field: format!("set.{}", p.name),
                problem,
                fix: format!(
                    "give {}, e.g. --set {}={}",
                    p.description, p.name, p.example
                ),
            }),
        }
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(errors)
    }
}

/// The placeholder names in `text`, in order (`${name}`; a `$` not followed by `{` is text).
pub fn placeholders(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(j) => {
                out.push(&after[..j]);
                rest = &after[j + 1..];
            }
            None => break,
        }
    }
    out
}

/// Every placeholder name in the strings of `value` (keys are not looked at).
pub fn placeholders_in(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::String(s) => out.extend(placeholders(s).into_iter().map(str::to_owned)),
        Value::Array(items) => items.iter().for_each(|v| placeholders_in(v, out)),
        Value::Object(map) => map.values().for_each(|v| placeholders_in(v, out)),
        _ => {}
    }
}

/// `value` with every placeholder filled in from `values` (name -> (text, typed value)); a
/// placeholder with no value is left as it is (the catalog's tests make sure there is none).
pub fn substitute(value: &Value, values: &BTreeMap<String, (String, Value)>) -> Value {
    match value {
        Value::String(s) => {
            let names = placeholders(s);
            if names.len() == 1
                && s.len() == names[0].len() + 3
                && let Some((_, typed)) = values.get(names[0])
            {
                return typed.clone();
            }
            let mut out = s.clone();
            for name in names {
                if let Some((text, _)) = values.get(name) {
                    out = out.replace(&format!("${{{name}}}"), text);
                }
            }
            Value::String(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| substitute(v, values)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), substitute(v, values)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(name: &str, ty: ParamType, default: Option<&str>) -> Parameter {
        Parameter {
            name: name.into(),
            ty,
            description: format!("the {name}"),
            example: "1".into(),
            default: default.map(str::to_owned),
        }
    }

    #[test]
    fn types_check_their_values() {
        assert_eq!(ParamType::Pid.check("4242"), Ok(Value::from(4242u32)));
        assert!(ParamType::Pid.check("0").is_err());
        assert!(ParamType::Pid.check("abc").is_err());
        assert_eq!(ParamType::Port.check("5432"), Ok(Value::from("5432")));
        assert!(ParamType::Port.check("70000").is_err());
        assert!(ParamType::Address.check("127.0.0.1:6379").is_ok());
        assert!(ParamType::Address.check("[::1]:80").is_ok());
        assert!(ParamType::Address.check("::1:80").is_err());
        assert!(ParamType::Address.check("db:0").is_err());
        assert!(ParamType::Ip.check("10.0.2.0/24").is_ok());
        assert!(ParamType::Ip.check("10.0.2.0/33").is_err());
        assert!(ParamType::Ip.check("db.internal").is_err());
        assert!(ParamType::Path.check("var/lib").is_err());
        assert!(ParamType::Device.check("8:16").is_ok());
        assert!(ParamType::Device.check("sdb").is_err());
        assert!(ParamType::Duration.check("30s").is_ok());
        assert!(ParamType::Duration.check("thirty").is_err());
        assert!(ParamType::Size.check("64M").is_ok());
        assert_eq!(ParamType::Percent.check("30"), Ok(Value::from(30.0)));
        assert!(ParamType::Percent.check("130").is_err());
        assert!(ParamType::Cgroup.check("a/../b").is_err());
        assert!(ParamType::Interface.check("eth0").is_ok());
        assert!(ParamType::Interface.check("a-very-long-interface").is_err());
        assert!(ParamType::Url.check("https://x").is_err());
        assert!(ParamType::Text.check("").is_err());
    }

    #[test]
    fn bind_reports_every_problem_by_name() {
        let params = [
            param("pid", ParamType::Pid, None),
            param("port", ParamType::Port, Some("6379")),
            param("window", ParamType::Duration, None),
        ];
        let given = BTreeMap::from([
            ("window".to_owned(), "soon".to_owned()),
            ("colour".to_owned(), "red".to_owned()),
        ]);
        let errors = bind(&params, &given).unwrap_err();
        let fields: Vec<_> = errors.iter().filter_map(|e| e.field()).collect();
        assert_eq!(fields, ["set.colour", "set.pid", "set.window"]);
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(text[0].contains("pid, port, window"), "{}", text[0]);
        assert!(text[1].contains("--set pid="), "{}", text[1]);
        assert!(text[2].contains("`soon` is not a duration"), "{}", text[2]);
        let ok = bind(
            &params,
            &BTreeMap::from([
                ("pid".to_owned(), "7".to_owned()),
                ("window".to_owned(), "5s".to_owned()),
            ]),
        )
        .unwrap();
        assert_eq!(ok["port"].0, "6379");
        assert_eq!(ok["pid"].1, Value::from(7u32));
    }

    #[test]
    fn placeholders_are_found_and_filled_with_their_types() {
        assert_eq!(placeholders("${host}:${port} $x ${"), ["host", "port"]);
        let values = BTreeMap::from([
            ("pid".to_owned(), ("42".to_owned(), Value::from(42u32))),
            (
                "host".to_owned(),
                ("10.0.0.1".to_owned(), "10.0.0.1".into()),
            ),
            ("port".to_owned(), ("80".to_owned(), "80".into())),
        ]);
        let v = serde_json::json!({
            "target": {"pid": "${pid}"},
            "probes": [{"tcp": "${host}:${port}"}],
            "n": 3,
        });
        let out = substitute(&v, &values);
        assert_eq!(
            out,
            serde_json::json!({
                "target": {"pid": 42},
                "probes": [{"tcp": "10.0.0.1:80"}],
                "n": 3,
            })
        );
        let mut names = BTreeSet::new();
        placeholders_in(&v, &mut names);
        assert_eq!(
            names,
            BTreeSet::from(["host".into(), "pid".into(), "port".into()])
        );
    }
}
