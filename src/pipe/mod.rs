//! The pipe backend: everything between pdns's stdin/stdout and the records.
//! A line comes in through [`backend`], is parsed by [`abi`], looked up in
//! the [`zone`] index that [`store`] keeps current, ranked and written by
//! [`answer`], and ended by [`backend`] with exactly one terminator; [`tally`]
//! counts what was answered, by client network, for the monitor to export; [`lean`]
//! keeps freed memory from staying resident. Until the
//! database can first be read, [`waiting`] answers instead, so that pdns
//! stays up.

pub mod abi;
pub mod answer;
pub mod backend;
pub mod lean;
pub mod store;
pub mod tally;
pub mod waiting;
pub mod zone;
