//! The decoder: parts to checked messages, and the errors it reports.

use super::{
    Dtype, Field, FieldData, FrameHeader, FrameMessage, Key, Kind, Message, ResultMessage,
    ScanMessage, StatusMessage, FLAG_SIGNED, FRAME_HEADER_LEN, MAGIC, MAX_FIELDS, MAX_NDIM,
    PREFIX_LEN, RESULT_HEADER_LEN, SCAN_HEADER_LEN, STATUS_HEADER_LEN, TAG_LEN, VERSION,
};

/// Why a message could not be decoded. [`DecodeError::reason`] gives a short stable label
/// (used as the `reason` of the daemon's rejection counters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed message: {what}")]
    Malformed { what: String },
    #[error("bad magic {found:02x?}, expected \"PLRA\"")]
    Magic { found: [u8; 4] },
    #[error("unsupported protocol version {found} (this side speaks {VERSION})")]
    Version { found: u16 },
    #[error("unknown message kind {found}")]
    UnknownKind { found: u16 },
    #[error("unknown dtype code {found}")]
    UnknownDtype { found: u8 },
    #[error("frame payload dtype {found} (code {code}): frames carry int16 or float32")]
    FrameDtype { found: &'static str, code: u8 },
    #[error("scan body: {what}")]
    ScanBody { what: String },
    #[error("truncated payload: header says {expected} bytes, part has {found}")]
    Truncated { expected: u64, found: u64 },
    #[error(
        "shape {shape:?} of {dtype} needs {needed} bytes, header says payload_len {payload_len}"
    )]
    ShapeLength {
        shape: Vec<u32>,
        dtype: &'static str,
        needed: u64,
        payload_len: u64,
    },
    #[error("CRC32C mismatch: header {expected:#010x}, payload {computed:#010x}")]
    Crc { expected: u32, computed: u32 },
    #[error("message is not signed but a key is configured")]
    Unsigned,
    #[error("HMAC-SHA256 tag does not verify")]
    BadSignature,
    #[error("message is signed but no key is configured")]
    NoKey,
}

impl DecodeError {
    /// Short stable label of the error class.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Malformed { .. } | DecodeError::Magic { .. } => "malformed",
            DecodeError::UnknownKind { .. }
            | DecodeError::UnknownDtype { .. }
            | DecodeError::FrameDtype { .. } => "malformed",
            DecodeError::ScanBody { .. } => "bad_scan",
            DecodeError::Version { .. } => "version",
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::ShapeLength { .. } => "shape_mismatch",
            DecodeError::Crc { .. } => "crc",
            DecodeError::Unsigned | DecodeError::BadSignature | DecodeError::NoKey => "hmac",
        }
    }
}

fn malformed(what: impl Into<String>) -> DecodeError {
    DecodeError::Malformed { what: what.into() }
}

