//! The man page (packaging/pdns-ha.1, shipped in the Debian package) is written by hand:
//! its synopsis must name, for every command, exactly the options `pdns-ha --help` names,
//! so that neither can gain or lose a flag alone.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use crate::util::BIN;

/// Command ("pipe", "metric latency", ...) to the options its synopsis names; `MEMCACHED`
/// stands for the memcached options.
type Synopsis = BTreeMap<String, BTreeSet<String>>;

/// Every `--flag` in `text`, plus `MEMCACHED` where it is named.
fn flags(text: &str) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter_map(|w| w.strip_prefix("--"))
        .filter(|w| !w.is_empty())
        .map(|w| format!("--{w}"))
        .collect();
    if text.contains("MEMCACHED") {
        out.insert("MEMCACHED".into());
    }
    out
}

/// The usage block of `--help`: one entry per `  pdns-ha ...` line and its continuations.
fn from_help(help: &str) -> Synopsis {
    let usage = help.split("usage:\n").nth(1).unwrap();
    let usage = usage.split("\nMEMCACHED (").next().unwrap();
    let mut out = Synopsis::new();
    let mut current = String::new();
    for line in usage.lines() {
        if let Some(rest) = line.strip_prefix("  pdns-ha ") {
            let words: Vec<&str> = rest
                .split_whitespace()
                .take_while(|w| !w.starts_with("--"))
                .collect();
            current = match words.as_slice() {
                ["[pipe]", ..] => "pipe".into(),
                [] => "".into(),
                ["metric", kind, ..] => format!("metric {kind}"),
                [cmd, ..] => (*cmd).into(),
            };
            out.entry(current.clone()).or_default().extend(flags(rest));
        } else if line.trim_start().starts_with("(metric also takes") {
            // Applies to every kind of metric.
            for (cmd, f) in out.iter_mut() {
                if cmd.starts_with("metric ") {
                    f.extend(flags(line));
                }
            }
        } else {
            out.entry(current.clone()).or_default().extend(flags(line));
        }
    }
    out
}

/// The man page's SYNOPSIS: entries end at `.br`.
fn from_man(man: &str) -> Synopsis {
    let syn = man.split(".SH SYNOPSIS\n").nth(1).unwrap();
    let syn = syn.split(".SH DESCRIPTION").next().unwrap();
    let mut out = Synopsis::new();
    for entry in syn.split(".br\n") {
        let text = entry.replace("\\-", "-");
        let first = text.lines().next().unwrap_or("");
        let cmd = first.strip_prefix(".B pdns-ha").unwrap_or("").trim();
        let cmd = if cmd.is_empty() && text.contains(".RB [ pipe ]") {
            "pipe"
        } else {
            cmd
        };
        out.insert(cmd.to_owned(), flags(&text));
    }
    out
}

#[test]
fn man_page_synopsis_names_the_options_help_names() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let man = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/pdns-ha.1"))
        .unwrap();
    let (want, got) = (from_help(&help), from_man(&man));
    assert!(want.contains_key("observe") && want["observe"].contains("--metrics-listen"));
    assert!(want["metric load"].contains("--monitor-id"));
    let mut problems = Vec::new();
    for cmd in want.keys().chain(got.keys()).collect::<BTreeSet<_>>() {
        let (w, g) = (want.get(cmd), got.get(cmd));
        let (Some(w), Some(g)) = (w, g) else {
            problems.push(format!(
                "{cmd:?}: in --help {}, in the man page {}",
                w.is_some(),
                g.is_some()
            ));
            continue;
        };
        let lacking: Vec<_> = w.difference(g).collect();
        let extra: Vec<_> = g.difference(w).collect();
        if !lacking.is_empty() || !extra.is_empty() {
            problems.push(format!(
                "{cmd:?}: man page lacks {lacking:?}, has beyond --help {extra:?}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
