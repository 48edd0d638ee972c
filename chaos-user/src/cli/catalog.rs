//! `chaos catalog list|show`: the risk catalog's scenarios (`docs/catalog.md`).

use std::process::ExitCode;

use anyhow::Context;
use chaos_user::catalog::{self, Domain, Scenario};

/// Arguments of `chaos catalog`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// List the scenarios: id, domain, severity, title.
    List {
        /// Only this domain: oceanbase, mysql, postgresql, redis, queue, generic.
        #[arg(long)]
        domain: Option<String>,
        /// Every scenario in full, as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Show one scenario: the risk, its parameters, the drill, what is expected, the advice.
    Show {
        /// The scenario's id (`chaos catalog list`).
        id: String,
        /// The scenario as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `chaos catalog`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::List { domain, json } => {
            let domain = match domain {
                Some(d) => Some(d.parse::<Domain>()?),
                None => None,
            };
            let list = catalog::list(domain);
            if json {
                super::print_json(&list)?;
            } else {
                print_table(&list);
            }
        }
        Command::Show { id, json } => {
            let s = catalog::get(&id)?;
            if json {
                super::print_json(s)?;
            } else {
                print!("{}", show(s)?);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(list: &[&Scenario]) {
    let w = list.iter().map(|s| s.id.len()).max().unwrap_or(2).max(2);
    println!("{:<w$}  {:<10}  {:<8}  TITLE", "ID", "DOMAIN", "SEVERITY");
    for s in list {
        println!(
            "{:<w$}  {:<10}  {:<8}  {}",
            s.id,
            s.domain.as_str(),
            s.severity.as_str(),
            s.title
        );
    }
}

/// Wraps `text` at 96 columns, each line indented by `indent`.
fn wrap(text: &str, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + line.len() + 1 + word.len() > 96 {
            out.push_str(indent);
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(indent);
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The indented body of top-level field `key` in scenario `id`'s file, as written.
fn file_section(id: &str, key: &str) -> Option<&'static str> {
    let (_, text) = catalog::FILES.iter().find(|(f, _)| *f == id)?;
    let head = format!("{key}:\n");
    let start = if text.starts_with(&head) {
        head.len()
    } else {
        text.find(&format!("\n{head}"))? + 1 + head.len()
    };
    let body = &text[start..];
    let end = body
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .find(|&i| body[i..].chars().next().is_some_and(|c| !c.is_whitespace()))
        .unwrap_or(body.len());
    Some(&body[..end])
}

/// The scenario, readable: the risk, the parameters, the drill as YAML, the advice, and the
/// command that runs it.
fn show(s: &Scenario) -> anyhow::Result<String> {
    let mut out = format!(
        "{}  ({}, severity {})\n{}\n\nRisk\n{}",
        s.id,
        s.domain.as_str(),
        s.severity.as_str(),
        s.title,
        wrap(&s.risk, "  ")
    );
    out.push_str("\nParameters (--set NAME=VALUE)\n");
    for p in &s.parameters {
        let need = match &p.default {
            Some(d) => format!("default {d}"),
            None => "required".into(),
        };
        out.push_str(&format!(
            "  {:<16} {:<9} {need}; e.g. {}\n",
            p.name,
            p.ty.as_str(),
            p.example
        ));
        out.push_str(&wrap(&p.description, "      "));
    }
    out.push_str("\nExpected of a resilient system\n");
    out.push_str(&wrap(&s.expected, "  "));
    for (title, list) in [
        ("How to detect it in production", &s.detect),
        ("Prevention", &s.prevention),
        ("Emergency", &s.emergency),
    ] {
        out.push_str(&format!("\n{title}\n"));
        for item in list {
            let w = wrap(item, "    ");
            out.push_str("  -");
            out.push_str(w.get(3..).unwrap_or("\n"));
        }
    }
    out.push_str("\nThe drill (docs/experiments.md; ${NAME} is a parameter)\n");
    match file_section(&s.id, "experiment") {
        // As the file writes it, in its order.
        Some(text) => out.push_str(text),
        None => {
            let drill =
                serde_norway::to_string(&s.experiment).context("writing the drill out as YAML")?;
            for line in drill.lines() {
                out.push_str("  ");
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    let sets: Vec<String> = s
        .parameters
        .iter()
        .filter(|p| p.required())
        .map(|p| format!("--set {}={}", p.name, p.example))
        .collect();
    out.push_str(&format!(
        "\nRun it\n  chaos run --scenario {} {}\n",
        s.id,
        sets.join(" ")
    ));
    Ok(out)
}
