//! The operator's commands: create a database ([`init`]), and see what the
//! pipe sees and would answer ([`report`]: `status` and `explain`).

pub mod init;
pub mod report;
