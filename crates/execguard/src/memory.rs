//! Reading the exec arguments out of the stopped caller's memory with
//! `process_vm_readv(2)`: the path string and the `argv` array of pointers, each string read
//! page by page up to its NUL, within fixed bounds.

use std::io;

/// The longest path read (`PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// The most argument strings read; an exec with more is refused.
pub const MAX_ARGS: usize = 32 * 1024;
/// The most bytes of argument text read in all; an exec with more is refused.
pub const MAX_ARG_BYTES: usize = 2 << 20;

const PAGE: usize = 4096;

/// Why the arguments could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The caller's memory could not be read (a bad pointer: the exec would fail with EFAULT).
    #[error("cannot read the caller's memory: {0}")]
    Memory(#[source] io::Error),
    /// Past one of the bounds above.
    #[error("{0} is longer than the guard reads")]
    TooLong(&'static str),
}

impl ReadError {
    /// The errno the refused exec returns.
    pub fn errno(&self) -> i32 {
        match self {
            ReadError::Memory(_) => libc::EFAULT,
            ReadError::TooLong(_) => libc::E2BIG,
        }
    }
}

/// Copies `buf.len()` bytes at `addr` of process `pid`; returns how many were read.
fn read_at(pid: i32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` covers `buf`, which is writable for its length; the remote range is
    // only read by the kernel, which checks it.
    #[allow(unsafe_code)]
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Reads the NUL-terminated string at `addr`, at most `max` bytes before the NUL. Reads never
/// cross a page boundary in one call, so a string that ends just before an unmapped page
/// is read whole.
pub fn read_cstring(
    pid: i32,
    addr: u64,
    max: usize,
    what: &'static str,
) -> Result<Vec<u8>, ReadError> {
    if addr == 0 {
        return Err(ReadError::Memory(io::Error::from_raw_os_error(
            libc::EFAULT,
        )));
    }
    let mut out = Vec::new();
    let mut at = addr;
    let mut chunk = [0u8; PAGE];
    loop {
        let in_page = PAGE - (at as usize % PAGE);
        let n = read_at(pid, at, &mut chunk[..in_page]).map_err(ReadError::Memory)?;
        if n == 0 {
            return Err(ReadError::Memory(io::Error::from_raw_os_error(
                libc::EFAULT,
            )));
        }
        if let Some(nul) = chunk[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..nul]);
            if out.len() > max {
                return Err(ReadError::TooLong(what));
            }
            return Ok(out);
        }
        out.extend_from_slice(&chunk[..n]);
        if out.len() > max {
            return Err(ReadError::TooLong(what));
        }
        at += n as u64;
    }
}

/// Reads the NULL-terminated array of string pointers at `addr` (an `argv`). A NULL `argv`
/// is an empty list, as Linux treats it.
pub fn read_argv(pid: i32, addr: u64) -> Result<Vec<Vec<u8>>, ReadError> {
    let mut args = Vec::new();
    if addr == 0 {
        return Ok(args);
    }
    let mut total = 0usize;
    let mut at = addr;
    // The pointers are read up to a page at a time, not one by one.
    let mut words = [0u8; PAGE];
    loop {
        let in_page = (PAGE - (at as usize % PAGE)) / 8 * 8;
        let want = if in_page == 0 { 8 } else { in_page };
        let n = read_at(pid, at, &mut words[..want]).map_err(ReadError::Memory)?;
        if n < 8 {
            return Err(ReadError::Memory(io::Error::from_raw_os_error(
                libc::EFAULT,
            )));
        }
        let whole = n - n % 8;
        for word in words[..whole].chunks_exact(8) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            let ptr = u64::from_ne_bytes(bytes);
            if ptr == 0 {
                return Ok(args);
            }
            if args.len() == MAX_ARGS {
                return Err(ReadError::TooLong("the argument list"));
            }
            let arg = read_cstring(pid, ptr, MAX_ARG_BYTES - total, "the argument list")?;
            total += arg.len() + 1;
            args.push(arg);
        }
        at += whole as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    #[test]
    fn reads_strings_and_argv_of_a_process_here() {
        let pid = std::process::id() as i32;
        let a = CString::new("first").unwrap();
        let b = CString::new("second argument").unwrap();
        let argv = [a.as_ptr(), b.as_ptr(), std::ptr::null()];
        let got = read_argv(pid, argv.as_ptr() as u64).unwrap();
        assert_eq!(got, vec![b"first".to_vec(), b"second argument".to_vec()]);
        assert_eq!(
            read_cstring(pid, a.as_ptr() as u64, 100, "x").unwrap(),
            b"first"
        );
        assert!(matches!(
            read_cstring(pid, a.as_ptr() as u64, 3, "x"),
            Err(ReadError::TooLong("x"))
        ));
        assert!(read_argv(pid, 0).unwrap().is_empty());
        assert_eq!(
            read_cstring(pid, 0, 10, "x").unwrap_err().errno(),
            libc::EFAULT
        );
    }

    #[test]
    fn a_string_that_crosses_pages_is_read_whole() {
        let pid = std::process::id() as i32;
        let mut big = vec![b'x'; 3 * PAGE + 17];
        big.push(0);
        let got = read_cstring(pid, big.as_ptr() as u64, MAX_ARG_BYTES, "x").unwrap();
        assert_eq!(got.len(), 3 * PAGE + 17);
    }
}
