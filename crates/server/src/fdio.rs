//! Async I/O on raw descriptors tokio has no type for (pseudo-terminals).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// An owned, non-blocking descriptor registered with the reactor.
#[derive(Debug)]
pub(crate) struct AsyncOwnedFd(AsyncFd<Owned>);

#[derive(Debug)]
struct Owned(OwnedFd);

impl AsRawFd for Owned {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl AsyncOwnedFd {
    /// Registers `fd`, which must be non-blocking. Register a duplicate (`try_clone`) per
    /// direction: epoll refuses one descriptor registered twice.
    pub(crate) fn new(fd: OwnedFd, interest: Interest) -> io::Result<Self> {
        // SAFETY: `Owned` owns the descriptor, so it stays open and is the same descriptor
        // for as long as the `AsyncFd` holds it.
        let registered = unsafe { AsyncFd::register_with_interest(Owned(fd), interest) };
        registered.map(Self).map_err(io::Error::from)
    }

    /// The descriptor.
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.get_ref().0.as_fd()
    }

    /// Waits until it is readable.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.0.readable().await.map(|mut guard| guard.clear_ready())
    }

    /// Reads once readable; `Ok(0)` at EOF. A terminal whose other side is closed reads EIO,
    /// returned as an error.
    pub(crate) async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.0.readable().await?;
            match guard.try_io(|fd| {
                rustix::io::read(fd.get_ref().0.as_fd(), &mut *buf).map_err(io::Error::from)
            }) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data`, waiting for room as needed.
    pub(crate) async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.0.writable().await?;
            match guard.try_io(|fd| {
                rustix::io::write(fd.get_ref().0.as_fd(), data).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(err)) => return Err(err),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

/// Makes `fd` non-blocking.
pub(crate) fn set_nonblocking(fd: &impl AsFd) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}
