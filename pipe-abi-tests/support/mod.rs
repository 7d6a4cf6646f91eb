//! What the tests start and share: the binaries and their runs ([`util`]), pdns_server and
//! dig plus the one check for a missing tool ([`pdns`]), the Event Socket stand-in
//! ([`esl_standin`]), network namespaces with delay lines ([`netns`]), a UDP relay
//! ([`udp_relay`]) and the docs' samples that end-to-end tests print ([`docs`]).

pub mod docs;
pub mod esl_standin;
pub mod netns;
pub mod pdns;
pub mod udp_relay;
pub mod util;
