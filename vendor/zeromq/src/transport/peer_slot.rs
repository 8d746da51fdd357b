// pleura patch: SocketOptions::max_peers, the bound on the connections a bound socket
// holds at once (see PLEURA-PATCH.md).
//
// The accept loops take a slot for each accepted connection before anything is allocated
// for it (no socket buffer tuning, no framing, no task); a connection that gets none is
// dropped on the spot. The slot is owned by the connection's two I/O halves, shared, so it
// is freed exactly when the transport stream is closed, whichever code path drops the last
// half: a failed or timed-out handshake (the accept task ends), a backend's disconnect
// handling, a decode error, the socket's shutdown.

use crate::SocketOptions;

use futures::{AsyncRead, AsyncWrite};

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

/// One of `SocketOptions::max_peers` slots, held by an accepted connection.
pub(crate) struct PeerSlot(Arc<SocketOptions>);

impl PeerSlot {
    /// A slot for a newly accepted connection: `Ok(None)` when the socket has no limit,
    /// `Err(max)` when all `max` slots are held.
    pub(crate) fn acquire(options: &Arc<SocketOptions>) -> Result<Option<PeerSlot>, usize> {
        let Some(max) = options.max_peers else {
            return Ok(None);
        };
        options
            .peers_held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < max).then_some(held + 1)
            })
            .map(|_| Some(PeerSlot(Arc::clone(options))))
            .map_err(|_| max)
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        self.0.peers_held.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An I/O half of a connection that shares its connection's slot.
pub(crate) struct SlotHeld<T> {
    inner: T,
    _slot: Arc<PeerSlot>,
}

impl<T> SlotHeld<T> {
    pub(crate) fn new(inner: T, slot: Arc<PeerSlot>) -> Self {
        Self { inner, _slot: slot }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SlotHeld<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }

    fn poll_read_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read_vectored(cx, bufs)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SlotHeld<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Frames a connection's two halves, each sharing `slot` when there is one.
pub(crate) fn framed_with_slot<R, W>(
    read: R,
    write: W,
    options: Arc<SocketOptions>,
    slot: Option<PeerSlot>,
) -> crate::codec::FramedIo
where
    R: AsyncRead + Unpin + Send + Sync + 'static,
    W: AsyncWrite + Unpin + Send + Sync + 'static,
{
    use crate::codec::FramedIo;
    match slot {
        None => FramedIo::new(Box::new(read), Box::new(write), options),
        Some(slot) => {
            let slot = Arc::new(slot);
            FramedIo::new(
                Box::new(SlotHeld::new(read, Arc::clone(&slot))),
                Box::new(SlotHeld::new(write, slot)),
                options,
            )
        }
    }
}
