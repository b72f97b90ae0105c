//! The dump directory, through plain descriptors: atomic creation of dumps, the append-only
//! stacks file, directory listing and retention deletes.
//!
//! Everything is relative to a directory descriptor opened once per dump, so a directory
//! renamed or replaced underneath is never written into by path. Nothing here follows a
//! symlink or replaces a file: temporaries are created `O_EXCL|O_NOFOLLOW` (mode 0600) and
//! renamed into place with `RENAME_NOREPLACE`; the stacks file is reopened `O_NOFOLLOW` and
//! must still be the inode we created. Directory listing uses `getdents64` directly (std's
//! `ReadDir` panics on drop when `closedir` fails, which would abort the host).

use offheap_core::sys::errno;
use std::ffi::CString;
use std::io;
use std::path::Path;

/// An open descriptor of ours, closed on drop.
pub struct Fd(pub i32);

impl Drop for Fd {
    fn drop(&mut self) {
        if self.0 >= 0 {
            // SAFETY: we own the descriptor; a failing close is ignored (nothing to do).
            unsafe { libc::close(self.0) };
        }
    }
}

fn cstr(s: &str) -> Result<CString, i32> {
    CString::new(s).map_err(|_| libc::EINVAL)
}

/// The dump directory, opened for this dump.
pub fn open_dir(dir: &Path) -> Result<Fd, i32> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
    // SAFETY: c is NUL-terminated.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(Fd(fd))
    }
}

