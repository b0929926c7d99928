//! The frame decoder: any split of the stream decodes the same, and bad
//! headers are refused from the header alone.

mod common;

use common::*;
use omirr_proto::{encode, DecodeError, FrameDecoder, Message, MAX_FRAME};
use proptest::prelude::*;

fn concat(msgs: &[Message]) -> Vec<u8> {
    msgs.iter()
        .flat_map(|m| encode(m).expect("encodes"))
        .collect()
}

/// Feeds `pieces` one after the other, pulling messages after each.
fn decode_pieces<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Message>, DecodeError> {
    let mut d = FrameDecoder::new();
    let mut out = Vec::new();
    for piece in pieces {
        d.feed(piece);
        while let Some(m) = d.next_message()? {
            out.push(m);
        }
    }
    d.finish()?;
    Ok(out)
}

#[test]
fn a_stream_split_at_every_byte_boundary_decodes_identically() {
    let msgs = one_of_each();
    let stream = concat(&msgs);
    for i in 0..=stream.len() {
        let (a, b) = stream.split_at(i);
        assert_eq!(decode_pieces([a, b]), Ok(msgs.clone()), "split at {i}");
    }
}

#[test]
fn a_stream_fed_byte_by_byte_decodes_identically() {
    let msgs = one_of_each();
    let stream = concat(&msgs);
    assert_eq!(decode_pieces(stream.chunks(1)), Ok(msgs));
}

proptest! {
    #[test]
    fn any_split_decodes_identically(
        msgs in prop::collection::vec(message(), 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let stream = concat(&msgs);
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        at.push(0);
        at.push(stream.len());
        at.sort_unstable();
        let pieces = at.windows(2).map(|w| &stream[w[0]..w[1]]);
        prop_assert_eq!(decode_pieces(pieces), Ok(msgs.clone()));
        prop_assert_eq!(decode_pieces(stream.chunks(1)), Ok(msgs));
    }
}

#[test]
fn two_frames_in_one_buffer() {
    let msgs = [Message::Ping { nonce: 1 }, Message::Ack { upto: 99 }];
    let stream = concat(&msgs);
    let mut d = FrameDecoder::new();
    d.feed(&stream);
    assert_eq!(d.next_message(), Ok(Some(msgs[0].clone())));
    assert_eq!(d.next_message(), Ok(Some(msgs[1].clone())));
    assert_eq!(d.next_message(), Ok(None));
    assert_eq!(d.buffered(), 0);
    assert_eq!(d.finish(), Ok(()));
}

#[test]
fn a_frame_and_a_half() {
    let msgs = [
        Message::FileEnd { id: 3 },
        Message::Pull {
            after: 1 << 40,
            own_after: omirr_proto::Timestamp(0),
        },
    ];
    let stream = concat(&msgs);
    let first = encode(&msgs[0]).expect("encodes").len();
    let mut d = FrameDecoder::new();
    d.feed(&stream[..first + 3]);
    assert_eq!(d.next_message(), Ok(Some(msgs[0].clone())));
    assert_eq!(d.next_message(), Ok(None));
    assert_eq!(d.buffered(), 3);
    d.feed(&stream[first + 3..]);
    assert_eq!(d.next_message(), Ok(Some(msgs[1].clone())));
}

#[test]
fn zero_length_frame_is_rejected() {
    let mut d = FrameDecoder::new();
    d.feed(&header(0));
    let err = d.next_message().expect_err("empty frame");
    assert_eq!(err, DecodeError::EmptyFrame);
    assert_eq!(
        err.to_string(),
        "zero-length frame: every frame carries one message"
    );
    // The error sticks: the stream cannot be resynchronised.
    d.feed(&encode(&Message::Ping { nonce: 1 }).expect("encodes"));
    assert_eq!(d.next_message(), Err(DecodeError::EmptyFrame));
}

#[test]
fn oversized_length_prefix_is_rejected_from_the_header_alone() {
    for len in [MAX_FRAME as u32 + 1, 9_000_000, u32::MAX] {
        let mut d = FrameDecoder::new();
        d.feed(&header(len));
        let err = d.next_message().expect_err("over the limit");
        assert_eq!(
            err,
            DecodeError::FrameTooLarge {
                len: u64::from(len),
                max: MAX_FRAME
            }
        );
        // Nothing beyond the four header bytes is held for it.
        assert_eq!(d.buffered(), 4);
    }
    let err = decode_all(&header(9_000_000)).expect_err("over the limit");
    assert_eq!(
        err.to_string(),
        "frame of 9000000 bytes exceeds the 4194304-byte limit"
    );
    // The limit itself is allowed: the header is accepted and the decoder
    // waits for the payload.
    let mut d = FrameDecoder::new();
    d.feed(&header(MAX_FRAME as u32));
    assert_eq!(d.next_message(), Ok(None));
}

#[test]
fn a_bad_payload_is_consumed_and_the_next_frame_still_decodes() {
    let mut stream = header(1).to_vec();
    stream.push(250); // no such variant
    stream.extend(encode(&Message::Ping { nonce: 5 }).expect("encodes"));
    let mut d = FrameDecoder::new();
    d.feed(&stream);
    assert!(matches!(d.next_message(), Err(DecodeError::Malformed(_))));
    assert_eq!(d.next_message(), Ok(Some(Message::Ping { nonce: 5 })));
}

#[test]
fn a_truncated_payload_is_malformed_not_a_panic() {
    let frame = encode(&Message::FileData {
        id: 1,
        offset: 0,
        data: vec![1; 100],
    })
    .expect("encodes");
    // Same bytes, header claiming ten fewer: the data field runs past the
    // frame's end.
    let mut cut = header((frame.len() - 4 - 10) as u32).to_vec();
    cut.extend_from_slice(&frame[4..frame.len() - 10]);
    let err = decode_all(&cut).expect_err("short payload");
    assert_eq!(
        err.to_string(),
        "frame payload is not a valid message: a field runs past the end of the frame"
    );
}
