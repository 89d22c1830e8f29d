//! Handing back the pages of code that ran once, so that an idle sidecar's
//! resident memory is what its idle tick uses.
//!
//! Start-up (argument parsing, the first read and parse of the volume), a
//! reload and an action touch code spread across most of the binary, and
//! the kernel maps 64 KiB around every page fault (fault-around), so a
//! static build would otherwise stay resident with nearly all of its code
//! and read-only data: about 2.3 MiB of a 3.2 MB binary, where an idle tick
//! needs a few pages. After a tick that handled events, and after each
//! action, the tool advises the kernel (`MADV_DONTNEED`) that its
//! executable's read-only segments are not needed: the pages leave this
//! process's RSS but stay in the page cache, so the next reload maps them
//! back with minor faults and no disk read.
//!
//! Only segments without write permission are released, rounded inward to
//! whole pages: they are never written (their pages are the file's), so
//! dropping them loses nothing. A debugger's breakpoints in released pages
//! are dropped with them. Linux only; elsewhere this does nothing.

/// The executable's read-only segments, found once at start.
#[derive(Debug, Clone)]
pub struct CodePages {
    #[cfg(target_os = "linux")]
    ranges: Vec<(usize, usize)>,
}

impl CodePages {
    /// Finds the executable's read-only segments (none where unsupported).
    pub fn find() -> Self {
        CodePages {
            #[cfg(target_os = "linux")]
            ranges: imp::read_only_segments(),
        }
    }

    /// Advises the kernel that those pages are not needed now.
    pub fn release(&self) {
        #[cfg(target_os = "linux")]
        for &(start, len) in &self.ranges {
            // SAFETY: the range is whole pages of the executable's own
            // read-only segments, mapped for the life of the process and
            // never written, so their content is the file's and comes back
            // on the next access. A failure leaves the pages resident:
            // nothing to report.
            unsafe {
                libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED);
            }
        }
    }
}

#[cfg(target_os = "linux")]
mod imp {
    /// (start, length) of each loaded segment of the main program without
    /// write permission, in whole pages.
    pub fn read_only_segments() -> Vec<(usize, usize)> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let mut found = Found {
            page,
            ranges: Vec::new(),
            first: true,
        };
        // SAFETY: the callback only reads the headers it is given, during
        // the call, and `found` outlives the call.
        unsafe {
            libc::dl_iterate_phdr(Some(visit), (&mut found as *mut Found).cast());
        }
        found.ranges
    }

    struct Found {
        page: usize,
        ranges: Vec<(usize, usize)>,
        first: bool,
    }

    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `Found` given to dl_iterate_phdr, and
        // `info` is valid for the duration of this call.
        let (found, info) = unsafe { (&mut *data.cast::<Found>(), &*info) };
        // The main program comes first; shared libraries are not ours to
        // release.
        if !std::mem::take(&mut found.first) {
            return 1;
        }
        // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
        let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
        for h in headers {
            if h.p_type != libc::PT_LOAD || h.p_flags & libc::PF_W != 0 {
                continue;
            }
            let (Ok(vaddr), Ok(memsz)) = (usize::try_from(h.p_vaddr), usize::try_from(h.p_memsz))
            else {
                continue;
            };
            let begin = info.dlpi_addr as usize + vaddr;
            // Inward: a page shared with a writable segment is kept.
            let start = begin.next_multiple_of(found.page);
            let end = (begin + memsz) / found.page * found.page;
            if end > start {
                found.ranges.push((start, end - start));
            }
        }
        1
    }
}
