//! Soft state: health, load and latency readings. Types and their text form
//! in [`reading`], the pipe's lookup index in [`index`], memcached transport
//! in [`memcached`] and what a pipe fetches through it in [`overlay`], and
//! the SQLite (plus memcached) [`writer`] that `monitor` and `metric` use, with its
//! estimators (average and anti-flap) as pure functions in [`estimate`].
//! Their one validation is [`validate`]; the sealing of shared values and
//! the hashing of long keys is [`auth`]. What an `ha_targets` row says about a
//! target's services: [`service`] (transports and ports from the SRV records)
//! and [`codes`] (the SIP codes that mean up). The pipes' own counters, shared with
//! the monitor through small files: [`pipe_counters`].

pub mod auth;
pub mod codes;
pub mod estimate;
pub mod index;
pub mod memcached;
pub mod overlay;
pub mod pipe_counters;
pub mod reading;
pub mod service;
pub mod validate;
pub mod writer;
