//! Conflicts: two writes to a path, neither of which knew the other.
//!
//! Every change carries the version it replaced ([`Entry::base`]). A
//! peer's change whose base is not this host's current version, while
//! that version is a change made here (the peer cannot have known it),
//! is a conflict. The last writer still wins the name on every host; the
//! host whose own content lost keeps it as a *conflict copy*, a new
//! mirrored file next to the original:
//!
//! ```text
//! report.txt  ->  report.conflict-HOST-YYYYMMDDTHHMMSS.txt
//! ```
//!
//! where HOST wrote the losing version and the time is its timestamp
//! (UTC). The name is a function of the losing version, so the same
//! conflict always makes the same copy. Only the host that wrote the
//! losing content makes the copy: it is the one host sure to have that
//! content on disk when it learns that it lost (a host holding a
//! forwarded copy of it may have been overwritten already, and the host
//! that won would have to fetch it). The other host of the conflict
//! notes and logs it too. See docs/sync-model.md, "Conflicts".

use crate::entry::Entry;
use crate::path::MAX_NAME_LEN;
use crate::version::{HostId, Timestamp, Version};
use crate::RelPath;

/// What a conflict copy's name says between the original's stem and its
/// extension.
pub const MARK: &[u8] = b".conflict-";

/// How many conflict copies a mirror set keeps per file unless its
/// install options say otherwise (`-oconflicts=N`).
pub const DEFAULT_KEEP: u32 = 10;

/// Whether `remote` (a peer's change) conflicts with `local`, this host's
/// entry for the same path: `local` is a change `host` made itself and
/// `remote` did not replace it knowingly (its base is another version),
/// and `remote` is not this host's own change coming back. Two changes
/// to the same content (metadata only) are no conflict: nothing can be
/// lost, and the greater version's metadata wins as always.
pub fn conflicts(local: &Entry, remote: &Entry, host: &HostId) -> bool {
    local.version.host == *host
        && remote.version.host != *host
        && local.version != remote.version
        && remote.base.as_ref() != Some(&local.version)
        && local.content != remote.content
}

/// `name` split where a conflict mark goes: before the last `.` that is
/// neither the first byte nor the last (`report.txt` -> `report`, `.txt`;
/// `.bashrc` -> `.bashrc`, ``; `Makefile` -> `Makefile`, ``).
fn stem_and_ext(name: &[u8]) -> (&[u8], &[u8]) {
    match name.iter().rposition(|&b| b == b'.') {
        Some(i) if i > 0 && i + 1 < name.len() => name.split_at(i),
        _ => (name, &[]),
    }
}

/// A host name as it goes into a file name: bytes other than ASCII
/// letters, digits, `-`, `_` and `.` become `_`.
fn host_part(host: &HostId) -> Vec<u8> {
    host.as_str()
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                b
            } else {
                b'_'
            }
        })
        .collect()
}

