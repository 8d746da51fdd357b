//! The encoder: fields, headers and whole messages to their parts.

use super::{
    Field, FieldData, FrameHeader, Key, Kind, ResultMessage, ScanMessage, StatusMessage,
    FLAG_SIGNED, FRAME_HEADER_LEN, MAGIC, RESULT_HEADER_LEN, SCAN_HEADER_LEN, STATUS_HEADER_LEN,
    TAG_LEN, VERSION,
};

impl Field {
    /// Appends the encoding of the field to `out`. The field must pass [`Field::check`]
    /// (every constructor in pleura builds consistent fields; peers' fields are checked
    /// by [`Field::check`] before encoding), else the encoding would not decode.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        debug_assert!(self.check().is_ok(), "{:?}", self.check());
        out.push(self.name.len() as u8);
        out.extend_from_slice(self.name.as_bytes());
        out.push(self.data.dtype() as u8);
        out.push(self.shape.len() as u8);
        for d in &self.shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        match &self.data {
            FieldData::I16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            FieldData::F32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            FieldData::F64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            FieldData::U8(v) => out.extend_from_slice(v),
        }
    }
}

/// Encodes a list of fields back to back.
pub fn encode_fields(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        f.encode_into(&mut out);
    }
    out
}

impl FrameHeader {
    /// The 80-byte part 0 (`flags` says whether a tag follows).
    pub fn encode(&self, flags: u32) -> [u8; FRAME_HEADER_LEN] {
        let mut h = [0u8; FRAME_HEADER_LEN];
        write_prefix(&mut h, Kind::Frame, flags);
        h[16..24].copy_from_slice(&self.stream_id.to_le_bytes());
        h[24..32].copy_from_slice(&self.scan_id.to_le_bytes());
        h[32..40].copy_from_slice(&self.sequence.to_le_bytes());
        h[40..48].copy_from_slice(&self.timestamp_ns.to_le_bytes());
        h[48..56].copy_from_slice(&self.payload_len.to_le_bytes());
        for (i, d) in self.shape.iter().enumerate() {
            h[56 + 4 * i..60 + 4 * i].copy_from_slice(&d.to_le_bytes());
        }
        h[72] = self.dtype as u8;
        h[76..80].copy_from_slice(&self.crc32c.to_le_bytes());
        h
    }
}

fn write_prefix(h: &mut [u8], kind: Kind, flags: u32) {
    h[0..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    h[6..8].copy_from_slice(&(kind as u16).to_le_bytes());
    h[8..12].copy_from_slice(&flags.to_le_bytes());
}

/// Appends the tag part when a key is given; sets nothing otherwise.
fn finish(mut parts: Vec<Vec<u8>>, key: Option<&Key>) -> Vec<Vec<u8>> {
    if let Some(key) = key {
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        let tag = key.sign(&refs);
        parts.push(tag.to_vec());
    }
    parts
}

fn flags_for(key: Option<&Key>) -> u32 {
    if key.is_some() {
        FLAG_SIGNED
    } else {
        0
    }
}

/// Encodes a scan message: [header, fields, (tag)].
pub fn encode_scan(msg: &ScanMessage, key: Option<&Key>) -> Vec<Vec<u8>> {
    let body = encode_fields(&msg.fields);
    let mut h = vec![0u8; SCAN_HEADER_LEN];
    write_prefix(&mut h, Kind::Scan, flags_for(key));
    h[16..24].copy_from_slice(&msg.stream_id.to_le_bytes());
    h[24..32].copy_from_slice(&msg.scan_id.to_le_bytes());
    h[32..40].copy_from_slice(&(body.len() as u64).to_le_bytes());
    h[40..44].copy_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    h[44..48].copy_from_slice(&msg.epoch.to_le_bytes());
    finish(vec![h, body], key)
}

/// Encodes a frame message: [header, payload, (tag)] (copies the payload).
pub fn encode_frame(header: &FrameHeader, payload: &[u8], key: Option<&Key>) -> Vec<Vec<u8>> {
    let h = header.encode(flags_for(key)).to_vec();
    finish(vec![h, payload.to_vec()], key)
}

/// The header part and, when a key is given, the tag part of a frame message, without
/// copying the payload (for zero-copy senders): send `[header, payload, tag?]`.
pub fn frame_envelope(
    header: &FrameHeader,
    payload: &[u8],
    key: Option<&Key>,
) -> ([u8; FRAME_HEADER_LEN], Option<[u8; TAG_LEN]>) {
    let h = header.encode(flags_for(key));
    let tag = key.map(|k| k.sign(&[&h, payload]));
    (h, tag)
}

/// Encodes a result message: [header, field 1, ..., field n, (tag)].
pub fn encode_result(msg: &ResultMessage, key: Option<&Key>) -> Vec<Vec<u8>> {
    let mut h = vec![0u8; RESULT_HEADER_LEN];
    write_prefix(&mut h, Kind::Result, flags_for(key));
    h[16..24].copy_from_slice(&msg.stream_id.to_le_bytes());
    h[24..32].copy_from_slice(&msg.scan_id.to_le_bytes());
    h[32..40].copy_from_slice(&msg.sequence.to_le_bytes());
    h[40..48].copy_from_slice(&msg.timestamp_ns.to_le_bytes());
    h[48..56].copy_from_slice(&msg.published_ns.to_le_bytes());
    h[56..64].copy_from_slice(&msg.latency_ns.to_le_bytes());
    h[64..68].copy_from_slice(&(msg.fields.len() as u32).to_le_bytes());
    let mut parts = vec![h];
    for f in &msg.fields {
        let mut p = Vec::new();
        f.encode_into(&mut p);
        parts.push(p);
    }
    finish(parts, key)
}

/// Encodes a status message: [header, JSON, (tag)].
pub fn encode_status(msg: &StatusMessage, key: Option<&Key>) -> Vec<Vec<u8>> {
    let mut h = vec![0u8; STATUS_HEADER_LEN];
    write_prefix(&mut h, Kind::Status, flags_for(key));
    h[16..24].copy_from_slice(&msg.published_ns.to_le_bytes());
    h[24..32].copy_from_slice(&(msg.json.len() as u64).to_le_bytes());
    finish(vec![h, msg.json.as_bytes().to_vec()], key)
}
