//! Ending the watch loop on SIGINT, SIGTERM and SIGHUP.
//!
//! On Linux the three are blocked in every thread and the loop's wait
//! between ticks is `sigtimedwait` on them: an idle tick is one `readlink`
//! and that one wait, as in a C loop of `readlink` and `clock_nanosleep`,
//! with no signal-handling thread and no channel. Commands the tool starts
//! (`--exec`, `--validate-exec`, `--confirm-exec`) begin with an empty mask:
//! the standard library's spawn resets it in the child.
//!
//! macOS has no `sigtimedwait` and Windows no signals: there ctrlc's
//! handler thread triggers the library's shutdown channel.

use configmapwatch::Wait;

/// Starts listening for the termination signals. Call it before the watch
/// starts any thread (the action runner, the metrics server), so that they
/// inherit the blocked mask and a signal is left for the loop's wait.
pub fn listen() -> Result<impl Wait, String> {
    imp::listen()
}

/// Whether a termination signal has come and is waiting for the loop:
/// asked by work that runs on the loop's thread (a `--validate-exec`
/// checker), which stops early instead of holding the exit up.
pub fn pending() -> bool {
    imp::pending()
}

#[cfg(target_os = "linux")]
mod imp {
    use std::{io, ptr, time::Duration};

    use configmapwatch::Wait;

    /// The termination signals, blocked in this thread (and every thread it
    /// starts) and waited for between ticks.
    pub struct Signals(libc::sigset_t);

    pub fn listen() -> Result<Signals, String> {
        // SAFETY: sigemptyset and sigaddset fill the set we own; the
        // signals are valid numbers.
        let set = unsafe {
            let mut set = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut set);
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaddset(&mut set, signal);
            }
            set
        };
        // SAFETY: the set is initialised; the old mask is not asked for.
        let failed = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, ptr::null_mut()) };
        if failed != 0 {
            let cause = io::Error::from_raw_os_error(failed);
            return Err(format!("cannot handle signals: {cause}"));
        }
        Ok(Signals(set))
    }

    /// Looks without taking it: the loop's wait takes it next.
    pub fn pending() -> bool {
        // SAFETY: sigpending fills the set we own; sigismember reads it.
        unsafe {
            let mut set = std::mem::zeroed::<libc::sigset_t>();
            if libc::sigpending(&mut set) != 0 {
                return false;
            }
            [libc::SIGINT, libc::SIGTERM, libc::SIGHUP]
                .into_iter()
                .any(|signal| libc::sigismember(&set, signal) == 1)
        }
    }

    impl Wait for Signals {
        fn wait(&self, timeout: Duration) -> bool {
            let ts = libc::timespec {
                tv_sec: timeout.as_secs().min(i32::MAX as u64) as _,
                tv_nsec: timeout.subsec_nanos().into(),
            };
            // SAFETY: the set and the timespec outlive the call; no siginfo
            // is asked for.
            //
            // Anything but a signal of the set is the end of the wait: the
            // timeout (EAGAIN) or, rarely, EINTR (a stop and continue, a
            // tracer attaching), which only brings the next check forward.
            // So an idle tick reads neither the clock nor errno here.
            unsafe { libc::sigtimedwait(&self.0, ptr::null_mut(), &ts) > 0 }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::sync::atomic::{AtomicBool, Ordering};

    use configmapwatch::{ShutdownListener, shutdown_channel};

    /// Set by the handler, for [`pending`].
    static SIGNALLED: AtomicBool = AtomicBool::new(false);

    pub fn listen() -> Result<ShutdownListener, String> {
        let (shutdown, listener) = shutdown_channel();
        ctrlc::set_handler(move || {
            SIGNALLED.store(true, Ordering::SeqCst);
            shutdown.trigger()
        })
        .map_err(|e| format!("cannot handle signals: {e}"))?;
        Ok(listener)
    }

    pub fn pending() -> bool {
        SIGNALLED.load(Ordering::SeqCst)
    }
}
