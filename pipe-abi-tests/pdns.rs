//! Harness for a real pdns_server started by the tests (filled in by the e2e work).
