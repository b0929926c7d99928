//! Tombstone expiry: forgetting, burying, and the watermark.

use super::*;

#[test]
fn expire_tombstones_forgets_only_old_tombstones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ix = open(dir.path());
    ix.record(&[
        change("gone", 10, Content::Deleted),
        change("also-gone", 20, Content::Deleted),
        change("recent", 95, Content::Deleted),
        change("live", 1, Content::Dir),
        change("edge", 50, Content::Deleted),
    ])
    .expect("record");
    let last = ix.last_seq().expect("last");
    // Horizon so large it saturates: nothing expires.
    assert_eq!(
        ix.expire_tombstones(Timestamp(100), u64::MAX)
            .expect("expire"),
        0
    );
    // 50 + 50 is not below 100: "edge" stays, as Entry says.
    assert_eq!(ix.expire_tombstones(Timestamp(100), 50).expect("expire"), 2);
    assert_eq!(ix.len().expect("len"), 3);
    assert_eq!(ix.entry(&p("gone")).expect("entry"), None);
    let left: Vec<String> = ix
        .since(0, usize::MAX)
        .expect("since")
        .into_iter()
        .map(|(_, c)| c.path.to_string())
        .collect();
    assert_eq!(left, ["recent", "live", "edge"]);
    assert_eq!(ix.last_seq().expect("last"), last, "never lowered");
    assert_eq!(ix.expire_tombstones(Timestamp(100), 50).expect("again"), 0);
    // An expired path can be written again, at a fresh sequence.
    assert_eq!(
        ix.record(&[change("gone", 5, file(1, 3))]).expect("record"),
        [Some(last + 1)]
    );
    // A tombstone replaced by a live entry is no longer a tombstone.
    ix.record(&[change("recent", 96, Content::Dir)])
        .expect("revive");
    assert_eq!(
        ix.expire_tombstones(Timestamp(u64::MAX), 0)
            .expect("expire"),
        1
    );
    assert!(ix.entry(&p("recent")).expect("entry").is_some());
    assert!(ix.entry(&p("edge")).expect("entry").is_none());
    ix.verify().expect("consistent");
}

#[test]
fn expiry_buries_then_forgets_and_keeps_its_watermark_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ix = open(dir.path());
    ix.record(&[
        change("d", 1, Content::Dir),
        change("d/f", 2, file(1, 1)),
        change("d", 5, Content::Deleted),
        change("x", 6, Content::Deleted),
    ])
    .expect("record");
    let x_seq = ix.last_seq().expect("last");
    assert_eq!(ix.forgotten().expect("watermark"), Default::default());
    // d still hides d/f: d/f is buried, x forgotten.
    let done = ix.expire(Timestamp(100), 10).expect("expire");
    assert_eq!(done.forgotten, 1);
    assert_eq!(
        paths(
            &done
                .buried
                .iter()
                .map(|c| (c.path.clone(), c.entry.clone()))
                .collect::<Vec<_>>()
        ),
        ["d/f"]
    );
    assert_eq!(ix.entry(&p("x")).expect("entry"), None);
    let f = ix.entry(&p("d/f")).expect("entry").expect("buried");
    assert!(!f.is_live());
    let w = ix.forgotten().expect("watermark");
    assert_eq!((w.seq, w.below), (x_seq, Timestamp(7)));
    // Next time d and its buried child go.
    assert_eq!(ix.expire_tombstones(Timestamp(100), 10).expect("again"), 2);
    assert_eq!(ix.len().expect("len"), 0);
    ix.verify().expect("consistent");
    let w = ix.forgotten().expect("watermark");
    assert_eq!(
        w.seq,
        ix.last_seq().expect("last"),
        "the buried d/f was last"
    );
    // A pending reconciliation, and the watermark, outlive a restart.
    let peer = HostId::new("p");
    assert!(!ix.must_reconcile(&peer).expect("pending"));
    ix.set_must_reconcile(&peer, true).expect("set");
    drop(ix);
    let ix = open(dir.path());
    assert_eq!(ix.forgotten().expect("watermark"), w);
    assert!(ix.must_reconcile(&peer).expect("pending"));
    ix.set_must_reconcile(&peer, false).expect("clear");
    assert!(!ix.must_reconcile(&peer).expect("pending"));
    // What a reconciliation reads: entries with their sequences.
    ix.record(&[change("a", 1, file(1, 2)), change("b", 1, Content::Dir)])
        .expect("record");
    let held = ix.held(&|p| p.as_bytes() == b"b").expect("held");
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].path.to_string(), held[0].seq),
        ("b".to_string(), ix.last_seq().expect("last"))
    );
}
