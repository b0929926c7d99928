//! Setting aside what fails, so that the rest of a batch goes on.

use omirr_core::{Change, RelPath};

/// Whether a change at `changed` goes with the failure of an action on
/// `failed`: the same path, a path below it, or one above it (a deleted
/// directory whose removal failed below).
pub fn related(changed: &RelPath, failed: &RelPath) -> bool {
    changed == failed || changed.is_below(failed) || failed.is_below(changed)
}

/// Splits `rest` into the changes that go with a failed action on
/// `failed` (one path, two for a rename) and those that do not. `None` if
/// no change goes with it: then nothing can be set aside, and the same
/// batch would fail the same way. Of the related changes, those
/// `recorded` says were applied before the failure are dropped from
/// both: they are done.
pub fn isolate(
    rest: Vec<Change>,
    failed: &[&RelPath],
    recorded: impl Fn(&Change) -> bool,
) -> Option<(Vec<Change>, Vec<Change>)> {
    let (bad, kept): (Vec<Change>, Vec<Change>) = rest
        .into_iter()
        .partition(|c| failed.iter().any(|p| related(&c.path, p)));
    if bad.is_empty() {
        return None;
    }
    let bad = bad.into_iter().filter(|c| !recorded(c)).collect();
    Some((bad, kept))
}

#[cfg(test)]
mod tests {
    use super::*;
    use omirr_core::{Content, Entry, HostId, Meta, Timestamp, Version};

    fn c(path: &str) -> Change {
        Change {
            path: RelPath::new(path.as_bytes().to_vec()).expect("path"),
            entry: Entry {
                content: Content::Deleted,
                meta: Meta::default(),
                version: Version {
                    ts: Timestamp(1),
                    host: HostId::new("a"),
                },
                base: None,
            },
        }
    }

    #[test]
    fn a_failed_directory_removal_takes_its_tree_and_not_its_siblings() {
        let rest = vec![c("d"), c("d/x"), c("d/y"), c("e"), c("dd")];
        let failed = RelPath::new(b"d".to_vec()).expect("path");
        let (bad, kept) =
            isolate(rest, &[&failed], |c| c.path.as_bytes() == b"d/y").expect("something to blame");
        let names = |v: &[Change]| v.iter().map(|c| c.path.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&bad), ["d", "d/x"], "d/y was already recorded");
        assert_eq!(names(&kept), ["e", "dd"]);
        let below = RelPath::new(b"e/f/g".to_vec()).expect("path");
        let (bad, _) = isolate(vec![c("e"), c("x")], &[&below], |_| false).expect("blame");
        assert_eq!(names(&bad), ["e"], "the ancestor whose change caused it");
        assert!(isolate(vec![c("x")], &[&below], |_| false).is_none());
    }
}
