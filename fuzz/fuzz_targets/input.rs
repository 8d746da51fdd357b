//! The fuzz input format, shared by the `decode` target and the seed generator
//! (`examples/seeds.rs`): a multipart message is written as its parts back to back, each a
//! little-endian u16 length followed by that many bytes. When decoding an arbitrary input,
//! a length past the end takes what is left (so a short tail is the last part), a single
//! trailing byte is ignored, and at most [`MAX_PARTS`] parts are read.

/// Most parts read from one input (a result message of 15 fields plus its tag fits).
pub const MAX_PARTS: usize = 16;

/// The pre-shared key the target decodes with and the seeds are signed with.
pub const KEY: [u8; 32] = [0x5a; 32];

/// Splits a fuzz input into message parts.
pub fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 && parts.len() < MAX_PARTS {
        let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        rest = &rest[2..];
        let take = len.min(rest.len());
        parts.push(&rest[..take]);
        rest = &rest[take..];
    }
    parts
}

/// Writes message parts as a fuzz input ([`split`] gives them back).
#[allow(dead_code)] // used by the seed generator only
pub fn join<P: AsRef<[u8]>>(parts: &[P]) -> Vec<u8> {
    assert!(parts.len() <= MAX_PARTS, "{} parts", parts.len());
    let mut out = Vec::new();
    for p in parts {
        let p = p.as_ref();
        let len = u16::try_from(p.len()).expect("a part of at most 65535 bytes");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}
