//! A job file's statements as their text, each with the line it starts on, for an engine that
//! takes statements one at a time (Flink's SQL Gateway). Pure: quotes, comments and
//! `EXECUTE STATEMENT SET BEGIN … END` (whose inner statements end with `;` too) are kept whole.

/// One statement of a job file, without its `;`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    /// The line it starts on (1-based).
    pub line: u64,
    pub text: String,
}

/// The statements of `script`, in order (comments between statements dropped, those inside kept).
pub fn split(script: &str) -> Vec<Text> {
    let chars: Vec<char> = script.chars().collect();
    let mut out = Vec::new();
    let mut current = String::new();
    let (mut line, mut start_line) = (1_u64, 1_u64);
    let mut i = 0;
    let push = |current: &mut String, start_line: u64, out: &mut Vec<Text>| {
        let text = current.trim().to_string();
        if !text.is_empty() {
            out.push(Text { line: start_line, text });
        }
        current.clear();
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let comment = (c == '-' && next == Some('-')) || (c == '/' && next == Some('*'));
        if current.trim().is_empty() && !c.is_whitespace() && !comment {
            start_line = line;
        }
        match c {
            '\'' | '`' | '"' => {
                // A quoted string or name, its quote doubled inside.
                current.push(c);
                i += 1;
                while i < chars.len() {
                    current.push(chars[i]);
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    if chars[i] == c {
                        if chars.get(i + 1) == Some(&c) {
                            current.push(c);
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            '-' if next == Some('-') => {
                let keep = !current.trim().is_empty();
                while i < chars.len() && chars[i] != '\n' {
                    if keep {
                        current.push(chars[i]);
                    }
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                let keep = !current.trim().is_empty();
                let end = (i + 2..chars.len().saturating_sub(1)).find(|k| chars[*k] == '*' && chars[*k + 1] == '/').map_or(chars.len(), |k| k + 2);
                for ch in &chars[i..end] {
                    if *ch == '\n' {
                        line += 1;
                    }
                    if keep {
                        current.push(*ch);
                    }
                }
                i = end;
            }
            ';' => {
                if in_statement_set(&current) {
                    current.push(c);
                } else {
                    push(&mut current, start_line, &mut out);
                }
                i += 1;
            }
            _ => {
                if c == '\n' {
                    line += 1;
                }
                current.push(c);
                i += 1;
            }
        }
    }
    push(&mut current, start_line, &mut out);
    out
}

/// `CREATE MATERIALIZED VIEW name [WITH (…)] AS query`: the view's name and its query's text.
pub fn materialized_view(text: &str) -> Option<(String, String)> {
    let mut rest = text.trim_start();
    for word in ["CREATE", "MATERIALIZED", "VIEW"] {
        let (w, tail) = rest.split_at(rest.find(char::is_whitespace)?);
        if !w.eq_ignore_ascii_case(word) {
            return None;
        }
        rest = tail.trim_start();
    }
    let name = if let Some(quoted) = rest.strip_prefix('`') {
        let end = quoted.find('`')?;
        rest = &quoted[end + 1..];
        quoted[..end].to_string()
    } else {
        let end = rest.find(|c: char| c.is_whitespace() || c == '(').unwrap_or(rest.len());
        let n = rest[..end].to_string();
        rest = &rest[end..];
        n
    };
    rest = rest.trim_start();
    if rest.get(..4).is_some_and(|w| w.eq_ignore_ascii_case("WITH")) {
        // Past the options' parentheses, minding their quoted values.
        let open = rest.find('(')?;
        let (mut depth, mut quote) = (0_i32, None::<char>);
        let mut end = None;
        for (i, c) in rest.char_indices().skip_while(|(i, _)| *i < open) {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"' | '`') => quote = Some(c),
                (None, '(') => depth += 1,
                (None, ')') => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i + 1);
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = rest[end?..].trim_start();
    }
    let query = rest.get(..2).filter(|a| a.eq_ignore_ascii_case("AS")).map(|_| rest[2..].trim())?;
    Some((name, query.to_string()))
}

/// Whether `text` is an `EXECUTE STATEMENT SET BEGIN …` not yet at its `END`.
fn in_statement_set(text: &str) -> bool {
    let words: Vec<String> = text.split_whitespace().map(str::to_ascii_uppercase).collect();
    words.len() >= 3 && words[..3] == ["EXECUTE", "STATEMENT", "SET"] && words.last().is_none_or(|w| w != "END")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_semicolons_outside_quotes_comments_and_statement_sets() {
        let script = "-- the tables\nCREATE TABLE t (a STRING) WITH ('x' = 'a;b', 'y' = 'it''s');\n\n/* two\n lines */ SET 'k' = 'v';\nEXECUTE STATEMENT SET\nBEGIN\n  INSERT INTO s SELECT `we;ird` FROM t; -- a comment; inside\n  INSERT INTO s SELECT \"x\" FROM t;\nEND;\nSELECT 1";
        let got = split(script);
        let lines: Vec<u64> = got.iter().map(|t| t.line).collect();
        assert_eq!(lines, vec![2, 5, 6, 11]);
        assert_eq!(got[0].text, "CREATE TABLE t (a STRING) WITH ('x' = 'a;b', 'y' = 'it''s')");
        assert_eq!(got[1].text, "SET 'k' = 'v'");
        assert!(got[2].text.starts_with("EXECUTE STATEMENT SET\nBEGIN") && got[2].text.ends_with("END"), "{:?}", got[2]);
        assert!(got[2].text.contains("`we;ird` FROM t; -- a comment; inside\n"), "{:?}", got[2]);
        assert_eq!(got[3].text, "SELECT 1");
        assert!(split("  \n-- nothing\n").is_empty());
    }

    #[test]
    fn a_materialized_views_name_and_query_are_found_past_its_options() {
        let view = "CREATE MATERIALIZED VIEW totals WITH ('endpoint.x' = 'SELECT (a) FROM totals WHERE b = '')''', 'retention' = '1 h')\nAS SELECT item, SUM(price) FROM bids GROUP BY item";
        assert_eq!(materialized_view(view), Some(("totals".into(), "SELECT item, SUM(price) FROM bids GROUP BY item".into())));
        assert_eq!(materialized_view("create materialized view `a b` as select 1"), Some(("a b".into(), "select 1".into())));
        assert_eq!(materialized_view("CREATE VIEW v AS SELECT 1"), None);
    }
}
