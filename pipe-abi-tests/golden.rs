//! Golden transcripts: `cases/<abi>-<behaviour>.in` is fed to the pipe as
//! pdns would send it, and stdout must equal `cases/<abi>-<behaviour>.out`
//! byte for byte. Set `BLESS=1` to rewrite the `.out` files after a change
//! whose new output you have read.

use std::path::Path;

use crate::util::{diff, fixture_db, run_pipe, REPO};

#[test]
fn golden_transcripts() {
    let dir = Path::new(REPO).join("pipe-abi-tests/cases");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "in"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 10,
        "expected the golden cases in {}",
        dir.display()
    );
    let bless = std::env::var_os("BLESS").is_some();
    let mut failures = Vec::new();
    for input in &cases {
        let out = run_pipe(fixture_db(), &[], std::fs::read(input).unwrap());
        let name = input.file_stem().unwrap().to_string_lossy();
        assert!(out.status.success(), "{name}: exit {:?}", out.status);
        let got = String::from_utf8(out.stdout).unwrap();
        let want_path = input.with_extension("out");
        if bless {
            std::fs::write(&want_path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&want_path).unwrap_or_default();
        if got != want {
            failures.push(format!("{name}:\n{}", diff(&want, &got)));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
}
