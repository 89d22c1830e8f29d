//! A process a test did not start (a command's child), watched until it
//! is gone: shared by the integration tests and the exec unit tests (via
//! `#[path]`), which both check that a command's whole tree ends.

use std::time::Duration;
#[cfg(unix)]
use std::time::Instant;

/// A process the test did not start (a command's child), watched until it
/// is gone; killed when dropped if it never went, so a failed test leaves
/// nothing running.
pub struct Process {
    pub pid: u32,
    #[cfg(windows)]
    handle: std::os::windows::io::OwnedHandle,
    gone: bool,
}

impl Process {
    /// On Windows its handle is opened now, while it surely runs: a wait
    /// on it later cannot be fooled by its pid's reuse.
    pub fn open(pid: u32) -> Process {
        #[cfg(windows)]
        {
            use std::os::windows::io::FromRawHandle;
            use windows_sys::Win32::System::Threading::{
                OpenProcess, PROCESS_SYNCHRONIZE, PROCESS_TERMINATE,
            };
            // SAFETY: plain call; a null result is an error.
            let raw = unsafe { OpenProcess(PROCESS_SYNCHRONIZE | PROCESS_TERMINATE, 0, pid) };
            assert!(!raw.is_null(), "{}", std::io::Error::last_os_error());
            Process {
                pid,
                // SAFETY: a handle just opened, owned by nobody else.
                handle: unsafe { std::os::windows::io::OwnedHandle::from_raw_handle(raw) },
                gone: false,
            }
        }
        #[cfg(not(windows))]
        Process { pid, gone: false }
    }

    /// Whether it has ended within `within`.
    pub fn gone_within(&mut self, within: Duration) -> bool {
        #[cfg(windows)]
        {
            use std::os::windows::io::AsRawHandle;
            use windows_sys::Win32::{
                Foundation::WAIT_OBJECT_0, System::Threading::WaitForSingleObject,
            };
            let ms = within.as_millis() as u32;
            // SAFETY: the handle is open.
            self.gone =
                unsafe { WaitForSingleObject(self.handle.as_raw_handle(), ms) } == WAIT_OBJECT_0;
        }
        #[cfg(unix)]
        {
            let until = Instant::now() + within;
            loop {
                self.gone = self.ended();
                if self.gone || Instant::now() >= until {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.gone
    }

    /// Ended: reaped (no /proc entry), or a zombie its new parent has
    /// not reaped yet.
    #[cfg(target_os = "linux")]
    fn ended(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).map_or(true, |s| {
            s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z'))
        })
    }

    /// Ended and reaped (its new parent, launchd, reaps at once).
    #[cfg(all(unix, not(target_os = "linux")))]
    fn ended(&self) -> bool {
        rustix::process::Pid::from_raw(self.pid as i32)
            .is_none_or(|pid| rustix::process::test_kill_process(pid).is_err())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.gone {
            return;
        }
        #[cfg(windows)]
        {
            use std::os::windows::io::AsRawHandle;
            // SAFETY: the handle is open.
            unsafe {
                windows_sys::Win32::System::Threading::TerminateProcess(
                    self.handle.as_raw_handle(),
                    1,
                )
            };
        }
        #[cfg(unix)]
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}
