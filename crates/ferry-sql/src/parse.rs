//! A job file in Flink's SQL dialect, parsed into statements that keep their place in the file.
//!
//! Queries and expressions are parsed by sqlparser (the version DataFusion plans from); Flink's
//! DDL (`WATERMARK FOR`, `METADATA FROM`, computed columns, `PRIMARY KEY … NOT ENFORCED`, its
//! types such as `ROW<…>` and `TIMESTAMP_LTZ(3)`), `EXECUTE STATEMENT SET`, `SET 'k' = 'v'` and
//! Ferry's `CREATE MATERIALIZED VIEW` are parsed here over sqlparser's tokens.

use sqlparser::ast::{Expr, Query};
use sqlparser::dialect::Dialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::{fail, Pos, Result, SqlError};
use crate::tvf::WindowTvf;
use crate::types::FlinkType;

/// Flink's lexical rules: identifiers quoted with backticks, case kept.
#[derive(Debug, Default)]
pub struct FlinkDialect;

impl Dialect for FlinkDialect {
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '`'
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        ch.is_alphabetic() || ch == '_'
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        ch.is_alphanumeric() || ch == '_' || ch == '$'
    }

    fn supports_filter_during_aggregation(&self) -> bool {
        true
    }

    /// `FOR SYSTEM_TIME AS OF` (temporal joins; see [`crate::temporal`]).
    fn supports_table_versioning(&self) -> bool {
        true
    }
}

/// One statement and where it starts.
#[derive(Debug, Clone)]
pub struct Located {
    pub pos: Pos,
    pub statement: Statement,
}

#[derive(Debug, Clone)]
pub enum Statement {
    CreateTable(Box<TableDdl>),
    CreateView { name: String, query: Box<Query> },
    /// Ferry's: the query's result kept by key and served over REST.
    CreateMaterializedView { name: String, options: Vec<OptionDdl>, query: Box<Query> },
    Insert(Insert),
    /// `EXECUTE STATEMENT SET BEGIN … END`: inserts that run as one job.
    StatementSet(Vec<(Pos, Insert)>),
    Set { key: String, value: String },
    /// A bare query (`ferry sql sample`; a job file must write its results somewhere).
    Select(Box<Query>),
}

#[derive(Debug, Clone)]
pub struct Insert {
    pub table: String,
    pub table_pos: Pos,
    pub columns: Vec<String>,
    pub query: Box<Query>,
}

#[derive(Debug, Clone)]
pub struct TableDdl {
    pub name: String,
    pub columns: Vec<ColumnDdl>,
    pub watermark: Option<WatermarkDdl>,
    pub primary_key: Vec<String>,
    pub options: Vec<OptionDdl>,
}

#[derive(Debug, Clone)]
pub struct ColumnDdl {
    pub name: String,
    pub pos: Pos,
    pub kind: ColumnKind,
}

#[derive(Debug, Clone)]
pub enum ColumnKind {
    Physical { ty: FlinkType, not_null: bool },
    /// `METADATA [FROM 'key'] [VIRTUAL]`: the key defaults to the column's name.
    Metadata { ty: FlinkType, key: String, is_virtual: bool },
    /// `name AS expr`.
    Computed(Box<Expr>),
}

#[derive(Debug, Clone)]
pub struct WatermarkDdl {
    pub column: String,
    pub expr: Expr,
    pub pos: Pos,
}

/// `'key' = 'value'` in a `WITH (…)` clause.
#[derive(Debug, Clone)]
pub struct OptionDdl {
    pub key: String,
    pub value: String,
    pub pos: Pos,
}

/// A parsed job file: its statements, and the window table functions its queries name (each
/// replaced by a table `__ferry_window_N`, see [`crate::tvf`]).
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub statements: Vec<Located>,
    pub windows: Vec<WindowTvf>,
    /// Relations read `FOR SYSTEM_TIME AS OF` (renamed `__ferry_versioned_N` in the queries).
    pub versioned: Vec<crate::temporal::Versioned>,
}