impl Field {
    /// Decodes one field from the front of `buf`; returns it and the bytes consumed.
    pub fn decode(buf: &[u8]) -> Result<(Field, usize), DecodeError> {
        let mut r = Reader::new(buf);
        let name_len = r.u8("field name length")? as usize;
        if name_len == 0 {
            return Err(malformed("empty field name"));
        }
        let name = r.take(name_len, "field name")?;
        if !name.is_ascii() {
            return Err(malformed("field name is not ASCII"));
        }
        let name = String::from_utf8_lossy(name).into_owned();
        let dtype_code = r.u8("field dtype")?;
        let dtype =
            Dtype::from_u8(dtype_code).ok_or(DecodeError::UnknownDtype { found: dtype_code })?;
        let ndim = r.u8("field ndim")? as usize;
        if ndim > MAX_NDIM {
            return Err(malformed(format!("field {name}: {ndim} dimensions")));
        }
        let mut shape = Vec::with_capacity(ndim);
        for _ in 0..ndim {
            shape.push(r.u32("field dimension")?);
        }
        let count = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| malformed(format!("field {name}: shape overflows")))?;
        let nbytes = count
            .checked_mul(dtype.size() as u64)
            .filter(|&n| n <= r.remaining() as u64)
            .ok_or_else(|| malformed(format!("field {name}: data shorter than shape {shape:?}")))?;
        let raw = r.take(nbytes as usize, "field data")?;
        let data = match dtype {
            Dtype::I16 => FieldData::I16(
                raw.chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
            Dtype::F32 => FieldData::F32(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            Dtype::F64 => FieldData::F64(
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
            Dtype::U8 => FieldData::U8(raw.to_vec()),
        };
        Ok((Field { name, shape, data }, r.pos))
    }
}

/// Decodes a body made of fields back to back.
pub fn decode_fields(mut buf: &[u8]) -> Result<Vec<Field>, DecodeError> {
    let mut fields = Vec::new();
    while !buf.is_empty() {
        if fields.len() == MAX_FIELDS {
            return Err(malformed(format!("more than {MAX_FIELDS} fields")));
        }
        let (f, used) = Field::decode(buf)?;
        fields.push(f);
        buf = &buf[used..];
    }
    Ok(fields)
}

/// Whether decoding demands, accepts or ignores signatures.
#[derive(Clone, Copy, Debug)]
pub enum Auth<'k> {
    /// No key: unsigned messages are accepted, signed ones rejected ([`DecodeError::NoKey`]).
    None,
    /// A key: every message must carry a valid tag.
    Required(&'k Key),
}

/// Little-endian reader over a byte slice that reports what was missing.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(malformed(format!(
                "{what}: needs {n} bytes, {} left",
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The kind announced by part 0, after checking magic and version (no other check).
pub fn peek_kind(part0: &[u8]) -> Result<Kind, DecodeError> {
    if part0.len() < PREFIX_LEN {
        return Err(malformed(format!(
            "header part is {} bytes, shorter than the {PREFIX_LEN}-byte prefix",
            part0.len()
        )));
    }
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&part0[0..4]);
    if magic != MAGIC {
        return Err(DecodeError::Magic { found: magic });
    }
    let version = le_u16(part0, 4);
    if version != VERSION {
        return Err(DecodeError::Version { found: version });
    }
    let kind = le_u16(part0, 6);
    Kind::from_u16(kind).ok_or(DecodeError::UnknownKind { found: kind })
}

/// Decodes and checks one multipart message.
///
/// With a key ([`Auth::Required`]) the tag is checked first, before anything else in the
/// message is read: the last part must be a 32-byte HMAC-SHA256 tag of the others, so a
/// message from someone without the key is always reported as `hmac`, whatever its
/// header says. Then, with or without a key: header prefix (magic, version, kind), flags,
/// part count and header length, then the kind's own consistency (payload length, shape,
/// dtype, CRC32C).
pub fn decode<'a>(parts: &[&'a [u8]], auth: Auth<'_>) -> Result<Message<'a>, DecodeError> {
    let Some(&part0) = parts.first() else {
        return Err(malformed("no parts"));
    };
    let flags_of = |p: &[u8]| (p.len() >= 12).then(|| le_u32(p, 8));
    let body: &[&'a [u8]] = match auth {
        Auth::Required(key) => {
            let verified = match parts.split_last() {
                Some((tag, rest)) if !rest.is_empty() && tag.len() == TAG_LEN => {
                    key.verify(rest, tag).then_some(rest)
                }
                _ => None,
            };
            let Some(rest) = verified else {
                return Err(match flags_of(part0) {
                    Some(f) if f & FLAG_SIGNED == 0 => DecodeError::Unsigned,
                    _ => DecodeError::BadSignature,
                });
            };
            rest
        }
        Auth::None => parts,
    };
    let kind = peek_kind(part0)?;
    let flags = le_u32(part0, 8);
    if flags & !FLAG_SIGNED != 0 {
        return Err(malformed(format!("unknown flags {flags:#x}")));
    }
    match (flags & FLAG_SIGNED != 0, auth) {
        (true, Auth::None) => return Err(DecodeError::NoKey),
        (false, Auth::Required(_)) => return Err(DecodeError::Unsigned),
        _ => {}
    }
    match kind {
        Kind::Scan => decode_scan(body).map(Message::Scan),
        Kind::Frame => decode_frame(body).map(Message::Frame),
        Kind::Result => decode_result(body).map(Message::Result),
        Kind::Status => decode_status(body).map(Message::Status),
    }
}

fn expect_parts(parts: &[&[u8]], n: usize, kind: &str) -> Result<(), DecodeError> {
    if parts.len() != n {
        return Err(malformed(format!(
            "{kind} message has {} parts, expected {n}",
            parts.len()
        )));
    }
    Ok(())
}

