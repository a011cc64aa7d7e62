//! Java `.properties` syntax, as MM2 and Confluent's Schema Registry read their configuration
//! files, keeping the line each entry starts on so every error can name it.

/// One `key = value` entry and the (1-based) line its logical line starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// Parses Java properties text: `#`/`!` comments, `=`, `:` or whitespace separators,
/// backslash line continuations and escapes (`\t`, `\n`, `\uXXXX`, `\=` ...).
/// Returns an error (line, reason) for a malformed `\u` escape.
pub fn parse(text: &str) -> Result<Vec<Entry>, (usize, String)> {
    let mut entries = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((index, raw)) = lines.next() {
        let start_line = index + 1;
        let first = raw.trim_start_matches([' ', '\t', '\x0c']);
        if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
            continue;
        }
        let mut logical = String::from(first);
        while ends_with_continuation(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start_matches([' ', '\t', '\x0c'])),
                None => break,
            }
        }
        let (raw_key, raw_value) = split_key_value(&logical);
        let key = unescape(raw_key).map_err(|e| (start_line, e))?;
        let value = unescape(raw_value).map_err(|e| (start_line, e))?;
        entries.push(Entry { key, value, line: start_line });
    }
    Ok(entries)
}

fn ends_with_continuation(line: &str) -> bool {
    line.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

fn split_key_value(line: &str) -> (&str, &str) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'=' | b':' | b' ' | b'\t' | b'\x0c' => break,
            _ => i += 1,
        }
    }
    let key_end = i.min(bytes.len());
    let mut j = key_end;
    while j < bytes.len() && matches!(bytes[j], b' ' | b'\t' | b'\x0c') {
        j += 1;
    }
    if j < bytes.len() && matches!(bytes[j], b'=' | b':') {
        j += 1;
        while j < bytes.len() && matches!(bytes[j], b' ' | b'\t' | b'\x0c') {
            j += 1;
        }
    }
    (&line[..key_end], &line[j..])
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 4)
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("malformed \\u escape '\\u{hex}'"))?;
                out.push(code);
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(text: &str) -> Vec<(String, String, usize)> {
        parse(text).unwrap().into_iter().map(|e| (e.key, e.value, e.line)).collect()
    }

    #[test]
    fn separators_comments_and_lines() {
        let got = kv("# comment\n! also\n\nclusters = a, b\na.bootstrap.servers:h:9092\n  tasks.max 4\nempty=\n");
        assert_eq!(
            got,
            vec![
                ("clusters".into(), "a, b".into(), 4),
                ("a.bootstrap.servers".into(), "h:9092".into(), 5),
                ("tasks.max".into(), "4".into(), 6),
                ("empty".into(), "".into(), 7),
            ]
        );
    }

    #[test]
    fn continuation_lines_join_and_keep_the_first_line_number() {
        let got = kv("topics = orders, \\\n    payments\nx=1\n");
        assert_eq!(got[0], ("topics".into(), "orders, payments".into(), 1));
        assert_eq!(got[1], ("x".into(), "1".into(), 3));
    }

    #[test]
    fn escapes_in_keys_and_values() {
        let got = kv("a\\=b = c\\:d\\u0041\\\\\n");
        assert_eq!(got[0].0, "a=b");
        assert_eq!(got[0].1, "c:dA\\");
        assert_eq!(parse("k=\\u00zz\n").unwrap_err().0, 1);
    }

    #[test]
    fn regex_backslashes_survive_as_in_java() {
        // Java properties turn `\\.` into `\.`, so MM2 files write regex escapes doubled.
        let got = kv("topics.exclude = .*[\\\\-\\\\.]internal\n");
        assert_eq!(got[0].1, ".*[\\-\\.]internal");
    }
}