/// Parses a whole job file.
pub fn parse_script(text: &str) -> Result<Script> {
    let tokens = Tokenizer::new(&FlinkDialect, text).with_unescape(true).tokenize_with_location().map_err(|e| {
        let message = e.message.clone();
        SqlError::new(Pos::new(e.location.line, e.location.column), message)
    })?;
    let mut windows = Vec::new();
    let tokens = crate::tvf::rewrite(tokens, &mut windows)?;
    let mut p = Parser::new(&FlinkDialect).with_tokens_with_locations(tokens);
    let mut out = Vec::new();
    let mut versioned = Vec::new();
    loop {
        while p.consume_token(&Token::SemiColon) {}
        if p.peek_token().token == Token::EOF {
            break;
        }
        let pos = here(&p);
        let mut statement = statement(&mut p).map_err(|e| e.into_sql(pos))?;
        match &mut statement {
            Statement::CreateView { query, .. } | Statement::CreateMaterializedView { query, .. } | Statement::Select(query) => crate::temporal::rewrite(query, pos, &mut versioned)?,
            Statement::Insert(insert) => crate::temporal::rewrite(&mut insert.query, pos, &mut versioned)?,
            Statement::StatementSet(list) => {
                for (at, insert) in list {
                    crate::temporal::rewrite(&mut insert.query, *at, &mut versioned)?;
                }
            }
            Statement::CreateTable(_) | Statement::Set { .. } => {}
        }
        let next = p.peek_token();
        if !matches!(next.token, Token::SemiColon | Token::EOF) {
            return fail(next.span.start.into(), format!("expected ';' after the statement, found {}", next.token));
        }
        out.push(Located { pos, statement });
    }
    Ok(Script { statements: out, windows, versioned })
}

/// A parse failure: sqlparser's (which says where) or ours.
enum Failure {
    Parser(ParserError),
    Sql(SqlError),
}

impl Failure {
    fn into_sql(self, fallback: Pos) -> SqlError {
        match self {
            Failure::Parser(e) => SqlError::from_parser(&e, fallback),
            Failure::Sql(e) => e,
        }
    }
}

impl From<ParserError> for Failure {
    fn from(e: ParserError) -> Self {
        Failure::Parser(e)
    }
}

impl From<SqlError> for Failure {
    fn from(e: SqlError) -> Self {
        Failure::Sql(e)
    }
}

type Parsed<T> = std::result::Result<T, Failure>;

fn unsupported<T>(pos: Pos, what: impl Into<String>) -> Parsed<T> {
    Err(Failure::Sql(SqlError::new(pos, what)))
}

fn here(p: &Parser<'_>) -> Pos {
    p.peek_token().span.start.into()
}

/// Whether the next token is the bare word `w` (keyword or not, any case).
fn peek_word(p: &Parser<'_>, w: &str) -> bool {
    matches!(&p.peek_token().token, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w))
}

fn eat_word(p: &mut Parser<'_>, w: &str) -> bool {
    let yes = peek_word(p, w);
    if yes {
        p.next_token();
    }
    yes
}

fn eat_words(p: &mut Parser<'_>, words: &[&str]) -> bool {
    let start = p.index();
    for w in words {
        if !eat_word(p, w) {
            while p.index() > start {
                p.prev_token();
            }
            return false;
        }
    }
    true
}

fn expect_word(p: &mut Parser<'_>, w: &str) -> Parsed<()> {
    if eat_word(p, w) {
        Ok(())
    } else {
        let t = p.peek_token();
        unsupported(t.span.start.into(), format!("expected {w}, found {}", t.token))
    }
}

fn expect_token(p: &mut Parser<'_>, t: &Token) -> Parsed<()> {
    p.expect_token(t)?;
    Ok(())
}

/// A name: an unquoted Flink reserved word is refused ([`crate::reserved`]).
fn ident(p: &mut Parser<'_>) -> Parsed<String> {
    let i = p.parse_identifier()?;
    crate::reserved::check(&i)?;
    Ok(i.value)
}

/// A query, with the names it uses checked against Flink's reserved words.
fn query(p: &mut Parser<'_>) -> Parsed<Box<Query>> {
    let q = p.parse_query()?;
    crate::reserved::check_query(&q)?;
    Ok(q)
}

/// An expression (a computed column, a watermark), its names checked as a query's are.
fn expr(p: &mut Parser<'_>) -> Parsed<Expr> {
    let e = p.parse_expr()?;
    crate::reserved::check_expr(&e)?;
    Ok(e)
}

/// A parenthesized list of names.
fn names(p: &mut Parser<'_>) -> Parsed<Vec<String>> {
    let list = p.parse_parenthesized_column_list(sqlparser::parser::IsOptional::Mandatory, false)?;
    for i in &list {
        crate::reserved::check(i)?;
    }
    Ok(list.into_iter().map(|i| i.value).collect())
}

