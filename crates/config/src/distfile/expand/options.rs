//! The options of `install`: `-oNAME[=VALUE],...` and rdist's old
//! one-letter flags, set in [`InstallOptions`] and checked against what
//! omirrd supports.

use super::{EWord, Expander};
use crate::diag::Pos;
use crate::distfile::{
    install_option, InstallOptions, OptionMeaning, INSTALL_OPTIONS, MAX_CONFLICT_COPIES,
};

impl Expander<'_> {
    /// Parses one option word: `-oNAME[=VALUE],...` or old-style flags such
    /// as `-Rw`.
    pub(super) fn install_options(&mut self, w: &EWord, o: &mut InstallOptions) {
        let text = w.text();
        let Some(body) = text.strip_prefix('-') else {
            self.error(w.pos, format!("expected an install option, found '{text}'"));
            return;
        };
        let at_char = |i: usize| w.chars.get(i).map_or(w.pos, |c| c.pos);
        let Some(list) = body.strip_prefix('o') else {
            for (i, flag) in body.chars().enumerate() {
                let name = match flag {
                    'b' => "compare",
                    'R' => "remove",
                    'v' => "verify",
                    'w' => "whole",
                    'y' => "younger",
                    'h' => "follow",
                    'i' => "ignlnks",
                    _ => {
                        self.error(
                            at_char(i + 1),
                            format!(
                                "unknown install flag '-{flag}': expected -o OPTIONS or one of -b -h -i -R -v -w -y"
                            ),
                        );
                        continue;
                    }
                };
                self.install_option(name, None, at_char(i + 1), o);
            }
            return;
        };
        // Each character knows where it was written, also when `-o` and
        // the list were separate words.
        let mut col = 2;
        for item in list.split(',') {
            let at = at_char(col);
            col += item.chars().count() + 1;
            if item.is_empty() {
                self.error(at, "empty install option: expected a name between commas");
                continue;
            }
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (item, None),
            };
            self.install_option(name, value, at, o);
        }
    }

    fn install_option(&mut self, name: &str, value: Option<&str>, at: Pos, o: &mut InstallOptions) {
        let flag: &mut bool = match name {
            "defowner" | "defgroup" => {
                let v = Some(value.filter(|v| !v.is_empty()).unwrap_or("bin").to_string());
                if name == "defowner" {
                    o.defowner = v;
                } else {
                    o.defgroup = v;
                }
                return;
            }
            "conflicts" => {
                let n = value.and_then(|v| v.parse::<u32>().ok());
                match n {
                    Some(n) if n <= MAX_CONFLICT_COPIES => o.conflicts = Some(n),
                    _ => self.error(
                        at,
                        format!(
                            "install option 'conflicts' needs a number of conflict copies to keep per file, 0 to {MAX_CONFLICT_COPIES}: conflicts=N (0 keeps none), found {}",
                            match value {
                                Some(v) => format!("'{v}'"),
                                None => "no value".to_string(),
                            }
                        ),
                    ),
                }
                return;
            }
            "chknfs" => &mut o.chknfs,
            "chkreadonly" => &mut o.chkreadonly,
            "chksym" => &mut o.chksym,
            "compare" => &mut o.compare,
            "follow" => &mut o.follow,
            "history" => &mut o.history,
            "ignlnks" => &mut o.ignlnks,
            "noacls" => &mut o.noacls,
            "nochkgroup" => &mut o.nochkgroup,
            "nochkmode" => &mut o.nochkmode,
            "nochkowner" => &mut o.nochkowner,
            "nodescend" => &mut o.nodescend,
            "noexec" => &mut o.noexec,
            "noxattrs" => &mut o.noxattrs,
            "numchkgroup" => &mut o.numchkgroup,
            "numchkowner" => &mut o.numchkowner,
            "quiet" => &mut o.quiet,
            "remove" => &mut o.remove,
            "savetargets" => &mut o.savetargets,
            "sparse" => &mut o.sparse,
            "updateperm" => &mut o.updateperm,
            "verify" => &mut o.verify,
            "whole" => &mut o.whole,
            "younger" => &mut o.younger,
            _ => {
                self.error(
                    at,
                    format!(
                        "unknown install option '{name}': expected one of {}",
                        INSTALL_OPTIONS
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                return;
            }
        };
        *flag = true;
        if value.is_some() {
            self.error(at, format!("install option '{name}' takes no value"));
        }
        if let Some(OptionMeaning::Refused(why)) = install_option(name) {
            self.error(at, format!("install option '{name}' is refused: {why}"));
        }
    }
}
