//! Paging: every page fits a frame, nothing is lost or reordered.

mod common;

use common::*;
use omirr_proto::{
    encode, page_cost, paginate, Change, Content, EncodeError, FrameDecoder, InvalidMessage,
    Message, RelPath, Seq, MAX_CHANGES_PER_PAGE, MAX_FRAME,
};
use proptest::prelude::*;

/// What paging may leave unused in a full page: its size estimate
/// assumes the widest `upto` and change count.
const SLACK: usize = 16;

/// The payload size of `msg`, whether or not it fits a frame.
fn payload_len(msg: &Message) -> usize {
    match encode(msg) {
        Ok(frame) => frame.len() - 4,
        Err(EncodeError::TooLarge { size, .. }) => size,
        Err(e) => panic!("{e}"),
    }
}

/// Checks the pages `paginate` made from `input`, and returns them.
fn check_pages(input: &[(Seq, Change)], upto: Seq, done: bool) -> Vec<Message> {
    let pages = paginate(input.to_vec(), upto, done).expect("paginates");
    assert!(!pages.is_empty());
    let mut all = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        let last = i + 1 == pages.len();
        let frame = encode(page).expect("every page encodes within the limit");
        assert!(frame.len() <= 4 + MAX_FRAME);
        // ... and decodes within the decoder's limit.
        let mut decoder = FrameDecoder::new();
        decoder.feed(&frame);
        let back = decoder
            .next_message()
            .unwrap_or_else(|e| panic!("page {i} does not decode: {e}"))
            .expect("a whole frame");
        assert_eq!(&back, page);
        let Message::Changes {
            changes,
            upto: page_upto,
            done: page_done,
        } = page
        else {
            panic!("page {i} is a {}", page.kind());
        };
        assert!(changes.len() <= MAX_CHANGES_PER_PAGE);
        if last {
            assert_eq!((*page_upto, *page_done), (upto, done));
        } else {
            assert!(!changes.is_empty(), "empty intermediate page {i}");
            assert_eq!(*page_upto, changes.last().map(|c| c.0).unwrap_or_default());
            assert!(!page_done);
            // Greedy: the next change would not have fitted.
            let next = match &pages[i + 1] {
                Message::Changes { changes, .. } => changes[0].clone(),
                other => panic!("{}", other.kind()),
            };
            let next_seq = next.0;
            let mut grown = changes.clone();
            grown.push(next);
            let fuller = Message::Changes {
                changes: grown.clone(),
                upto: next_seq,
                done: false,
            };
            // What the page would count: the encoding plus each change's
            // place in the decoder's list.
            let claims = grown.len() * std::mem::size_of::<(Seq, Change)>();
            assert!(
                changes.len() == MAX_CHANGES_PER_PAGE
                    || payload_len(&fuller) + claims > MAX_FRAME - SLACK,
                "page {i} could have held one more change"
            );
        }
        all.extend(changes.iter().cloned());
    }
    assert_eq!(all, input, "pages lose or reorder nothing");
    pages
}

/// A path of about `len` bytes (at most what a path may be), in names of
/// at most 200 bytes.
fn long_path(i: usize, len: usize) -> RelPath {
    let mut path = format!("{i}");
    while path.len() + 2 < len.min(omirr_core::MAX_PATH_LEN - 201) {
        let name = (len - path.len() - 1).min(200);
        path.push('/');
        path.push_str(&"p".repeat(name));
    }
    RelPath::new(path).expect("valid")
}

