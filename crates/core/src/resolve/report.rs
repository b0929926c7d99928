//! What the resolver tells its caller besides the work to do: a
//! [`Decision`] for each change of a batch and each [`Conflict`] it met,
//! with the reasons in words for the log.

use crate::version::Version;
use crate::RelPath;
use std::fmt;

/// A conflict the resolver met: this host's own change at `path` and a
/// peer's change that did not know it (see [`crate::conflict`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The path of this host's change.
    pub path: RelPath,
    /// This host's version.
    pub ours: Version,
    /// The peer's version that met it (at `path`, or at an ancestor or a
    /// path below that decides what `path` becomes).
    pub theirs: Version,
    /// Whether this host's version keeps the name (the peer's host keeps
    /// its own content as a copy, if it has one).
    pub ours_won: bool,
    /// Where this host keeps its losing content; `None` if it keeps none
    /// (the copies are off, it was no file, or it is kept already).
    pub copy: Option<RelPath>,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Conflict {
            path,
            ours,
            theirs,
            ours_won,
            copy,
        } = self;
        if *ours_won {
            return write!(
                f,
                "conflict at {path}: this host's version {ours} wins over the peer's {theirs}, \
                 which did not know it ({}); host {} keeps its content as a conflict copy",
                why_greater(ours, theirs),
                theirs.host
            );
        }
        write!(
            f,
            "conflict at {path}: the peer's version {theirs} wins over this host's {ours}, \
             which it did not know ({}); ",
            why_greater(theirs, ours)
        )?;
        match copy {
            Some(c) => write!(f, "this host's content is kept as {c}"),
            None => write!(f, "no conflict copy is kept"),
        }
    }
}

/// What the resolver decided for one change of a batch, and why: the
/// greater version wins (a later timestamp, or the same timestamp and a
/// host name that sorts later). Its `Display` is a sentence for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// A newer change for the same path in the same batch replaces it.
    Superseded {
        /// The path of both changes.
        path: &'a RelPath,
        /// The superseded change's version.
        version: &'a Version,
        /// The version of the change that supersedes it.
        by: &'a Version,
    },
    /// The peer's version is newer than this host's, or this host has
    /// none (`ours`): it is applied.
    Wins {
        /// The change's path.
        path: &'a RelPath,
        /// The peer's version.
        theirs: &'a Version,
        /// This host's version; `None` if it has no entry for the path.
        ours: Option<&'a Version>,
    },
    /// This host's version is newer: the peer's is not applied.
    Loses {
        /// The change's path.
        path: &'a RelPath,
        /// The peer's version.
        theirs: &'a Version,
        /// This host's version, the greater.
        ours: &'a Version,
    },
    /// This host holds this very version already.
    Duplicate {
        /// The change's path.
        path: &'a RelPath,
        /// The version both hosts hold.
        version: &'a Version,
    },
}

/// Why `newer` beats `older`, in words.
fn why_greater(newer: &Version, older: &Version) -> String {
    if newer.ts > older.ts {
        let ns = newer.ts.0 - older.ts.0;
        format!("written {:.1?} later", std::time::Duration::from_nanos(ns))
    } else {
        format!(
            "the same time, and {} sorts after {}",
            newer.host, older.host
        )
    }
}

impl fmt::Display for Decision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Superseded { path, version, by } => write!(
                f,
                "{path}: the peer's version {version} is superseded by {by} in the same batch"
            ),
            Decision::Wins {
                path,
                theirs,
                ours: Some(ours),
            } => write!(
                f,
                "{path}: the peer's version {theirs} wins over this host's {ours} ({})",
                why_greater(theirs, ours)
            ),
            Decision::Wins {
                path,
                theirs,
                ours: None,
            } => write!(
                f,
                "{path}: the peer's version {theirs} wins: this host has no entry for it"
            ),
            Decision::Loses { path, theirs, ours } => write!(
                f,
                "{path}: this host's version {ours} wins over the peer's {theirs} ({}): not applied",
                why_greater(ours, theirs)
            ),
            Decision::Duplicate { path, version } => {
                write!(f, "{path}: this host has the peer's version {version} already")
            }
        }
    }
}