/// `ts` as `YYYYMMDDTHHMMSS`, UTC.
pub fn compact_utc(ts: Timestamp) -> String {
    let secs = ts.0 / 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The conflict copy's name for the content of `path` that lost at
/// version `lost`; `attempt` > 0 adds `-N`, N = `attempt + 1` (for a
/// name that is taken: the second copy is `-2`).
/// A long stem is cut so that the name stays within `NAME_MAX`.
pub fn copy_name(path: &RelPath, lost: &Version, attempt: u32) -> Option<RelPath> {
    let (stem, ext) = stem_and_ext(path.file_name());
    let mut mark = MARK.to_vec();
    mark.extend(host_part(&lost.host));
    mark.push(b'-');
    mark.extend(compact_utc(lost.ts).bytes());
    if attempt > 0 {
        mark.extend(format!("-{}", attempt + 1).bytes());
    }
    let room = MAX_NAME_LEN.checked_sub(mark.len() + ext.len())?;
    let whole_is_text = std::str::from_utf8(stem).is_ok();
    let mut stem = &stem[..stem.len().min(room)];
    // Cut on a character boundary where the stem is text.
    while whole_is_text && std::str::from_utf8(stem).is_err() {
        stem = &stem[..stem.len() - 1];
    }
    let mut name = stem.to_vec();
    name.extend(mark);
    name.extend_from_slice(ext);
    match path.parent() {
        Some(dir) => dir.join(&name).ok(),
        None => None,
    }
}

/// Whether `candidate` is a conflict copy of `original` (a sibling named
/// `STEM.conflict-...EXT`, its stem cut if the name would pass
/// NAME_MAX: see [`copy_name`]).
pub fn is_copy_of(candidate: &RelPath, original: &RelPath) -> bool {
    if candidate.parent() != original.parent() || candidate == original {
        return false;
    }
    let (stem, ext) = stem_and_ext(original.file_name());
    let name = candidate.file_name();
    let Some(body) = name.strip_suffix(ext) else {
        return false;
    };
    // `copy_name` cuts the stem only when the whole name would not fit,
    // and then fills the name to within one character (at most 3 bytes
    // short) of NAME_MAX: a short name with a shorter stem is someone
    // else's file, never a copy to count or prune.
    let cut_for_length = name.len() + 3 >= MAX_NAME_LEN;
    (0..body.len()).any(|i| {
        let (before, mark_on) = body.split_at(i);
        let Some(rest) = mark_on.strip_prefix(MARK) else {
            return false;
        };
        let stem_fits = before == stem
            || (cut_for_length && before.len() < stem.len() && stem.starts_with(before));
        stem_fits && !rest.is_empty()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::p;
    use crate::{Content, Meta};

    fn v(ts: u64, host: &str) -> Version {
        Version {
            ts: Timestamp(ts),
            host: HostId::new(host),
        }
    }

    #[test]
    fn the_copy_name_says_who_and_when_and_sorts_with_the_original() {
        // 2026-12-02 04:15:00 UTC.
        let ts = 1_796_184_900 * 1_000_000_000 + 5;
        let name = copy_name(&p("srv/report.txt"), &v(ts, "b"), 0).expect("name");
        assert_eq!(name, p("srv/report.conflict-b-20261202T041500.txt"));
        assert!(is_copy_of(&name, &p("srv/report.txt")));
        assert!(!is_copy_of(&p("srv/report.txt"), &p("srv/report.txt")));
        assert!(!is_copy_of(
            &p("srv/other.conflict-b-1.txt"),
            &p("srv/report.txt")
        ));
        assert_eq!(
            copy_name(&p(".bashrc"), &v(0, "a/b c"), 1).expect("name"),
            p(".bashrc.conflict-a_b_c-19700101T000000-2")
        );
        assert_eq!(
            copy_name(&p("d/Makefile"), &v(86_400_000_000_000, "x"), 0).expect("name"),
            p("d/Makefile.conflict-x-19700102T000000")
        );
        let long = "é".repeat(125) + ".txt";
        let cut = copy_name(&p(&long), &v(0, "host"), 0).expect("a name within NAME_MAX");
        assert!(cut.file_name().len() <= MAX_NAME_LEN);
        assert!(std::str::from_utf8(cut.file_name()).is_ok());
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(compact_utc(Timestamp(0)), "19700101T000000");
        // 2000-02-29 23:59:59.
        assert_eq!(
            compact_utc(Timestamp(951_868_799_000_000_000)),
            "20000229T235959"
        );
    }

    #[test]
    fn a_conflict_is_a_local_change_the_peer_did_not_replace() {
        let me = HostId::new("a");
        let e = |ver: Version, base: Option<Version>| Entry {
            content: Content::Symlink {
                target: ver.to_string().into_bytes(),
            },
            meta: Meta::default(),
            version: ver,
            base,
        };
        let ours = e(v(5, "a"), Some(v(1, "c")));
        assert!(conflicts(&ours, &e(v(6, "b"), Some(v(1, "c"))), &me));
        assert!(conflicts(&ours, &e(v(4, "b"), None), &me));
        assert!(
            !conflicts(&ours, &e(v(6, "b"), Some(v(5, "a"))), &me),
            "an update"
        );
        assert!(
            !conflicts(&e(v(5, "c"), None), &e(v(6, "b"), None), &me),
            "not ours"
        );
        assert!(
            !conflicts(&ours, &e(v(3, "a"), None), &me),
            "our own, older"
        );
    }

    /// A copy whose stem `copy_name` cut to fit NAME_MAX is still known
    /// as a copy (so `-oconflicts=N` counts and prunes it), and a short
    /// name that merely starts like the original is not.
    #[test]
    fn a_copy_with_a_cut_stem_is_still_a_copy() {
        let long = format!("dir/{}.txt", "x".repeat(240));
        let original = p(&long);
        for attempt in 0..3 {
            let copy =
                copy_name(&original, &v(1_796_184_900_000_000_000, "b"), attempt).expect("name");
            assert!(copy.file_name().len() <= MAX_NAME_LEN);
            let mark_at = copy.file_name().windows(MARK.len()).position(|w| w == MARK);
            assert!(mark_at.is_some_and(|i| i < 240), "the stem is cut: {copy}");
            assert!(is_copy_of(&copy, &original), "{copy}");
        }
        let other = p(&format!("dir/{}.conflict-b-1.txt", "x".repeat(10)));
        assert!(!is_copy_of(&other, &original));
        assert!(!is_copy_of(
            &p("srv/rep.conflict-b-1.txt"),
            &p("srv/report.txt")
        ));
    }
}
