//! The values of formats 1 to 3 that format 4 lays out otherwise, as
//! they were encoded (serde and bincode): what [`crate::convert`] reads
//! and, where it converts in steps, writes.

use omirr_core::{Content, Entry, Seq};
use serde::{Deserialize, Serialize};

/// What [`crate::schema::ENTRIES`] held per path in format 2, as encoded (by
/// [`crate::Index::convert_from_1`]).
#[derive(Serialize)]
pub(crate) struct StoredRef<'a> {
    pub(crate) seq: Seq,
    pub(crate) entry: EntryV3Ref<'a>,
}

/// What [`crate::schema::ENTRIES`] held per path in format 2, as decoded (by
/// [`crate::Index::convert_from_2`]). Same field order as [`StoredRef`].
#[derive(Deserialize)]
pub(crate) struct Stored {
    pub(crate) seq: Seq,
    pub(crate) entry: EntryV3,
}

/// An entry as formats 2 and 3 encoded it with serde: without a base,
/// and with format 3's [`v3::Meta`] (no extended attributes, no link).
#[derive(Deserialize)]
pub(crate) struct EntryV3 {
    content: Content,
    meta: v3::Meta,
    version: omirr_core::Version,
}

impl EntryV3 {
    pub(crate) fn into_entry(self) -> Entry {
        Entry {
            content: self.content,
            meta: self.meta.into(),
            version: self.version,
            base: None,
        }
    }
}

/// [`EntryV3`], to encode.
#[derive(Serialize)]
pub(crate) struct EntryV3Ref<'a> {
    content: &'a Content,
    meta: v3::Meta,
    version: &'a omirr_core::Version,
}

impl<'a> EntryV3Ref<'a> {
    pub(crate) fn of(e: &'a Entry) -> EntryV3Ref<'a> {
        EntryV3Ref {
            content: &e.content,
            meta: v3::Meta::from(&e.meta),
            version: &e.version,
        }
    }
}

/// Format 1's values, for [`crate::Index::convert_from_1`].
pub(crate) mod v1 {
    use omirr_core::{Content, Meta, RelPath, Seq, Version};
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Stored {
        pub seq: Seq,
        pub entry: Entry,
    }

    #[derive(Deserialize)]
    pub struct Entry {
        content: Content,
        meta: OldMeta,
        version: Version,
    }

    #[derive(Deserialize)]
    struct OldMeta {
        mode: u32,
        uid: u32,
        gid: u32,
        mtime_ns: i64,
    }

    #[derive(Deserialize)]
    pub struct Change {
        pub path: RelPath,
        pub entry: Entry,
    }

    #[derive(Deserialize)]
    pub struct Aside {
        pub change: Change,
        pub reason: String,
        pub attempts: u32,
        pub since: u64,
    }

    impl Entry {
        pub fn into_entry(self) -> omirr_core::Entry {
            let m = self.meta;
            omirr_core::Entry {
                content: self.content,
                meta: Meta {
                    mode: m.mode,
                    uid: m.uid,
                    gid: m.gid,
                    mtime_ns: m.mtime_ns,
                    ..Meta::default()
                },
                version: self.version,
                base: None,
            }
        }
    }
}

/// Format 3's set-aside changes (formats 2 and 3 store them alike), for
/// [`crate::Index::convert_from_3`]: [`omirr_core::Meta`] without extended attributes and
/// hard links.
pub(crate) mod v3 {
    use omirr_core::{Content, Name, RelPath, Version};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub struct Aside {
        change: Change,
        reason: String,
        attempts: u32,
        since: u64,
    }

    #[derive(Serialize, Deserialize)]
    struct Change {
        path: RelPath,
        entry: Entry,
    }

    #[derive(Serialize, Deserialize)]
    struct Entry {
        content: Content,
        meta: Meta,
        version: Version,
    }

    /// Format 3's `Meta`: no extended attributes, no hard link.
    #[derive(Serialize, Deserialize)]
    pub(crate) struct Meta {
        mode: u32,
        uid: u32,
        gid: u32,
        mtime_ns: i64,
        owner: Name,
        group: Name,
    }

    impl From<&omirr_core::Meta> for Meta {
        fn from(m: &omirr_core::Meta) -> Meta {
            Meta {
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
                mtime_ns: m.mtime_ns,
                owner: m.owner,
                group: m.group,
            }
        }
    }

    impl From<Meta> for omirr_core::Meta {
        fn from(m: Meta) -> omirr_core::Meta {
            omirr_core::Meta {
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
                mtime_ns: m.mtime_ns,
                owner: m.owner,
                group: m.group,
                ..omirr_core::Meta::default()
            }
        }
    }

    impl From<crate::Aside> for Aside {
        fn from(a: crate::Aside) -> Aside {
            let (path, e) = (a.change.path, a.change.entry);
            Aside {
                change: Change {
                    path,
                    entry: Entry {
                        content: e.content,
                        meta: Meta::from(&e.meta),
                        version: e.version,
                    },
                },
                reason: a.reason,
                attempts: a.attempts,
                since: a.since,
            }
        }
    }

    impl From<Aside> for crate::Aside {
        fn from(a: Aside) -> crate::Aside {
            let (path, e) = (a.change.path, a.change.entry);
            crate::Aside {
                change: omirr_core::Change {
                    path,
                    entry: omirr_core::Entry {
                        content: e.content,
                        meta: e.meta.into(),
                        version: e.version,
                        base: None,
                    },
                },
                reason: a.reason,
                attempts: a.attempts,
                since: a.since,
            }
        }
    }
}

#[cfg(test)]
mod v3_tests {
    use super::*;
    use crate::{codec, Aside};

    /// A set-aside change as format 3 stored it (crates/index/tests/
    /// golden.rs had these bytes then) reads back through the
    /// conversion, its metadata whole.
    #[test]
    fn a_format_3_aside_converts() {
        const V3: &str = "127372762f7777772f696e6465782e68746d6c00fb3331000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1ffba40121fbe803fd2a9a27dcd179fa30087777772d64617461057374616666fdb1689621e93c7d1805616c7068613863616e6e6f74207772697465207372762f7777772f696e6465782e68746d6c3a204e6f207370616365206c656674206f6e2064657669636503fc002c2e69";
        let bytes: Vec<u8> = (0..V3.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&V3[i..i + 2], 16).expect("hex"))
            .collect();
        assert!(
            codec::decode::<Aside>(&bytes).is_err(),
            "format 4 cannot read it as it is"
        );
        let old: v3::Aside = codec::decode(&bytes).expect("format 3's layout");
        let aside = Aside::from(old);
        let m = &aside.change.entry.meta;
        assert_eq!((m.mode, m.uid, m.gid), (0o644, 33, 1000));
        assert_eq!(m.owner.as_bytes(), b"www-data");
        assert_eq!(m.group.as_bytes(), b"staff");
        assert!(m.xattrs.is_empty() && m.link.is_none());
        assert_eq!(aside.attempts, 3);
        // And back: the layout is format 3's exactly.
        assert_eq!(
            codec::encode(&v3::Aside::from(aside)).expect("encode"),
            bytes
        );
    }
}