/// A possibly qualified name as written (`cat.db.t`), quotes removed; each part checked as
/// [`ident`] checks one.
fn name(p: &mut Parser<'_>) -> Parsed<String> {
    let n = p.parse_object_name(false)?;
    for part in &n.0 {
        if let Some(i) = part.as_ident() {
            crate::reserved::check(i)?;
        }
    }
    Ok(n.0.iter().map(|part| part.as_ident().map_or_else(|| part.to_string(), |i| i.value.clone())).collect::<Vec<_>>().join("."))
}

fn string(p: &mut Parser<'_>) -> Parsed<String> {
    Ok(p.parse_literal_string()?)
}

fn statement(p: &mut Parser<'_>) -> Parsed<Statement> {
    let pos = here(p);
    if eat_word(p, "CREATE") {
        let temporary = eat_word(p, "TEMPORARY");
        if eat_word(p, "TABLE") {
            return Ok(Statement::CreateTable(Box::new(create_table(p)?)));
        }
        if eat_word(p, "VIEW") {
            eat_words(p, &["IF", "NOT", "EXISTS"]);
            let name = name(p)?;
            expect_word(p, "AS")?;
            return Ok(Statement::CreateView { name, query: query(p)? });
        }
        if !temporary && eat_words(p, &["MATERIALIZED", "VIEW"]) {
            let name = name(p)?;
            let options = if eat_word(p, "WITH") { options(p)? } else { Vec::new() };
            expect_word(p, "AS")?;
            return Ok(Statement::CreateMaterializedView { name, options, query: query(p)? });
        }
        if peek_word(p, "FUNCTION") || peek_word(p, "SYSTEM") {
            return unsupported(here(p), "CREATE FUNCTION: user-defined functions are not supported");
        }
        if peek_word(p, "CATALOG") || peek_word(p, "DATABASE") {
            return unsupported(here(p), "catalogs and databases are not supported: tables are declared in the job file");
        }
        let t = p.peek_token();
        return unsupported(t.span.start.into(), format!("expected TABLE, VIEW or MATERIALIZED VIEW after CREATE, found {}", t.token));
    }
    if peek_word(p, "INSERT") {
        return Ok(Statement::Insert(insert(p)?));
    }
    if eat_words(p, &["EXECUTE", "STATEMENT", "SET"]) {
        expect_word(p, "BEGIN")?;
        return statement_set(p);
    }
    if eat_words(p, &["BEGIN", "STATEMENT", "SET"]) {
        // Flink 1.14's form: `BEGIN STATEMENT SET; INSERT …; END`.
        let _ = p.consume_token(&Token::SemiColon);
        return statement_set(p);
    }
    if eat_word(p, "SET") {
        let key = match p.peek_token().token {
            Token::SingleQuotedString(_) => string(p)?,
            _ => {
                let mut parts = vec![p.parse_identifier()?.value];
                while p.consume_token(&Token::Period) {
                    parts.push(p.parse_identifier()?.value);
                }
                parts.join(".")
            }
        };
        expect_token(p, &Token::Eq)?;
        let value = match p.peek_token().token {
            Token::SingleQuotedString(_) => string(p)?,
            Token::Number(n, _) => {
                p.next_token();
                n
            }
            _ => p.parse_identifier()?.value,
        };
        return Ok(Statement::Set { key, value });
    }
    if peek_word(p, "SELECT") || peek_word(p, "WITH") || peek_word(p, "VALUES") || p.peek_token().token == Token::LParen {
        return Ok(Statement::Select(query(p)?));
    }
    for (word, what) in [
        ("DROP", "DROP: a job file declares what it uses; drop a table by removing its CREATE"),
        ("ALTER", "ALTER is not supported: change the CREATE statement"),
        ("USE", "USE (catalogs and databases) is not supported"),
        ("SHOW", "SHOW is a console command, not part of a job file"),
        ("DESCRIBE", "DESCRIBE is a console command; `ferry sql explain` describes a job"),
        ("EXPLAIN", "EXPLAIN is not supported in a job file; run `ferry sql explain FILE`"),
    ] {
        if peek_word(p, word) {
            return unsupported(pos, what);
        }
    }
    let t = p.peek_token();
    unsupported(pos, format!("unsupported statement starting with {}", t.token))
}