fn expect_header(part0: &[u8], len: usize, kind: &str) -> Result<(), DecodeError> {
    if part0.len() != len {
        return Err(malformed(format!(
            "{kind} header is {} bytes, expected {len}",
            part0.len()
        )));
    }
    if le_u32(part0, 12) != 0 {
        return Err(malformed(format!(
            "{kind} header: reserved bytes 12..16 are not zero"
        )));
    }
    Ok(())
}

fn decode_scan(parts: &[&[u8]]) -> Result<ScanMessage, DecodeError> {
    expect_parts(parts, 2, "scan")?;
    let (h, body) = (parts[0], parts[1]);
    expect_header(h, SCAN_HEADER_LEN, "scan")?;
    let body_len = le_u64(h, 32);
    if body.len() as u64 != body_len {
        return Err(DecodeError::Truncated {
            expected: body_len,
            found: body.len() as u64,
        });
    }
    let expected = le_u32(h, 40);
    let computed = crc32c::crc32c(body);
    if expected != computed {
        return Err(DecodeError::Crc { expected, computed });
    }
    let fields = decode_fields(body).map_err(|e| DecodeError::ScanBody {
        what: e.to_string(),
    })?;
    Ok(ScanMessage {
        stream_id: le_u64(h, 16),
        scan_id: le_u64(h, 24),
        epoch: le_u32(h, 44),
        fields,
    })
}

fn decode_frame<'a>(parts: &[&'a [u8]]) -> Result<FrameMessage<'a>, DecodeError> {
    expect_parts(parts, 2, "frame")?;
    let (h, payload) = (parts[0], parts[1]);
    expect_header(h, FRAME_HEADER_LEN, "frame")?;
    let dtype_code = h[72];
    let dtype =
        Dtype::from_u8(dtype_code).ok_or(DecodeError::UnknownDtype { found: dtype_code })?;
    if !matches!(dtype, Dtype::I16 | Dtype::F32) {
        return Err(DecodeError::FrameDtype {
            found: dtype.name(),
            code: dtype_code,
        });
    }
    if h[73..76] != [0, 0, 0] {
        return Err(malformed(
            "frame header: reserved bytes 73..76 are not zero",
        ));
    }
    let mut shape = [0u32; 4];
    for (i, d) in shape.iter_mut().enumerate() {
        *d = le_u32(h, 56 + 4 * i);
    }
    let header = FrameHeader {
        stream_id: le_u64(h, 16),
        scan_id: le_u64(h, 24),
        sequence: le_u64(h, 32),
        timestamp_ns: le_u64(h, 40),
        payload_len: le_u64(h, 48),
        shape,
        dtype,
        crc32c: le_u32(h, 76),
    };
    if header.shape_bytes() != Some(header.payload_len) {
        return Err(DecodeError::ShapeLength {
            shape: shape.to_vec(),
            dtype: dtype.name(),
            needed: header.shape_bytes().unwrap_or(u64::MAX),
            payload_len: header.payload_len,
        });
    }
    if payload.len() as u64 != header.payload_len {
        return Err(DecodeError::Truncated {
            expected: header.payload_len,
            found: payload.len() as u64,
        });
    }
    let computed = crc32c::crc32c(payload);
    if computed != header.crc32c {
        return Err(DecodeError::Crc {
            expected: header.crc32c,
            computed,
        });
    }
    Ok(FrameMessage { header, payload })
}

fn decode_result(parts: &[&[u8]]) -> Result<ResultMessage, DecodeError> {
    let Some((&h, fields)) = parts.split_first() else {
        return Err(malformed("no parts"));
    };
    expect_header(h, RESULT_HEADER_LEN, "result")?;
    if le_u32(h, 68) != 0 {
        return Err(malformed(
            "result header: reserved bytes 68..72 are not zero",
        ));
    }
    let n = le_u32(h, 64) as usize;
    if fields.len() != n {
        return Err(malformed(format!(
            "result header announces {n} fields, message has {}",
            fields.len()
        )));
    }
    let mut out = Vec::with_capacity(n);
    for part in fields {
        let (f, used) = Field::decode(part)?;
        if used != part.len() {
            return Err(malformed(format!(
                "result field {}: trailing bytes",
                f.name
            )));
        }
        out.push(f);
    }
    Ok(ResultMessage {
        stream_id: le_u64(h, 16),
        scan_id: le_u64(h, 24),
        sequence: le_u64(h, 32),
        timestamp_ns: le_u64(h, 40),
        published_ns: le_u64(h, 48),
        latency_ns: le_u64(h, 56),
        fields: out,
    })
}

