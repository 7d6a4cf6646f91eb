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
