//! End-to-end tests: pdns_server + dig, pdns-ha against gsqlite3.
