//! The operator's commands: create a database ([`init`]), lint it ([`check`]), see what the
//! pipe sees and would
//! answer ([`report`]: `status` and `explain`; [`networks`]: `explain --networks`, who gets
//! what), and write by hand ([`mod@write`]: `metric`,
//! `drain`, `undrain`; [`edit`]: `network` and `target`, the configuration without SQL).

pub mod check;
pub mod edit;
pub mod init;
pub mod networks;
pub mod report;
pub mod write;

/// SQLite's error as the operator reads it: rusqlite's message alone. rusqlite gives the
/// same words again as its `source` ("Error code 5: database is locked"), which the
/// commands' `{:#}` would print after them.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Sql(pub rusqlite::Error);
