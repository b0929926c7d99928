//! A batch's fetched content, in memory or in the staging directory,
//! as the applier reads it ([`ContentSource`]).

use super::Transfers;
use crate::engine::Engine;
use omirr_core::{Hash, RelPath};
use omirr_fs::apply::{ContentSource, SourceError};
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// A batch's content, fetched and checked, for the applier.
#[derive(Default)]
pub struct Staged {
    mem: HashMap<(Hash, u64), Vec<u8>>,
    files: HashMap<(Hash, u64), PathBuf>,
    failed: HashMap<(Hash, u64), String>,
    /// Bytes of `mem`, given back to the session's budget on drop.
    mem_bytes: u64,
    /// How many of the batch's files want each content: a staged file is
    /// moved into the tree by its last user, copied for the others.
    pub(super) uses: Mutex<HashMap<(Hash, u64), usize>>,
    /// What this batch claimed (see [`crate::engine::Claims`]), released
    /// with it.
    pub(super) claimed: Vec<(Hash, u64)>,
    /// Content left to the session that claimed it first.
    pub deferred: std::collections::HashSet<(Hash, u64)>,
    /// Whose memory budget and claims this store holds (none in tests).
    pub(super) holder: Option<(Arc<Engine>, Arc<Transfers>)>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        for p in self.files.values() {
            let _ = std::fs::remove_file(p);
        }
        if let Some((e, t)) = &self.holder {
            t.mem.fetch_sub(self.mem_bytes, Ordering::Relaxed);
            e.claims.release(t.owner, &self.claimed);
        }
    }
}

impl Staged {
    pub(super) fn keep(&mut self, key: (Hash, u64), got: Fetched) {
        match got {
            Fetched::Mem(v) => {
                self.mem_bytes += v.len() as u64;
                self.mem.insert(key, v);
            }
            Fetched::File(p) => {
                self.files.insert(key, p);
            }
            Fetched::Failed(why) => {
                self.failed.insert(key, why);
            }
        }
    }
}

impl ContentSource for &Staged {
    fn take_file(&mut self, hash: &Hash, size: u64) -> Option<PathBuf> {
        let key = (*hash, size);
        let path = self.files.get(&key)?;
        let mut uses = self.uses.lock().unwrap_or_else(|e| e.into_inner());
        let left = uses.entry(key).or_insert(1);
        if *left > 1 {
            *left -= 1;
            return None;
        }
        *left = 0;
        Some(path.clone())
    }

    fn open(
        &mut self,
        path: &RelPath,
        hash: &Hash,
        size: u64,
    ) -> Result<Box<dyn Read + '_>, SourceError> {
        let key = (*hash, size);
        if size == 0 {
            return Ok(Box::new(std::io::empty()));
        }
        if let Some(v) = self.mem.get(&key) {
            return Ok(Box::new(&v[..]));
        }
        if let Some(p) = self.files.get(&key) {
            return Ok(Box::new(std::fs::File::open(p)?));
        }
        if let Some(why) = self.failed.get(&key) {
            return Err(why.clone().into());
        }
        Err(Box::new(NotStaged(path.clone())))
    }
}

/// The applier asked for content that was not fetched before its batch
/// (the batch resolved differently once the batch before it was
/// applied): it is fetched, and the change applied, in one more round.
#[derive(Debug)]
pub struct NotStaged(pub RelPath);

impl std::fmt::Display for NotStaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: its content was not fetched before the batch",
            self.0
        )
    }
}

impl std::error::Error for NotStaged {}

pub(super) enum Fetched {
    Mem(Vec<u8>),
    File(PathBuf),
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_content_is_served_from_memory_or_disk_and_misses_say_so() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut staged = Staged::default();
        let a = b"hello".to_vec();
        let ha = *blake3::hash(&a).as_bytes();
        staged.keep((ha, 5), Fetched::Mem(a.clone()));
        let on_disk = dir.path().join("b");
        std::fs::write(&on_disk, b"world!").expect("write");
        let hb = *blake3::hash(b"world!").as_bytes();
        staged.keep((hb, 6), Fetched::File(on_disk.clone()));
        staged.keep(([9; 32], 3), Fetched::Failed("gone".into()));
        let p = RelPath::new(b"x".to_vec()).expect("path");
        let mut src = &staged;
        let mut read = |h: &Hash, n| -> Result<Vec<u8>, String> {
            let mut r = src.open(&p, h, n).map_err(|e| e.to_string())?;
            let mut v = Vec::new();
            r.read_to_end(&mut v).map_err(|e| e.to_string())?;
            Ok(v)
        };
        assert_eq!(read(&ha, 5).expect("memory"), a);
        assert_eq!(read(&hb, 6).expect("disk"), b"world!");
        assert_eq!(read(&[9; 32], 3).unwrap_err(), "gone");
        assert!(read(&[1; 32], 3).unwrap_err().contains("not fetched"));
        drop(staged);
        assert!(!on_disk.exists(), "staged files go with their batch");
    }

    #[test]
    fn a_staged_file_is_moved_by_its_last_user_and_copied_for_the_others() {
        let dir = tempfile::tempdir().expect("tmp");
        let on_disk = dir.path().join("c");
        std::fs::write(&on_disk, b"content").expect("write");
        let h = *blake3::hash(b"content").as_bytes();
        let mut staged = Staged::default();
        staged.keep((h, 7), Fetched::File(on_disk.clone()));
        staged.uses = Mutex::new(HashMap::from([((h, 7), 2)]));
        let mut src = &staged;
        assert_eq!(src.take_file(&h, 7), None, "another path wants it too");
        assert_eq!(src.take_file(&h, 7), Some(on_disk.clone()), "the last one");
        assert_eq!(src.take_file(&[0; 32], 7), None, "not staged");
        staged.keep(([5; 32], 1), Fetched::Mem(vec![1]));
        let mut src = &staged;
        assert_eq!(src.take_file(&[5; 32], 1), None, "in memory");
    }
}
