//! Messages survive the trip through a frame, the bytes are what
//! PROTOCOL.md says, and what must not decode does not.

mod common;

use common::*;
use omirr_proto::{
    encode, Change, Content, DecodeError, EncodeError, Entry, ErrorCode, FrameDecoder, Hello,
    HostId, InvalidMessage, Message, Meta, Timestamp, Version, MAX_CHANGES_PER_PAGE, MAX_FRAME,
};
use omirr_testkit::p;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_message_round_trips(msg in message()) {
        let frame = encode(&msg).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decode_all(&frame), Ok(vec![msg]));
    }

    #[test]
    fn changes_round_trip_with_odd_paths((changes, upto) in changes_page(), done in any::<bool>()) {
        let msg = Message::Changes { changes, upto, done };
        let frame = encode(&msg).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decode_all(&frame), Ok(vec![msg]));
    }
}

#[test]
fn each_variant_round_trips() {
    for msg in one_of_each() {
        let frame = encode(&msg).expect("encodes");
        assert_eq!(decode_all(&frame), Ok(vec![msg]));
    }
}

/// The examples in PROTOCOL.md, byte for byte.
#[test]
fn wire_bytes_match_protocol_md() {
    assert_eq!(
        encode(&Message::Hello(Hello {
            protocol: 3,
            host: "alpha".into(),
            capabilities: vec![],
        }))
        .expect("encodes"),
        [0, 0, 0, 9, 0, 3, 5, b'a', b'l', b'p', b'h', b'a', 0]
    );
    assert_eq!(
        encode(&Message::Hello(Hello::new("alpha"))).expect("encodes"),
        [
            &[0, 0, 0, 58, 0, 3, 5][..],
            b"alpha",
            &[6, 6],
            b"chunks",
            &[7],
            b"backlog",
            &[13],
            b"chunk-digests",
            &[6],
            b"verify",
            &[6],
            b"expiry",
            &[5],
            b"holes"
        ]
        .concat()
    );
    assert_eq!(
        encode(&Message::error(ErrorCode::BadMessage, "no")).expect("encodes"),
        [0, 0, 0, 5, 1, 4, 2, b'n', b'o']
    );
    assert_eq!(
        encode(&Message::Pull {
            after: 300,
            own_after: Timestamp(5)
        })
        .expect("encodes"),
        [0, 0, 0, 5, 2, 251, 0x2c, 0x01, 5]
    );
    assert_eq!(
        encode(&Message::Ack { upto: 7 }).expect("encodes"),
        [0, 0, 0, 2, 4, 7]
    );
    let change = Change {
        path: p("a"),
        entry: Entry {
            content: Content::File {
                size: 4,
                hash: [7; 32],
            },
            meta: Meta {
                mode: 0o644,
                uid: 1000,
                gid: 1000,
                mtime_ns: -1,
                owner: omirr_proto::Name::new(b"root").expect("name"),
                group: omirr_proto::Name::EMPTY,
                ..Default::default()
            },
            version: Version {
                ts: Timestamp(5),
                host: HostId::new("alpha"),
            },
            base: None,
        },
    };
    let mut expected = vec![0, 0, 0, 0x43, 3, 1, 1, 1, b'a', 0, 4];
    expected.extend([7; 32]);
    // mode, uid, gid, mtime; owner "root", group empty, no extended
    // attributes, no hard link; then ts.
    expected.extend([251, 0xa4, 1, 251, 0xe8, 3, 251, 0xe8, 3, 1]);
    expected.extend([4, b'r', b'o', b'o', b't', 0, 0, 0, 5]);
    // The host, no base; then upto and done.
    expected.extend([5, b'a', b'l', b'p', b'h', b'a', 0, 1, 1]);
    assert_eq!(
        encode(&Message::Changes {
            changes: vec![(1, change)],
            upto: 1,
            done: true
        })
        .expect("encodes"),
        expected
    );
}

/// A newer peer's error code still decodes.
#[test]
fn unknown_error_code_decodes_as_other() {
    let frame = [0, 0, 0, 3, 1, 77, 0];
    assert_eq!(
        decode_all(&frame),
        Ok(vec![Message::Error {
            code: ErrorCode::Other(77),
            message: String::new()
        }])
    );
}

/// Encodes `msg` (whose paths spell `a/xx/b` somewhere), then rewrites
/// those bytes into `bad` on the wire: a well-formed frame carrying a path
/// no sender may produce.
fn with_path_bytes(msg: &Message, bad: &[u8; 6]) -> Vec<u8> {
    let mut frame = encode(msg).expect("encodes");
    let at = frame
        .windows(6)
        .position(|w| w == b"a/xx/b")
        .expect("path bytes in frame");
    frame[at..at + 6].copy_from_slice(bad);
    frame
}

