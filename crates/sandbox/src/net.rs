//! The managed network: a network namespace with only loopback, where each allowed proxy
//! port is forwarded to the same port on the host's loopback.
//!
//! Seccomp cannot filter by port and Landlock's TCP rules (ABI 4+) filter by port but not by
//! address, so the namespace is the boundary: inside it nothing but `lo` exists, and the
//! only way out is a listener on `127.0.0.1:<port>` (and `[::1]:<port>`) per allowed port.
//! Those listeners are created inside the namespace and handed (`SCM_RIGHTS`) to a small
//! bridge process that stays in the host's namespace: for every connection it accepts it
//! opens one to the same port on the host's loopback and copies bytes both ways. The bridge
//! is forked before the namespaces are entered, sends its standard descriptors to
//! `/dev/null`, dies with the sandboxed program (`PR_SET_PDEATHSIG`), and restricts itself
//! with Landlock to no filesystem access where the kernel has it. Where Landlock has TCP
//! rules, a further layer lets the program connect only to the allowed ports and bind none
//! unless `allow_local_binding`.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use crate::policy::ManagedNetwork;
use crate::{fdpass, sys, SandboxError};

const ACCESS_NET_BIND_TCP: u64 = 1 << 0;
const ACCESS_NET_CONNECT_TCP: u64 = 1 << 1;

/// The helper's end of the control socket to its bridge.
pub(crate) struct BridgeLink(UnixStream);

/// Forks the bridge. Must run before the network namespace is entered.
pub(crate) fn fork_bridge() -> Result<BridgeLink, SandboxError> {
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| SandboxError::step("creating the bridge socket", e))?;
    let parent = std::process::id() as libc::pid_t;
    match sys::fork().map_err(|e| SandboxError::step("forking the network bridge", e))? {
        0 => {
            drop(ours);
            let code = match bridge_main(theirs, parent) {
                Ok(()) => 0,
                Err(_) => 1,
            };
            sys::exit_now(code)
        }
        _ => Ok(BridgeLink(ours)),
    }
}

/// Inside the new network namespace: sets `lo` up, opens the listeners, hands them to the
/// bridge and waits until it has them.
pub(crate) fn open_ports(link: BridgeLink, net: &ManagedNetwork) -> Result<(), SandboxError> {
    sys::loopback_up().map_err(|e| SandboxError::step("setting the loopback interface up", e))?;
    let sock = link.0;
    for &port in &net.loopback_ports {
        let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map_err(|e| {
            SandboxError::step(format!("listening on 127.0.0.1:{port} in the namespace"), e)
        })?;
        send(&sock, v4.into())?;
        // IPv6 may be disabled; 127.0.0.1 is then the only way to the port.
        if let Ok(v6) = TcpListener::bind((Ipv6Addr::LOCALHOST, port)) {
            send(&sock, v6.into())?;
        }
    }
    fdpass::send_fd(sock.as_raw_fd(), None)
        .map_err(|e| SandboxError::step("handing the listeners to the bridge", e))?;
    let mut ack = [0u8; 1];
    (&sock)
        .read_exact(&mut ack)
        .map_err(|e| SandboxError::step("waiting for the network bridge", e))?;
    Ok(())
}

fn send(sock: &UnixStream, fd: OwnedFd) -> Result<(), SandboxError> {
    fdpass::send_fd(sock.as_raw_fd(), Some(&fd))
        .map_err(|e| SandboxError::step("handing a listener to the bridge", e))
}

/// Adds the Landlock TCP layer where the kernel has it (ABI 4+); elsewhere the namespace
/// alone enforces the policy.
pub(crate) fn restrict_tcp(net: &ManagedNetwork) -> Result<(), SandboxError> {
    if sys::landlock_abi().is_none_or(|abi| abi < 4) {
        return Ok(());
    }
    let mut handled = ACCESS_NET_CONNECT_TCP;
    if !net.allow_local_binding {
        handled |= ACCESS_NET_BIND_TCP;
    }
    let ruleset = sys::landlock_net_ruleset(handled)
        .map_err(|e| SandboxError::step("creating the Landlock network ruleset", e))?;
    for &port in &net.loopback_ports {
        sys::landlock_allow_port(&ruleset, port, ACCESS_NET_CONNECT_TCP).map_err(|e| {
            SandboxError::step(format!("adding the Landlock rule for port {port}"), e)
        })?;
    }
    sys::landlock_restrict_self(&ruleset)
        .map_err(|e| SandboxError::step("enforcing the Landlock network rules", e))
}

/// The bridge process: receives the listeners, acknowledges, then forwards until killed.
fn bridge_main(sock: UnixStream, parent: libc::pid_t) -> io::Result<()> {
    sys::kill_on_parent_death()?;
    if sys::parent_pid() != parent {
        return Err(io::Error::other("the sandbox helper is gone"));
    }
    sys::detach_stdio()?;
    let mut listeners = Vec::new();
    while let Some(fd) = fdpass::recv_fd(sock.as_raw_fd())? {
        listeners.push(TcpListener::from(fd));
    }
    (&sock).write_all(&[1])?;
    drop(sock);
    // The bridge needs no file after this point.
    if let Some(abi) = sys::landlock_abi() {
        let all = if abi >= 3 {
            (1 << 15) - 1
        } else {
            (1 << 13) - 1
        };
        if let Ok(ruleset) = sys::landlock_ruleset(all) {
            let _ = sys::set_no_new_privs();
            let _ = sys::landlock_restrict_self(&ruleset);
        }
    }
    let mut threads = Vec::new();
    for listener in listeners {
        threads.push(std::thread::spawn(move || accept_loop(listener)));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn accept_loop(listener: TcpListener) {
    let Ok(port) = listener.local_addr().map(|a| a.port()) else {
        return;
    };
    loop {
        let inner = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
            Err(_) => return,
        };
        std::thread::spawn(move || forward(inner, port));
    }
}

/// Copies bytes both ways between a connection from inside and a new one to the host.
fn forward(inner: TcpStream, port: u16) {
    let outer = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .or_else(|_| TcpStream::connect((Ipv6Addr::LOCALHOST, port)));
    let Ok(outer) = outer else {
        return;
    };
    let (Ok(inner2), Ok(outer2)) = (inner.try_clone(), outer.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || pipe(inner2, outer2));
    pipe(outer, inner);
    let _ = up.join();
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
