//! The tokio helpers, over an in-memory pipe small enough to force partial
//! reads and writes.
#![cfg(feature = "tokio")]

mod common;

use common::*;
use omirr_proto::{
    read_message, write_message, DecodeError, Hello, Message, ReadError, WriteError, MAX_FRAME,
};
use tokio::io::AsyncWriteExt;

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// `msgs` written to a pipe of 61 bytes (so that reads and writes are
/// partial) and read back until end of stream: each with its frame size.
fn through_a_pipe(msgs: &[Message]) -> Vec<(Message, usize)> {
    let sent = msgs.to_vec();
    run(async move {
        let (mut a, mut b) = tokio::io::duplex(61);
        let writer = tokio::spawn(async move {
            for m in &sent {
                write_message(&mut a, m).await.expect("writes");
            }
            a.shutdown().await.expect("shuts down");
        });
        let mut got = Vec::new();
        while let Some(read) = omirr_proto::read_frame(&mut b).await.expect("reads") {
            got.push(read);
        }
        writer.await.expect("writer finished");
        got
    })
}

#[test]
fn messages_cross_a_pipe_and_eof_ends_cleanly() {
    let msgs = {
        let mut m = one_of_each();
        m.push(Message::FileData {
            id: 9,
            offset: 1 << 30,
            data: (0..omirr_proto::MAX_CHUNK).map(|i| i as u8).collect(),
        });
        m
    };
    let got: Vec<Message> = through_a_pipe(&msgs).into_iter().map(|(m, _)| m).collect();
    assert_eq!(got, msgs);
}

#[test]
fn an_oversized_header_is_refused_without_reading_on() {
    let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2, 3];
    let err = run(read_message(&mut input)).expect_err("too large");
    assert!(matches!(
        err,
        ReadError::Decode(DecodeError::FrameTooLarge {
            len: 0xffff_ffff,
            max: MAX_FRAME
        })
    ));
    assert_eq!(
        err.to_string(),
        "frame of 4294967295 bytes exceeds the 4194304-byte limit"
    );
    assert_eq!(input, [1, 2, 3], "the payload was not read");
}

#[test]
fn a_stream_cut_inside_a_frame_is_an_error() {
    let frame = omirr_proto::encode(&Message::Hello(Hello::new("alpha"))).expect("encodes");
    for cut in 1..frame.len() {
        let mut input = &frame[..cut];
        let err = run(read_message(&mut input)).expect_err("cut frame");
        let need = if cut < 4 { 4 } else { frame.len() };
        assert!(
            matches!(err, ReadError::Decode(DecodeError::Truncated { have, need: n }) if have == cut && n == need),
            "cut at {cut}: {err:?}"
        );
    }
    let mut empty: &[u8] = &[];
    assert!(matches!(run(read_message(&mut empty)), Ok(None)));
}

#[test]
fn zero_length_and_invalid_messages_are_refused() {
    let mut zero: &[u8] = &[0, 0, 0, 0];
    assert!(matches!(
        run(read_message(&mut zero)),
        Err(ReadError::Decode(DecodeError::EmptyFrame))
    ));
    let bad = Message::Hello(Hello {
        protocol: 1,
        host: String::new(),
        capabilities: vec![],
    });
    let mut sink = Vec::new();
    assert!(matches!(
        run(write_message(&mut sink, &bad)),
        Err(WriteError::Encode(_))
    ));
    assert!(sink.is_empty(), "nothing written for a refused message");
}

/// The sizes the log shows: `read_frame` gives the size of the frame it
/// read, and `frame_len` the size `encode` makes, header included.
#[test]
fn frame_sizes_are_those_on_the_wire() {
    let msgs = one_of_each();
    let sizes: Vec<usize> = msgs
        .iter()
        .map(|m| omirr_proto::encode(m).expect("encodes").len())
        .collect();
    for (m, size) in msgs.iter().zip(&sizes) {
        assert_eq!(omirr_proto::frame_len(m).expect("measures"), *size, "{m:?}");
    }
    let got = through_a_pipe(&msgs);
    let want: Vec<(Message, usize)> = msgs.into_iter().zip(sizes).collect();
    assert_eq!(got, want);
}

/// A stream that ends as rustls reports a peer gone without close_notify.
struct CutAfter<'a>(&'a [u8]);

impl tokio::io::AsyncRead for CutAfter<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.0.is_empty() {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "peer closed connection without sending TLS close_notify",
            )));
        }
        let n = self.0.len().min(buf.remaining());
        buf.put_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        std::task::Poll::Ready(Ok(()))
    }
}

#[test]
fn a_connection_cut_without_close_notify_says_so_between_and_inside_frames() {
    let frame = omirr_proto::encode(&Message::Hello(Hello::new("alpha"))).expect("encodes");
    for cut in [0, 2, frame.len() - 1] {
        let err = run(read_message(&mut CutAfter(&frame[..cut]))).expect_err("cut");
        assert!(matches!(err, ReadError::Cut), "cut at {cut}: {err:?}");
        assert!(err.to_string().contains("close_notify"), "{err}");
    }
    let mut whole = CutAfter(&frame);
    assert!(run(read_message(&mut whole)).expect("a frame").is_some());
}
