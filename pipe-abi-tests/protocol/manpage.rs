//! The man pages (packaging/man/, shipped in the Debian package) and the docs' command
//! reference (docs/reference.md) are generated from the clap definitions that parse the
//! command line, so no page can name an option the parser lacks or miss one it has. This
//! test regenerates them and fails when the committed files differ;
//! `BLESS=1 cargo test --test pipe-abi manpage` rewrites them (refused under CI).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use clap_mangen::Man;
use pdns_ha::cli::{DaemonCli, PipeCli};

use crate::util::{diff, in_ci, BIN, REPO};

/// The commands `pdns-ha-daemon` runs, which `pdns-ha` hands over to it.
const HANDED_OVER: [&str; 2] = ["monitor", "observe"];

/// Every command with its full name ("pdns-ha metric latency"), depth first, as an
/// operator types it: the daemon's commands under `pdns-ha` too.
fn commands() -> Vec<(String, clap::Command)> {
    fn walk(cmd: &clap::Command, name: &str, out: &mut Vec<(String, clap::Command)>) {
        out.push((name.to_owned(), cmd.clone()));
        for sub in cmd.get_subcommands() {
            let skip = sub.get_name() == "help"
                || (name == "pdns-ha" && HANDED_OVER.contains(&sub.get_name()));
            if skip {
                continue;
            }
            walk(sub, &format!("{name} {}", sub.get_name()), out);
        }
    }
    let mut pipe = PipeCli::command();
    pipe.build();
    let mut daemon = DaemonCli::command().name("pdns-ha");
    daemon.build();
    let mut out = Vec::new();
    walk(&pipe, "pdns-ha", &mut out);
    for sub in daemon.get_subcommands().filter(|s| s.get_name() != "help") {
        walk(sub, &format!("pdns-ha {}", sub.get_name()), &mut out);
    }
    let mut daemon_bin = DaemonCli::command();
    daemon_bin.build();
    out.push(("pdns-ha-daemon".into(), daemon_bin));
    out
}

fn man(cmd: clap::Command, name: &str) -> Man {
    let page = name.replace(' ', "-");
    Man::new(cmd.display_name(page.clone()).bin_name(name.to_owned()))
        .title(page.to_uppercase())
        .manual("pdns-ha manual")
}

/// The front page, pdns-ha(1): what pdns-ha is (hand-written), its commands (each with a
/// page of its own) and the hand-written sections that are not about options.
fn front_page() -> Vec<u8> {
    let mut pipe = PipeCli::command();
    pipe.build();
    let m = man(pipe.clone(), "pdns-ha");
    let mut out = Vec::new();
    m.render_title(&mut out).unwrap();
    m.render_name_section(&mut out).unwrap();
    m.render_synopsis_section(&mut out).unwrap();
    out.extend_from_slice(&hand_written("pdns-ha.head.roff"));
    out.extend_from_slice(b".SH COMMANDS\n");
    for sub in pipe.get_subcommands() {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        let page = format!("pdns-ha-{}", sub.get_name());
        let _ = write!(
            Text(&mut out),
            ".TP\n.B {}\n{}; see\n.BR {} (1).\n",
            sub.get_name(),
            roff_text(&about),
            page.replace('-', "\\-")
        );
    }
    out.extend_from_slice(&hand_written("pdns-ha.tail.roff"));
    out
}

fn hand_written(file: &str) -> Vec<u8> {
    std::fs::read(Path::new(REPO).join("packaging/man").join(file)).unwrap()
}

/// A `fmt::Write` over bytes, for `write!` into a page.
struct Text<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Plain text as roff: a leading dot or quote would start a request, a backslash an escape.
fn roff_text(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    match s.starts_with(['.', '\'']) {
        true => format!("\\&{s}"),
        false => s,
    }
}

/// Every generated file: path under the repository, and contents.
fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = vec![(PathBuf::from("packaging/man/pdns-ha.1"), front_page())];
    for (name, cmd) in commands().into_iter().skip(1) {
        let m = man(cmd, &name);
        let mut page = Vec::new();
        m.render(&mut page).unwrap();
        // clap_mangen calls the after-help text EXTRA; man-pages(7) calls it NOTES.
        let page = String::from_utf8(page)
            .unwrap()
            .replace(".SH EXTRA", ".SH NOTES");
        let file = format!("packaging/man/{}.1", name.replace(' ', "-"));
        files.push((file.into(), page.into_bytes()));
    }
    files.push(("docs/reference.md".into(), reference().into_bytes()));
    files
}

/// The docs' command reference: every command's `--help`, as the binaries print it.
fn reference() -> String {
    let mut out = String::from(
        "# Command reference\n\n\
         Generated from the command-line definitions (`src/cli.rs`) by \
         `pipe-abi-tests/manpage.rs`; do not edit by hand. The same text is each \
         command's `--help` and its man page, `pdns-ha-COMMAND(1)`.\n",
    );
    for (name, mut cmd) in commands() {
        let help = cmd.render_help().to_string();
        let help = help.trim_end();
        let _ = write!(out, "\n## `{name}`\n\n```text\n{help}\n```\n");
    }
    out
}

#[test]
fn man_pages_and_reference_are_generated_from_the_parser() {
    let bless = std::env::var("BLESS").is_ok_and(|v| v == "1");
    assert!(
        !(bless && in_ci()),
        "BLESS=1 is refused under CI: bless on your machine and commit what you read"
    );
    let mut stale = Vec::new();
    let files = generated();
    for (path, want) in &files {
        let full = Path::new(REPO).join(path);
        let got = std::fs::read(&full).unwrap_or_default();
        if &got == want {
            continue;
        }
        if bless {
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(&full, want).unwrap();
        } else {
            let d = diff(
                &String::from_utf8_lossy(want),
                &String::from_utf8_lossy(&got),
            );
            stale.push(format!("{}:\n{d}", path.display()));
        }
    }
    // A page whose command is gone goes too.
    let names: Vec<&PathBuf> = files.iter().map(|(p, _)| p).collect();
    for entry in std::fs::read_dir(Path::new(REPO).join("packaging/man")).unwrap() {
        let path = PathBuf::from("packaging/man").join(entry.unwrap().file_name());
        if path.extension().is_some_and(|e| e == "1") && !names.contains(&&path) {
            stale.push(format!("{}: no command has this page", path.display()));
        }
    }
    assert!(
        stale.is_empty(),
        "generated files differ (BLESS=1 cargo test --test pipe-abi manpage):\n{}",
        stale.join("\n")
    );
}

/// What the binaries print is what the pages were generated from: each command's `--help`
/// from the real binary, handed over to the daemon for monitor and observe.
#[test]
fn every_command_answers_help() {
    for (name, mut cmd) in commands() {
        let mut words: Vec<&str> = name.split(' ').skip(1).collect();
        if name == "pdns-ha-daemon" {
            continue;
        }
        words.push("--help");
        let out = Command::new(BIN).args(&words).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name} --help: {out:?}");
        let want = cmd.render_help().to_string();
        assert_eq!(text.trim_end(), want.trim_end(), "{name} --help");
    }
}
