//! `offheap snapshot <pid>` / `offheap mark <pid>`: one request on the library's control
//! socket, the abstract unix stream socket `\0offheap.<pid>`.
//!
//! Abstract sockets need no file and vanish with the process; signals were ruled out because
//! the Go runtime swallows SIGUSR1/2 (shared notes). Protocol: one request line, one reply line
//! (`ok <path>`, `ok epoch <n>` or `err <message>`).

use crate::{EXIT_ERROR, EXIT_OK};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `request` and returns the reply line without its newline.
pub fn request(pid: u32, request: &str) -> Result<String> {
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        bail!("no process with pid {pid} (it has ended, or lives in another pid namespace)");
    }
    talk(pid, request, true)
}

/// One request on `@offheap.<pid>`. The library's dumper thread opens the socket a moment
/// after the process starts: a process that is `alive` but not listening yet gets a few
/// more tries.
fn talk(pid: u32, request: &str, alive: bool) -> Result<String> {
    let name = format!("offheap.{pid}");
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let stream = loop {
        match UnixStream::connect_addr(&addr) {
            Ok(s) => break s,
            Err(e)
                if alive
                    && e.kind() == std::io::ErrorKind::ConnectionRefused
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot connect to process {pid}'s control socket (@{name}): is it \
                         running with liboffheap preloaded (LD_PRELOAD) and in this network \
                         namespace?"
                    )
                })
            }
        }
    };
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    (&stream)
        .write_all(format!("{request}\n").as_bytes())
        .context("cannot send the request")?;
    let mut line = String::new();
    let mut r = BufReader::new((&stream).take(64 * 1024));
    match r.read_line(&mut line) {
        Ok(0) => bail!("process {pid} closed the control socket without replying"),
        Ok(_) => {}
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut =>
        {
            bail!("process {pid} did not reply within {} s", TIMEOUT.as_secs())
        }
        Err(e) => return Err(e).context("cannot read the reply"),
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

pub fn run(pid: u32, what: &str) -> Result<u8> {
    let reply = request(pid, what)?;
    println!("{reply}");
    if reply == "ok" || reply.starts_with("ok ") {
        Ok(EXIT_OK)
    } else {
        eprintln!("offheap: process {pid} refused: {reply}");
        Ok(EXIT_ERROR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn talks_to_an_abstract_socket() {
        // A fake library on a pid that cannot exist (pids are < 2^22).
        let pid = 4_000_000_000u32 + std::process::id() % 1000;
        let addr = SocketAddr::from_abstract_name(format!("offheap.{pid}").as_bytes()).unwrap();
        let l = UnixListener::bind_addr(&addr).unwrap();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            assert_eq!(line, "mark\n");
            (&s).write_all(b"ok epoch 1\n").unwrap();
        });
        assert_eq!(talk(pid, "mark", false).unwrap(), "ok epoch 1");
        t.join().unwrap();
        assert!(talk(pid, "mark", false).is_err());
        // Through the public entry: a pid that does not exist is said to be so.
        let e = request(pid, "mark").unwrap_err().to_string();
        assert!(e.contains("no process with pid"), "{e}");
    }
}
