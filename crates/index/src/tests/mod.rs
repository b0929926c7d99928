//! Unit tests: behaviour through the public API, plus what needs the
//! tables themselves (corrupting them, writing other formats).

use crate::schema::{BY_SEQ, INODES, META, META_FORMAT, META_MAGIC};
use crate::{Batch, Index, IndexError, StatUpdate, FILE_NAME, FORMAT};
use omirr_core::entry::Meta;
use omirr_core::mem::MemIndex;
use omirr_core::StatKey;
use omirr_core::{Change, Content, Entry, HostId, IndexView, RelPath, Seq, Timestamp, Version};
use omirr_testkit::p;
use std::path::Path;

mod convert;
mod expiry;
mod open;
mod peers;
mod records;

fn change(path: &str, ts: u64, content: Content) -> Change {
    Change {
        path: p(path),
        entry: Entry {
            content,
            meta: Meta {
                mode: 0o644,
                uid: 1,
                gid: 2,
                mtime_ns: ts as i64,
                ..Default::default()
            },
            version: Version {
                ts: Timestamp(ts),
                host: HostId::new("h"),
            },
            base: None,
        },
    }
}

fn file(size: u64, h: u8) -> Content {
    Content::File {
        size,
        hash: [h; 32],
    }
}

fn stat(ino: u64, size: u64) -> StatKey {
    StatKey {
        dev: 7,
        ino,
        size,
        mtime_ns: 1_000 + ino as i64,
        ctime_ns: 2_000 + ino as i64,
    }
}

fn open(dir: &Path) -> Index {
    Index::open(dir).expect("open index")
}

fn paths(v: &[(RelPath, Entry)]) -> Vec<String> {
    v.iter().map(|(p, _)| p.to_string()).collect()
}
