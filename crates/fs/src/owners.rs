//! Owners, groups and modes, as the Distfile's install options ask for
//! them on this host.
//!
//! An entry carries its owner and group both as numbers and as the names
//! the recording host gives them ([`Meta`]). What this host does with them
//! is a [`MetaRules`] per path:
//!
//! - [`Check::ByName`] (rdist's default): the owner is the local user of
//!   that name. A name this host does not know falls back to `defowner`
//!   (`defgroup`) when the Distfile gives one, else to the number; each
//!   such name is logged once.
//! - [`Check::ByNumber`] (`numchkowner`, `numchkgroup`): the number, as
//!   it is.
//! - [`Check::Keep`] (`nochkowner`, `nochkgroup`): what this host has is
//!   left alone; a new file gets the entry's owner (by name). A local
//!   change of owner alone is no change to mirror.
//! - `keep_mode` (`nochkmode`): the same for the permission bits.
//!
//! The applier uses [`local_uid`] and [`local_gid`] to set owners; the
//! scan uses [`canonical`] to compare what it finds with the index, so that
//! a file whose owner is the local rendering of its entry's owner (or
//! whose kept owner differs) is not a change of this host's.

use omirr_core::{Meta, Name, RelPath, Xattrs};
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

/// How an owner or a group is mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Check {
    /// By name, falling back to the default name or the number.
    #[default]
    ByName,
    /// By number.
    ByNumber,
    /// Not at all: this host's stays.
    Keep,
}

/// How one path's metadata is mirrored on this host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetaRules {
    /// How the owner is mirrored (`numchkowner`, `nochkowner`; by name
    /// without either).
    pub owner: Check,
    /// How the group is mirrored (`numchkgroup`, `nochkgroup`; by name
    /// without either).
    pub group: Check,
    /// `nochkmode`: this host's permission bits stay.
    pub keep_mode: bool,
    /// `defowner=NAME`: the owner for a name unknown here.
    pub defowner: Option<String>,
    /// `defgroup=NAME`: the group for a name unknown here.
    pub defgroup: Option<String>,
    /// How many numbered generations `SaveOld` keeps (`history`): `0`
    /// keeps one, `NAME.OLD`.
    pub history: usize,
    /// `noxattrs`: this host's extended attributes (ACLs included) are
    /// neither recorded nor set; what it has stays.
    pub keep_xattrs: bool,
    /// `noacls`: the same for the POSIX ACLs only.
    pub keep_acls: bool,
}

impl MetaRules {
    /// Whether the extended attribute `name` is mirrored at a path with
    /// these rules (the classes this host handles at all are
    /// [`crate::xattrs::handled`]'s).
    pub fn mirrors_xattr(&self, name: &[u8]) -> bool {
        match crate::xattrs::class(name) {
            _ if self.keep_xattrs => false,
            Some(crate::xattrs::Class::Acl) => !self.keep_acls,
            Some(_) => true,
            None => false,
        }
    }
}

/// The rules for each path; the daemon's plan implements it.
pub trait Rules: Send + Sync {
    /// The rules in force at `path` (relative to the mirror root): the
    /// install options of the mirror set that rules it.
    fn rules(&self, path: &RelPath) -> MetaRules;
    /// Whether this host only receives `path` (the Distfile's
    /// `receiveonly`): a local change there is not recorded, but undone
    /// (see `omirr_sync::record::plan_restore`).
    fn undoes_local_changes(&self, path: &RelPath) -> bool {
        let _ = path;
        false
    }
}

/// The same rules everywhere.
#[derive(Debug, Clone, Default)]
pub struct Uniform(pub MetaRules);

impl Rules for Uniform {
    fn rules(&self, _: &RelPath) -> MetaRules {
        self.0.clone()
    }
}

