// pleura patch: tests of SocketOptions::max_message_size in the decoder.
use super::*;

const MIB: usize = 1024 * 1024;

/// A decoder past the greeting, limited to `max` bytes.
fn limited(max: usize) -> ZmqCodec {
    let mut options = SocketOptions::default();
    options.max_message_size(max);
    let mut codec = ZmqCodec::with_options(&options);
    codec.state = DecoderState::FrameHeader;
    codec.waiting_for = 1;
    codec
}

fn long_frame(flags: u8, body: &[u8]) -> Vec<u8> {
    let mut wire = vec![flags | 0b0000_0010];
    wire.extend_from_slice(&(body.len() as u64).to_be_bytes());
    wire.extend_from_slice(body);
    wire
}

/// A READY command body of exactly `len` bytes (padded with an `X-Pad` property).
fn ready_body(len: usize) -> Vec<u8> {
    let mut body = vec![5];
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&3u32.to_be_bytes());
    body.extend_from_slice(b"PUB");
    body.push(5);
    body.extend_from_slice(b"X-Pad");
    let pad = len - body.len() - 4;
    body.extend_from_slice(&(pad as u32).to_be_bytes());
    body.resize(len, b'p');
    body
}

#[test]
fn huge_announced_lengths_are_refused_before_reserving() {
    for len in [1u64 << 40, 1u64 << 32] {
        for flags in [0b0000_0010, 0b0000_0011, 0b0000_0110] {
            let mut codec = limited(64 * MIB);
            let mut input = BytesMut::from(&[flags][..]);
            input.extend_from_slice(&len.to_be_bytes());
            assert!(
                matches!(codec.decode(&mut input), Err(CodecError::Decode(_))),
                "flags {flags:#04x}, length {len}"
            );
            assert!(input.capacity() < MIB, "reserved {}", input.capacity());
        }
    }
}

#[test]
fn huge_command_in_place_of_ready_is_refused_after_the_greeting() {
    let mut options = SocketOptions::default();
    options.max_message_size(64 * MIB);
    let mut codec = ZmqCodec::with_options(&options);
    let mut input = BytesMut::from(ZmqGreeting::default());
    input.extend_from_slice(&[0b0000_0110]);
    input.extend_from_slice(&(1u64 << 40).to_be_bytes());
    assert!(matches!(
        codec.decode(&mut input),
        Ok(Some(Message::Greeting(_)))
    ));
    assert!(matches!(
        codec.decode(&mut input),
        Err(CodecError::Decode(_))
    ));
    assert!(input.capacity() < MIB);
}

#[test]
fn a_frame_at_exactly_the_limit_is_accepted() {
    for max in [1000, 3 * 64 * 1024 + 1] {
        let mut codec = limited(max);
        let mut input = BytesMut::from(long_frame(0, &vec![7; max]).as_slice());
        let Some(Message::Message(message)) = codec.decode(&mut input).unwrap() else {
            panic!("expected a message");
        };
        assert_eq!(message.len(), 1);
        assert_eq!(message.get(0).unwrap().len(), max);

        let mut codec = limited(max);
        let mut input = BytesMut::from(long_frame(0, &vec![7; max + 1]).as_slice());
        assert!(codec.decode(&mut input).is_err(), "one byte more");
    }
}

#[test]
fn a_short_frame_above_a_small_limit_is_refused() {
    let mut codec = limited(10);
    let mut input = BytesMut::from(&[0, 11][..]);
    input.extend_from_slice(&[0; 11]);
    assert!(codec.decode(&mut input).is_err());
}

#[test]
fn command_frames_are_bounded_by_64_kib_or_the_limit() {
    // The smaller of the limit and 64 KiB; a READY of exactly that size is accepted.
    for (max, bound) in [(300, 300), (64 * MIB, 64 * 1024)] {
        let mut codec = limited(max);
        let mut input = BytesMut::from(long_frame(0b0000_0100, &ready_body(bound)).as_slice());
        assert!(
            matches!(codec.decode(&mut input), Ok(Some(Message::Command(_)))),
            "READY of {bound} bytes"
        );

        let mut codec = limited(max);
        let mut input = BytesMut::from(long_frame(0b0000_0100, &ready_body(bound + 1)).as_slice());
        assert!(
            codec.decode(&mut input).is_err(),
            "READY of {bound} + 1 bytes"
        );
    }
}

#[test]
fn a_multipart_message_beyond_the_limit_is_refused() {
    // 600 + 600 > 1000: refused at the second part's header.
    let mut codec = limited(1000);
    let mut wire = long_frame(0b0000_0001, &[1; 600]);
    wire.extend_from_slice(&long_frame(0, &[2; 600]));
    let mut input = BytesMut::from(wire.as_slice());
    assert!(codec.decode(&mut input).is_err());

    // 400 + 400 (and a handle) fits; the count starts again at the next message.
    let mut codec = limited(1000);
    let mut wire = long_frame(0b0000_0001, &[1; 400]);
    wire.extend_from_slice(&long_frame(0, &[2; 400]));
    wire.extend_from_slice(&long_frame(0, &[3; 1000]));
    let mut input = BytesMut::from(wire.as_slice());
    let Some(Message::Message(first)) = codec.decode(&mut input).unwrap() else {
        panic!("expected the two-part message");
    };
    assert_eq!(first.len(), 2);
    let Some(Message::Message(second)) = codec.decode(&mut input).unwrap() else {
        panic!("expected the next message");
    };
    assert_eq!(second.get(0).unwrap().len(), 1000);
    assert!(input.is_empty());
}

#[test]
fn a_flood_of_empty_parts_is_bounded() {
    let mut codec = limited(MIB);
    // Two million empty parts with the "more" flag would be 64 MB of handles.
    let mut input = BytesMut::from([1, 0].repeat(2_000_000).as_slice());
    assert!(codec.decode(&mut input).is_err());
    let parts = codec.buffered_message.as_ref().map_or(0, |m| m.len());
    // Each buffered part counts its handle; the last one fits exactly.
    assert!(
        parts <= MIB / std::mem::size_of::<Bytes>() + 1,
        "{parts} parts"
    );
}

#[test]
fn no_limit_by_default() {
    let mut codec = ZmqCodec::new();
    codec.state = DecoderState::FrameHeader;
    codec.waiting_for = 1;
    let mut input = BytesMut::from(long_frame(0, &vec![7; 3 * MIB]).as_slice());
    assert!(matches!(
        codec.decode(&mut input),
        Ok(Some(Message::Message(_)))
    ));
}
