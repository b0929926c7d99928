//! Tokens of the Distfile language.
//!
//! The lexer keeps, for every character of a word, whether it was escaped
//! with `\` and where it came from, so that later stages can tell a literal
//! `*` from a glob and point errors at the exact column. Variable references
//! stay unexpanded here; they are resolved by the expander.

use crate::diag::{Diagnostic, Pos};
use std::path::Path;

/// One character of a word as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// A character; `escaped` when it followed a backslash (so it is never a
    /// glob, brace or tilde metacharacter).
    Char { c: char, escaped: bool, pos: Pos },
    /// `$X` or `${NAME}`.
    Var { name: String, pos: Pos },
}

/// A word as written: the characters and variable references it is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawWord {
    pub pieces: Vec<Piece>,
    pub pos: Pos,
}

impl RawWord {
    /// The word's text when it holds no variable and no escape, e.g. a
    /// command keyword or a variable name being defined.
    pub fn plain(&self) -> Option<String> {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Char {
                    c, escaped: false, ..
                } => Some(*c),
                _ => None,
            })
            .collect()
    }

    /// The text with escapes removed and variables shown as `${NAME}`, for
    /// messages.
    pub fn display(&self) -> String {
        let mut s = String::new();
        for p in &self.pieces {
            match p {
                Piece::Char { c, .. } => s.push(*c),
                Piece::Var { name, .. } => {
                    s.push_str("${");
                    s.push_str(name);
                    s.push('}');
                }
            }
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    Word(RawWord),
    /// A double-quoted string, escapes `\"` and `\\` resolved; `closed` is
    /// false when the file ended inside it (already reported).
    Str {
        text: String,
        closed: bool,
    },
    LParen,
    RParen,
    Equals,
    Arrow,
    DoubleColon,
    Colon,
    Semi,
    Minus,
    Plus,
    Amp,
    Eof,
}

impl Tok {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{}'", w.display()),
            Tok::Str { .. } => "a string".into(),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Equals => "'='".into(),
            Tok::Arrow => "'->'".into(),
            Tok::DoubleColon => "'::'".into(),
            Tok::Colon => "':'".into(),
            Tok::Semi => "';'".into(),
            Tok::Minus => "'-'".into(),
            Tok::Plus => "'+'".into(),
            Tok::Amp => "'&'".into(),
            Tok::Eof => "end of file".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    pub pos: Pos,
}

struct Lexer<'a> {
    chars: Vec<char>,
    i: usize,
    line: u32,
    column: u32,
    file: &'a Path,
    diags: Vec<Diagnostic>,
}

/// Splits `text` into tokens. Lexical errors (unterminated strings, bad
/// variable references) are returned alongside the tokens; the token stream
/// is always complete and ends with [`Tok::Eof`].
pub(crate) fn lex(text: &str, file: &Path) -> (Vec<Token>, Vec<Diagnostic>) {
    let mut lx = Lexer {
        chars: text.chars().collect(),
        i: 0,
        line: 1,
        column: 1,
        file,
        diags: Vec::new(),
    };
    let mut out = Vec::new();
    loop {
        let t = lx.next_token();
        let end = t.tok == Tok::Eof;
        out.push(t);
        if end {
            break;
        }
    }
    (out, lx.diags)
}

