//! Integration tests: real temp volumes written the kubelet's way, the
//! library driven tick by tick, and the real binary.

#[macro_use]
mod helper;

mod hostile;

mod action_faults;
mod actions;
mod budget;
mod certs;
mod checks;
mod cli;
mod confirm;
mod conformance;
mod dirs;
mod faults;
#[cfg(target_os = "linux")]
mod fuse;
mod fuzz_replay;
mod interleave;
mod layout;
mod live;
mod mutants;
mod names;
mod once;
mod outside;
mod persistent;
mod reader;
mod readme;
mod rules;
mod secrets;
mod serve;
mod status;
mod tls;
mod tls_sidecar;
mod torture;
mod values;
mod volume;
mod watcher;
mod writer;

#[global_allocator]
static ALLOC: helper::CountingAlloc = helper::CountingAlloc;
