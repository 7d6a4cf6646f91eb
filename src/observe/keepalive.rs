//! Kamailio registrar keepalives: per-contact round trips from `ul.dump` (work in progress).
