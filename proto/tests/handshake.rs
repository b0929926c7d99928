//! The handshake rules.

use omirr_proto::{
    check_hello, expect_hello, negotiate, ErrorCode, HandshakeError, Hello, Message,
    PROTOCOL_VERSION,
};

#[test]
fn a_matching_hello_passes() {
    assert_eq!(check_hello(&Hello::new("beta"), "beta"), Ok(()));
}

#[test]
fn another_protocol_version_is_refused() {
    let hello = Hello {
        protocol: PROTOCOL_VERSION + 1,
        ..Hello::new("beta")
    };
    let err = check_hello(&hello, "beta").expect_err("version mismatch");
    assert_eq!(
        err,
        HandshakeError::ProtocolVersion {
            ours: PROTOCOL_VERSION,
            theirs: PROTOCOL_VERSION + 1
        }
    );
    assert_eq!(err.code(), ErrorCode::ProtocolVersion);
    let Some(Message::Error { code, message }) = err.to_message() else {
        panic!("a version mismatch is answered with Error");
    };
    assert_eq!(code, ErrorCode::ProtocolVersion);
    assert_eq!(
        message,
        format!(
            "peer speaks protocol version {}; this build speaks {PROTOCOL_VERSION}",
            PROTOCOL_VERSION + 1
        )
    );
}

#[test]
fn the_version_is_checked_before_the_name() {
    let hello = Hello {
        protocol: 0,
        ..Hello::new("mallory")
    };
    assert!(matches!(
        check_hello(&hello, "beta"),
        Err(HandshakeError::ProtocolVersion { theirs: 0, .. })
    ));
}

#[test]
fn a_name_other_than_the_certificates_is_refused() {
    for claimed in ["gamma", "Beta", "beta ", "beta.example.org", ""] {
        let err = check_hello(&Hello::new(claimed), "beta").expect_err(claimed);
        assert_eq!(
            err,
            HandshakeError::WrongHost {
                expected: "beta".into(),
                claimed: claimed.into()
            }
        );
        assert_eq!(err.code(), ErrorCode::UnknownHost);
    }
    let err = check_hello(&Hello::new("evil\nlog line"), "beta").expect_err("mismatch");
    assert_eq!(
        err.to_string(),
        r#"peer introduced itself as "evil\nlog line", but its certificate is that of "beta""#
    );
}

#[test]
fn the_first_message_must_be_hello() {
    let h = Hello::new("beta");
    assert_eq!(expect_hello(Message::Hello(h.clone())), Ok(h));
    let err = expect_hello(Message::Pull {
        after: 0,
        own_after: omirr_proto::Timestamp(0),
    })
    .expect_err("not a Hello");
    assert_eq!(err, HandshakeError::NotHello { got: "Pull" });
    assert_eq!(err.code(), ErrorCode::BadMessage);
    assert!(err.to_message().is_some());
    // A peer that refuses us first is not answered.
    let err = expect_hello(Message::error(ErrorCode::ShuttingDown, "bye")).expect_err("refused");
    assert_eq!(
        err,
        HandshakeError::Refused {
            code: ErrorCode::ShuttingDown,
            message: "bye".into()
        }
    );
    assert_eq!(err.to_message(), None);
}

#[test]
fn capabilities_are_the_intersection() {
    let theirs: Vec<String> = ["zstd", "cdc", "cdc"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        negotiate(&["cdc", "x", "zstd", "cdc"], &theirs),
        ["cdc", "zstd"]
    );
    assert!(negotiate(&[], &theirs).is_empty());
    assert!(negotiate(&["cdc"], &[]).is_empty());
    // This build's Hello lists what it supports.
    assert_eq!(
        Hello::new("a").capabilities,
        [
            omirr_proto::CAP_CHUNKS,
            omirr_proto::CAP_BACKLOG,
            omirr_proto::CAP_DIGESTS,
            omirr_proto::CAP_VERIFY,
            omirr_proto::CAP_EXPIRY,
            omirr_proto::CAP_HOLES,
        ]
    );
}
