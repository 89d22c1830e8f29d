//! Interleavings: proptest generates kubelet writes (including a writer that
//! dies after any step, and either swap style) and a schedule of how many
//! writer steps run at each point inside the reader. The writer runs in
//! lockstep on its own thread, so each case is one exact interleaving.
//! Every read must return a consistent snapshot of a published version or a
//! retryable error: never a mix, never a panic.

use std::{
    ops::ControlFlow,
    sync::mpsc::{Receiver, Sender, channel},
    thread,
};

use configmapwatch::{AtomicWriter, Swap, Volume};
use proptest::prelude::*;

use crate::{
    helper::Vol,
    torture::{stamp_of, stamped},
};

/// One write: its stamp, and the hook call after which the writer dies.
#[derive(Debug, Clone)]
struct Write {
    stamp: u64,
    crash_after: Option<usize>,
}

/// Drives a writer thread one step at a time.
struct Lockstep {
    go: Sender<()>,
    stepped: Receiver<()>,
    finished: bool,
}

impl Lockstep {
    fn start(writer: AtomicWriter, writes: Vec<Write>) -> Self {
        let (go, go_rx) = channel::<()>();
        let (stepped_tx, stepped) = channel();
        thread::spawn(move || {
            for write in writes {
                if go_rx.recv().is_err() {
                    return;
                }
                let mut calls = 0;
                // A crash that left ..data_tmp blocks writes, as for the
                // kubelet: an operator's repair comes first.
                let _ = writer.repair();
                writer
                    .write_with_hook(&stamped(write.stamp), |_step| {
                        let _ = stepped_tx.send(());
                        if go_rx.recv().is_err() {
                            return ControlFlow::Break(());
                        }
                        calls += 1;
                        match write.crash_after == Some(calls - 1) {
                            true => ControlFlow::Break(()),
                            false => ControlFlow::Continue(()),
                        }
                    })
                    .unwrap();
                let _ = stepped_tx.send(());
            }
            // Dropping stepped_tx tells the driver the writer is done.
        });
        Lockstep {
            go,
            stepped,
            finished: false,
        }
    }

    /// Lets the writer run to its next step (or the end of a write).
    fn advance(&mut self) {
        if self.finished {
            return;
        }
        if self.go.send(()).is_err() || self.stepped.recv().is_err() {
            self.finished = true;
        }
    }
}

fn check_case(
    base: u64,
    writes: Vec<(bool, Option<usize>)>,
    schedule: Vec<u8>,
    windows: bool,
) -> Result<(), TestCaseError> {
    let vol = Vol::new();
    vol.write(&stamped(base));
    let swap = if windows {
        Swap::RemoveThenCreate
    } else {
        Swap::Rename
    };
    let mut stamp = base;
    let writes: Vec<Write> = writes
        .into_iter()
        .map(|(republish, crash_after)| {
            if !republish {
                stamp += 1;
            }
            Write { stamp, crash_after }
        })
        .collect();
    let mut lockstep = Lockstep::start(vol.writer.clone().with_swap(swap), writes);
    let mut schedule = schedule.into_iter().cycle();
    let mut volume = Volume::new(vol.path(), 1 << 20);
    let mut last = base;
    let mut reads = 0;
    while !lockstep.finished || reads < 2 {
        let result = volume.read_configmap_with_hook(&mut |_| {
            for _ in 0..schedule.next().unwrap_or(0) {
                lockstep.advance();
            }
        });
        reads += 1;
        match result {
            Ok(snapshot) => {
                let entries = snapshot.entries.iter().map(|(k, v)| {
                    (
                        k.as_str(),
                        String::from_utf8(v.as_ref().unwrap().clone()).unwrap(),
                    )
                });
                let got = stamp_of(entries).map_err(TestCaseError::fail)?;
                if let Some(n) = got {
                    prop_assert!(n >= last, "went backwards: {} after {}", n, last);
                    last = n;
                }
            }
            Err(e) => prop_assert!(e.is_transient(), "not retryable: {}", e),
        }
        lockstep.advance();
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_interleaving_reads_consistently(
        base in 1u64..1000,
        writes in prop::collection::vec((any::<bool>(), prop::option::weighted(0.3, 0usize..8)), 1..5),
        schedule in prop::collection::vec(0u8..4, 1..32),
        windows in any::<bool>(),
    ) {
        if !crate::helper::symlinks_work() {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| crate::helper::no_symlinks(file!(), line!()));
            return Ok(());
        }
        check_case(base, writes, schedule, windows)?;
    }
}
