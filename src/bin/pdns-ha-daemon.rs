//! `pdns-ha-daemon`: the network daemons, `monitor` (probes the targets) and `observe`
//! (round trips a SIP server already sees). `pdns-ha monitor|observe` runs this binary.
//! `main` only wires: parse the command line, set up logging, run the daemon.

use std::process::ExitCode;

use clap::Parser;
use pdns_ha::cli::{DaemonCli, DaemonCommand};
use pdns_ha::{logging, monitor, observe};

fn main() -> ExitCode {
    let cli = DaemonCli::parse();
    logging::init();
    let result = match cli.command {
        DaemonCommand::Monitor(a) => monitor::run(&a.options()),
        DaemonCommand::Observe(a) => observe::run(&a.options()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pdns-ha: {e:#}");
            ExitCode::FAILURE
        }
    }
}
