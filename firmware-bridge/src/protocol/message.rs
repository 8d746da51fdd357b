//! The message types: the kinds, and the scan, frame, result and status messages with
//! their headers.

use super::{Dtype, Field};

/// Message kinds (header bytes 6..8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Kind {
    /// Scanner -> daemon: acquisition parameters of a scan, under a scan id.
    Scan = 1,
    /// Scanner -> daemon: one RF frame.
    Frame = 2,
    /// Daemon -> consumers: the per-frame results.
    Result = 3,
    /// Daemon -> consumers: periodic status (JSON).
    Status = 4,
}

impl Kind {
    pub(super) fn from_u16(v: u16) -> Option<Self> {
        match v {
            1 => Some(Kind::Scan),
            2 => Some(Kind::Frame),
            3 => Some(Kind::Result),
            4 => Some(Kind::Status),
            _ => None,
        }
    }
}

/// A scan-parameter message: the zea `scan/` fields of a scan, under an id.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanMessage {
    /// Identifies the publishing session (chosen at random when a publisher opens).
    pub stream_id: u64,
    /// The scan id frames refer to (within this stream).
    pub scan_id: u64,
    /// Which announcement of the stream this is: the same while the parameters are only
    /// repeated, one more at every change. A receiver rejects an epoch below the stream's
    /// current one, so a recorded scan message cannot be replayed to restore old
    /// parameters (`docs/protocol.md`, "Scan message").
    pub epoch: u32,
    /// The scan fields (float64), named as in zea (`docs/protocol.md` lists them).
    pub fields: Vec<Field>,
}

/// The header of a frame message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub stream_id: u64,
    pub scan_id: u64,
    pub sequence: u64,
    /// Acquisition time of the frame, ns since the UNIX epoch.
    pub timestamp_ns: u64,
    pub dtype: Dtype,
    /// (n_tx, n_ax, n_el, n_ch).
    pub shape: [u32; 4],
    pub payload_len: u64,
    /// CRC32C (Castagnoli) of the payload.
    pub crc32c: u32,
}

impl FrameHeader {
    /// A header for `payload`, with its length and CRC32C filled in.
    pub fn for_payload(
        stream_id: u64,
        scan_id: u64,
        sequence: u64,
        timestamp_ns: u64,
        dtype: Dtype,
        shape: [u32; 4],
        payload: &[u8],
    ) -> Self {
        FrameHeader {
            stream_id,
            scan_id,
            sequence,
            timestamp_ns,
            dtype,
            shape,
            payload_len: payload.len() as u64,
            crc32c: crc32c::crc32c(payload),
        }
    }

    /// Bytes the shape needs, or None when it overflows.
    pub fn shape_bytes(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(self.dtype.size() as u64, |acc, &d| {
                acc.checked_mul(d as u64)
            })
    }
}

/// A decoded frame message; the payload borrows from the received part.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameMessage<'a> {
    pub header: FrameHeader,
    pub payload: &'a [u8],
}

/// A result message (daemon -> consumers).
#[derive(Clone, Debug, PartialEq)]
pub struct ResultMessage {
    /// The stream the frame came from (scan ids belong to their stream).
    pub stream_id: u64,
    pub scan_id: u64,
    pub sequence: u64,
    /// Acquisition time of the frame, ns since the UNIX epoch.
    pub timestamp_ns: u64,
    /// When the daemon published the result, ns since the UNIX epoch.
    pub published_ns: u64,
    /// `published_ns - timestamp_ns` as the daemon measured it (0 if negative).
    pub latency_ns: u64,
    /// The results, one part each.
    pub fields: Vec<Field>,
}

/// A status message (daemon -> consumers): a JSON object.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusMessage {
    pub published_ns: u64,
    pub json: String,
}

/// Any decoded message.
#[derive(Clone, Debug, PartialEq)]
pub enum Message<'a> {
    Scan(ScanMessage),
    Frame(FrameMessage<'a>),
    Result(ResultMessage),
    Status(StatusMessage),
}
