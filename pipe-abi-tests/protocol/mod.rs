//! The pipe protocol as pdns speaks it (golden transcripts, faults and bad input, large
//! zones) and the command line (man pages and the reference generated from the parser).

mod check;
mod docs;
mod edit;
mod explain_networks;
mod faults;
mod golden;
mod manpage;
mod samples;
mod scale;