/// This host's user and group names, looked up once each.
#[derive(Default)]
pub struct Users {
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    user_names: HashMap<u32, Name>,
    group_names: HashMap<u32, Name>,
    uids: HashMap<Vec<u8>, Option<u32>>,
    gids: HashMap<Vec<u8>, Option<u32>>,
    /// Names already reported unknown, with "user" or "group".
    warned: HashSet<(&'static str, Vec<u8>)>,
}

/// The process's [`Users`].
pub fn users() -> &'static Users {
    static USERS: OnceLock<Users> = OnceLock::new();
    USERS.get_or_init(Users::default)
}

impl Users {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The name of user `uid` here; empty if it has none we can carry.
    pub fn user_name(&self, uid: u32) -> Name {
        if let Some(n) = self.lock().user_names.get(&uid) {
            return *n;
        }
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .and_then(|u| Name::new(u.name.as_bytes()))
            .unwrap_or(Name::EMPTY);
        self.lock().user_names.insert(uid, name);
        name
    }

    /// The name of group `gid` here; empty if it has none we can carry.
    pub fn group_name(&self, gid: u32) -> Name {
        if let Some(n) = self.lock().group_names.get(&gid) {
            return *n;
        }
        let name = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
            .ok()
            .flatten()
            .and_then(|g| Name::new(g.name.as_bytes()))
            .unwrap_or(Name::EMPTY);
        self.lock().group_names.insert(gid, name);
        name
    }

    /// The uid of user `name` here.
    pub fn uid(&self, name: &[u8]) -> Option<u32> {
        if let Some(u) = self.lock().uids.get(name) {
            return *u;
        }
        let uid = std::str::from_utf8(name)
            .ok()
            .and_then(|n| nix::unistd::User::from_name(n).ok().flatten())
            .map(|u| u.uid.as_raw());
        self.lock().uids.insert(name.to_vec(), uid);
        uid
    }

    /// The gid of group `name` here.
    pub fn gid(&self, name: &[u8]) -> Option<u32> {
        if let Some(g) = self.lock().gids.get(name) {
            return *g;
        }
        let gid = std::str::from_utf8(name)
            .ok()
            .and_then(|n| nix::unistd::Group::from_name(n).ok().flatten())
            .map(|g| g.gid.as_raw());
        self.lock().gids.insert(name.to_vec(), gid);
        gid
    }

    /// Whether `name` of `kind` is reported for the first time.
    fn first_report(&self, kind: &'static str, name: &[u8]) -> bool {
        self.lock().warned.insert((kind, name.to_vec()))
    }

    /// Forgets every name looked up (the user database may have changed:
    /// a reload calls it).
    pub fn forget(&self) {
        let mut c = self.lock();
        let warned = std::mem::take(&mut c.warned);
        *c = Cache::default();
        c.warned = warned;
    }
}

/// The metadata the scan records for what it found: the numbers, and
/// their names here.
pub fn with_names(mut meta: Meta) -> Meta {
    meta.owner = users().user_name(meta.uid);
    meta.group = users().group_name(meta.gid);
    meta
}

/// The uid this host gives `meta`'s owner under `rules`; `None` with
/// [`Check::Keep`].
pub fn local_uid(path: &RelPath, meta: &Meta, rules: &MetaRules) -> Option<u32> {
    local_id(
        path,
        "user",
        rules.owner,
        meta.uid,
        &meta.owner,
        rules.defowner.as_deref(),
        &|n| users().uid(n),
    )
}

/// The gid this host gives `meta`'s group under `rules`; `None` with
/// [`Check::Keep`].
pub fn local_gid(path: &RelPath, meta: &Meta, rules: &MetaRules) -> Option<u32> {
    local_id(
        path,
        "group",
        rules.group,
        meta.gid,
        &meta.group,
        rules.defgroup.as_deref(),
        &|n| users().gid(n),
    )
}

