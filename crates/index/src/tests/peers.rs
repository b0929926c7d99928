//! What the index keeps of its peers: cursors, ids, set-aside changes and each host's latest version.

use super::*;

#[test]
fn cursors_persist_and_may_go_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (HostId::new("alpha"), HostId::new("beta"));
    {
        let ix = open(dir.path());
        assert_eq!(ix.cursor(&a).expect("cursor"), 0);
        ix.set_cursor(&a, 10).expect("set");
        ix.set_cursor(&b, 20).expect("set");
        ix.set_cursor(&a, 15).expect("set");
    }
    let ix = open(dir.path());
    assert_eq!(ix.cursor(&a).expect("cursor"), 15);
    assert_eq!(ix.cursor(&b).expect("cursor"), 20);
    ix.set_cursor(&b, 0).expect("reset");
    assert_eq!(ix.cursor(&b).expect("cursor"), 0);
    assert_eq!(ix.cursor(&HostId::new("gamma")).expect("cursor"), 0);
}

#[test]
fn set_aside_changes_persist_per_peer_with_the_cursor_and_are_dropped_by_path() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = (HostId::new("a"), HostId::new("b"));
    let aside = |path: &str, reason: &str| crate::Aside {
        change: change(path, 5, Content::Deleted),
        reason: reason.to_string(),
        attempts: 1,
        since: 100,
    };
    {
        let index = open(dir.path());
        assert!(index.aside(None).expect("read").is_empty(), "no table yet");
        let mut batch = Batch::new();
        batch
            .set_aside(a.clone(), aside("d", "not empty"))
            .set_aside(b.clone(), aside("e", "in the way"))
            .set_aside(a.clone(), aside("d/x", "busy"))
            .set_cursor(a.clone(), 42);
        index.commit(&batch).expect("commit");
    }
    let index = open(dir.path());
    assert_eq!(index.cursor(&a).expect("cursor"), 42);
    let of_a: Vec<String> = index
        .aside(Some(&a))
        .expect("read")
        .into_iter()
        .map(|(h, x)| format!("{h}:{}:{}", x.change.path, x.reason))
        .collect();
    assert_eq!(of_a, ["a:d:not empty", "a:d/x:busy"]);
    assert_eq!(index.aside(None).expect("read").len(), 3);
    // Setting one again replaces it; clearing drops only that peer's.
    let mut batch = Batch::new();
    batch
        .set_aside(a.clone(), aside("d", "still not empty"))
        .clear_aside(a.clone(), p("d/x"))
        .clear_aside(a.clone(), p("e"));
    index.commit(&batch).expect("commit");
    let all: Vec<String> = index
        .aside(None)
        .expect("read")
        .into_iter()
        .map(|(h, x)| format!("{h}:{}:{}", x.change.path, x.reason))
        .collect();
    assert_eq!(all, ["a:d:still not empty", "b:e:in the way"]);
}

#[test]
fn the_latest_version_of_each_host_is_kept_even_when_superseded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idx = open(dir.path());
    let h = HostId::new("h");
    let g = HostId::new("g");
    assert_eq!(
        idx.latest_of(&h).expect("latest"),
        Timestamp(0),
        "new index"
    );
    let mut by_g = change("b", 50, file(1, 1));
    by_g.entry.version.host = g.clone();
    idx.record(&[
        change("a", 10, file(1, 1)),
        change("a", 30, file(1, 2)),
        by_g,
    ])
    .expect("record");
    assert_eq!(idx.latest_of(&h).expect("latest"), Timestamp(30));
    assert_eq!(idx.latest_of(&g).expect("latest"), Timestamp(50));
    // g's version of a wins over h's later one: h's latest still counts.
    let mut newer_g = change("a", 40, file(1, 3));
    newer_g.entry.version.host = g.clone();
    idx.record(&[newer_g]).expect("record");
    idx.record(&[change("c", 20, file(1, 4))]).expect("record");
    assert_eq!(
        idx.latest_of(&h).expect("latest"),
        Timestamp(30),
        "never lowered"
    );
    assert_eq!(idx.latest_of(&g).expect("latest"), Timestamp(50));
    // A version not recorded (older than what is held) does not count.
    let mut stale = change("b", 45, file(1, 5));
    stale.entry.version.host = HostId::new("k");
    idx.record(&[stale]).expect("record");
    assert_eq!(
        idx.latest_of(&HostId::new("k")).expect("latest"),
        Timestamp(0)
    );
    drop(idx);
    let idx = open(dir.path());
    assert_eq!(
        idx.latest_of(&h).expect("latest"),
        Timestamp(30),
        "persisted"
    );
}

#[test]
fn an_index_has_an_id_for_life_and_a_peer_with_a_new_index_starts_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idx = open(dir.path());
    let id = idx.id();
    assert_ne!(id, 0);
    drop(idx);
    let idx = open(dir.path());
    assert_eq!(idx.id(), id, "kept across opens");
    let other = tempfile::tempdir().expect("tempdir");
    assert_ne!(open(other.path()).id(), id, "another index, another id");

    let peer = HostId::new("b");
    assert_eq!(idx.peer_index(&peer).expect("peer index"), 0);
    // A cursor from before ids were kept is trusted when the id is first
    // heard.
    idx.set_cursor(&peer, 40).expect("cursor");
    assert!(!idx.meet_peer_index(&peer, 7).expect("meet"));
    assert_eq!(idx.cursor(&peer).expect("cursor"), 40);
    assert_eq!(idx.peer_index(&peer).expect("peer index"), 7);
    assert!(
        !idx.meet_peer_index(&peer, 7).expect("meet"),
        "the same index"
    );
    assert_eq!(idx.cursor(&peer).expect("cursor"), 40);
    // The peer comes back with another index: start over from 0.
    assert!(idx.meet_peer_index(&peer, 9).expect("meet"));
    assert_eq!(idx.cursor(&peer).expect("cursor"), 0);
    assert_eq!(idx.peer_index(&peer).expect("peer index"), 9);
}
