//! The control socket: how `offheap snapshot <pid>` and `offheap mark <pid>` reach a process.
//!
//! Signals cannot do this in Go programs (the runtime swallows SIGUSR1/SIGUSR2 and real-time
//! signals), so the dumper thread listens on an abstract unix socket `@offheap.<pid>`. Only a
//! peer with our uid (or root) is served. The socket lives in the dumper thread's private
//! descriptor table, so the host never sees it, cannot close it, and loses no descriptor of
//! its own RLIMIT_NOFILE to it.

use std::io::{Read, Write};
use std::os::unix::io::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;

pub struct Control {
    fd: RawFd,
}

fn abstract_addr(pid: u32) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: sockaddr_un is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let name = format!("offheap.{pid}");
    for (slot, b) in addr.sun_path.iter_mut().skip(1).zip(name.bytes()) {
        *slot = b as libc::c_char;
    }
    let len = core::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    (addr, len as libc::socklen_t)
}

impl Control {
    pub fn open(pid: u32) -> Option<Control> {
        // SAFETY: plain socket calls on a fresh descriptor we own.
        unsafe {
            let fd = libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            );
            if fd < 0 {
                return None;
            }
            let (addr, len) = abstract_addr(pid);
            if libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len) != 0
                || libc::listen(fd, 8) != 0
            {
                crate::verbose!(
                    "control socket @offheap.{pid} unavailable: {}",
                    std::io::Error::last_os_error()
                );
                libc::close(fd);
                return None;
            }
            Some(Control { fd })
        }
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Forget the descriptor without closing it (after fork the number may be the host's).
    pub fn forget(self) {
        core::mem::forget(self);
    }

    /// Accept one pending request; returns the stream, the command line it sent, and whether
    /// it came from this process itself.
    pub fn accept(&self) -> Result<Option<(UnixStream, String, bool)>, i32> {
        // SAFETY: accept4 on our listening socket; the new fd is owned by the UnixStream.
        let conn = unsafe {
            libc::accept4(
                self.fd,
                core::ptr::null_mut(),
                core::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if conn < 0 {
            let e = offheap_core::sys::errno();
            return if e == libc::EAGAIN || e == libc::EINTR || e == libc::ECONNABORTED {
                Ok(None)
            } else {
                Err(e)
            };
        }
        // SAFETY: conn is a fresh descriptor we own.
        let mut stream = unsafe { UnixStream::from_raw_fd(conn) };
        if !peer_allowed(conn) {
            let _ = stream.write_all(b"err permission denied\n");
            return Ok(None);
        }
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(1)));
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while line.len() < 128 {
            match stream.read(&mut byte) {
                Ok(1) if byte[0] != b'\n' => line.push(byte[0]),
                _ => break,
            }
        }
        let from_self = peer_is_self(conn);
        Ok(Some((
            stream,
            String::from_utf8_lossy(&line).trim().to_string(),
            from_self,
        )))
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        // SAFETY: we own fd.
        unsafe { libc::close(self.fd) };
    }
}

fn peer_cred(fd: RawFd) -> Option<libc::ucred> {
    // SAFETY: getsockopt fills a ucred of the given size.
    unsafe {
        let mut cred: libc::ucred = core::mem::zeroed();
        let mut len = core::mem::size_of::<libc::ucred>() as libc::socklen_t;
        (libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut _ as *mut libc::c_void,
            &mut len,
        ) == 0)
            .then_some(cred)
    }
}

fn peer_allowed(fd: RawFd) -> bool {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    peer_cred(fd).is_some_and(|c| c.uid == 0 || c.uid == uid)
}

/// Wakes our own dumper thread with `cmd` (the program's last thread asking it to leave):
/// a connection to our own socket, closed again at once.
pub fn tell_own_dumper(pid: u32, cmd: &str) -> bool {
    // SAFETY: plain socket calls on a fresh descriptor we close before returning.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return false;
        }
        let (addr, len) = abstract_addr(pid);
        let ok = libc::connect(fd, &addr as *const _ as *const libc::sockaddr, len) == 0
            && libc::write(fd, cmd.as_ptr().cast(), cmd.len()) == cmd.len() as isize;
        libc::close(fd);
        ok
    }
}

/// The peer of a connection is this very process.
pub fn peer_is_self(fd: RawFd) -> bool {
    peer_cred(fd).is_some_and(|c| c.pid as u32 == crate::process::own_pid())
}
