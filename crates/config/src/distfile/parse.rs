//! The Distfile grammar: tokens in, statements out.
//!
//! The parser recovers from errors at the next `;` so that one mistake does
//! not hide the others. It resolves nothing: variables, globs and hosts are
//! the expander's business.

use super::lex::{RawWord, Tok, Token};
use crate::diag::{Diagnostic, Pos};
use std::path::Path;

/// One of the set-algebra operators between name lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetOp {
    Difference,
    Union,
    Intersection,
}

/// `list (op list)*`, evaluated left to right.
#[derive(Debug, Clone)]
pub(crate) struct ListExpr {
    pub first: Vec<RawWord>,
    pub rest: Vec<(SetOp, Vec<RawWord>)>,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub(crate) enum Command {
    Install {
        pos: Pos,
        /// Option words as written (`-oremove,compare`, `-R`), with the
        /// word that followed a lone `-o` joined to it.
        options: Vec<RawWord>,
        dest: Option<ListExpr>,
    },
    Except {
        names: ListExpr,
    },
    ExceptPat {
        patterns: ListExpr,
    },
    Special {
        pos: Pos,
        names: Option<ListExpr>,
        command: String,
        once_per_batch: bool,
    },
    Notify {
        addresses: ListExpr,
    },
    /// `sendonly hosts ;` or `receiveonly hosts ;`: omirrd's own commands
    /// for a one-way set.
    OneWay {
        hosts: ListExpr,
        direction: super::Direction,
    },
}

#[derive(Debug, Clone)]
pub(crate) enum Statement {
    Define {
        name: String,
        pos: Pos,
        value: ListExpr,
    },
    Distribute {
        label: Option<String>,
        pos: Pos,
        sources: ListExpr,
        hosts: ListExpr,
        commands: Vec<Command>,
    },
    Stamp {
        pos: Pos,
        sources: ListExpr,
        stamp: ListExpr,
        commands: Vec<Command>,
    },
}

pub(crate) const COMMANDS: [&str; 8] = [
    "install",
    "except",
    "except_pat",
    "special",
    "cmdspecial",
    "notify",
    "sendonly",
    "receiveonly",
];

struct Parser<'a> {
    toks: Vec<Token>,
    i: usize,
    file: &'a Path,
    diags: Vec<Diagnostic>,
}

/// A parse error; the diagnostic is already recorded.
struct Failed;

type PResult<T> = Result<T, Failed>;

pub(crate) fn parse(toks: Vec<Token>, file: &Path) -> (Vec<Statement>, Vec<Diagnostic>) {
    let mut p = Parser {
        toks,
        i: 0,
        file,
        diags: Vec::new(),
    };
    let stmts = p.file();
    (stmts, p.diags)
}