/// `n` changes whose paths (up to the path limit) and symlink targets
/// are about `len` bytes each, numbered 1, 3, 5, ...
fn bulky(n: usize, len: usize) -> Vec<(Seq, Change)> {
    (0..n)
        .map(|i| {
            let mut c = sample_change("x");
            c.path = long_path(i, len);
            if i % 2 == 0 || len > omirr_core::MAX_PATH_LEN {
                c.entry.content = Content::Symlink {
                    target: vec![b't'; len],
                };
            }
            (2 * i as Seq + 1, c)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn pages_fit_the_frame_and_lose_nothing(
        n in 1usize..1500,
        len in 1usize..4000,
        extra in 0u64..3,
        done in any::<bool>(),
    ) {
        let input = bulky(n, len);
        let upto = input.last().map(|c| c.0).unwrap_or_default() + extra;
        check_pages(&input, upto, done);
    }
}

proptest! {
    #[test]
    fn small_pages_of_random_changes((input, upto) in changes_page(), done in any::<bool>()) {
        let pages = check_pages(&input, upto, done);
        prop_assert_eq!(pages.len(), 1);
    }
}

#[test]
fn large_input_spans_several_pages() {
    // ~9 MiB of changes: at least three frames' worth.
    let input = bulky(2000, 3000);
    let pages = check_pages(&input, 10_000, true);
    assert!(pages.len() >= 3, "{} pages", pages.len());
}

/// Pages whose size lands on, just under and just over the limit: a page
/// that is one byte too full fails `check_pages`' encoding.
#[test]
fn pages_at_the_edge_of_the_limit() {
    let base = bulky(8, 250_000); // ~3 MB
    let with_filler = |len: usize| {
        let mut input = base.clone();
        let mut c = sample_change("f");
        c.entry.content = Content::Symlink {
            target: vec![b'f'; len],
        };
        input.push((100, c));
        input
    };
    let whole = |input: Vec<(Seq, Change)>| Message::Changes {
        changes: input,
        upto: 100,
        done: true,
    };
    // The filler length at which one page would count exactly MAX_FRAME:
    // its encoding plus each change's place in the decoder's list.
    let claims = 9 * std::mem::size_of::<(Seq, Change)>();
    let probe = 100_000;
    let edge = probe + MAX_FRAME - payload_len(&whole(with_filler(probe))) - claims;
    assert_eq!(payload_len(&whole(with_filler(edge))) + claims, MAX_FRAME);
    let costs: usize = with_filler(edge)
        .iter()
        .map(|(s, c)| page_cost(*s, c).expect("cost"))
        .sum();
    assert!(costs <= MAX_FRAME, "page_cost agrees");
    // Filling a 4 MiB page is slow unoptimised: a few points around the
    // edge, dense just past it, where an overfull page would be made.
    for len in [
        edge - 24,
        edge - SLACK,
        edge - 1,
        edge,
        edge + 1,
        edge + 2,
        edge + 3,
        edge + 4,
        edge + 24,
    ] {
        let pages = check_pages(&with_filler(len), 100, true);
        assert!(pages.len() <= 2, "{len}: {} pages", pages.len());
        if len + SLACK <= edge {
            assert_eq!(pages.len(), 1, "filler of {len} bytes fits");
        }
        if len > edge {
            assert_eq!(pages.len(), 2, "filler of {len} bytes cannot fit");
        }
    }
}

#[test]
fn the_count_limit_splits_pages_of_small_changes() {
    // Small enough that MAX_CHANGES_PER_PAGE of them fit in a frame: a
    // tombstone (a change costs its encoding and its size in memory).
    let mut small = sample_change("a");
    small.entry.content = omirr_proto::Content::Deleted;
    small.entry.version.host = omirr_proto::HostId::new("b");
    small.entry.version.ts = omirr_proto::Timestamp(1);
    small.entry.meta.mtime_ns = 0;
    // Room for the base's byte (protocol 3).
    small.entry.meta.uid = 0;
    small.entry.meta.gid = 0;
    let input: Vec<(Seq, Change)> = (1..=40_000).map(|i| (i, small.clone())).collect();
    let pages = check_pages(&input, 40_000, true);
    let counts: Vec<usize> = pages
        .iter()
        .map(|p| match p {
            Message::Changes { changes, .. } => changes.len(),
            _ => 0,
        })
        .collect();
    assert_eq!(
        counts,
        [
            MAX_CHANGES_PER_PAGE,
            MAX_CHANGES_PER_PAGE,
            40_000 - 2 * MAX_CHANGES_PER_PAGE
        ]
    );
}

#[test]
fn no_changes_give_one_empty_page_that_still_moves_the_cursor() {
    assert_eq!(
        paginate(Vec::new(), 17, true),
        Ok(vec![Message::Changes {
            changes: Vec::new(),
            upto: 17,
            done: true
        }])
    );
}

#[test]
fn a_change_too_big_for_any_page_is_an_error() {
    let mut c = sample_change("a");
    c.entry.content = Content::Symlink {
        target: vec![b't'; MAX_FRAME],
    };
    let err = paginate(vec![(1, sample_change("b")), (2, c)], 2, true).expect_err("too big");
    assert!(
        matches!(err, EncodeError::ChangeTooLarge { seq: 2, .. }),
        "{err:?}"
    );
}

#[test]
fn unordered_input_is_refused() {
    let input = vec![(2, sample_change("a")), (2, sample_change("b"))];
    assert_eq!(
        paginate(input, 5, true),
        Err(EncodeError::Invalid {
            kind: "Changes",
            error: InvalidMessage::OutOfOrder { prev: 2, next: 2 }
        })
    );
    assert_eq!(
        paginate(vec![(9, sample_change("a"))], 5, true),
        Err(EncodeError::Invalid {
            kind: "Changes",
            error: InvalidMessage::BeyondUpto { seq: 9, upto: 5 }
        })
    );
}
