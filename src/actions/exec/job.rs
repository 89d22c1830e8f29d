//! Windows: a command and every process it starts, in one Job Object, so
//! that `--exec-timeout` and shutdown end the whole tree, as killing its
//! process group does on Unix. Without it only the direct child was
//! killed: a hung command's children outlived the tool, holding its pipes
//! and whatever the command locked.
//!
//! **No process escapes before it is in the job.** The command is created
//! suspended (`CREATE_SUSPENDED`), assigned to a new job, and only then
//! resumed: it runs no instruction, so starts no process, outside the job.
//! What it starts later is in the job too (the job allows no breakaway).
//! The standard library closes the thread handle `CreateProcessW` returns,
//! so the suspended thread is found with a Toolhelp snapshot of the
//! system's threads, and that is sound:
//! - the pid is this command's: our process handle (in `Child`) keeps the
//!   process object, so its pid cannot be given to another process before
//!   we wait for it;
//! - a process created suspended has exactly one thread, its primary
//!   thread, and cannot create another while that one is suspended (the
//!   loader's worker threads start from the primary thread once it runs);
//!   a thread another program injected meanwhile would be resumed too,
//!   which harms nothing;
//! - each thread opened is checked to belong to that pid
//!   (`GetProcessIdOfThread`) before it is resumed: its handle keeps the
//!   thread object, so a thread id reused after the snapshot is never a
//!   stranger's thread resumed.
//!
//! A failure at any step (no job, no assignment, no thread) kills the
//! suspended process and is a failure to start the command
//! ([`ExecError::Start`](super::ExecError::Start)): a command outside its
//! job could not be stopped whole, which is what `--exec-timeout` and
//! shutdown promise.
//!
//! **A background process left after a normal exit is not killed**, as on
//! Unix, where the group is only signalled on a timeout or a shutdown: a
//! command may start a daemon on purpose. The job has no
//! `KILL_ON_JOB_CLOSE` limit, and its handle is closed once the command is
//! done (the last [`Job`] clone dropped); what is left runs on in it.

use std::{
    fmt, io,
    os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle},
    process::Child,
};

use windows_sys::Win32::{
    Foundation::{HANDLE, INVALID_HANDLE_VALUE},
    System::{
        Diagnostics::ToolHelp::{
            CreateToolhelp32Snapshot, TH32CS_SNAPTHREAD, THREADENTRY32, Thread32First, Thread32Next,
        },
        JobObjects::{AssignProcessToJobObject, CreateJobObjectW, TerminateJobObject},
        Threading::{
            GetProcessIdOfThread, OpenThread, ResumeThread, THREAD_QUERY_LIMITED_INFORMATION,
            THREAD_SUSPEND_RESUME,
        },
    },
};

/// The creation flag under which a command starts, to be resumed by
/// [`Job::adopt`].
pub(super) const CREATE_SUSPENDED: u32 = windows_sys::Win32::System::Threading::CREATE_SUSPENDED;

/// The exit code of the processes a terminated job ends (what
/// `Child::kill` gives a process, too).
const KILLED: u32 = 1;

/// A Job Object (its handle, closed when dropped).
#[derive(Debug)]
pub(super) struct Job(OwnedHandle);

impl Job {
    /// A new, unnamed job with no limits.
    pub(super) fn new() -> io::Result<Job> {
        // SAFETY: no security attributes and no name: both may be null.
        let job = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
        owned(job)
            .map(Job)
            .ok_or_else(|| os_error("cannot create a Job Object"))
    }

    /// Puts `child`, created with [`CREATE_SUSPENDED`], in this job and
    /// resumes it. On an error the caller terminates the job and kills
    /// the child (still suspended, unless a step after its resumption
    /// failed).
    pub(super) fn adopt(&self, child: &Child) -> io::Result<()> {
        // SAFETY: both handles are open for as long as `self` and `child`
        // are borrowed.
        if unsafe { AssignProcessToJobObject(self.raw(), child.as_raw_handle()) } == 0 {
            return Err(os_error("cannot put it in a Job Object"));
        }
        resume(child.id())
    }