#[test]
fn change_with_dotdot_path_is_rejected() {
    let msg = Message::Changes {
        changes: vec![(1, sample_change("ok")), (2, sample_change("a/xx/b"))],
        upto: 2,
        done: true,
    };
    assert!(decode_all(&encode(&msg).expect("encodes")).is_ok());
    let err = decode_all(&with_path_bytes(&msg, b"a/../b")).expect_err("'..' must not decode");
    assert!(matches!(err, DecodeError::Malformed(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("a/../b") && text.contains("'..' component"),
        "unclear error: {text}"
    );
}

#[test]
fn other_unsafe_paths_are_rejected() {
    let msg = Message::FileRequest {
        id: 1,
        path: p("a/xx/b"),
        hash: [0; 32],
        size: 0,
    };
    for (bad, says) in [
        (b"/a/x/b", "absolute"),
        (b"a/x\0/b", "NUL"),
        (b"a//x/b", "empty"),
        (b"a/./xb", "empty or '.'"),
    ] {
        let err = decode_all(&with_path_bytes(&msg, bad)).expect_err("unsafe path must not decode");
        assert!(err.to_string().contains(says), "{says}: {err}");
    }
}

#[test]
fn page_over_the_count_limit_is_rejected_from_its_length() {
    // Changes (variant 3), then the list length as a varint: 251 and a
    // little-endian u16. No element follows: the claim alone is refused.
    let n = (MAX_CHANGES_PER_PAGE + 1) as u16;
    let [lo, hi] = n.to_le_bytes();
    let payload = [3, 251, lo, hi];
    let mut frame = header(payload.len() as u32).to_vec();
    frame.extend_from_slice(&payload);
    let err = decode_all(&frame).expect_err("over the limit");
    assert_eq!(
        err.to_string(),
        format!(
            "frame payload is not a valid message: {} changes in a page exceed the limit of {}",
            MAX_CHANGES_PER_PAGE + 1,
            MAX_CHANGES_PER_PAGE
        )
    );
}

/// Invalid messages are refused on both sides: encode would not make
/// them, and a peer's frame holding one is rejected.
#[test]
fn out_of_order_page_is_refused_both_ways() {
    let msg = Message::Changes {
        changes: vec![(5, sample_change("b")), (3, sample_change("a"))],
        upto: 9,
        done: false,
    };
    let expected = InvalidMessage::OutOfOrder { prev: 5, next: 3 };
    assert_eq!(
        encode(&msg),
        Err(EncodeError::Invalid {
            kind: "Changes",
            error: expected.clone()
        })
    );
    // Build the frame from a valid page by swapping the two sequence
    // numbers, which are one-byte varints right before each path.
    let valid = Message::Changes {
        changes: vec![(3, sample_change("b")), (5, sample_change("a"))],
        upto: 9,
        done: false,
    };
    let mut frame = encode(&valid).expect("encodes");
    let first = frame
        .windows(3)
        .position(|w| w == [3, 1, b'b'])
        .expect("seq 3");
    let second = frame
        .windows(3)
        .position(|w| w == [5, 1, b'a'])
        .expect("seq 5");
    frame[first] = 5;
    frame[second] = 3;
    assert_eq!(
        decode_all(&frame),
        Err(DecodeError::Invalid {
            kind: "Changes",
            error: expected
        })
    );
}

#[test]
fn change_beyond_upto_and_seq_zero_are_invalid() {
    let beyond = Message::Changes {
        changes: vec![(4, sample_change("a"))],
        upto: 3,
        done: true,
    };
    assert_eq!(
        beyond.validate(),
        Err(InvalidMessage::BeyondUpto { seq: 4, upto: 3 })
    );
    let zero = Message::Changes {
        changes: vec![(0, sample_change("a"))],
        upto: 3,
        done: true,
    };
    assert_eq!(
        zero.validate(),
        Err(InvalidMessage::OutOfOrder { prev: 0, next: 0 })
    );
}

#[test]
fn odd_entries_are_invalid() {
    let mut c = sample_change("a");
    c.entry.meta.mode = 0o100644; // file type bits: not a permission
    let msg = Message::Changes {
        changes: vec![(1, c)],
        upto: 1,
        done: true,
    };
    assert!(matches!(
        msg.validate(),
        Err(InvalidMessage::BadMode { mode: 0o100644, .. })
    ));
    let mut c = sample_change("a");
    c.entry.content = omirr_proto::Content::Symlink { target: Vec::new() };
    let msg = Message::Changes {
        changes: vec![(1, c)],
        upto: 1,
        done: true,
    };
    assert!(matches!(
        msg.validate(),
        Err(InvalidMessage::BadSymlink { .. })
    ));
    let mut c = sample_change("a");
    c.entry.version.host = omirr_proto::HostId::new("");
    let msg = Message::Changes {
        changes: vec![(1, c)],
        upto: 1,
        done: true,
    };
    assert!(matches!(
        msg.validate(),
        Err(InvalidMessage::BadHostName { .. })
    ));
}

#[test]
fn encode_refuses_an_oversized_frame() {
    // Valid paths, more than a whole frame of them.
    let long = "x/".repeat(2000) + "y";
    let msg = Message::Changes {
        changes: (1..=1200).map(|i| (i, sample_change(&long))).collect(),
        upto: 1200,
        done: true,
    };
    match encode(&msg) {
        Err(EncodeError::TooLarge { size, max }) => {
            assert!(size > MAX_FRAME);
            assert_eq!(max, MAX_FRAME);
        }
        Ok(frame) => panic!("expected TooLarge, got a frame of {} bytes", frame.len()),
        Err(e) => panic!("expected TooLarge, got {e}"),
    }
    // The largest chunk fits.
    let chunk = Message::FileData {
        id: 1,
        offset: 0,
        data: vec![0xa5; omirr_proto::MAX_CHUNK],
    };
    let frame = encode(&chunk).expect("a full chunk fits a frame");
    assert_eq!(decode_all(&frame), Ok(vec![chunk]));
}

#[test]
fn encode_into_appends_and_leaves_the_buffer_alone_on_error() {
    let mut out = encode(&Message::Ping { nonce: 1 }).expect("encodes");
    let before = out.clone();
    let bad = Message::Hello(Hello {
        protocol: 1,
        host: String::new(),
        capabilities: vec![],
    });
    assert!(omirr_proto::encode_into(&bad, &mut out).is_err());
    assert_eq!(out, before);
    omirr_proto::encode_into(&Message::Pong { nonce: 1 }, &mut out).expect("encodes");
    let mut d = FrameDecoder::new();
    d.feed(&out);
    assert_eq!(d.next_message(), Ok(Some(Message::Ping { nonce: 1 })));
    assert_eq!(d.next_message(), Ok(Some(Message::Pong { nonce: 1 })));
    assert_eq!(d.next_message(), Ok(None));
}

/// Owner and group names travel with the numbers, up to 32 bytes; a name
/// with a NUL byte (which no user database can look up) does not decode.
#[test]
fn owner_and_group_names_travel_and_a_nul_in_one_does_not_decode() {
    let mut c = sample_change("a");
    let long = "n".repeat(omirr_proto::Name::MAX);
    c.entry.meta.owner = omirr_proto::Name::new(long.as_bytes()).expect("32 bytes");
    c.entry.meta.group = omirr_proto::Name::new(b"staff").expect("name");
    assert!(omirr_proto::Name::new("n".repeat(33).as_bytes()).is_none());
    assert!(omirr_proto::Name::new(b"a\0b").is_none());
    let msg = Message::Changes {
        changes: vec![(1, c)],
        upto: 1,
        done: true,
    };
    let mut frame = encode(&msg).expect("encode");
    assert_eq!(decode_all(&frame), Ok(vec![msg]));
    let at = frame
        .windows(5)
        .position(|w| w == b"staff")
        .expect("the group's bytes");
    frame[at + 2] = 0;
    assert!(decode_all(&frame).is_err(), "a NUL in a name decodes");
}

/// A change whose path is `len` bytes of `x/x/x...` (or one name of
/// `len` bytes with `name`), as a frame, built by hand: a path this long
/// cannot be made with [`RelPath`] any more, so a short one is encoded and
/// its bytes replaced. bincode writes a length of 251..65536 as the
/// marker 251 and a little-endian u16.
fn frame_with_long_path(len: usize, name: bool) -> Vec<u8> {
    let placeholder = "p/".repeat(150) + "p";
    let msg = Message::Changes {
        changes: vec![(1, sample_change(&placeholder))],
        upto: 1,
        done: true,
    };
    let frame = encode(&msg).expect("encodes");
    let mut old = vec![251u8, 45, 1]; // 301
    old.extend_from_slice(placeholder.as_bytes());
    let at = frame
        .windows(old.len())
        .position(|w| w == old.as_slice())
        .expect("path in frame");
    let path: Vec<u8> = if name {
        vec![b'n'; len]
    } else {
        (0..len)
            .map(|i| if i % 2 == 1 { b'/' } else { b'x' })
            .collect()
    };
    let len16 = u16::try_from(len).expect("fits a u16");
    let mut payload = frame[4..at].to_vec();
    payload.push(251);
    payload.extend_from_slice(&len16.to_le_bytes());
    payload.extend_from_slice(&path);
    payload.extend_from_slice(&frame[at + old.len()..]);
    let mut out = header(u32::try_from(payload.len()).expect("small")).to_vec();
    out.extend_from_slice(&payload);
    out
}

#[test]
fn paths_longer_than_path_max_or_names_longer_than_name_max_do_not_decode() {
    // Within the bounds: decodes.
    assert!(decode_all(&frame_with_long_path(4095, false)).is_ok());
    assert!(decode_all(&frame_with_long_path(255, true)).is_ok());
    // A 60 KB path of 30,000 components: refused at decode, with a short
    // message.
    let err = decode_all(&frame_with_long_path(60_001, false)).expect_err("too long");
    let text = err.to_string();
    assert!(
        text.contains("60001 bytes") && text.contains("PATH_MAX"),
        "{text}"
    );
    assert!(
        text.len() < 600,
        "the error repeats the path: {} bytes",
        text.len()
    );
    let err = decode_all(&frame_with_long_path(4096, false)).expect_err("too long");
    assert!(err.to_string().contains("PATH_MAX"), "{err}");
    let err = decode_all(&frame_with_long_path(256, true)).expect_err("name too long");
    assert!(err.to_string().contains("NAME_MAX"), "{err}");
}
