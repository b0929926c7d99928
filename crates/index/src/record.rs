//! How format 4 lays out an `entries` value: a path's sequence, its
//! entry and its cached stat, hand-encoded.
//!
//! Format 2 stored bincode of nested serde structs, with the stat in a
//! table of its own (the path a second time, and five fixed 8-byte
//! integers): the layout below takes a third of that for a typical file.
//! Integers are LEB128 varints, except the timestamps and mtimes (full
//! nanosecond values, which a varint would make longer); what usually
//! repeats another field (the group name, the stat's size and mtime) is a
//! flag bit instead:
//!
//! ```text
//! seq        varint
//! flags      u8: bits 0-1 kind (0 file, 1 dir, 2 symlink, 3 deleted),
//!            2 has a stat, 3 group is the owner's name, 4 meta is the
//!            default (tombstones), 5 stat size = file size, 6 stat mtime
//!            = meta mtime, 7 EXT: a second flags byte follows
//! ext        if bit 7: u8: bit 0 has a base version, 1 the kind is a
//!            FIFO (kind bits 0, no content), 2 has extended attributes,
//!            3 has a hard link's leader, 4-7 reserved (0)
//! ts         u64 LE                  the version's timestamp
//! host       varint length, bytes    the version's host (UTF-8)
//! content    file: varint size, 32-byte hash; symlink: varint length,
//!            target; dir, FIFO and tombstone: nothing
//! meta       unless bit 4: varint mode, uid, gid; i64 LE mtime; u8
//!            length + owner; unless bit 3, u8 length + group
//! stat       if bit 2: varint dev, ino; varint size unless bit 5; i64 LE
//!            mtime unless bit 6; zigzag varint ctime - mtime
//! base       if ext bit 0: u64 LE timestamp, varint length + host
//! xattrs     if ext bit 2: varint count, then per attribute (by name)
//!            varint length + name, varint length + value
//! link       if ext bit 3: varint length + the leader's path
//! ```
//!
//! Fields that ext bits add go at the end, in bit order. An entry that
//! needs none of them has no ext byte and is encoded exactly as format 3
//! encoded it: a format-3 value is a format-4 value.
//!
//! Decoding refuses anything else: an unknown bit, a truncated field,
//! trailing bytes, a name no user database could hold.

use crate::codec::CodecError;
use omirr_core::StatKey;
use omirr_core::{Content, Entry, HostId, Meta, Name, RelPath, Seq, Timestamp, Version, Xattrs};

const KIND_FILE: u8 = 0;
const KIND_DIR: u8 = 1;
const KIND_SYMLINK: u8 = 2;
const KIND_DELETED: u8 = 3;
const KIND_MASK: u8 = 0b11;
const HAS_STAT: u8 = 1 << 2;
const GROUP_IS_OWNER: u8 = 1 << 3;
const META_DEFAULT: u8 = 1 << 4;
const STAT_SIZE_IS_FILE_SIZE: u8 = 1 << 5;
const STAT_MTIME_IS_META_MTIME: u8 = 1 << 6;
const EXT: u8 = 1 << 7;
/// In the ext byte: the entry has a base version (at the end).
const EXT_HAS_BASE: u8 = 1 << 0;
/// In the ext byte: the kind is a FIFO.
const EXT_FIFO: u8 = 1 << 1;
/// In the ext byte: extended attributes follow the base.
const EXT_XATTRS: u8 = 1 << 2;
/// In the ext byte: the path of the hard link's leader follows.
const EXT_LINK: u8 = 1 << 3;
/// Ext bits this build knows.
const EXT_KNOWN: u8 = EXT_HAS_BASE | EXT_FIFO | EXT_XATTRS | EXT_LINK;

/// A symlink target or host name longer than this is not ours: the value
/// is corrupt (a target is at most `PATH_MAX`).
const MAX_FIELD: u64 = crate::codec::LIMIT as u64;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_name(out: &mut Vec<u8>, n: &Name) {
    // A name is at most Name::MAX (32) bytes: its length fits a byte.
    out.push(n.as_bytes().len() as u8);
    out.extend_from_slice(n.as_bytes());
}

