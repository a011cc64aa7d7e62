//! Flink's window table functions: `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' MINUTE))`,
//! `HOP(…, slide, size)` and `CUMULATE(…, step, size)`, positional or with named arguments
//! (`DATA =>`, `TIMECOL =>`, `SIZE =>`, `SLIDE =>`, `STEP =>`).
//!
//! Neither sqlparser nor DataFusion knows them (`TABLE t` is no expression), so they are found in
//! the token stream before parsing and replaced by the name of a table, `__ferry_window_N`, whose
//! columns are t's followed by `window_start`, `window_end` and `window_time`; the planner
//! resolves that name with the [`WindowTvf`] kept here, and the window operator assigns rows to
//! windows.

use sqlparser::tokenizer::{Token, TokenWithSpan, Word};

use crate::error::{fail, Pos, Result};

/// The table name a window table function is replaced by, followed by its index.
pub const PREFIX: &str = "__ferry_window_";

/// How rows are assigned to windows (all lengths in milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed windows of `size`, one per row.
    Tumble { size: i64 },
    /// Windows of `size` starting every `slide` (`size` a multiple of `slide`).
    Hop { slide: i64, size: i64 },
    /// Windows that start every `size` and grow by `step` up to `size`.
    Cumulate { step: i64, size: i64 },
    /// A window per burst of rows no more than `gap` apart (per key): assigned `[t, t + gap)`
    /// here, merged by the session aggregate.
    Session { gap: i64 },
}

impl WindowKind {
    /// The windows holding time `t`, as (start, end), earliest end first.
    pub fn assign(&self, t: i64, out: &mut Vec<(i64, i64)>) {
        out.clear();
        match *self {
            WindowKind::Tumble { size } => {
                let start = t - t.rem_euclid(size);
                out.push((start, start + size));
            }
            WindowKind::Hop { slide, size } => {
                let last = t - t.rem_euclid(slide);
                let mut start = last - size + slide;
                while start <= last {
                    out.push((start, start + size));
                    start += slide;
                }
            }
            WindowKind::Session { gap } => out.push((t, t + gap)),
            WindowKind::Cumulate { step, size } => {
                let start = t - t.rem_euclid(size);
                let mut end = t - t.rem_euclid(step) + step;
                while end <= start + size {
                    out.push((start, end));
                    end += step;
                }
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            WindowKind::Tumble { .. } => "TUMBLE",
            WindowKind::Hop { .. } => "HOP",
            WindowKind::Cumulate { .. } => "CUMULATE",
            WindowKind::Session { .. } => "SESSION",
        }
    }
}

/// One window table function found in the job file.
#[derive(Debug, Clone)]
pub struct WindowTvf {
    pub pos: Pos,
    pub kind: WindowKind,
    /// The table or view it reads (`TABLE name`).
    pub table: String,
    pub table_pos: Pos,
    /// SESSION's `PARTITION BY` columns (sessions are per GROUP BY key in any case).
    pub partition_by: Vec<String>,
    /// The time attribute (`DESCRIPTOR(col)`).
    pub time_column: String,
    pub time_pos: Pos,
}

/// Replaces every window table function in `tokens` by its table name.
pub fn rewrite(tokens: Vec<TokenWithSpan>, windows: &mut Vec<WindowTvf>) -> Result<Vec<TokenWithSpan>> {
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        if let Some((end, tvf)) = window_at(&tokens, i)? {
            let span = tokens[i].span.union(&tokens[end - 1].span);
            let name = format!("{PREFIX}{}", windows.len());
            windows.push(tvf);
            out.push(TokenWithSpan::new(Token::Word(Word { value: name, quote_style: None, keyword: sqlparser::keywords::Keyword::NoKeyword }), span));
            i = end;
        } else {
            out.push(tokens[i].clone());
            i += 1;
        }
    }
    Ok(out)
}

fn significant(t: &Token) -> bool {
    !matches!(t, Token::Whitespace(_))
}

fn is_word(t: &Token, w: &str) -> bool {
    matches!(t, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w))
}