fn insert(p: &mut Parser<'_>) -> Parsed<Insert> {
    expect_word(p, "INSERT")?;
    if peek_word(p, "OVERWRITE") {
        return unsupported(here(p), "INSERT OVERWRITE is for batch tables; a stream is appended to (INSERT INTO)");
    }
    expect_word(p, "INTO")?;
    let table_pos = here(p);
    let table = name(p)?;
    if peek_word(p, "PARTITION") {
        return unsupported(here(p), "INSERT … PARTITION (static partitions) is not supported");
    }
    let mut columns = Vec::new();
    if p.peek_token().token == Token::LParen && !peek_query_in_parens(p) {
        columns = names(p)?;
    }
    Ok(Insert { table, table_pos, columns, query: query(p)? })
}

/// `(SELECT …` after an INSERT's table name is the query, not a column list.
fn peek_query_in_parens(p: &Parser<'_>) -> bool {
    let [open, next] = p.peek_tokens_ref::<2>();
    open.token == Token::LParen && matches!(&next.token, Token::Word(w) if ["SELECT", "WITH", "VALUES"].iter().any(|k| w.value.eq_ignore_ascii_case(k)))
}

fn statement_set(p: &mut Parser<'_>) -> Parsed<Statement> {
    let mut inserts = Vec::new();
    loop {
        while p.consume_token(&Token::SemiColon) {}
        if eat_word(p, "END") {
            break;
        }
        let pos = here(p);
        if !peek_word(p, "INSERT") {
            let t = p.peek_token();
            return unsupported(pos, format!("a statement set holds INSERT statements only, found {}", t.token));
        }
        inserts.push((pos, insert(p)?));
        if !p.consume_token(&Token::SemiColon) {
            expect_word(p, "END")?;
            break;
        }
    }
    if inserts.is_empty() {
        return unsupported(here(p), "the statement set holds no INSERT");
    }
    Ok(Statement::StatementSet(inserts))
}

fn create_table(p: &mut Parser<'_>) -> Parsed<TableDdl> {
    eat_words(p, &["IF", "NOT", "EXISTS"]);
    let name = name(p)?;
    expect_token(p, &Token::LParen)?;
    let mut columns: Vec<ColumnDdl> = Vec::new();
    let mut watermark = None;
    let mut primary_key = Vec::new();
    loop {
        let pos = here(p);
        if eat_word(p, "WATERMARK") {
            expect_word(p, "FOR")?;
            let column = ident(p)?;
            expect_word(p, "AS")?;
            if watermark.is_some() {
                return unsupported(pos, "a table has at most one WATERMARK");
            }
            watermark = Some(WatermarkDdl { column, expr: expr(p)?, pos });
        } else if peek_word(p, "PRIMARY") || peek_word(p, "CONSTRAINT") {
            if eat_word(p, "CONSTRAINT") {
                ident(p)?;
            }
            expect_word(p, "PRIMARY")?;
            expect_word(p, "KEY")?;
            let key = names(p)?;
            not_enforced(p, pos)?;
            if !primary_key.is_empty() {
                return unsupported(pos, "a table has at most one PRIMARY KEY");
            }
            primary_key = key;
        } else {
            let column = ident(p)?;
            if columns.iter().any(|c| c.name == column) {
                return unsupported(pos, format!("column {column} is declared twice"));
            }
            let kind = if eat_word(p, "AS") {
                ColumnKind::Computed(Box::new(expr(p)?))
            } else {
                let ty = flink_type(p)?;
                let mut not_null = false;
                let mut metadata: Option<(String, bool)> = None;
                loop {
                    let at = here(p);
                    if eat_words(p, &["NOT", "NULL"]) {
                        not_null = true;
                    } else if eat_word(p, "NULL") {
                        not_null = false;
                    } else if eat_word(p, "METADATA") {
                        let key = if eat_word(p, "FROM") { string(p)? } else { column.clone() };
                        metadata = Some((key, eat_word(p, "VIRTUAL")));
                    } else if eat_words(p, &["PRIMARY", "KEY"]) {
                        not_enforced(p, at)?;
                        if !primary_key.is_empty() {
                            return unsupported(at, "a table has at most one PRIMARY KEY");
                        }
                        primary_key = vec![column.clone()];
                    } else if eat_word(p, "COMMENT") {
                        string(p)?;
                    } else {
                        break;
                    }
                }
                match metadata {
                    Some((key, is_virtual)) => ColumnKind::Metadata { ty, key, is_virtual },
                    None => ColumnKind::Physical { ty, not_null },
                }
            };
            if eat_word(p, "COMMENT") {
                string(p)?;
            }
            columns.push(ColumnDdl { name: column, pos, kind });
        }
        if p.consume_token(&Token::Comma) {
            continue;
        }
        expect_token(p, &Token::RParen)?;
        break;
    }
    if eat_word(p, "COMMENT") {
        string(p)?;
    }
    if peek_word(p, "PARTITIONED") || peek_word(p, "DISTRIBUTED") {
        return unsupported(here(p), "PARTITIONED BY / DISTRIBUTED BY are for filesystem and catalog tables, not Kafka topics");
    }
    let options = if eat_word(p, "WITH") { options(p)? } else { return unsupported(here(p), format!("table {name} has no WITH (…) clause: its connector is not known")) };
    if peek_word(p, "LIKE") {
        return unsupported(here(p), "CREATE TABLE … LIKE is not supported: declare the table in full");
    }
    Ok(TableDdl { name, columns, watermark, primary_key, options })
}

