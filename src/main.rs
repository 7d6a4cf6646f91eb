//! pdns-ha: PowerDNS pipe backend.
fn main() {}
