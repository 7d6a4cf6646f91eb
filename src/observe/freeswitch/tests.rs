//! Tests for the FreeSWITCH call source: events in, calls and figures out.