/// The bytes of an `entries` value.
pub fn encode(seq: Seq, entry: &Entry, stat: Option<&StatKey>) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    put_varint(&mut out, seq);
    let mut ext = 0;
    let (kind, file_size) = match &entry.content {
        Content::File { size, .. } => (KIND_FILE, Some(*size)),
        Content::Dir => (KIND_DIR, None),
        Content::Symlink { .. } => (KIND_SYMLINK, None),
        Content::Fifo => {
            ext |= EXT_FIFO;
            (KIND_FILE, None)
        }
        Content::Deleted => (KIND_DELETED, None),
    };
    let meta = &entry.meta;
    if !meta.xattrs.is_empty() {
        ext |= EXT_XATTRS;
    }
    if meta.link.is_some() {
        ext |= EXT_LINK;
    }
    if entry.base.is_some() {
        ext |= EXT_HAS_BASE;
    }
    let mut flags = kind;
    if ext != 0 {
        flags |= EXT;
    }
    let meta_default = *meta == Meta::default();
    if meta_default {
        flags |= META_DEFAULT;
    } else if meta.group == meta.owner {
        flags |= GROUP_IS_OWNER;
    }
    if let Some(s) = stat {
        flags |= HAS_STAT;
        if file_size == Some(s.size) {
            flags |= STAT_SIZE_IS_FILE_SIZE;
        }
        if s.mtime_ns == meta.mtime_ns {
            flags |= STAT_MTIME_IS_META_MTIME;
        }
    }
    out.push(flags);
    if ext != 0 {
        out.push(ext);
    }
    out.extend_from_slice(&entry.version.ts.0.to_le_bytes());
    put_bytes(&mut out, entry.version.host.as_str().as_bytes());
    match &entry.content {
        Content::File { size, hash } => {
            put_varint(&mut out, *size);
            out.extend_from_slice(hash);
        }
        Content::Symlink { target } => put_bytes(&mut out, target),
        Content::Dir | Content::Fifo | Content::Deleted => {}
    }
    if !meta_default {
        put_varint(&mut out, meta.mode.into());
        put_varint(&mut out, meta.uid.into());
        put_varint(&mut out, meta.gid.into());
        out.extend_from_slice(&meta.mtime_ns.to_le_bytes());
        put_name(&mut out, &meta.owner);
        if flags & GROUP_IS_OWNER == 0 {
            put_name(&mut out, &meta.group);
        }
    }
    if let Some(s) = stat {
        put_varint(&mut out, s.dev);
        put_varint(&mut out, s.ino);
        if flags & STAT_SIZE_IS_FILE_SIZE == 0 {
            put_varint(&mut out, s.size);
        }
        if flags & STAT_MTIME_IS_META_MTIME == 0 {
            out.extend_from_slice(&s.mtime_ns.to_le_bytes());
        }
        put_varint(&mut out, zigzag(s.ctime_ns.wrapping_sub(s.mtime_ns)));
    }
    if let Some(base) = &entry.base {
        out.extend_from_slice(&base.ts.0.to_le_bytes());
        put_bytes(&mut out, base.host.as_str().as_bytes());
    }
    if ext & EXT_XATTRS != 0 {
        put_varint(&mut out, meta.xattrs.len() as u64);
        for (name, value) in meta.xattrs.iter() {
            put_bytes(&mut out, name);
            put_bytes(&mut out, value);
        }
    }
    if let Some(link) = &meta.link {
        put_bytes(&mut out, link.as_bytes());
    }
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
}

