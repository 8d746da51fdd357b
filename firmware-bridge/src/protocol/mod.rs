//! The pleura wire protocol, version 2: encoder and decoder.
//!
//! This module is the single implementation of the protocol, shared by the daemon
//! (`pleura::protocol`) and the scanner side (this crate's publisher and C ABI). The
//! normative description, precise enough to implement a peer in C or Python without this
//! code, is `docs/protocol.md`; the constants and layouts below follow it byte for byte.
//!
//! A message is a ZeroMQ multipart message. Part 0 is a fixed-size little-endian header
//! whose first 16 bytes are common to every kind (magic `PLRA`, version, kind, flags,
//! reserved). The remaining parts depend on the kind. When the `SIGNED` flag is set the
//! last part is a 32-byte HMAC-SHA256 tag over every preceding part, each prefixed by its
//! length as a little-endian u32.
//!
//! Decoding never panics on any input: every length is checked before it is used.

mod decode;
mod encode;
mod field;
mod key;
mod message;

pub use decode::{decode, decode_fields, peek_kind, Auth, DecodeError};
pub use encode::{
    encode_fields, encode_frame, encode_result, encode_scan, encode_status, frame_envelope,
};
pub use field::{Dtype, Field, FieldData};
pub use key::{Key, KeyError};
pub use message::{
    FrameHeader, FrameMessage, Kind, Message, ResultMessage, ScanMessage, StatusMessage,
};

/// First four bytes of every header.
pub const MAGIC: [u8; 4] = *b"PLRA";
/// The protocol version this module speaks. Version 2 added the scan epoch (scan header
/// bytes 44..48), so that a replayed scan message can be told from a current one, and the
/// stream id to the result header, as scan ids belong to their stream.
pub const VERSION: u16 = 2;
/// Length of the header prefix common to every kind.
pub const PREFIX_LEN: usize = 16;
/// Length of part 0 of a scan message.
pub const SCAN_HEADER_LEN: usize = 48;
/// Length of part 0 of a frame message.
pub const FRAME_HEADER_LEN: usize = 80;
/// Length of part 0 of a result message.
pub const RESULT_HEADER_LEN: usize = 72;
/// Length of part 0 of a status message.
pub const STATUS_HEADER_LEN: usize = 32;
/// Length of the HMAC-SHA256 tag.
pub const TAG_LEN: usize = 32;
/// Flag bit: the last part is an HMAC-SHA256 tag.
pub const FLAG_SIGNED: u32 = 1;
/// Shortest accepted key, bytes (RFC 2104 recommends at least the hash output length).
pub const MIN_KEY_LEN: usize = 32;
/// Most fields a scan or result message may carry.
pub const MAX_FIELDS: usize = 256;
/// Most dimensions a field may have.
pub const MAX_NDIM: usize = 8;
