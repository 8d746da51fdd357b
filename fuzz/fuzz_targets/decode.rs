//! Feeds arbitrary multipart messages to the protocol decoder, with and without a key.
//!
//! The input is split into parts: each part is a little-endian u16 length followed by that
//! many bytes (a short tail becomes the last part), so the fuzzer explores part counts,
//! header fields and payloads alike.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pleura_bridge::protocol::{decode, Auth, Key};

fuzz_target!(|data: &[u8]| {
    let mut parts: Vec<&[u8]> = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 && parts.len() < 16 {
        let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        rest = &rest[2..];
        let take = len.min(rest.len());
        parts.push(&rest[..take]);
        rest = &rest[take..];
    }
    let _ = decode(&parts, Auth::None);
    if let Ok(key) = Key::new(&[0x5a; 32]) {
        let _ = decode(&parts, Auth::Required(&key));
    }
});