    /// Ends every process in the job (the command and all it started).
    pub(super) fn terminate(&self) {
        // SAFETY: the handle is open while `self` lives. A failure (every
        // process already gone) leaves nothing to do.
        unsafe { TerminateJobObject(self.raw(), KILLED) };
    }

    fn raw(&self) -> HANDLE {
        self.0.as_raw_handle()
    }
}

/// Resumes the threads of process `pid`, created suspended by us: its
/// primary thread (see the module docs for why this finds it, and only
/// threads of that process).
fn resume(pid: u32) -> io::Result<()> {
    // SAFETY: plain call; the pid argument is ignored for thread snapshots.
    let snapshot = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0) };
    let Some(snapshot) = owned(snapshot) else {
        return Err(os_error("cannot list threads (Toolhelp)"));
    };
    let mut entry = THREADENTRY32 {
        dwSize: size_of::<THREADENTRY32>() as u32,
        cntUsage: 0,
        th32ThreadID: 0,
        th32OwnerProcessID: 0,
        tpBasePri: 0,
        tpDeltaPri: 0,
        dwFlags: 0,
    };
    let mut resumed = 0;
    // SAFETY: the snapshot is open and `entry` is a THREADENTRY32 with its
    // size set, as Thread32First and Thread32Next require.
    let mut more = unsafe { Thread32First(snapshot.as_raw_handle(), &mut entry) } != 0;
    while more {
        if entry.th32OwnerProcessID == pid {
            resumed += usize::from(resume_thread(pid, entry.th32ThreadID)?);
        }
        // SAFETY: as for Thread32First.
        more = unsafe { Thread32Next(snapshot.as_raw_handle(), &mut entry) } != 0;
    }
    if resumed == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            Step {
                step: "cannot resume it: no thread of it in a Toolhelp snapshot",
                source: None,
            },
        ));
    }
    Ok(())
}

/// Resumes thread `tid` if it belongs to process `pid`: whether it did.
fn resume_thread(pid: u32, tid: u32) -> io::Result<bool> {
    // SAFETY: plain call; a null result is an error.
    let thread = unsafe {
        OpenThread(
            THREAD_SUSPEND_RESUME | THREAD_QUERY_LIMITED_INFORMATION,
            0,
            tid,
        )
    };
    let Some(thread) = owned(thread) else {
        return Err(os_error("cannot open its thread to resume it"));
    };
    // SAFETY: the thread handle is open, with the access this needs.
    if unsafe { GetProcessIdOfThread(thread.as_raw_handle()) } != pid {
        // Gone since the snapshot, its id given to another thread.
        return Ok(false);
    }
    // SAFETY: the thread handle is open, with the access this needs.
    if unsafe { ResumeThread(thread.as_raw_handle()) } == u32::MAX {
        return Err(os_error("cannot resume it"));
    }
    Ok(true)
}

/// `handle` owned (closed when dropped), or `None` for a failure (null or
/// `INVALID_HANDLE_VALUE`, as each call reports it).
fn owned(handle: HANDLE) -> Option<OwnedHandle> {
    if handle.is_null() || handle == INVALID_HANDLE_VALUE {
        return None;
    }
    // SAFETY: a handle just returned to us, open, owned by nobody else.
    Some(unsafe { OwnedHandle::from_raw_handle(handle as RawHandle) })
}

/// The last OS error, with the step that failed.
fn os_error(step: &'static str) -> io::Error {
    let source = io::Error::last_os_error();
    io::Error::new(
        source.kind(),
        Step {
            step,
            source: Some(source),
        },
    )
}

/// A step of putting a command in its job, and the OS error it met.
#[derive(Debug)]
struct Step {
    step: &'static str,
    source: Option<io::Error>,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.step),
            None => f.write_str(self.step),
        }
    }
}

impl std::error::Error for Step {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}
