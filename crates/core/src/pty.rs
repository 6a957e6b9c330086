//! The parent's end of a pseudo-terminal, readable and writable from async code.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

/// A PTY master in non-blocking mode. Reads and writes may run concurrently from different
/// tasks (`&self`).
#[derive(Debug)]
pub struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

impl PtyMaster {
    /// Wraps a master descriptor, switching it to non-blocking mode.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let raw = fd.as_raw_fd();
        let flags = OFlag::from_bits_truncate(fcntl(raw, FcntlArg::F_GETFL)?);
        fcntl(raw, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(PtyMaster { fd: register(fd)? })
    }

    /// Reads some output. Returns 0 at end of output: `EIO` means every holder of the
    /// terminal's other side has closed it.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| nix::unistd::read(fd.as_raw_fd(), buf).map_err(io::Error::from))
            {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data` to the terminal's input.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd, data).map_err(io::Error::from)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Sets the terminal size.
    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        set_winsize(self.fd.get_ref().as_raw_fd(), &size)
    }
}

/// Registers `fd` with the runtime (also used for the inotify descriptor of `fs::watch`).
#[allow(unsafe_code)]
pub(crate) fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is an open descriptor that stays open, and keeps returning the same
    // number from `as_raw_fd`, until it is dropped together with the `AsyncFd`.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);

#[allow(unsafe_code)]
fn set_winsize(fd: i32, size: &libc::winsize) -> io::Result<()> {
    // SAFETY: `fd` is an open PTY master owned by this struct and `size` points to a valid
    // winsize for the duration of the call.
    unsafe { tiocswinsz(fd, size) }
        .map(|_| ())
        .map_err(io::Error::from)
}
