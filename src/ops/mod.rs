//! The operator's commands: create a database ([`init`]), lint it
//! ([`check`]), and see what the pipe sees and would answer ([`report`]:
//! `status` and `explain`).

pub mod check;
pub mod init;
pub mod report;