fn local_id(
    path: &RelPath,
    kind: &'static str,
    check: Check,
    number: u32,
    name: &Name,
    default: Option<&str>,
    lookup: &dyn Fn(&[u8]) -> Option<u32>,
) -> Option<u32> {
    match check {
        Check::Keep => return None,
        Check::ByNumber => return Some(number),
        Check::ByName => {}
    }
    if name.is_empty() {
        return Some(number);
    }
    if let Some(id) = lookup(name.as_bytes()) {
        return Some(id);
    }
    let fallback = default.and_then(|d| lookup(d.as_bytes()).map(|id| (d, id)));
    if users().first_report(kind, name.as_bytes()) {
        match (fallback, default) {
            (Some((d, id)), _) => tracing::warn!(
                "{kind} '{name}' (of {path} and maybe others) is unknown on this host: using the default {kind} '{d}' ({id}) instead"
            ),
            (None, Some(d)) => tracing::warn!(
                "{kind} '{name}' (of {path} and maybe others) is unknown on this host, and so is the default {kind} '{d}': using the number {number}, as on the peer"
            ),
            (None, None) => tracing::warn!(
                "{kind} '{name}' (of {path} and maybe others) is unknown on this host: using the number {number}, as on the peer"
            ),
        }
    }
    Some(fallback.map_or(number, |(_, id)| id))
}

/// What the scan found (`disk`, with this host's numbers and names) made
/// comparable with what the index recorded for the same path
/// (`recorded`): an owner, group or mode that this host would have given
/// the recorded entry, or that `rules` leave alone, takes the recorded
/// value, so that only a real change of this host's differs. For entries
/// of the same kind only (a file's kept mode is no directory's).
pub fn canonical(path: &RelPath, disk: Meta, recorded: &Meta, rules: &MetaRules) -> Meta {
    let mut out = disk.clone();
    let owner_same = match rules.owner {
        Check::Keep => true,
        Check::ByNumber => disk.uid == recorded.uid,
        Check::ByName => local_uid(path, recorded, rules) == Some(disk.uid),
    };
    if owner_same {
        out.uid = recorded.uid;
        out.owner = recorded.owner;
    }
    let group_same = match rules.group {
        Check::Keep => true,
        Check::ByNumber => disk.gid == recorded.gid,
        Check::ByName => local_gid(path, recorded, rules) == Some(disk.gid),
    };
    if group_same {
        out.gid = recorded.gid;
        out.group = recorded.group;
    }
    if rules.keep_mode {
        out.mode = recorded.mode;
    }
    out.xattrs = canonical_xattrs(&disk.xattrs, Some(&recorded.xattrs), rules);
    out
}