/// The significant tokens from `from`: index in `tokens` of each.
struct Cursor<'a> {
    tokens: &'a [TokenWithSpan],
    at: usize,
}

impl Cursor<'_> {
    fn skip(&mut self) {
        while self.at < self.tokens.len() && !significant(&self.tokens[self.at].token) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<&TokenWithSpan> {
        self.skip();
        self.tokens.get(self.at)
    }

    fn pos(&mut self) -> Pos {
        self.peek().map_or_else(Pos::default, |t| t.span.start.into())
    }

    fn next(&mut self) -> Option<&TokenWithSpan> {
        self.skip();
        let t = self.tokens.get(self.at);
        self.at += 1;
        t
    }

    fn eat(&mut self, f: impl Fn(&Token) -> bool) -> bool {
        match self.peek() {
            Some(t) if f(&t.token) => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    fn expect(&mut self, f: impl Fn(&Token) -> bool, what: &str) -> Result<()> {
        let pos = self.pos();
        match self.next() {
            Some(t) if f(&t.token) => Ok(()),
            Some(t) => fail(pos, format!("expected {what}, found {}", t.token)),
            None => fail(pos, format!("expected {what}, found the end of the file")),
        }
    }
}

/// A window table function starting at `tokens[i]` (`TABLE ( TUMBLE ( …) )`): the index after
/// its last token, and what it says.
fn window_at(tokens: &[TokenWithSpan], i: usize) -> Result<Option<(usize, WindowTvf)>> {
    if !is_word(&tokens[i].token, "TABLE") {
        return Ok(None);
    }
    let mut c = Cursor { tokens, at: i + 1 };
    if !c.eat(|t| *t == Token::LParen) {
        return Ok(None);
    }
    let fn_pos = c.pos();
    let function = match c.peek().map(|t| &t.token) {
        Some(Token::Word(w)) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
        _ => return Ok(None),
    };
    if !["TUMBLE", "HOP", "CUMULATE", "SESSION"].contains(&function.as_str()) {
        return Ok(None);
    }
    c.next();
    if !c.eat(|t| *t == Token::LParen) {
        return Ok(None);
    }
    // Arguments, positional or named.
    let mut positional: Vec<(Pos, Arg)> = Vec::new();
    let mut named: Vec<(String, Pos, Arg)> = Vec::new();
    loop {
        let pos = c.pos();
        let name = match (c.peek().map(|t| t.token.clone()), c.tokens.get(c.at + 1..).and_then(|rest| rest.iter().find(|t| significant(&t.token))).map(|t| t.token.clone())) {
            (Some(Token::Word(w)), Some(Token::RArrow)) => {
                c.next();
                c.next();
                Some(w.value.to_ascii_uppercase())
            }
            _ => None,
        };
        let arg = argument(&mut c)?;
        match name {
            Some(n) => named.push((n, pos, arg)),
            None if named.is_empty() => positional.push((pos, arg)),
            None => return fail(pos, "a positional argument cannot follow named ones"),
        }
        if c.eat(|t| *t == Token::Comma) {
            continue;
        }
        c.expect(|t| *t == Token::RParen, "',' or ')'")?;
        break;
    }
    c.expect(|t| *t == Token::RParen, "')' closing TABLE(")?;
    let lengths: &[&str] = match function.as_str() {
        "TUMBLE" => &["SIZE"],
        "HOP" => &["SLIDE", "SIZE"],
        "SESSION" => &["GAP"],
        _ => &["STEP", "SIZE"],
    };
    let order: Vec<&str> = ["DATA", "TIMECOL"].iter().chain(lengths.iter()).copied().collect();
    let mut args: Vec<Option<(Pos, Arg)>> = vec![None; order.len()];
    for (k, a) in positional.into_iter().enumerate() {
        if k >= order.len() {
            let what = if k == order.len() { "an OFFSET is not supported yet" } else { "too many arguments" };
            return fail(a.0, format!("{function}: {what}"));
        }
        args[k] = Some(a);
    }
    for (n, pos, a) in named {
        match order.iter().position(|o| *o == n) {
            Some(k) if args[k].is_none() => args[k] = Some((pos, a)),
            Some(_) => return fail(pos, format!("{function}: {n} is given twice")),
            None if n == "OFFSET" => return fail(pos, format!("{function}: an OFFSET is not supported yet")),
            None => return fail(pos, format!("{function} has no argument {n} (it takes {})", order.join(", "))),
        }
    }
    let mut got = Vec::new();
    for (k, a) in args.into_iter().enumerate() {
        match a {
            Some(a) => got.push(a),
            None => return fail(fn_pos, format!("{function} needs {} ({})", order[k], order.join(", "))),
        }
    }
    let (table_pos, table, partition_by) = match &got[0] {
        (p, Arg::Table(t, keys)) if keys.is_empty() || function == "SESSION" => (*p, t.clone(), keys.clone()),
        (p, Arg::Table(..)) => return fail(*p, format!("{function}: PARTITION BY is for SESSION windows")),
        (p, _) => return fail(*p, format!("{function}: the first argument is the table, as TABLE name")),
    };
    let (time_pos, time_column) = match &got[1] {
        (p, Arg::Descriptor(t)) => (*p, t.clone()),
        (p, _) => return fail(*p, format!("{function}: the second argument is the time attribute, as DESCRIPTOR(column)")),
    };
    let mut ms = Vec::new();
    for (k, (p, a)) in got.iter().enumerate().skip(2) {
        match a {
            Arg::Interval(v) if *v > 0 => ms.push(*v),
            Arg::Interval(_) => return fail(*p, format!("{function}: {} must be longer than zero", order[k])),
            _ => return fail(*p, format!("{function}: {} is an INTERVAL", order[k])),
        }
    }
    let kind = match function.as_str() {
        "TUMBLE" => WindowKind::Tumble { size: ms[0] },
        "SESSION" => WindowKind::Session { gap: ms[0] },
        "HOP" => {
            if ms[1] % ms[0] != 0 {
                return fail(got[3].0, format!("HOP: the size ({} ms) must be a whole multiple of the slide ({} ms)", ms[1], ms[0]));
            }
            WindowKind::Hop { slide: ms[0], size: ms[1] }
        }
        _ => {
            if ms[1] % ms[0] != 0 {
                return fail(got[3].0, format!("CUMULATE: the size ({} ms) must be a whole multiple of the step ({} ms)", ms[1], ms[0]));
            }
            WindowKind::Cumulate { step: ms[0], size: ms[1] }
        }
    };
    let start: Pos = tokens[i].span.start.into();
    Ok(Some((c.at, WindowTvf { pos: start, kind, table, table_pos, partition_by, time_column, time_pos })))
}

#[derive(Debug, Clone)]
enum Arg {
    /// `TABLE name [PARTITION BY a, b]`.
    Table(String, Vec<String>),
    Descriptor(String),
    /// Milliseconds.
    Interval(i64),
}

fn identifier(c: &mut Cursor<'_>) -> Result<String> {
    let pos = c.pos();
    let mut parts = Vec::new();
    loop {
        let at = c.pos();
        match c.next().map(|t| t.token.clone()) {
            Some(Token::Word(w)) => {
                crate::reserved::check_word(&w.value, w.quote_style.is_some(), at)?;
                parts.push(w.value);
            }
            other => return fail(pos, format!("expected a name, found {}", other.map_or_else(|| "the end of the file".to_string(), |t| t.to_string()))),
        }
        if !c.eat(|t| *t == Token::Period) {
            return Ok(parts.join("."));
        }
    }
}

fn argument(c: &mut Cursor<'_>) -> Result<Arg> {
    let pos = c.pos();
    if c.eat(|t| is_word(t, "TABLE")) {
        let name = identifier(c)?;
        let mut keys = Vec::new();
        if c.eat(|t| is_word(t, "PARTITION")) {
            c.expect(|t| is_word(t, "BY"), "BY after PARTITION")?;
            loop {
                keys.push(identifier(c)?);
                // A comma followed by the next argument ends the list.
                let next_is_key = c.tokens.get(c.at..).and_then(|rest| rest.iter().filter(|t| significant(&t.token)).nth(1)).is_some_and(|t| matches!(&t.token, Token::Word(w) if !["DESCRIPTOR", "INTERVAL", "TIMECOL", "GAP"].contains(&w.value.to_ascii_uppercase().as_str())));
                if c.peek().is_some_and(|t| t.token == Token::Comma) && next_is_key {
                    c.next();
                    continue;
                }
                break;
            }
        }
        return Ok(Arg::Table(name, keys));
    }
    if c.eat(|t| is_word(t, "DESCRIPTOR")) {
        c.expect(|t| *t == Token::LParen, "'(' after DESCRIPTOR")?;
        let name = identifier(c)?;
        c.expect(|t| *t == Token::RParen, "')' closing DESCRIPTOR(")?;
        return Ok(Arg::Descriptor(name));
    }
    if c.eat(|t| is_word(t, "INTERVAL")) {
        let text = match c.next().map(|t| t.token.clone()) {
            Some(Token::SingleQuotedString(s)) => s,
            Some(Token::Number(n, _)) => n,
            _ => return fail(pos, "expected INTERVAL 'n' unit"),
        };
        let unit_pos = c.pos();
        let unit = match c.next().map(|t| t.token.clone()) {
            Some(Token::Word(w)) => w.value.to_ascii_uppercase(),
            _ => return fail(unit_pos, "expected the interval's unit (SECOND, MINUTE, HOUR, DAY)"),
        };
        let per: i64 = match unit.trim_end_matches('S') {
            "MILLISECOND" => 1,
            "SECOND" => 1_000,
            "MINUTE" => 60_000,
            "HOUR" => 3_600_000,
            "DAY" => 86_400_000,
            _ => return fail(unit_pos, format!("interval unit {unit}: use SECOND, MINUTE, HOUR or DAY")),
        };
        if c.peek().is_some_and(|t| is_word(&t.token, "TO")) {
            return fail(pos, "write the interval as one number and one unit (INTERVAL '90' SECOND)");
        }
        let value: f64 = text.trim().parse().map_err(|_| crate::error::SqlError::new(pos, format!("INTERVAL '{text}': not a number")))?;
        let ms = value * per as f64;
        if !ms.is_finite() || ms.fract().abs() > 1e-9 || ms.abs() > 1e15 {
            return fail(pos, format!("INTERVAL '{text}' {unit} is not a whole number of milliseconds"));
        }
        return Ok(Arg::Interval(ms as i64));
    }
    let found = c.peek().map_or_else(|| "the end of the file".to_string(), |t| t.token.to_string());
    fail(pos, format!("a window table function takes TABLE name, DESCRIPTOR(column) and INTERVALs, found {found}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(kind: WindowKind, t: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        kind.assign(t, &mut out);
        out
    }

    #[test]
    fn rows_are_assigned_as_flink_assigns_them() {
        assert_eq!(windows(WindowKind::Tumble { size: 10 }, 25), [(20, 30)]);
        assert_eq!(windows(WindowKind::Tumble { size: 10 }, -5), [(-10, 0)]);
        assert_eq!(windows(WindowKind::Hop { slide: 5, size: 15 }, 12), [(0, 15), (5, 20), (10, 25)]);
        assert_eq!(windows(WindowKind::Hop { slide: 5, size: 10 }, 10), [(5, 15), (10, 20)]);
        assert_eq!(windows(WindowKind::Cumulate { step: 2, size: 8 }, 11), [(8, 12), (8, 14), (8, 16)]);
        assert_eq!(windows(WindowKind::Cumulate { step: 2, size: 8 }, 8), [(8, 10), (8, 12), (8, 14), (8, 16)]);
        assert_eq!(windows(WindowKind::Cumulate { step: 2, size: 8 }, 15), [(8, 16)]);
    }
}