fn decode_status(parts: &[&[u8]]) -> Result<StatusMessage, DecodeError> {
    expect_parts(parts, 2, "status")?;
    let (h, body) = (parts[0], parts[1]);
    expect_header(h, STATUS_HEADER_LEN, "status")?;
    let len = le_u64(h, 24);
    if body.len() as u64 != len {
        return Err(DecodeError::Truncated {
            expected: len,
            found: body.len() as u64,
        });
    }
    let json = std::str::from_utf8(body)
        .map_err(|_| malformed("status body is not UTF-8"))?
        .to_string();
    Ok(StatusMessage {
        published_ns: le_u64(h, 16),
        json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::{encode_frame, encode_result, encode_scan, encode_status};

    fn key() -> Key {
        Key::new(&[7u8; 32]).unwrap()
    }

    fn frame_parts(seq: u64, key: Option<&Key>) -> Vec<Vec<u8>> {
        let payload: Vec<u8> = (0..2 * 3 * 4 * 2).map(|i| i as u8).collect();
        let h = FrameHeader::for_payload(9, 1, seq, 1_000, Dtype::I16, [1, 3, 4, 2], &payload);
        encode_frame(&h, &payload, key)
    }

    fn refs(parts: &[Vec<u8>]) -> Vec<&[u8]> {
        parts.iter().map(|p| p.as_slice()).collect()
    }

    #[test]
    fn frame_round_trip_and_layout() {
        let parts = frame_parts(5, None);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].len(), FRAME_HEADER_LEN);
        assert_eq!(&parts[0][0..4], b"PLRA");
        assert_eq!(parts[0][72], 1);
        let Message::Frame(f) = decode(&refs(&parts), Auth::None).unwrap() else {
            panic!("not a frame")
        };
        assert_eq!(f.header.sequence, 5);
        assert_eq!(f.header.stream_id, 9);
        assert_eq!(f.header.shape, [1, 3, 4, 2]);
        assert_eq!(f.header.payload_len, 48);
        assert_eq!(f.payload, &parts[1][..]);
    }

    #[test]
    fn crc32c_is_castagnoli() {
        // RFC 3720 (iSCSI) B.4 check value: CRC32C of 32 zero bytes is 0x8A9136AA.
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8A91_36AA);
    }

    #[test]
    fn every_corruption_is_classified() {
        let good = frame_parts(1, None);
        let mut bad_crc = good.clone();
        bad_crc[1][3] ^= 0x40;
        assert_eq!(
            decode(&refs(&bad_crc), Auth::None).unwrap_err().reason(),
            "crc"
        );
        let mut trunc = good.clone();
        trunc[1].truncate(10);
        assert_eq!(
            decode(&refs(&trunc), Auth::None).unwrap_err().reason(),
            "truncated"
        );
        let mut ver = good.clone();
        ver[0][4] = 1;
        assert_eq!(
            decode(&refs(&ver), Auth::None).unwrap_err(),
            DecodeError::Version { found: 1 }
        );
        // Frames carry int16 or float32: a float64 or uint8 payload of the right length is
        // refused, naming the dtype.
        for (code, size) in [(3u8, 8usize), (4, 1)] {
            let payload = vec![0u8; 12 * size];
            let mut h = FrameHeader::for_payload(9, 1, 1, 0, Dtype::I16, [1, 3, 4, 1], &payload);
            h.dtype = Dtype::from_u8(code).unwrap();
            h.payload_len = payload.len() as u64;
            let parts = encode_frame(&h, &payload, None);
            let err = decode(&refs(&parts), Auth::None).unwrap_err();
            assert_eq!(err.reason(), "malformed", "{err}");
            assert!(err.to_string().contains(h.dtype.name()), "{err}");
        }
        // A scan body that does not decode as fields is a bad scan, not a malformed message.
        let mut scan = encode_scan(
            &ScanMessage {
                stream_id: 1,
                scan_id: 2,
                epoch: 0,
                fields: vec![Field::scalar("sound_speed", 1540.0)],
            },
            None,
        );
        let cut = scan[1].len() - 3;
        scan[1].truncate(cut);
        let body_len = scan[1].len() as u64;
        let crc = crc32c::crc32c(&scan[1]);
        scan[0][32..40].copy_from_slice(&body_len.to_le_bytes());
        scan[0][40..44].copy_from_slice(&crc.to_le_bytes());
        let err = decode(&refs(&scan), Auth::None).unwrap_err();
        assert_eq!(err.reason(), "bad_scan", "{err}");
        assert!(err.to_string().contains("sound_speed"), "{err}");
        let mut shape = good.clone();
        shape[0][56] = 2;
        assert_eq!(
            decode(&refs(&shape), Auth::None).unwrap_err().reason(),
            "shape_mismatch"
        );
        let mut magic = good.clone();
        magic[0][0] = b'X';
        assert_eq!(
            decode(&refs(&magic), Auth::None).unwrap_err().reason(),
            "malformed"
        );
        assert_eq!(
            decode(&refs(&good[..1]), Auth::None).unwrap_err().reason(),
            "malformed"
        );
        assert_eq!(decode(&[], Auth::None).unwrap_err().reason(), "malformed");
    }

    #[test]
    fn signatures_are_required_and_checked() {
        let k = key();
        let signed = frame_parts(1, Some(&k));
        assert_eq!(signed.len(), 3);
        assert!(decode(&refs(&signed), Auth::Required(&k)).is_ok());
        let unsigned = frame_parts(1, None);
        assert_eq!(
            decode(&refs(&unsigned), Auth::Required(&k)).unwrap_err(),
            DecodeError::Unsigned
        );
        // Tampering anywhere (header, payload with a matching CRC, tag) fails the tag.
        let mut tampered = signed.clone();
        tampered[0][32] ^= 1; // sequence
        assert_eq!(
            decode(&refs(&tampered), Auth::Required(&k)).unwrap_err(),
            DecodeError::BadSignature
        );
        let mut payload_swap = signed.clone();
        payload_swap[1][0] ^= 1;
        let crc = crc32c::crc32c(&payload_swap[1]);
        payload_swap[0][76..80].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode(&refs(&payload_swap), Auth::Required(&k)).unwrap_err(),
            DecodeError::BadSignature
        );
        // Stripping the tag and clearing the flag is an unsigned message.
        let mut stripped = signed.clone();
        stripped.pop();
        stripped[0][8] = 0;
        assert_eq!(
            decode(&refs(&stripped), Auth::Required(&k)).unwrap_err(),
            DecodeError::Unsigned
        );
        let other = Key::new(&[8u8; 32]).unwrap();
        assert_eq!(
            decode(&refs(&signed), Auth::Required(&other)).unwrap_err(),
            DecodeError::BadSignature
        );
        assert_eq!(
            decode(&refs(&signed), Auth::None).unwrap_err(),
            DecodeError::NoKey
        );
        // With a key the tag is checked before the header is read: an unsigned message of
        // another version, or with a broken magic, is an `hmac` rejection.
        for (at, value) in [(4usize, 3u8), (0, b'X'), (6, 9)] {
            let mut m = frame_parts(1, None);
            m[0][at] = value;
            assert_eq!(
                decode(&refs(&m), Auth::Required(&k)).unwrap_err(),
                DecodeError::Unsigned,
                "byte {at}"
            );
        }
        // A verified tag over a header without the SIGNED flag is still refused.
        let mut unflagged = frame_parts(1, None);
        let tag = k.sign(&refs(&unflagged));
        unflagged.push(tag.to_vec());
        assert_eq!(
            decode(&refs(&unflagged), Auth::Required(&k)).unwrap_err(),
            DecodeError::Unsigned
        );
    }

    #[test]
    fn scan_result_status_round_trip() {
        let k = key();
        let scan = ScanMessage {
            stream_id: 3,
            scan_id: 42,
            epoch: 0x0102_0304,
            fields: vec![
                Field::f64(
                    "probe_geometry",
                    vec![2, 3],
                    vec![-1.0, 0.0, 0.0, 1.0, 0.0, 0.0],
                ),
                Field::scalar("sound_speed", 1540.0),
                Field::f64("focus_distances", vec![1], vec![f64::INFINITY]),
            ],
        };
        for key in [None, Some(&k)] {
            let parts = encode_scan(&scan, key);
            assert_eq!(parts[0].len(), SCAN_HEADER_LEN);
            assert_eq!(parts[0][44..48], [4, 3, 2, 1], "epoch at bytes 44..48");
            let auth = key.map_or(Auth::None, Auth::Required);
            assert_eq!(
                decode(&refs(&parts), auth).unwrap(),
                Message::Scan(scan.clone())
            );
        }
        let result = ResultMessage {
            stream_id: 3,
            scan_id: 42,
            sequence: 7,
            timestamp_ns: 10,
            published_ns: 25,
            latency_ns: 15,
            fields: vec![
                Field {
                    name: "bmode".into(),
                    shape: vec![2, 2],
                    data: FieldData::U8(vec![1, 2, 3, 4]),
                },
                Field {
                    name: "envelope".into(),
                    shape: vec![1, 2],
                    data: FieldData::F32(vec![0.5, -2.0]),
                },
            ],
        };
        let parts = encode_result(&result, None);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].len(), RESULT_HEADER_LEN);
        assert_eq!(
            parts[0][16..24],
            3u64.to_le_bytes(),
            "stream id at bytes 16..24"
        );
        // The reserved bytes of the result header must be zero (found by fuzzing: such a
        // message decoded and re-encoded to other bytes).
        let mut reserved = parts.clone();
        reserved[0][68] = 1;
        let err = decode(&refs(&reserved), Auth::None).unwrap_err();
        assert_eq!(err.reason(), "malformed", "{err}");
        assert!(err.to_string().contains("68..72"), "{err}");
        assert_eq!(
            decode(&refs(&parts), Auth::None).unwrap(),
            Message::Result(result)
        );
        let status = StatusMessage {
            published_ns: 99,
            json: "{\"frames_in\":3}".into(),
        };
        let parts = encode_status(&status, Some(&k));
        assert_eq!(
            decode(&refs(&parts), Auth::Required(&k)).unwrap(),
            Message::Status(status)
        );
    }

    /// xorshift64*: a fixed-seed generator so the fuzz-like test is reproducible.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Random and mutated messages (bit flips, truncations, extensions, part shuffles)
    /// never panic the decoder, with and without a key; valid seeds still decode.
    #[test]
    fn decoder_survives_random_and_mutated_inputs() {
        let k = key();
        let scan = encode_scan(
            &ScanMessage {
                stream_id: 1,
                scan_id: 2,
                epoch: 1,
                fields: vec![Field::f64(
                    "t0_delays",
                    vec![1, 4],
                    vec![0.0, 1e-6, 2e-6, 3e-6],
                )],
            },
            None,
        );
        let seeds: Vec<Vec<Vec<u8>>> = vec![
            frame_parts(1, None),
            frame_parts(2, Some(&k)),
            scan,
            encode_status(
                &StatusMessage {
                    published_ns: 1,
                    json: "{}".into(),
                },
                None,
            ),
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut decoded_ok = 0;
        for i in 0..20_000 {
            let mut parts = if i % 10 == 0 {
                // Entirely random parts (random header prefix kept valid half the time).
                let n = rng.below(5);
                (0..n)
                    .map(|_| {
                        let len = rng.below(120);
                        let mut p: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                        if p.len() >= 8 && rng.below(2) == 0 {
                            p[0..4].copy_from_slice(&MAGIC);
                            p[4..6].copy_from_slice(&VERSION.to_le_bytes());
                            p[6] = 1 + rng.below(4) as u8;
                            p[7] = 0;
                        }
                        p
                    })
                    .collect()
            } else {
                seeds[rng.below(seeds.len())].clone()
            };
            for _ in 0..rng.below(4) {
                if parts.is_empty() {
                    break;
                }
                let p = rng.below(parts.len());
                match rng.below(5) {
                    0 if !parts[p].is_empty() => {
                        let at = rng.below(parts[p].len());
                        parts[p][at] ^= 1 << rng.below(8);
                    }
                    1 => {
                        let len = parts[p].len();
                        parts[p].truncate(rng.below(len + 1));
                    }
                    2 => {
                        let extra = rng.below(16);
                        parts[p].extend((0..extra).map(|_| rng.next() as u8));
                    }
                    3 => {
                        let q = rng.below(parts.len());
                        parts.swap(p, q);
                    }
                    _ => {
                        parts.remove(p);
                    }
                }
            }
            let r = refs(&parts);
            if decode(&r, Auth::None).is_ok() {
                decoded_ok += 1;
            }
            let _ = decode(&r, Auth::Required(&k));
        }
        assert!(
            decoded_ok > 100,
            "unmutated seeds must decode ({decoded_ok})"
        );
    }
}