/// Characters that end a word (besides `=` and `->`, handled in context).
fn is_delimiter(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | ';' | '"' | ':')
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn peek2(&self) -> Option<char> {
        self.chars.get(self.i + 1).copied()
    }

    fn pos(&self) -> Pos {
        Pos::new(self.line, self.column)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.get(self.i).copied()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn error(&mut self, pos: Pos, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(self.file, pos, msg));
    }

    fn skip_blanks_and_comments(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.bump();
            } else if c == '\\' && self.peek2() == Some('\n') {
                // A continued line is just more blanks.
                self.bump();
                self.bump();
            } else if c == '#' {
                while let Some(c) = self.peek() {
                    if c == '\n' {
                        break;
                    }
                    self.bump();
                }
            } else {
                break;
            }
        }
    }

    fn next_token(&mut self) -> Token {
        self.skip_blanks_and_comments();
        let pos = self.pos();
        let Some(c) = self.peek() else {
            return Token { tok: Tok::Eof, pos };
        };
        let after = self.peek2();
        let standalone = after.is_none_or(|a| a.is_whitespace() || matches!(a, '(' | ')' | ';'));
        let single = |tok| Some(tok);
        let tok = match c {
            '(' => single(Tok::LParen),
            ')' => single(Tok::RParen),
            ';' => single(Tok::Semi),
            '=' => single(Tok::Equals),
            ':' if after == Some(':') => {
                self.bump();
                single(Tok::DoubleColon)
            }
            ':' => single(Tok::Colon),
            '-' if after == Some('>') => {
                self.bump();
                single(Tok::Arrow)
            }
            '-' if standalone => single(Tok::Minus),
            '+' if standalone => single(Tok::Plus),
            '&' if standalone => single(Tok::Amp),
            _ => None,
        };
        if let Some(tok) = tok {
            self.bump();
            return Token { tok, pos };
        }
        if c == '"' {
            return self.string(pos);
        }
        Token {
            tok: Tok::Word(self.word(pos)),
            pos,
        }
    }

    fn string(&mut self, pos: Pos) -> Token {
        self.bump(); // the opening quote
        let mut s = String::new();
        let mut closed = true;
        loop {
            match self.bump() {
                None => {
                    closed = false;
                    self.error(
                        pos,
                        "unterminated string: expected '\"' to close the string that starts here",
                    );
                    break;
                }
                Some('"') => break,
                Some('\\') => match self.peek() {
                    Some(c @ ('"' | '\\')) => {
                        self.bump();
                        s.push(c);
                    }
                    _ => s.push('\\'),
                },
                Some(c) => s.push(c),
            }
        }
        Token {
            tok: Tok::Str { text: s, closed },
            pos,
        }
    }

    fn word(&mut self, pos: Pos) -> RawWord {
        // Install options such as `-odefowner=root` hold '='; elsewhere '='
        // ends a word so that `NAME=( ... )` needs no blanks.
        let is_option = self.peek() == Some('-');
        let mut pieces = Vec::new();
        while let Some(c) = self.peek() {
            if is_delimiter(c) || (c == '=' && !is_option) {
                break;
            }
            if c == '-' && self.peek2() == Some('>') && !pieces.is_empty() {
                break;
            }
            // A continued line ends the word, as it would between words.
            if c == '\\' && self.peek2() == Some('\n') {
                break;
            }
            let cpos = self.pos();
            self.bump();
            match c {
                '\\' => match self.bump() {
                    Some(e) => pieces.push(Piece::Char {
                        c: e,
                        escaped: true,
                        pos: cpos,
                    }),
                    None => pieces.push(Piece::Char {
                        c: '\\',
                        escaped: true,
                        pos: cpos,
                    }),
                },
                '$' => pieces.push(self.variable(cpos)),
                _ => pieces.push(Piece::Char {
                    c,
                    escaped: false,
                    pos: cpos,
                }),
            }
        }
        RawWord { pieces, pos }
    }

    /// After a `$`: `{NAME}`, a one-character name (as rdist), or nothing,
    /// in which case the `$` is literal (`except_pat ( ~$ )`).
    fn variable(&mut self, pos: Pos) -> Piece {
        match self.peek() {
            Some('{') => {
                self.bump();
                let mut name = String::new();
                loop {
                    match self.peek() {
                        Some('}') => {
                            self.bump();
                            break;
                        }
                        Some(c) if !c.is_whitespace() && !matches!(c, '(' | ')' | ';' | '"') => {
                            self.bump();
                            name.push(c);
                        }
                        _ => {
                            self.error(
                                pos,
                                "unterminated variable reference: expected '}' after '${' and a name",
                            );
                            break;
                        }
                    }
                }
                if name.is_empty() || !name.chars().all(is_name_char) {
                    self.error(
                        pos,
                        format!("invalid variable name '{name}': expected letters, digits and '_'"),
                    );
                }
                Piece::Var { name, pos }
            }
            Some(c) if is_name_char(c) => {
                self.bump();
                Piece::Var {
                    name: c.to_string(),
                    pos,
                }
            }
            _ => Piece::Char {
                c: '$',
                escaped: false,
                pos,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        let (t, d) = lex(s, Path::new("t"));
        assert!(d.is_empty(), "{d:?}");
        t.into_iter().map(|t| t.tok).collect()
    }

    fn words(s: &str) -> Vec<String> {
        toks(s)
            .into_iter()
            .filter_map(|t| match t {
                Tok::Word(w) => Some(w.display()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn punctuation_and_words() {
        let t = toks("A = ( x y ) # comment\nsrcs: /a -> b :: c ;");
        assert!(matches!(t[0], Tok::Word(_)));
        assert_eq!(t[1], Tok::Equals);
        assert_eq!(t[2], Tok::LParen);
        assert_eq!(t[5], Tok::RParen);
        assert_eq!(t[7], Tok::Colon);
        assert_eq!(t[9], Tok::Arrow);
        assert_eq!(t[11], Tok::DoubleColon);
        assert_eq!(t[13], Tok::Semi);
        assert_eq!(t[14], Tok::Eof);
    }

    #[test]
    fn operators_only_stand_alone() {
        let t = toks("( a ) - ( b ) + c & d host+ -oremove a-b");
        assert!(t.contains(&Tok::Minus));
        assert!(t.contains(&Tok::Plus));
        assert!(t.contains(&Tok::Amp));
        assert_eq!(
            words("host+ -oremove a-b -odefowner=root"),
            ["host+", "-oremove", "a-b", "-odefowner=root"]
        );
    }

    #[test]
    fn arrow_without_blanks() {
        assert_eq!(toks("a->b")[1], Tok::Arrow, "a word must stop before '->'");
    }

    #[test]
    fn variables_and_literal_dollar() {
        let (t, _) = lex("/usr/lib/${EXLIB} $X ~$ a$", Path::new("t"));
        let Tok::Word(w) = &t[0].tok else { panic!() };
        assert!(matches!(&w.pieces[9], Piece::Var { name, .. } if name == "EXLIB"));
        let Tok::Word(w) = &t[1].tok else { panic!() };
        assert!(matches!(&w.pieces[0], Piece::Var { name, .. } if name == "X"));
        let Tok::Word(w) = &t[2].tok else { panic!() };
        assert_eq!(w.plain().as_deref(), Some("~$"));
        let Tok::Word(w) = &t[3].tok else { panic!() };
        assert_eq!(w.plain().as_deref(), Some("a$"));
    }

    #[test]
    fn escapes_mark_characters() {
        let (t, _) = lex(r"\\.o\$ a\*", Path::new("t"));
        let Tok::Word(w) = &t[0].tok else { panic!() };
        assert_eq!(w.display(), r"\.o$");
        assert!(w.plain().is_none());
        let Tok::Word(w) = &t[1].tok else { panic!() };
        assert!(matches!(
            w.pieces[1],
            Piece::Char {
                c: '*',
                escaped: true,
                ..
            }
        ));
    }

    #[test]
    fn continued_line_ends_a_word() {
        assert_eq!(words("/srv/www\\\n/etc"), ["/srv/www", "/etc"]);
    }

    #[test]
    fn strings_span_lines() {
        let t = toks("special \"a\nb \\\"q\\\" \\n\" ;");
        assert_eq!(
            t[1],
            Tok::Str {
                text: "a\nb \"q\" \\n".into(),
                closed: true
            }
        );
    }

    #[test]
    fn positions_count_lines_and_columns() {
        let (t, _) = lex("a\n  bb ;\n\t(", Path::new("t"));
        assert_eq!(t[0].pos, Pos::new(1, 1));
        assert_eq!(t[1].pos, Pos::new(2, 3));
        assert_eq!(t[2].pos, Pos::new(2, 6));
        assert_eq!(t[3].pos, Pos::new(3, 2));
    }

    #[test]
    fn lexical_errors() {
        let (_, d) = lex("x \"abc", Path::new("f"));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].pos, Pos::new(1, 3));
        assert!(d[0].message.starts_with("unterminated string"));
        let (_, d) = lex("\n ${AB", Path::new("f"));
        assert_eq!(d[0].pos, Pos::new(2, 2));
        assert!(d[0].message.starts_with("unterminated variable"));
        let (_, d) = lex("${A-B}", Path::new("f"));
        assert!(d[0].message.starts_with("invalid variable name"));
    }
}
