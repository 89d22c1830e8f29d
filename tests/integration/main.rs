//! Integration tests: real temp volumes written the kubelet's way, the
//! library driven tick by tick, and the real binary.

#[macro_use]
mod helper;

mod hostile;

mod actions;
mod cli;
mod fuzz_replay;
mod interleave;
mod live;
mod reader;
mod torture;
mod watcher;

#[global_allocator]
static ALLOC: helper::CountingAlloc = helper::CountingAlloc;
