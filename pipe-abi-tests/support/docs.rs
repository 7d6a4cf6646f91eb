//! Sample outputs in the docs that only an end-to-end run can print (real Kamailio, TLS
//! listeners, a monitor's scrape): the fenced block right after `<!-- from test: NAME -->` is
//! what the test that calls [`sample`] with NAME printed. Its latencies, ports and ages
//! differ from run to run, so the comparison is of the words: every number counts as one
//! digit and every run of blanks as one blank; `HOST` stands for this machine's name as a
//! writer's default monitor id. `BLESS=1` writes what the test printed into the docs
//! (refused under CI).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::util::{diff, in_ci, REPO};

pub const MARK: &str = "<!-- from test: ";

/// Held while a doc is rewritten (`BLESS=1`), here and by the command samples' test: two
/// tests writing one file at once would lose one's change.
pub static WRITING: Mutex<()> = Mutex::new(());

/// The markdown files samples may sit in: the README and `docs/*.md`.
pub fn files() -> Vec<PathBuf> {
    let mut files = vec![Path::new(REPO).join("README.md")];
    for e in std::fs::read_dir(Path::new(REPO).join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    files.sort();
    files
}

/// `text` with the parts that change between runs made equal.
pub fn loose(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut last = '\n';
        for c in line.trim_end().chars() {
            let c = match c {
                '0'..='9' => '0',
                ' ' | '\t' => ' ',
                c => c,
            };
            if !(c == last && (c == '0' || c == ' ')) {
                out.push(c);
            }
            last = c;
        }
        out.push('\n');
    }
    out
}

/// The rows of a table keyed by full target name (`status`'s targets) for `targets`, in the
/// table's order; a row is its name and two blanks, so the services' table below it (name,
/// one blank, transport) is not taken.
pub fn target_rows(table: &str, targets: &[&str]) -> String {
    (table.lines())
        .filter(|l| {
            targets
                .iter()
                .any(|t| l.strip_prefix(t).is_some_and(|r| r.starts_with("  ")))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The part of `text` from its first line that starts with `head` up to a blank line.
pub fn section(text: &str, head: &str) -> String {
    (text.lines())
        .skip_while(|l| !l.starts_with(head))
        .take_while(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect()
}

/// `text` with every whole-word `from` replaced by `to`.
fn replace_word(text: &str, from: &str, to: &str) -> String {
    let part = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(from) {
        let (before, after) = (&rest[..at], &rest[at + from.len()..]);
        let whole = !before.ends_with(part) && !after.starts_with(part);
        out.push_str(before);
        out.push_str(if whole { to } else { from });
        rest = after;
    }
    out + rest
}

/// The block of sample `name`: its file, the file's lines, and the lines inside the fence.
fn find(name: &str) -> (PathBuf, Vec<String>, std::ops::Range<usize>) {
    let marker = format!("{MARK}{name} -->");
    let mut found = Vec::new();
    for file in files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        for (i, _) in lines.iter().enumerate().filter(|(_, l)| **l == marker) {
            assert!(
                lines.get(i + 1).is_some_and(|l| l.starts_with("```")),
                "{}:{}: {marker} is not followed by a fence",
                file.display(),
                i + 1
            );
            let start = i + 2;
            let end = start
                + lines[start..]
                    .iter()
                    .position(|l| l.starts_with("```"))
                    .unwrap_or_else(|| panic!("{}: sample {name} never ends", file.display()));
            found.push((file.clone(), lines.clone(), start..end));
        }
    }
    assert_eq!(
        found.len(),
        1,
        "{marker} must mark exactly one block in the docs"
    );
    found.pop().unwrap()
}

/// Checks that the docs show what this test printed for sample `name` (or writes it there,
/// with `BLESS=1`).
pub fn sample(name: &str, printed: &str) {
    // What a writer calls itself without --monitor-id: the host name, or a fallback word.
    let host = pdns_ha::state::writer::default_monitor_id();
    let bless = std::env::var_os("BLESS").is_some();
    assert!(!(bless && in_ci()), "BLESS is refused under CI");
    let _writing = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    let (file, mut lines, block) = find(name);
    if bless {
        // The fallback word is also a word of the outputs: nothing to stand in for then.
        let printed = match host.as_str() {
            "monitor" => printed.to_owned(),
            _ => replace_word(printed, &host, "HOST"),
        };
        lines.splice(block, printed.lines().map(str::to_owned));
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        return;
    }
    let shown = replace_word(&(lines[block].join("\n") + "\n"), "HOST", &host);
    assert!(
        loose(&shown) == loose(printed),
        "{} shows another output for sample {name} than this test printed \
         (numbers and blanks aside; BLESS=1 rewrites it):\n{}",
        file.display(),
        diff(&shown, printed)
    );
}

#[test]
fn numbers_and_blanks_count_once() {
    assert_eq!(
        loose("sip1  up 12s, 4.25 ms  \n\tport 5060\n"),
        loose("sip1 up 3s, 10.0 ms\n port 38827")
    );
    assert_ne!(loose("sip1 up"), loose("sip1 down"));
    assert_ne!(loose("a\nb\n"), loose("a b\n"));
    assert_eq!(
        replace_word("by vm, vm2 (vm)", "vm", "HOST"),
        "by HOST, vm2 (HOST)"
    );
}

#[test]
fn target_rows_leave_the_services_table_out() {
    let status = "sip1.example.com  up\nsip2.example.com  down\n\nservice  state\n\
                  sip1.example.com udp/5060  up\n\ncall quality\n  sip1 MOS 4.4\n";
    assert_eq!(
        target_rows(status, &["sip1.example.com"]),
        "sip1.example.com  up\n"
    );
    assert_eq!(
        section(status, "service "),
        "service  state\nsip1.example.com udp/5060  up\n"
    );
}
