//! The control socket: how `offheap snapshot <pid>` and `offheap mark <pid>` reach a process.
//!
//! Signals cannot do this in Go programs (the runtime swallows SIGUSR1/SIGUSR2 and real-time
//! signals), so the dumper thread listens on an abstract unix socket `@offheap.<pid>`. Only a
//! peer with our uid (or root) is served. The socket is close-on-exec and moved to a high file
//! descriptor so it does not shift the numbers the host's own open() calls get.

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
    for (i, b) in name.bytes().enumerate() {
        addr.sun_path[i + 1] = b as libc::c_char;
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
            let fd = move_high(fd);
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

    /// Accept one pending request; returns the stream and the command line it sent.
    pub fn accept(&self) -> Result<Option<(UnixStream, String)>, i32> {
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
        Ok(Some((
            stream,
            String::from_utf8_lossy(&line).trim().to_string(),
        )))
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        // SAFETY: we own fd.
        unsafe { libc::close(self.fd) };
    }
}

fn peer_allowed(fd: RawFd) -> bool {
    // SAFETY: getsockopt fills a ucred of the given size.
    unsafe {
        let mut cred: libc::ucred = core::mem::zeroed();
        let mut len = core::mem::size_of::<libc::ucred>() as libc::socklen_t;
        if libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut _ as *mut libc::c_void,
            &mut len,
        ) != 0
        {
            return false;
        }
        cred.uid == 0 || cred.uid == libc::getuid()
    }
}

/// Move `fd` near the top of the descriptor limit.
fn move_high(fd: RawFd) -> RawFd {
    // SAFETY: getrlimit fills the struct; fcntl duplicates a descriptor we own.
    unsafe {
        let mut lim: libc::rlimit = core::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur < 128 {
            return fd;
        }
        let floor = (lim.rlim_cur.min(1 << 20) - 64) as libc::c_int;
        let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor);
        if high < 0 {
            return fd;
        }
        libc::close(fd);
        high
    }
}
