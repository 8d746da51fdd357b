//! Feeds arbitrary multipart messages to the protocol decoder, with and without a key, and
//! checks what holds by design (`firmware-bridge/src/protocol/decode.rs`,
//! `docs/protocol.md`):
//!
//! 1. `decode` never panics, and every error has a reason and a message.
//! 2. Signing does not change meaning: the input with the `SIGNED` flag set and a valid
//!    tag appended decodes under the key exactly as the input with the flag cleared
//!    decodes without one (the same message, compared bit for bit through its encoding as
//!    fields may hold NaNs, or an error of the same kind and reason).
//! 3. A message that decodes without a key is unsigned, is refused (`Unsigned`) under the
//!    key, and re-encodes to the very same parts; signed with the key, it re-encodes to
//!    the input plus the flag and the tag (every header byte is either decoded or a
//!    reserved byte that must be zero, and field values are carried bit for bit).
//! 4. A message that decodes under the key (the seeds' signed messages) is refused without
//!    one (`NoKey`), decodes like its unsigned twin (tag stripped, flag cleared), and
//!    re-encodes to the same parts, tag included.
//! 5. Every decoded field passes `Field::check` (so `Field::encode_into` may encode it), and
//!    `frame_envelope` agrees with `encode_frame`.
//!
//! The input format is in `input.rs`: parts back to back, each a little-endian u16 length
//! and its bytes (a short tail becomes the last part), so the fuzzer explores part counts,
//! header fields and payloads alike. The seeds (`examples/seeds.rs`) are valid messages of
//! every kind, signed and unsigned.
//!
//! Check 3 found that result headers with non-zero reserved bytes were accepted
//! (they re-encoded to other bytes); the decoder now rejects them as `malformed`.
#![no_main]

use std::mem::discriminant;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pleura_bridge::protocol::{
    decode, encode_frame, encode_result, encode_scan, encode_status, frame_envelope, Auth,
    DecodeError, Key, Message, FLAG_SIGNED,
};

#[path = "input.rs"]
mod input;

fn key() -> &'static Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    KEY.get_or_init(|| Key::new(&input::KEY).expect("a 32-byte key"))
}

/// The parts of `msg` as the encoder writes them.
fn encode(msg: &Message<'_>, key: Option<&Key>) -> Vec<Vec<u8>> {
    match msg {
        Message::Scan(m) => encode_scan(m, key),
        Message::Frame(f) => encode_frame(&f.header, f.payload, key),
        Message::Result(m) => encode_result(m, key),
        Message::Status(m) => encode_status(m, key),
    }
}

fn owned(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.to_vec()).collect()
}

fn refs(parts: &[Vec<u8>]) -> Vec<&[u8]> {
    parts.iter().map(|p| p.as_slice()).collect()
}

/// `parts` with the SIGNED flag of part 0 set or cleared (when part 0 has a flags word).
fn with_flag(parts: &[&[u8]], signed: bool) -> Vec<Vec<u8>> {
    let mut out = owned(parts);
    if let Some(p0) = out.first_mut() {
        if p0.len() >= 12 {
            let mut flags = u32::from_le_bytes([p0[8], p0[9], p0[10], p0[11]]);
            if signed {
                flags |= FLAG_SIGNED;
            } else {
                flags &= !FLAG_SIGNED;
            }
            p0[8..12].copy_from_slice(&flags.to_le_bytes());
        }
    }
    out
}

fn check_error(e: &DecodeError) {
    assert!(!e.reason().is_empty());
    assert!(!e.to_string().is_empty());
}

/// Whether two messages are the same, bit for bit: compared by their encodings, since `==`
/// on messages compares floats as numbers (a NaN differs from itself, 0.0 equals -0.0).
fn same_message(a: &Message<'_>, b: &Message<'_>) -> bool {
    encode(a, None) == encode(b, None)
}

/// Same outcome: the same message, or errors of the same variant and reason (the text may
/// differ, e.g. "unknown flags" quotes the flags word, which differs by the SIGNED bit).
fn same_outcome(
    a: &Result<Message<'_>, DecodeError>,
    b: &Result<Message<'_>, DecodeError>,
) -> bool {
    match (a, b) {
        (Ok(x), Ok(y)) => same_message(x, y),
        (Err(x), Err(y)) => discriminant(x) == discriminant(y) && x.reason() == y.reason(),
        _ => false,
    }
}

fn check_message(msg: &Message<'_>) {
    let fields = match msg {
        Message::Scan(m) => &m.fields[..],
        Message::Result(m) => &m.fields[..],
        Message::Frame(f) => {
            for key in [None, Some(key())] {
                let (h, tag) = frame_envelope(&f.header, f.payload, key);
                let parts = encode_frame(&f.header, f.payload, key);
                assert_eq!(
                    parts[0], h,
                    "frame_envelope header differs from encode_frame"
                );
                assert_eq!(
                    parts.get(2).map(|t| t.as_slice()),
                    tag.as_ref().map(|t| &t[..])
                );
            }
            &[]
        }
        Message::Status(_) => &[],
    };
    for f in fields {
        if let Err(e) = f.check() {
            panic!("decoded field does not pass Field::check: {e}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let parts = input::split(data);
    let k = key();

    let plain = decode(&parts, Auth::None);
    let keyed = decode(&parts, Auth::Required(k));
    for r in [&plain, &keyed] {
        if let Err(e) = r {
            check_error(e);
        }
    }
    if parts.is_empty() {
        return;
    }

    // 2. Signing does not change meaning.
    let mut signed = with_flag(&parts, true);
    let tag = k.sign(&refs(&signed));
    signed.push(tag.to_vec());
    let unsigned = with_flag(&parts, false);
    let via_key = decode(&refs(&signed), Auth::Required(k));
    let via_none = decode(&refs(&unsigned), Auth::None);
    assert!(
        same_outcome(&via_key, &via_none),
        "signed twin decodes as {via_key:?}, unsigned twin as {via_none:?}"
    );

    // 3. A message decoded without a key.
    if let Ok(msg) = &plain {
        check_message(msg);
        assert_eq!(
            parts[0][8] & 1,
            0,
            "a message with the SIGNED flag decoded without a key"
        );
        assert_eq!(keyed.as_ref().err(), Some(&DecodeError::Unsigned));
        let expected = owned(&parts);
        assert_eq!(
            encode(msg, None),
            expected,
            "re-encoding differs from the input"
        );
        let mut expected_signed = with_flag(&refs(&expected), true);
        let tag = k.sign(&refs(&expected_signed));
        expected_signed.push(tag.to_vec());
        assert_eq!(
            encode(msg, Some(k)),
            expected_signed,
            "signed re-encoding differs"
        );
    }

    // 4. A message decoded under the key.
    if let Ok(msg) = &keyed {
        check_message(msg);
        assert_eq!(plain.as_ref().err(), Some(&DecodeError::NoKey));
        let stripped = with_flag(&parts[..parts.len() - 1], false);
        let twin = decode(&refs(&stripped), Auth::None);
        assert!(
            matches!(&twin, Ok(t) if same_message(t, msg)),
            "tag-stripped twin decodes as {twin:?}, the signed message as {msg:?}"
        );
        assert_eq!(
            encode(msg, Some(k)),
            owned(&parts),
            "signed re-encoding differs from the input"
        );
    }
});
