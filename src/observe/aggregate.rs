//! Per-network statistics over caller round trips (work in progress).