fn not_enforced(p: &mut Parser<'_>, pos: Pos) -> Parsed<()> {
    if eat_words(p, &["NOT", "ENFORCED"]) {
        Ok(())
    } else {
        unsupported(pos, "a PRIMARY KEY must be declared NOT ENFORCED (Flink does not check keys)")
    }
}

/// `( 'key' = 'value' [, …] )`.
fn options(p: &mut Parser<'_>) -> Parsed<Vec<OptionDdl>> {
    expect_token(p, &Token::LParen)?;
    let mut out: Vec<OptionDdl> = Vec::new();
    if p.consume_token(&Token::RParen) {
        return Ok(out);
    }
    loop {
        let pos = here(p);
        let key = string(p)?;
        expect_token(p, &Token::Eq)?;
        let value = string(p)?;
        if out.iter().any(|o| o.key == key) {
            return unsupported(pos, format!("option '{key}' is set twice"));
        }
        out.push(OptionDdl { key, value, pos });
        if p.consume_token(&Token::Comma) {
            continue;
        }
        expect_token(p, &Token::RParen)?;
        return Ok(out);
    }
}

/// A Flink data type. `>>` closing two nested types is one token: `pending` counts the `>` taken
/// from it that are still owed.
fn flink_type(p: &mut Parser<'_>) -> Parsed<FlinkType> {
    let mut pending = 0;
    let t = data_type(p, &mut pending)?;
    if pending > 0 {
        return unsupported(here(p), "unbalanced '>' in the type");
    }
    Ok(t)
}

fn close_angle(p: &mut Parser<'_>, pending: &mut u32) -> Parsed<()> {
    if *pending > 0 {
        *pending -= 1;
        return Ok(());
    }
    let t = p.next_token();
    match t.token {
        Token::Gt => Ok(()),
        Token::ShiftRight => {
            *pending += 1;
            Ok(())
        }
        other => unsupported(t.span.start.into(), format!("expected '>', found {other}")),
    }
}

/// `(n)` or `(p, s)` after a type name; `None` when absent.
fn type_args(p: &mut Parser<'_>) -> Parsed<Vec<u64>> {
    let mut out = Vec::new();
    if !p.consume_token(&Token::LParen) {
        return Ok(out);
    }
    loop {
        let t = p.next_token();
        match &t.token {
            Token::Number(n, _) => match n.parse() {
                Ok(v) => out.push(v),
                Err(_) => return unsupported(t.span.start.into(), format!("expected a length or precision, found {n}")),
            },
            other => return unsupported(t.span.start.into(), format!("expected a length or precision, found {other}")),
        }
        if p.consume_token(&Token::Comma) {
            continue;
        }
        expect_token(p, &Token::RParen)?;
        return Ok(out);
    }
}