fn err(what: &str) -> CodecError {
    CodecError::new(format!("an entry value {what}"))
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.bytes.len() < n {
            return Err(err("is cut short"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn u64_le(&mut self) -> Result<u64, CodecError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            let part = u64::from(b & 0x7f);
            if i == 9 && part > 1 {
                return Err(err("has a varint above 64 bits"));
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(err("has a varint above 64 bits"))
    }

    fn varint_u32(&mut self) -> Result<u32, CodecError> {
        u32::try_from(self.varint()?).map_err(|_| err("has a 32-bit field above 32 bits"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.varint()?;
        if n > MAX_FIELD {
            return Err(err("has a field longer than the limit"));
        }
        self.take(n as usize)
    }

    fn name(&mut self) -> Result<Name, CodecError> {
        let n = self.u8()?;
        Name::new(self.take(n.into())?).ok_or_else(|| err("has an impossible user or group name"))
    }

    /// The metadata, unless `flags` say it is the default (tombstones);
    /// without the extended attributes and hard link, which come last.
    fn meta(&mut self, flags: u8) -> Result<Meta, CodecError> {
        Ok(if flags & META_DEFAULT != 0 {
            if flags & GROUP_IS_OWNER != 0 {
                return Err(err("has flags that contradict each other"));
            }
            Meta::default()
        } else {
            let mode = self.varint_u32()?;
            let uid = self.varint_u32()?;
            let gid = self.varint_u32()?;
            let mtime_ns = self.u64_le()? as i64;
            let owner = self.name()?;
            let group = if flags & GROUP_IS_OWNER != 0 {
                owner
            } else {
                self.name()?
            };
            Meta {
                mode,
                uid,
                gid,
                mtime_ns,
                owner,
                group,
                xattrs: Xattrs::EMPTY,
                link: None,
            }
        })
    }

    /// The stat, if `flags` say there is one; its size and mtime may be
    /// the file's (`file`) and the metadata's (`meta_mtime_ns`).
    fn stat(
        &mut self,
        flags: u8,
        file: Option<(u64, &[u8])>,
        meta_mtime_ns: i64,
    ) -> Result<Option<StatKey>, CodecError> {
        Ok(if flags & HAS_STAT != 0 {
            let dev = self.varint()?;
            let ino = self.varint()?;
            let size = match (flags & STAT_SIZE_IS_FILE_SIZE != 0, file) {
                (false, _) => self.varint()?,
                (true, Some((size, _))) => size,
                (true, None) => return Err(err("has a stat sized like a file it is not")),
            };
            let mtime_ns = if flags & STAT_MTIME_IS_META_MTIME != 0 {
                meta_mtime_ns
            } else {
                self.u64_le()? as i64
            };
            let ctime_ns = mtime_ns.wrapping_add(unzigzag(self.varint()?));
            Some(StatKey {
                dev,
                ino,
                size,
                mtime_ns,
                ctime_ns,
            })
        } else if flags & (STAT_SIZE_IS_FILE_SIZE | STAT_MTIME_IS_META_MTIME) != 0 {
            return Err(err("has stat flags without a stat"));
        } else {
            None
        })
    }

    /// What the second flags byte `ext` adds, at the end in bit order:
    /// the base (returned), the extended attributes and the hard link
    /// (into `meta`).
    fn ext_fields(
        &mut self,
        ext: u8,
        meta: &mut Meta,
    ) -> Result<Option<(u64, &'a str)>, CodecError> {
        let base = if ext & EXT_HAS_BASE != 0 {
            let ts = self.u64_le()?;
            let host = std::str::from_utf8(self.bytes()?)
                .map_err(|_| err("has a base host name that is not UTF-8"))?;
            Some((ts, host))
        } else {
            None
        };
        if ext & EXT_XATTRS != 0 {
            let count = self.varint()?;
            if count == 0 || count > Xattrs::MAX_COUNT as u64 {
                return Err(err("has an impossible count of extended attributes"));
            }
            let mut pairs = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let name = self.bytes()?.to_vec();
                let value = self.bytes()?.to_vec();
                pairs.push((name, value));
            }
            meta.xattrs =
                Xattrs::new(pairs).map_err(|e| CodecError::new(format!("an entry value's {e}")))?;
        }
        if ext & EXT_LINK != 0 {
            let link = RelPath::new(self.bytes()?.to_vec())
                .map_err(|e| CodecError::new(format!("an entry value's hard link: {e}")))?;
            meta.link = Some(Box::new(link));
        }
        Ok(base)
    }
}

/// An `entries` value, read without allocating: what a scan over many
/// rows needs (the sequence, the stat, the hash) costs no copy.
pub struct RawRecord<'a> {
    pub seq: Seq,
    flags: u8,
    fifo: bool,
    ts: u64,
    host: &'a str,
    file: Option<(u64, &'a [u8])>,
    target: &'a [u8],
    meta: Meta,
    pub stat: Option<StatKey>,
    base: Option<(u64, &'a str)>,
}

impl<'a> RawRecord<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<RawRecord<'a>, CodecError> {
        let mut r = Reader { bytes };
        let seq = r.varint()?;
        let flags = r.u8()?;
        let ext = if flags & EXT != 0 { r.u8()? } else { 0 };
        if ext & !EXT_KNOWN != 0 {
            return Err(err("has an unknown flag"));
        }
        if flags & EXT != 0 && ext == 0 {
            return Err(err("has an empty second flags byte"));
        }
        let fifo = ext & EXT_FIFO != 0;
        if fifo && flags & KIND_MASK != KIND_FILE {
            return Err(err("has flags that contradict each other"));
        }
        let ts = r.u64_le()?;
        let host = std::str::from_utf8(r.bytes()?)
            .map_err(|_| err("has a host name that is not UTF-8"))?;
        let kind = flags & KIND_MASK;
        let (mut file, mut target) = (None, &[][..]);
        match kind {
            KIND_FILE if !fifo => {
                let size = r.varint()?;
                file = Some((size, r.take(32)?));
            }
            KIND_SYMLINK => target = r.bytes()?,
            _ => {}
        }
        let mut meta = r.meta(flags)?;
        let stat = r.stat(flags, file, meta.mtime_ns)?;
        let base = r.ext_fields(ext, &mut meta)?;
        if !r.bytes.is_empty() {
            return Err(CodecError::new(format!(
                "{} trailing bytes after an entry value",
                r.bytes.len()
            )));
        }
        Ok(RawRecord {
            seq,
            flags,
            fifo,
            ts,
            host,
            file,
            target,
            meta,
            stat,
            base,
        })
    }

    /// The content hash, for a file.
    pub fn hash(&self) -> Option<&'a [u8]> {
        self.file.map(|(_, h)| h)
    }

    pub fn entry(&self) -> Entry {
        let content = match (self.flags & KIND_MASK, self.file) {
            _ if self.fifo => Content::Fifo,
            (KIND_FILE, Some((size, h))) => {
                let mut hash = [0u8; 32];
                hash.copy_from_slice(h);
                Content::File { size, hash }
            }
            (KIND_DIR, _) => Content::Dir,
            (KIND_SYMLINK, _) => Content::Symlink {
                target: self.target.to_vec(),
            },
            _ => Content::Deleted,
        };
        Entry {
            content,
            meta: self.meta.clone(),
            version: Version {
                ts: Timestamp(self.ts),
                host: HostId::new(self.host),
            },
            base: self.base.map(|(ts, host)| Version {
                ts: Timestamp(ts),
                host: HostId::new(host),
            }),
        }
    }
}

/// Decodes an `entries` value whole.
pub fn decode(bytes: &[u8]) -> Result<(Seq, Entry, Option<StatKey>), CodecError> {
    let raw = RawRecord::parse(bytes)?;
    Ok((raw.seq, raw.entry(), raw.stat))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(content: Content, meta: Meta) -> Entry {
        Entry {
            content,
            meta,
            version: Version {
                ts: Timestamp(1_764_633_600_987_654_321),
                host: HostId::new("alpha"),
            },
            base: None,
        }
    }

    #[test]
    fn round_trips_every_shape() {
        let named = Meta {
            mode: 0o644,
            uid: 1000,
            gid: 100,
            mtime_ns: -5,
            owner: Name::new(b"ann").expect("name"),
            group: Name::new(b"staff").expect("name"),
            ..Meta::default()
        };
        let same = Meta {
            group: named.owner,
            ..named.clone()
        };
        // Format 4's additions: attributes, a hard link's leader.
        let extended = Meta {
            xattrs: Xattrs::new(vec![
                (b"user.a".to_vec(), b"\0\xff".to_vec()),
                (b"system.posix_acl_access".to_vec(), vec![2, 0, 0, 0]),
                (b"user.empty".to_vec(), Vec::new()),
            ])
            .expect("xattrs"),
            link: Some(Box::new(RelPath::new(&b"srv/leader"[..]).expect("path"))),
            ..named.clone()
        };
        let only_link = Meta {
            link: Some(Box::new(RelPath::new(&b"x"[..]).expect("path"))),
            ..named.clone()
        };
        let stats = [
            None,
            Some(StatKey {
                dev: 2049,
                ino: 77,
                size: 12,
                mtime_ns: -5,
                ctime_ns: -5,
            }),
            Some(StatKey {
                dev: u64::MAX,
                ino: u64::MAX,
                size: 4096,
                mtime_ns: i64::MIN,
                ctime_ns: i64::MAX,
            }),
        ];
        let contents = [
            Content::File {
                size: 12,
                hash: [9; 32],
            },
            Content::Dir,
            Content::Symlink {
                target: b"../\xff".to_vec(),
            },
            Content::Fifo,
            Content::Deleted,
        ];
        let bases = [
            None,
            Some(Version {
                ts: Timestamp(1_764_633_600_000_000_001),
                host: HostId::new("beta"),
            }),
        ];
        for content in contents {
            for meta in [&named, &same, &extended, &only_link, &Meta::default()] {
                for (stat, base) in stats.iter().flat_map(|s| bases.iter().map(move |b| (s, b))) {
                    let e = Entry {
                        base: base.clone(),
                        ..entry(content.clone(), meta.clone())
                    };
                    for seq in [0, 1, 300, u64::MAX] {
                        let bytes = encode(seq, &e, stat.as_ref());
                        assert_eq!(decode(&bytes), Ok((seq, e.clone(), *stat)));
                        let mut longer = bytes.clone();
                        longer.push(0);
                        assert!(decode(&longer).is_err());
                        for cut in 0..bytes.len() {
                            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_typical_file_is_small() {
        let e = entry(
            Content::File {
                size: 64,
                hash: [1; 32],
            },
            Meta {
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime_ns: 1_764_633_600_123_456_789,
                owner: Name::new(b"root").expect("name"),
                group: Name::new(b"root").expect("name"),
                ..Meta::default()
            },
        );
        let stat = StatKey {
            dev: 2049,
            ino: 1_234_567,
            size: 64,
            mtime_ns: 1_764_633_600_123_456_789,
            ctime_ns: 1_764_633_600_123_456_789,
        };
        // seq 3 + flags 1 + ts 8 + host 6 + content 33 + meta 17 + stat 6
        assert_eq!(encode(1_000_000, &e, Some(&stat)).len(), 74);
        // A base adds the EXT byte, its timestamp and its host.
        let based = Entry {
            base: Some(Version {
                ts: Timestamp(5),
                host: HostId::new("beta"),
            }),
            ..e
        };
        assert_eq!(encode(1_000_000, &based, Some(&stat)).len(), 74 + 1 + 8 + 5);
    }

    #[test]
    fn junk_is_refused() {
        assert!(decode(&[]).is_err());
        // An unknown flag in the ext byte, and an ext byte with none.
        for ext in [1 << 7, 1 << 4, 0] {
            let mut b = vec![1, EXT | KIND_DIR, ext];
            b.extend_from_slice(&[0; 8]);
            b.push(0);
            assert!(decode(&b).is_err(), "ext {ext:#x}");
        }
        // A FIFO that says it is a directory.
        let mut b = vec![1, EXT | KIND_DIR, EXT_FIFO];
        b.extend_from_slice(&[0; 8]);
        b.push(0);
        assert!(decode(&b).is_err());
        // Attributes named twice, or out of order.
        let e = entry(
            Content::Dir,
            Meta {
                xattrs: Xattrs::new(vec![
                    (b"user.a".to_vec(), b"1".to_vec()),
                    (b"user.b".to_vec(), b"2".to_vec()),
                ])
                .expect("xattrs"),
                ..Meta::default()
            },
        );
        let good = encode(1, &e, None);
        let at = good
            .windows(6)
            .position(|w| w == b"user.b")
            .expect("the second name");
        let mut twice = good.clone();
        twice[at + 5] = b'a';
        assert!(decode(&twice).is_err());
        // A varint of eleven bytes.
        assert!(decode(&[0xff; 11]).is_err());
    }
}