/// The extended attributes found on disk (`disk`) as this host records
/// them: those its rules mirror, plus, for those they leave alone, what
/// the index recorded (`recorded`; none for a new path), so that a kept
/// attribute is neither sent nor taken for a change.
pub fn canonical_xattrs(disk: &Xattrs, recorded: Option<&Xattrs>, rules: &MetaRules) -> Xattrs {
    let ours = |n: &[u8]| rules.mirrors_xattr(n);
    let mirrored = disk.filtered(ours);
    let Some(recorded) = recorded.filter(|r| r.iter().any(|(n, _)| !ours(n))) else {
        return mirrored;
    };
    let pairs = mirrored
        .iter()
        .chain(recorded.filtered(|n| !ours(n)).iter())
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect();
    // Both halves are valid and their names disjoint: this cannot fail,
    // but if it did, what this host mirrors is the safe answer.
    Xattrs::new(pairs).unwrap_or(mirrored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use omirr_testkit::p;

    fn meta(uid: u32, owner: &str, gid: u32, group: &str, mode: u32) -> Meta {
        Meta {
            mode,
            uid,
            gid,
            mtime_ns: 5,
            owner: Name::new(owner.as_bytes()).expect("name"),
            group: Name::new(group.as_bytes()).expect("name"),
            ..Default::default()
        }
    }

    #[test]
    fn owners_go_by_name_then_default_then_number() {
        let by_name = MetaRules::default();
        // root is uid 0 everywhere; a peer's "root" with another number
        // still means root here.
        let m = meta(4321, "root", 4321, "root", 0o644);
        assert_eq!(local_uid(&p("srv/x"), &m, &by_name), Some(0));
        assert_eq!(local_gid(&p("srv/x"), &m, &by_name), Some(0));
        let numbers = MetaRules {
            owner: Check::ByNumber,
            group: Check::ByNumber,
            ..MetaRules::default()
        };
        assert_eq!(local_uid(&p("srv/x"), &m, &numbers), Some(4321));
        assert_eq!(local_gid(&p("srv/x"), &m, &numbers), Some(4321));
        let unknown = meta(
            1234,
            "omirr-no-such-user",
            1234,
            "omirr-no-such-group",
            0o644,
        );
        assert_eq!(local_uid(&p("srv/x"), &unknown, &by_name), Some(1234));
        let defaults = MetaRules {
            defowner: Some("root".into()),
            defgroup: Some("root".into()),
            ..MetaRules::default()
        };
        assert_eq!(local_uid(&p("srv/x"), &unknown, &defaults), Some(0));
        assert_eq!(local_gid(&p("srv/x"), &unknown, &defaults), Some(0));
        let keep = MetaRules {
            owner: Check::Keep,
            group: Check::Keep,
            ..MetaRules::default()
        };
        assert_eq!(local_uid(&p("srv/x"), &m, &keep), None);
        assert_eq!(local_gid(&p("srv/x"), &m, &keep), None);
        // No name on the recording host: the number.
        let nameless = Meta {
            owner: Name::EMPTY,
            ..m
        };
        assert_eq!(local_uid(&p("srv/x"), &nameless, &by_name), Some(4321));
    }

    #[test]
    fn kept_attributes_take_the_recorded_ones() {
        let x = |pairs: &[(&str, &str)]| {
            Xattrs::new(
                pairs
                    .iter()
                    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect(),
            )
            .expect("xattrs")
        };
        let acl = crate::xattrs::ACL_ACCESS;
        let acl = std::str::from_utf8(acl).expect("utf-8");
        let disk = x(&[("user.a", "here"), (acl, "disk acl")]);
        let recorded = x(&[("user.a", "there"), (acl, "recorded acl")]);
        let all = MetaRules::default();
        assert_eq!(canonical_xattrs(&disk, Some(&recorded), &all), disk);
        let no_acls = MetaRules {
            keep_acls: true,
            ..MetaRules::default()
        };
        assert_eq!(
            canonical_xattrs(&disk, Some(&recorded), &no_acls),
            x(&[("user.a", "here"), (acl, "recorded acl")])
        );
        let none = MetaRules {
            keep_xattrs: true,
            ..MetaRules::default()
        };
        assert_eq!(canonical_xattrs(&disk, Some(&recorded), &none), recorded);
        // A new path records none of the kept ones.
        assert_eq!(canonical_xattrs(&disk, None, &none), Xattrs::EMPTY);
        assert_eq!(
            canonical_xattrs(&disk, None, &no_acls),
            x(&[("user.a", "here")])
        );
    }

    #[test]
    fn a_local_rendering_or_a_kept_field_is_no_change() {
        let recorded = meta(4321, "root", 4321, "root", 0o640);
        let disk = meta(0, "root", 0, "root", 0o640);
        let rules = MetaRules::default();
        assert_eq!(
            canonical(&p("srv/x"), disk.clone(), &recorded, &rules),
            recorded
        );
        // A real change of mode shows.
        let chmod = Meta {
            mode: 0o600,
            ..disk.clone()
        };
        assert_eq!(canonical(&p("srv/x"), chmod, &recorded, &rules).mode, 0o600);
        // By number, 0 is not 4321.
        let numbers = MetaRules {
            owner: Check::ByNumber,
            ..MetaRules::default()
        };
        assert_eq!(canonical(&p("srv/x"), disk, &recorded, &numbers).uid, 0);
        let keep = MetaRules {
            owner: Check::Keep,
            group: Check::Keep,
            keep_mode: true,
            ..MetaRules::default()
        };
        let other = meta(1234, "", 1234, "", 0o600);
        assert_eq!(canonical(&p("srv/x"), other, &recorded, &keep), recorded);
    }
}