/// Parses a `-d NAME=VALUE` value: empty, one name, or a parenthesised list.
pub(crate) fn parse_value(toks: Vec<Token>, file: &Path) -> (Option<ListExpr>, Vec<Diagnostic>) {
    let mut p = Parser {
        toks,
        i: 0,
        file,
        diags: Vec::new(),
    };
    if p.peek() == &Tok::Eof {
        let pos = p.pos();
        return (
            Some(ListExpr {
                first: Vec::new(),
                rest: Vec::new(),
                pos,
            }),
            p.diags,
        );
    }
    let value = p.list_expr("a name or '(' for the value").ok();
    if value.is_some() && p.peek() != &Tok::Eof {
        let found = p.peek().describe();
        let pos = p.pos();
        p.error(pos, format!("expected end of value, found {found}"));
    }
    (value, p.diags)
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.i.min(self.toks.len() - 1)].tok
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.toks[(self.i + n).min(self.toks.len() - 1)].tok
    }

    fn pos(&self) -> Pos {
        self.toks[self.i.min(self.toks.len() - 1)].pos
    }

    fn advance(&mut self) -> Token {
        let t = self.toks[self.i.min(self.toks.len() - 1)].clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }

    fn error(&mut self, pos: Pos, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(self.file, pos, msg));
    }

    fn expected(&mut self, what: &str) -> Failed {
        let found = self.peek().describe();
        let pos = self.pos();
        self.error(pos, format!("expected {what}, found {found}"));
        Failed
    }

    /// Skips past the next `;` (or to the end) after an error.
    fn recover(&mut self) {
        loop {
            match self.advance().tok {
                Tok::Semi | Tok::Eof => return,
                _ => {}
            }
        }
    }

    /// Skips a broken statement head: to just past the next `;`, or to the
    /// first token of a later line that starts a statement or a command,
    /// whichever comes first, so that one bad line hides no other error.
    fn recover_statement(&mut self) {
        let line = self.pos().line;
        loop {
            let at_line_start = self.i > 0
                && self.toks[self.i.min(self.toks.len() - 1)].pos.line
                    > self.toks[self.i - 1].pos.line;
            if self.pos().line > line
                && at_line_start
                && (self.at_command() || self.starts_statement())
            {
                return;
            }
            match self.advance().tok {
                Tok::Semi | Tok::Eof => return,
                _ => {}
            }
        }
    }

    fn file(&mut self) -> Vec<Statement> {
        let mut out = Vec::new();
        while self.peek() != &Tok::Eof {
            if self.at_command() {
                let pos = self.pos();
                let name = self.peek().describe();
                self.error(
                    pos,
                    format!(
                        "command {name} outside a statement: expected a variable definition or 'sources -> hosts'"
                    ),
                );
                self.recover();
                continue;
            }
            match self.statement() {
                Ok(s) => out.push(s),
                Err(Failed) => {
                    self.recover_statement();
                    // Commands of a statement whose head was broken still
                    // get checked, then dropped.
                    let _ = self.commands();
                }
            }
        }
        out
    }

    fn at_command(&self) -> bool {
        matches!(self.peek(), Tok::Word(w) if w.plain().is_some_and(|s| COMMANDS.contains(&s.as_str())))
    }

    fn statement(&mut self) -> PResult<Statement> {
        let pos = self.pos();
        if let (Tok::Word(w), Tok::Equals) = (self.peek().clone(), self.peek_at(1)) {
            let name = match w.plain() {
                Some(n) if is_identifier(&n) => n,
                _ => {
                    self.error(
                        pos,
                        format!(
                            "invalid variable name '{}': expected a letter or '_' followed by letters, digits or '_'",
                            w.display()
                        ),
                    );
                    self.advance();
                    self.advance();
                    let _ = self.list_expr("a name or '(' after '='");
                    return Err(Failed);
                }
            };
            self.advance();
            self.advance();
            let value = self.list_expr("a name or '(' after '='")?;
            return Ok(Statement::Define { name, pos, value });
        }
        let mut label = None;
        if let (Tok::Word(w), Tok::Colon) = (self.peek().clone(), self.peek_at(1)) {
            match w.plain() {
                Some(l) if !l.is_empty() => label = Some(l),
                _ => {
                    self.error(pos, "invalid label: expected a plain name before ':'");
                }
            }
            self.advance();
            self.advance();
        }
        let sources = self.list_expr("a source list (a name or '(')")?;
        match self.peek() {
            Tok::Arrow => {
                self.advance();
                let hosts = self.list_expr("a host list (a name or '(') after '->'")?;
                let commands = self.commands();
                Ok(Statement::Distribute {
                    label,
                    pos,
                    sources,
                    hosts,
                    commands,
                })
            }
            Tok::DoubleColon => {
                self.advance();
                let stamp = self.list_expr("a timestamp file after '::'")?;
                let commands = self.commands();
                let _ = label;
                Ok(Statement::Stamp {
                    pos,
                    sources,
                    stamp,
                    commands,
                })
            }
            _ => Err(self.expected("'->' or '::' after the source list")),
        }
    }

    /// Commands up to the start of the next statement. Broken commands are
    /// reported and skipped.
    fn commands(&mut self) -> Vec<Command> {
        let mut out = Vec::new();
        loop {
            let Tok::Word(w) = self.peek().clone() else {
                return out;
            };
            let name = w.plain().unwrap_or_default();
            if !COMMANDS.contains(&name.as_str()) {
                if self.starts_statement() {
                    return out;
                }
                self.error(
                    w.pos,
                    format!(
                        "unknown command '{}': expected one of install, except, except_pat, special, cmdspecial, notify, sendonly, receiveonly",
                        w.display()
                    ),
                );
                self.recover();
                continue;
            }
            match self.command(&name) {
                Ok(c) => out.push(c),
                Err(Failed) => self.recover(),
            }
        }
    }

    /// Whether the tokens from here read as the head of a statement rather
    /// than a command: a statement reaches `=`, `:`, `->` or `::` before any
    /// `;`.
    fn starts_statement(&self) -> bool {
        let mut j = self.i;
        loop {
            match &self.toks[j.min(self.toks.len() - 1)].tok {
                Tok::Semi => return false,
                Tok::Eof | Tok::Equals | Tok::Colon | Tok::Arrow | Tok::DoubleColon => return true,
                _ => j += 1,
            }
        }
    }

    // Over 100 lines: one arm per Distfile command, as DISTFILE.md lists
    // them.
    fn command(&mut self, name: &str) -> PResult<Command> {
        let pos = self.advance().pos;
        let cmd = match name {
            "install" => {
                let mut options = Vec::new();
                while let Tok::Word(w) = self.peek().clone() {
                    if !matches!(
                        w.pieces.first(),
                        Some(super::lex::Piece::Char {
                            c: '-',
                            escaped: false,
                            ..
                        })
                    ) {
                        break;
                    }
                    self.advance();
                    if w.plain().as_deref() == Some("-o") {
                        // `-o remove,compare`: the list is the next word,
                        // which the lexer cut at a '=' (`defowner=bin`).
                        match self.peek().clone() {
                            Tok::Word(list) => {
                                self.advance();
                                let mut joined = w.clone();
                                joined.pieces.extend(list.pieces);
                                while let (Tok::Equals, Tok::Word(value)) =
                                    (self.peek().clone(), self.peek_at(1).clone())
                                {
                                    let at = self.advance().pos;
                                    self.advance();
                                    joined.pieces.push(super::lex::Piece::Char {
                                        c: '=',
                                        escaped: false,
                                        pos: at,
                                    });
                                    joined.pieces.extend(value.pieces);
                                }
                                options.push(joined);
                            }
                            _ => return Err(self.expected("a list of options after '-o'")),
                        }
                    } else {
                        options.push(w);
                    }
                }
                // A command name after the options is a missing ';', not
                // a destination called 'except'.
                let dest = match self.peek() {
                    Tok::Word(_) if self.at_command() => None,
                    Tok::Word(_) | Tok::LParen => Some(self.list_expr("a destination")?),
                    _ => None,
                };
                let what = if dest.is_some() {
                    "';' after the install destination"
                } else if options.is_empty() {
                    "';' or a destination after 'install'"
                } else {
                    "';' after install options"
                };
                self.semi(what)?;
                Command::Install { pos, options, dest }
            }
            "except" => {
                let names = self.list_expr("a name list after 'except'")?;
                self.semi("';' after the except list")?;
                Command::Except { names }
            }
            "except_pat" => {
                let patterns = self.list_expr("a pattern list after 'except_pat'")?;
                self.semi("';' after the except_pat list")?;
                Command::ExceptPat { patterns }
            }
            "special" | "cmdspecial" => {
                let names = match self.peek() {
                    Tok::Word(_) | Tok::LParen => Some(self.list_expr("a name list")?),
                    _ => None,
                };
                let command = match self.peek().clone() {
                    // The lexer reported the open string; a missing ';' at
                    // the end of the file would only repeat it.
                    Tok::Str { closed: false, .. } => return Err(Failed),
                    Tok::Str { text, .. } => {
                        self.advance();
                        text
                    }
                    _ => {
                        return Err(self.expected(&format!("a quoted command string for '{name}'")))
                    }
                };
                self.semi(&format!("';' after the {name} command string"))?;
                Command::Special {
                    pos,
                    names,
                    command,
                    once_per_batch: name == "cmdspecial",
                }
            }
            "notify" => {
                let addresses = self.list_expr("an address list after 'notify'")?;
                self.semi("';' after the notify list")?;
                Command::Notify { addresses }
            }
            "sendonly" | "receiveonly" => {
                let hosts = self.list_expr(&format!("a host list after '{name}'"))?;
                self.semi(&format!("';' after the {name} list"))?;
                Command::OneWay {
                    hosts,
                    direction: if name == "sendonly" {
                        super::Direction::SendOnly
                    } else {
                        super::Direction::ReceiveOnly
                    },
                }
            }
            _ => unreachable!("command() is only called with a known command name"),
        };
        Ok(cmd)
    }

    fn semi(&mut self, what: &str) -> PResult<()> {
        if self.peek() == &Tok::Semi {
            self.advance();
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    fn list_expr(&mut self, what: &str) -> PResult<ListExpr> {
        let pos = self.pos();
        let first = self.name_list(what)?;
        let mut rest = Vec::new();
        loop {
            let op = match self.peek() {
                Tok::Minus => SetOp::Difference,
                Tok::Plus => SetOp::Union,
                Tok::Amp => SetOp::Intersection,
                _ => break,
            };
            self.advance();
            let rhs = self.name_list("a name or '(' after a set operator")?;
            rest.push((op, rhs));
        }
        Ok(ListExpr { first, rest, pos })
    }

    fn name_list(&mut self, what: &str) -> PResult<Vec<RawWord>> {
        match self.peek().clone() {
            Tok::Word(w) => {
                self.advance();
                Ok(vec![w])
            }
            Tok::LParen => {
                let open = self.advance().pos;
                let mut words = Vec::new();
                loop {
                    match self.peek().clone() {
                        Tok::Word(w) => {
                            self.advance();
                            words.push(w);
                        }
                        Tok::RParen => {
                            self.advance();
                            return Ok(words);
                        }
                        Tok::Eof | Tok::Semi | Tok::Arrow | Tok::DoubleColon => {
                            let found = self.peek().describe();
                            self.error(
                                open,
                                format!(
                                    "unterminated list: expected ')' to close the list opened here, found {found}"
                                ),
                            );
                            return Err(Failed);
                        }
                        Tok::Minus | Tok::Plus | Tok::Amp => {
                            return Err(self.expected(
                                "a name or ')' (set operators go between lists: ( a b ) - ( b ))",
                            ))
                        }
                        _ => return Err(self.expected("a name or ')'")),
                    }
                }
            }
            _ => Err(self.expected(what)),
        }
    }
}

pub(crate) fn is_identifier(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
