//! How the verbose log (`-v`, `-D`) shows what moves: a change, an
//! action, a size, a duration. Each is a `Display` wrapper around a
//! borrow, so the text is made only when a line is written, never when
//! its level is off.

use omirr_core::resolve::{Action, Source};
use omirr_core::{Change, Content};
use std::fmt;
use std::time::Duration;

/// A size in binary units: `12.3 KiB`.
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&bytesize::ByteSize(self.0).display().iec(), f)
    }
}

/// A duration with one decimal in its own unit: `0.4ms`, `1.2s`.
pub struct Took(pub Duration);

impl fmt::Display for Took {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1?}", self.0)
    }
}

/// What a change makes of its path, and its version:
/// `srv/a.txt: file 12.3 KiB, version 1733140000000000000@alpha`.
pub struct Shown<'a>(pub &'a Change);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        write!(f, "{}: ", c.path)?;
        match &c.entry.content {
            Content::File { size, .. } => {
                write!(f, "file {}", Size(*size))?;
                if let Some(leader) = &c.entry.meta.link {
                    write!(f, " (a hard link to {leader})")?;
                }
            }
            Content::Dir => f.write_str("directory")?,
            Content::Symlink { target } => {
                write!(f, "symlink to {}", omirr_core::path::escape(target))?
            }
            Content::Fifo => f.write_str("FIFO")?,
            Content::Deleted => f.write_str("removed")?,
        }
        write!(f, ", version {}", c.entry.version)
    }
}

/// An action on disk, as `applied …` completes it: `write srv/a.txt
/// 12.3 KiB`, `rename srv/a -> srv/b`.
pub struct Did<'a>(pub &'a Action);

impl fmt::Display for Did<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Action::SaveOld { path } => write!(f, "save-old {path} (kept as {path}.OLD)"),
            Action::Rename { from, to, .. } => write!(f, "rename {from} -> {to}"),
            Action::Remove { path, was } => {
                let what = match was {
                    Content::File { .. } => "file",
                    Content::Dir => "directory",
                    Content::Symlink { .. } => "symlink",
                    Content::Fifo => "FIFO",
                    Content::Deleted => "entry",
                };
                write!(f, "remove {what} {path}")
            }
            Action::MakeDir { path, .. } => write!(f, "mkdir {path}"),
            Action::MakeFifo { path, .. } => write!(f, "mkfifo {path}"),
            Action::Link { from, to, .. } => write!(f, "link {to} -> {from}"),
            Action::WriteFile {
                path, size, source, ..
            } => {
                write!(f, "write {path} {}", Size(*size))?;
                match source {
                    Source::Fetch => Ok(()),
                    Source::CopyFrom(from) => write!(f, " (copied from {from})"),
                }
            }
            Action::MakeSymlink { path, target, .. } => {
                write!(f, "symlink {path} -> {}", omirr_core::path::escape(target))
            }
            Action::SetMeta { path, .. } => write!(f, "set-meta {path}"),
            Action::KeepConflictCopy {
                path, copy, prune, ..
            } => {
                write!(f, "keep-conflict-copy {path} -> {copy}")?;
                if !prune.is_empty() {
                    write!(f, " (removing {} older)", prune.len())?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omirr_core::{Entry, HostId, Meta, Timestamp, Version};
    use omirr_testkit::p;

    #[test]
    fn sizes_durations_changes_and_actions_read_as_the_log_shows_them() {
        assert_eq!(Size(12_595).to_string(), "12.3 KiB");
        assert_eq!(Size(7).to_string(), "7 B");
        assert_eq!(Took(Duration::from_micros(400)).to_string(), "400.0µs");
        assert_eq!(Took(Duration::from_millis(1234)).to_string(), "1.2s");
        let change = Change {
            path: p("srv/a.txt"),
            entry: Entry {
                content: Content::File {
                    size: 12_595,
                    hash: [0; 32],
                },
                meta: Meta::default(),
                version: Version {
                    ts: Timestamp(42),
                    host: HostId::new("alpha"),
                },
                base: None,
            },
        };
        assert_eq!(
            Shown(&change).to_string(),
            "srv/a.txt: file 12.3 KiB, version 42@alpha"
        );
        let write = Action::WriteFile {
            path: p("srv/a.txt"),
            size: 12_595,
            hash: [0; 32],
            meta: Meta::default(),
            source: Source::CopyFrom(p("srv/b.txt")),
        };
        assert_eq!(
            Did(&write).to_string(),
            "write srv/a.txt 12.3 KiB (copied from srv/b.txt)"
        );
        let rename = Action::Rename {
            from: p("srv/a"),
            to: p("srv/b"),
            meta: Meta::default(),
        };
        assert_eq!(Did(&rename).to_string(), "rename srv/a -> srv/b");
        let remove = Action::Remove {
            path: p("srv/d"),
            was: Content::Dir,
        };
        assert_eq!(Did(&remove).to_string(), "remove directory srv/d");
    }
}
