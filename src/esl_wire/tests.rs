//! Tests for the Event Socket framing: bytes in, frames and headers out.