/// Whether `name` is certainly absent from the directory (ENOENT); any other answer, an
/// error included, counts as present.
pub fn absent(dir: &Fd, name: &str) -> bool {
    let Ok(c) = cstr(name) else {
        return false;
    };
    // SAFETY: stat is plain data that fstatat fills.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: c is NUL-terminated and relative to our directory descriptor; st is a valid
    // out-pointer; a symlink is looked at, not followed.
    let rc = unsafe { libc::fstatat(dir.0, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    rc != 0 && errno() == libc::ENOENT
}

/// Names in a directory (`.` and `..` left out).
pub fn list(dir: &Fd) -> Result<Vec<String>, i32> {
    // A fresh descriptor: getdents64 reads from the descriptor's position.
    // SAFETY: "." relative to our directory descriptor.
    let fd = unsafe {
        libc::openat(
            dir.0,
            c".".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    let fd = Fd(fd);
    let mut names = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // The kernel writes at most buf.len() bytes of dirent64 records into buf.
        let n = offheap_core::raw_syscall!(libc::SYS_getdents64, fd.0, buf.as_mut_ptr(), buf.len());
        if let Some(e) = offheap_core::sys::raw::error(n) {
            return Err(e);
        }
        if n == 0 {
            return Ok(names);
        }
        let filled = buf.get(..n as usize).unwrap_or(&[]);
        let mut off = 0usize;
        // struct linux_dirent64 { u64 ino; i64 off; u16 reclen; u8 type; char name[]; }
        while let Some(rec) = filled.get(off..) {
            let Some(reclen) = rec
                .get(16..18)
                .and_then(|b| <[u8; 2]>::try_from(b).ok())
                .map(|b| u16::from_le_bytes(b) as usize)
            else {
                break;
            };
            if reclen == 0 {
                break;
            }
            if let Some(raw) = rec.get(19..reclen) {
                let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                if let Ok(name) = std::str::from_utf8(raw.get(..len).unwrap_or(&[])) {
                    if name != "." && name != ".." {
                        names.push(name.to_string());
                    }
                }
            }
            off += reclen;
        }
    }
}

/// A descriptor that writes everything it is given (EINTR retried).
pub struct FdWriter<'a>(pub &'a Fd);

impl io::Write for FdWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: buf is valid for reads of its length.
            let n = unsafe { libc::write(self.0 .0, buf.as_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = errno();
            if e != libc::EINTR {
                return Err(io::Error::from_raw_os_error(e));
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why writing failed, for one clear line (repeated failures of one kind stay quiet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    Directory(i32),
    Create(i32),
    Write(i32),
    Exists,
    Rename(i32),
    /// The stacks file is not the one we created (replaced or removed by someone else).
    StacksReplaced,
}

impl WriteError {
    /// The host's own doing, which a line on its stderr would only make visible: no
    /// descriptor left (its limit or the system's), a write past its `ulimit -f` (EFBIG), or
    /// a dump directory that was there at start-up and is no longer reachable from where
    /// the process now stands (it chrooted, entered a namespace, dropped privileges).
    pub fn host_caused(&self) -> bool {
        matches!(
            self,
            WriteError::Directory(libc::EMFILE | libc::ENFILE | libc::ENOENT | libc::EACCES)
                | WriteError::Create(libc::EMFILE | libc::ENFILE)
                | WriteError::Write(libc::EFBIG)
        )
    }
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let os = |e: &i32| io::Error::from_raw_os_error(*e);
        match self {
            WriteError::Directory(e) => write!(f, "cannot open the dump directory: {}", os(e)),
            WriteError::Create(e) => write!(f, "cannot create a dump file: {}", os(e)),
            WriteError::Write(e) => write!(f, "cannot write the dump: {}", os(e)),
            WriteError::Exists => write!(
                f,
                "a file already exists under the dump's name; it was left untouched and this \
                 dump skipped"
            ),
            WriteError::Rename(e) => write!(f, "cannot move the dump into place: {}", os(e)),
            WriteError::StacksReplaced => write!(
                f,
                "the stacks file was replaced or removed by someone else; no more dumps for \
                 this process"
            ),
        }
    }
}

fn io_errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Writes `name` in `dir` atomically: `fill` writes the content into a fresh temporary file,
/// which is then (optionally) fsynced and renamed into place without replacing anything.
pub fn write_atomic(
    dir: &Fd,
    name: &str,
    sync: bool,
    fill: impl FnOnce(&Fd) -> io::Result<()>,
) -> Result<(), WriteError> {
    let mut tmp = String::new();
    let mut fd = -1;
    for attempt in 0..4 {
        tmp = offheap_format::names::temporary(name, attempt);
        let t = cstr(&tmp).map_err(WriteError::Create)?;
        // SAFETY: t is NUL-terminated; O_EXCL|O_NOFOLLOW refuses anything planted there.
        fd = unsafe {
            libc::openat(
                dir.0,
                t.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600,
            )
        };
        if fd >= 0 || errno() != libc::EEXIST {
            break;
        }
    }
    if fd < 0 {
        return Err(WriteError::Create(errno()));
    }
    let file = Fd(fd);
    let t = cstr(&tmp).map_err(WriteError::Create)?;
    let unlink_tmp = || {
        // SAFETY: t names the temporary file we created.
        unsafe { libc::unlinkat(dir.0, t.as_ptr(), 0) };
    };
    let written = fill(&file).map_err(|e| WriteError::Write(io_errno(&e)));
    // SAFETY: file is our descriptor.
    let synced = if written.is_ok() && sync && unsafe { libc::fsync(file.0) } != 0 {
        Err(WriteError::Write(errno()))
    } else {
        written
    };
    drop(file);
    if let Err(e) = synced {
        unlink_tmp();
        return Err(e);
    }
    let f = cstr(name).map_err(WriteError::Rename)?;
    const RENAME_NOREPLACE: u32 = 1;
    // Both names are NUL-terminated and relative to our directory descriptor.
    let rc = offheap_core::raw_syscall!(
        libc::SYS_renameat2,
        dir.0,
        t.as_ptr(),
        dir.0,
        f.as_ptr(),
        RENAME_NOREPLACE
    );
    let Some(e) = offheap_core::sys::raw::error(rc) else {
        return Ok(());
    };
    if e == libc::EEXIST {
        unlink_tmp();
        return Err(WriteError::Exists);
    }
    // Filesystems without RENAME_NOREPLACE: link(2) also refuses to replace.
    // SAFETY: as above.
    let linked = unsafe { libc::linkat(dir.0, t.as_ptr(), dir.0, f.as_ptr(), 0) };
    let le = errno();
    unlink_tmp();
    match linked {
        0 => Ok(()),
        _ if le == libc::EEXIST => Err(WriteError::Exists),
        _ => Err(WriteError::Rename(le)),
    }
}

/// Deletes our own file `name` (retention).
pub fn remove(dir: &Fd, name: &str) {
    if let Ok(c) = cstr(name) {
        // SAFETY: c is NUL-terminated; unlinkat never follows a final symlink.
        unsafe { libc::unlinkat(dir.0, c.as_ptr(), 0) };
    }
}

/// The series' append-only stacks file: which inode it is and how much of it is good.
#[derive(Clone, Copy, Debug, Default)]
pub struct StacksFile {
    /// (device, inode) of the file we created; None before the first member.
    pub identity: Option<(u64, u64)>,
    /// Bytes of complete members.
    pub good_len: u64,
}

fn identity(fd: &Fd) -> Result<(u64, u64), i32> {
    // SAFETY: stat is plain data; fstat fills it for our descriptor.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: fd is ours, st a valid out-pointer.
    if unsafe { libc::fstat(fd.0, &mut st) } != 0 {
        return Err(errno());
    }
    Ok((st.st_dev, st.st_ino))
}

/// Opens the stacks file to append to it, or creates it (`create`: no member yet); the
/// errors say which of the two went wrong.
fn open_stacks(dir: &Fd, c: &std::ffi::CStr, create: bool) -> Result<Fd, WriteError> {
    let flags = libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: c is NUL-terminated and relative to our directory descriptor.
    let fd = unsafe {
        if create {
            libc::openat(
                dir.0,
                c.as_ptr(),
                flags | libc::O_CREAT | libc::O_EXCL,
                0o600,
            )
        } else {
            libc::openat(dir.0, c.as_ptr(), flags)
        }
    };
    if fd < 0 {
        let e = errno();
        return Err(match (create, e) {
            (true, libc::EEXIST) => WriteError::Exists,
            (false, libc::ENOENT | libc::ELOOP) => WriteError::StacksReplaced,
            (true, _) => WriteError::Create(e),
            (false, _) => WriteError::Write(e),
        });
    }
    Ok(Fd(fd))
}

/// Appends one member to the stacks file `name` (creating it the first time), optionally
/// fsynced. A member that was not written completely is cut off again, so the file only
/// ever holds complete members followed by at most one that a crash interrupted.
pub fn append_stacks(
    dir: &Fd,
    name: &str,
    state: &mut StacksFile,
    sync: bool,
    fill: impl FnOnce(&Fd) -> io::Result<()>,
) -> Result<(), WriteError> {
    let c = cstr(name).map_err(WriteError::Create)?;
    let file = open_stacks(dir, &c, state.identity.is_none())?;
    let id = identity(&file).map_err(WriteError::Write)?;
    match state.identity {
        None => state.identity = Some(id),
        Some(known) if known != id => return Err(WriteError::StacksReplaced),
        Some(_) => {}
    }
    // Position at the end of the good part (a failed append was cut off; someone else's
    // appended bytes are overwritten rather than trusted).
    // SAFETY: plain lseek/ftruncate on our descriptor.
    unsafe {
        libc::ftruncate(file.0, state.good_len as libc::off_t);
        libc::lseek(file.0, state.good_len as libc::off_t, libc::SEEK_SET);
    }
    let written = fill(&file).map_err(|e| WriteError::Write(io_errno(&e)));
    // SAFETY: file is our descriptor.
    let result = if written.is_ok() && sync && unsafe { libc::fsync(file.0) } != 0 {
        Err(WriteError::Write(errno()))
    } else {
        written
    };
    match result {
        Ok(()) => {
            // SAFETY: lseek on our descriptor reports the end we wrote to.
            let end = unsafe { libc::lseek(file.0, 0, libc::SEEK_CUR) };
            if end >= 0 {
                state.good_len = end as u64;
            }
            Ok(())
        }
        Err(e) => {
            // SAFETY: cut the partial member off again.
            unsafe { libc::ftruncate(file.0, state.good_len as libc::off_t) };
            if state.good_len == 0 {
                // Nothing good in it yet: a file of ours with no member would be a leftover
                // (a full disk must leave nothing behind). The next dump creates it again.
                // SAFETY: c is NUL-terminated and relative to our directory descriptor; the
                // file is the one we created (identity checked above).
                unsafe { libc::unlinkat(dir.0, c.as_ptr(), 0) };
                state.identity = None;
            }
            Err(e)
        }
    }
}
