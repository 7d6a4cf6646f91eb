//! Logging for both binaries: stderr only (stdout belongs to the pipe protocol), level
//! from `RUST_LOG` (warnings by default), each line tagged with the process id so that
//! pdns's several pipe processes can be told apart in its log. pdns stamps the time itself.

use std::io::Write;

pub fn init() {
    let pid = std::process::id();
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        .parse_default_env()
        .target(env_logger::Target::Stderr)
        .format(move |f, r| writeln!(f, "pdns-ha[{pid}] {}: {}", r.level(), r.args()))
        .init();
}
