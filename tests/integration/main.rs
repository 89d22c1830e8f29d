//! Integration tests: real temp volumes written the kubelet's way, the
//! library driven tick by tick, and the real binary.

#[macro_use]
mod helper;

mod hostile;

mod action_faults;
mod actions;
mod checks;
mod cli;
mod confirm;
mod dirs;
mod faults;
#[cfg(target_os = "linux")]
mod fuse;
mod fuzz_replay;
mod interleave;
mod live;
mod mutants;
mod once;
mod reader;
mod readme;
mod serve;
mod tls;
mod torture;
mod volume;
mod watcher;
mod writer;

#[global_allocator]
static ALLOC: helper::CountingAlloc = helper::CountingAlloc;