fn data_type(p: &mut Parser<'_>, pending: &mut u32) -> Parsed<FlinkType> {
    let pos = here(p);
    let t = p.next_token();
    let word = match &t.token {
        Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
        other => return unsupported(pos, format!("expected a data type, found {other}")),
    };
    let precision = |args: &[u64], default: u64, max: u64| -> Parsed<u32> {
        match args {
            [] => Ok(default as u32),
            [p] if *p <= max => Ok(*p as u32),
            _ => unsupported(pos, format!("{word} takes one precision from 0 to {max}")),
        }
    };
    Ok(match word.as_str() {
        "CHAR" | "VARCHAR" | "STRING" => {
            type_args(p)?;
            FlinkType::String
        }
        "BOOLEAN" => FlinkType::Boolean,
        "BINARY" | "VARBINARY" | "BYTES" => {
            type_args(p)?;
            FlinkType::Bytes
        }
        "DECIMAL" | "DEC" | "NUMERIC" => {
            let args = type_args(p)?;
            let (precision, scale) = match args.as_slice() {
                [] => (10, 0),
                [p] => (*p, 0),
                [p, s] => (*p, *s),
                _ => return unsupported(pos, "DECIMAL takes a precision and a scale"),
            };
            if !(1..=38).contains(&precision) || scale > precision {
                return unsupported(pos, format!("DECIMAL({precision}, {scale}): the precision must be 1 to 38 and the scale at most the precision"));
            }
            FlinkType::Decimal(precision as u8, scale as i8)
        }
        "TINYINT" => FlinkType::TinyInt,
        "SMALLINT" => FlinkType::SmallInt,
        "INT" | "INTEGER" => FlinkType::Int,
        "BIGINT" => FlinkType::BigInt,
        "FLOAT" => FlinkType::Float,
        "DOUBLE" => {
            eat_word(p, "PRECISION");
            FlinkType::Double
        }
        "DATE" => FlinkType::Date,
        "TIME" => {
            let args = type_args(p)?;
            precision(&args, 0, 9)?;
            eat_words(p, &["WITHOUT", "TIME", "ZONE"]);
            FlinkType::Time
        }
        "TIMESTAMP" => {
            let args = type_args(p)?;
            let precision = precision(&args, 6, 9)?;
            if eat_words(p, &["WITH", "LOCAL", "TIME", "ZONE"]) {
                FlinkType::TimestampLtz(precision)
            } else if peek_word(p, "WITH") {
                return unsupported(pos, "TIMESTAMP WITH TIME ZONE is not supported by Flink; use TIMESTAMP_LTZ");
            } else {
                eat_words(p, &["WITHOUT", "TIME", "ZONE"]);
                FlinkType::Timestamp(precision)
            }
        }
        "TIMESTAMP_LTZ" => {
            let args = type_args(p)?;
            FlinkType::TimestampLtz(precision(&args, 6, 9)?)
        }
        "ARRAY" => {
            expect_token(p, &Token::Lt)?;
            let item = data_type(p, pending)?;
            let item_not_null = eat_words(p, &["NOT", "NULL"]);
            close_angle(p, pending)?;
            FlinkType::Array(Box::new(item), item_not_null)
        }
        "MAP" => {
            expect_token(p, &Token::Lt)?;
            let key = data_type(p, pending)?;
            eat_words(p, &["NOT", "NULL"]);
            expect_token(p, &Token::Comma)?;
            let value = data_type(p, pending)?;
            eat_words(p, &["NOT", "NULL"]);
            close_angle(p, pending)?;
            FlinkType::Map(Box::new(key), Box::new(value))
        }
        "ROW" => {
            let close = if p.consume_token(&Token::Lt) {
                None
            } else {
                expect_token(p, &Token::LParen)?;
                Some(Token::RParen)
            };
            let mut fields = Vec::new();
            loop {
                let field = ident(p)?;
                let ty = data_type(p, pending)?;
                let not_null = eat_words(p, &["NOT", "NULL"]);
                if eat_word(p, "COMMENT") {
                    string(p)?;
                }
                fields.push((field, ty, not_null));
                if p.consume_token(&Token::Comma) {
                    continue;
                }
                match &close {
                    None => close_angle(p, pending)?,
                    Some(t) => expect_token(p, t)?,
                }
                break;
            }
            FlinkType::Row(fields)
        }
        "MULTISET" | "RAW" | "INTERVAL" | "NULL" | "SYMBOL" | "STRUCTURED" | "DESCRIPTOR" | "VARIANT" => {
            return unsupported(pos, format!("the {word} type is not supported in a table"));
        }
        other => return unsupported(pos, format!("unknown data type {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Statement {
        let mut s = parse_script(sql).unwrap().statements;
        assert_eq!(s.len(), 1);
        s.remove(0).statement
    }

    fn error(sql: &str) -> SqlError {
        parse_script(sql).unwrap_err()
    }

    #[test]
    fn a_kafka_table_with_every_kind_of_column() {
        let sql = "CREATE TABLE `orders` (\n  id BIGINT NOT NULL,\n  customer ROW<name STRING, tags ARRAY<ARRAY<INT>>>,\n  price DECIMAL(10, 2),\n  ts TIMESTAMP(3),\n  part INT METADATA FROM 'partition' VIRTUAL,\n  kts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp',\n  total AS price * 2,\n  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND,\n  PRIMARY KEY (id) NOT ENFORCED\n) WITH ('connector' = 'kafka', 'topic' = 'orders');";
        let Statement::CreateTable(t) = one(sql) else { panic!() };
        assert_eq!(t.name, "orders");
        let names: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "customer", "price", "ts", "part", "kts", "total"]);
        assert!(matches!(&t.columns[1].kind, ColumnKind::Physical { ty: FlinkType::Row(f), .. } if matches!(&f[1].1, FlinkType::Array(inner, _) if matches!(**inner, FlinkType::Array(_, _)))));
        assert!(matches!(&t.columns[4].kind, ColumnKind::Metadata { key, is_virtual: true, .. } if key == "partition"));
        assert!(matches!(&t.columns[6].kind, ColumnKind::Computed(_)));
        assert_eq!(t.columns[2].pos, Pos::new(4, 3));
        assert_eq!(t.watermark.as_ref().unwrap().column, "ts");
        assert_eq!(t.primary_key, ["id"]);
        assert_eq!(t.options[1].key, "topic");
        assert_eq!(t.options[1].pos, Pos::new(11, 32));
    }

    #[test]
    fn inserts_views_sets_and_statement_sets() {
        let script = parse_script(
            "SET 'table.exec.state.ttl' = '1 h';\nCREATE TEMPORARY VIEW v AS SELECT a FROM t;\nINSERT INTO s SELECT * FROM v;\nINSERT INTO s (a, b) SELECT a, b FROM t;\nEXECUTE STATEMENT SET BEGIN\nINSERT INTO s SELECT 1;\nINSERT INTO s2 SELECT 2;\nEND;\nCREATE MATERIALIZED VIEW m WITH ('retention' = '60') AS SELECT a, COUNT(*) AS n FROM t GROUP BY a",
        )
        .unwrap()
        .statements;
        assert!(matches!(&script[0].statement, Statement::Set { key, value } if key == "table.exec.state.ttl" && value == "1 h"));
        assert!(matches!(&script[1].statement, Statement::CreateView { name, .. } if name == "v"));
        assert!(matches!(&script[3].statement, Statement::Insert(i) if i.columns == ["a", "b"]));
        assert!(matches!(&script[4].statement, Statement::StatementSet(s) if s.len() == 2 && s[1].0 == Pos::new(7, 1)));
        assert!(matches!(&script[5].statement, Statement::CreateMaterializedView { name, options, .. } if name == "m" && options.len() == 1));
        assert_eq!(script[5].pos, Pos::new(9, 1));
    }

    #[test]
    fn errors_say_where() {
        assert_eq!(error("CREATE TABLE t (a INT, a STRING) WITH ()").pos, Pos::new(1, 24));
        let e = error("CREATE TABLE t (\n  a FOO\n) WITH ()");
        assert_eq!((e.pos, e.message.as_str()), (Pos::new(2, 5), "unknown data type FOO"));
        let e = error("CREATE TABLE t (a INT, PRIMARY KEY (a)) WITH ()");
        assert!(e.message.contains("NOT ENFORCED"), "{e}");
        let e = error("SELECT 1;\nSELEC 2");
        assert_eq!(e.pos, Pos::new(2, 1));
        let e = error("INSERT INTO t SELECT a FROM t WHERE a = = 1");
        assert_eq!(e.pos.line, 1);
        assert!(e.pos.column > 20, "{e}");
        let e = error("CREATE FUNCTION f AS 'x'");
        assert!(e.message.contains("user-defined functions"), "{e}");
        let e = error("CREATE TABLE t (a INT) WITH ('k' = 'v', 'k' = 'w')");
        assert_eq!((e.pos, e.message.as_str()), (Pos::new(1, 41), "option 'k' is set twice"));
    }
}
