//! The documentation as a reader meets it: every markdown file in the repository closes
//! each code fence it opens (an open one turns the rest of the page inside out), and every
//! relative link in the README and docs/ leads to a file that exists.

use std::path::{Path, PathBuf};

use crate::util::REPO;

fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    walk(&path, out);
                }
            } else if name.ends_with(".md") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new(REPO), &mut out);
    out.sort();
    out
}

/// The line of a fence left open, if any. A fence closes with the same character, at
/// least as long, and nothing after it (CommonMark).
fn unclosed_fence(text: &str) -> Option<usize> {
    let mut open: Option<(usize, char, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let Some(c) = t.chars().next().filter(|c| *c == '`' || *c == '~') else {
            continue;
        };
        let run = t.chars().take_while(|x| *x == c).count();
        if run < 3 {
            continue;
        }
        match open {
            None => open = Some((i + 1, c, run)),
            Some((_, oc, orun)) if oc == c && run >= orun && t[run..].trim().is_empty() => {
                open = None
            }
            Some(_) => {}
        }
    }
    open.map(|(line, _, _)| line)
}

#[test]
fn every_fence_is_closed() {
    let files = markdown_files();
    assert!(files.len() >= 5, "found only {files:?}");
    let open: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let line = unclosed_fence(&std::fs::read_to_string(f).unwrap())?;
            Some(format!("{}:{line}: fence never closed", f.display()))
        })
        .collect();
    assert!(open.is_empty(), "{}", open.join("\n"));
    assert_eq!(unclosed_fence("a\n```sh\nx\n```\n"), None);
    assert_eq!(unclosed_fence("a\n```sh\nx\n``` not a close\n"), Some(2));
}

#[test]
fn relative_links_lead_somewhere() {
    let mut broken = Vec::new();
    for f in markdown_files() {
        let rel = f.strip_prefix(REPO).unwrap();
        if !(rel.starts_with("docs") || rel == Path::new("README.md")) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (_, rest) in text.match_indices("](").map(|(i, _)| ((), &text[i + 2..])) {
            let target = rest.split(')').next().unwrap_or("");
            let path = target.split('#').next().unwrap_or("");
            if path.is_empty() || path.contains("://") || path.starts_with("mailto:") {
                continue;
            }
            if !f.parent().unwrap().join(path).exists() {
                broken.push(format!("{}: {target}", rel.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to nothing:\n{}",
        broken.join("\n")
    );
}
