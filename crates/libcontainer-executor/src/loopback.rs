//! The loopback interface of a container's new network namespace, brought up as runc does
//! (libcontainer 0.7 leaves it down: a container could not reach 127.0.0.1).

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use wharf_executor::Pid;

/// Brings `lo` up in the network namespace of `pid`: the calling thread enters it, sets the
/// flag, and comes back.
///
/// # Errors
/// The namespaces cannot be entered or the interface not changed. If the thread cannot
/// come back to its own namespace, the process aborts: it would run in the container's.
pub(crate) fn bring_up(pid: Pid) -> io::Result<()> {
    let own = File::open("/proc/thread-self/ns/net")?;
    let container = File::open(format!("/proc/{pid}/ns/net"))?;
    move_into_link_name_space(container.as_fd(), Some(LinkNameSpaceType::Network))?;
    let result = set_up("lo");
    if let Err(err) = move_into_link_name_space(own.as_fd(), Some(LinkNameSpaceType::Network)) {
        tracing::error!(error = %err, "cannot return to our network namespace");
        std::process::abort();
    }
    result
}

/// `ifconfig <name> up`, through `SIOCGIFFLAGS` and `SIOCSIFFLAGS`.
fn set_up(name: &str) -> io::Result<()> {
    let socket = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )?;
    // SAFETY: `ifreq` is plain data; all zeros is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
    // SAFETY: `request` is a valid ifreq naming the interface, alive for both calls.
    unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request) < 0 {
            return Err(io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &request) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
