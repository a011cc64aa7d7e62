//! Avro schemas as a type graph, and whether data written with one schema can be read with
//! another, by the rules of Apache Avro's Java `SchemaCompatibility` (which Confluent calls):
//! named types match by simple name or by a reader alias naming the writer's full name; a reader
//! field missing in the writer needs a default; writer-only fields are ignored; int→long, float,
//! double; long→float, double; float→double; string↔bytes; every writer enum symbol must be a
//! reader symbol unless the reader enum has a default; fixed types must match in size; every
//! branch of a writer union must be readable, and a reader union reads a writer type any of its
//! branches reads.
//!
//! The graph is parsed here from the schema's JSON rather than with the `apache-avro` crate: its
//! compatibility answers differ from Java's on enum and union cases, and the parse is the small
//! part (names, namespaces, aliases, unions, logical types read as their underlying type).

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

/// A schema: its root and every named type it defines (or that its references define).
#[derive(Debug, Clone)]
pub struct Schema {
    root: Type,
    named: Vec<Named>,
}

#[derive(Debug, Clone, PartialEq)]
enum Type {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Array(Box<Type>),
    Map(Box<Type>),
    Union(Vec<Type>),
    /// Index into `Schema::named`.
    Named(usize),
}

#[derive(Debug, Clone)]
struct Named {
    fullname: String,
    aliases: Vec<String>,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// Fields in order, and their positions by name (looked up once per reader field).
    Record(Vec<Field>, HashMap<String, usize>),
    Enum { symbols: Vec<String>, default: Option<String> },
    Fixed { size: u64 },
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    aliases: Vec<String>,
    schema: Type,
    has_default: bool,
}

struct Parser {
    named: Vec<Named>,
    names: HashMap<String, usize>,
}

impl Schema {
    /// Parses `text`, after the schemas it references (Confluent's `references`: each defines
    /// named types `text` may use). Errors name what is wrong, for a 42201 answer.
    pub fn parse(text: &str, references: &[&str]) -> Result<Schema, String> {
        let mut p = Parser { named: Vec::new(), names: HashMap::new() };
        for r in references {
            let v: Value = serde_json::from_str(r).map_err(|e| format!("a referenced schema is not JSON: {e}"))?;
            p.parse(&v, "")?;
        }
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let root = p.parse(&v, "")?;
        Ok(Schema { root, named: p.named })
    }
}

fn strings(v: Option<&Value>, what: &str) -> Result<Vec<String>, String> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(|i| i.as_str().map(String::from).ok_or_else(|| format!("{what} must be strings"))).collect(),
        Some(_) => Err(format!("{what} must be an array of strings")),
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Parser {
    fn full(name: &str, namespace: &str) -> String {
        if name.contains('.') || namespace.is_empty() {
            name.to_string()
        } else {
            format!("{namespace}.{name}")
        }
    }

    fn parse(&mut self, v: &Value, namespace: &str) -> Result<Type, String> {
        match v {
            Value::String(name) => self.by_name(name, namespace),
            Value::Array(branches) => {
                let mut out = Vec::new();
                for b in branches {
                    let t = self.parse(b, namespace)?;
                    if matches!(t, Type::Union(_)) {
                        return Err("a union may not directly contain a union".into());
                    }
                    if out.contains(&t) {
                        return Err(format!("a union may not contain the same type twice ({b})"));
                    }
                    out.push(t);
                }
                Ok(Type::Union(out))
            }
            Value::Object(o) => self.object(o, namespace),
            other => Err(format!("not a schema: {other}")),
        }
    }

    fn by_name(&mut self, name: &str, namespace: &str) -> Result<Type, String> {
        Ok(match name {
            "null" => Type::Null,
            "boolean" => Type::Boolean,
            "int" => Type::Int,
            "long" => Type::Long,
            "float" => Type::Float,
            "double" => Type::Double,
            "bytes" => Type::Bytes,
            "string" => Type::String,
            _ => {
                let idx = self.names.get(&Self::full(name, namespace)).or_else(|| self.names.get(name)).ok_or_else(|| format!("undefined name: {name}"))?;
                Type::Named(*idx)
            }
        })
    }

    fn object(&mut self, o: &Map<String, Value>, namespace: &str) -> Result<Type, String> {
        let t = o.get("type").ok_or("a schema object needs a \"type\"")?;
        let kind = match t {
            Value::String(s) => s.as_str(),
            // {"type": {...}} or {"type": [...]}: the inner schema (attributes ignored).
            other => return self.parse(other, namespace),
        };
        match kind {
            "record" | "error" | "enum" | "fixed" => self.define(o, kind, namespace),
            "array" => Ok(Type::Array(Box::new(self.parse(o.get("items").ok_or("an array needs \"items\"")?, namespace)?))),
            "map" => Ok(Type::Map(Box::new(self.parse(o.get("values").ok_or("a map needs \"values\"")?, namespace)?))),
            // A primitive, possibly with a logical type: read as the underlying type.
            other => self.by_name(other, namespace),
        }
    }

    fn define(&mut self, o: &Map<String, Value>, kind: &str, namespace: &str) -> Result<Type, String> {
        let name = o.get("name").and_then(Value::as_str).ok_or_else(|| format!("a {kind} needs a \"name\""))?;
        let ns = match (name.rsplit_once('.'), o.get("namespace").and_then(Value::as_str)) {
            (Some((ns, _)), _) => ns.to_string(),
            (None, Some(ns)) => ns.to_string(),
            (None, None) => namespace.to_string(),
        };
        let simple = name.rsplit('.').next().unwrap_or(name);
        if !valid_name(simple) {
            return Err(format!("invalid name: {name}"));
        }
        let fullname = Self::full(simple, &ns);
        if self.names.contains_key(&fullname) {
            return Err(format!("{fullname} is defined twice"));
        }
        let aliases = strings(o.get("aliases"), "aliases")?.into_iter().map(|a| Self::full(&a, &ns)).collect();
        let idx = self.named.len();
        // Registered before its fields: a record may refer to itself.
        self.named.push(Named { fullname: fullname.clone(), aliases, kind: Kind::Fixed { size: 0 } });
        self.names.insert(fullname, idx);
        let kind = match kind {
            "enum" => {
                let symbols = strings(o.get("symbols"), "enum symbols")?;
                let mut seen = HashSet::new();
                if let Some(dup) = symbols.iter().find(|s| !seen.insert(s.as_str())) {
                    return Err(format!("enum {name} has the symbol {dup} twice"));
                }
                let default = o.get("default").and_then(Value::as_str).map(String::from);
                if let Some(d) = &default {
                    if !symbols.contains(d) {
                        return Err(format!("enum {name}: the default {d} is not a symbol"));
                    }
                }
                Kind::Enum { symbols, default }
            }
            "fixed" => Kind::Fixed { size: o.get("size").and_then(Value::as_u64).ok_or_else(|| format!("fixed {name} needs a \"size\""))? },
            _ => {
                let fields = o.get("fields").and_then(Value::as_array).ok_or_else(|| format!("record {name} needs \"fields\""))?;
                let mut out = Vec::new();
                let mut seen = HashSet::new();
                for f in fields {
                    let f = f.as_object().ok_or_else(|| format!("a field of {name} is not an object"))?;
                    let field = f.get("name").and_then(Value::as_str).ok_or_else(|| format!("a field of {name} has no name"))?;
                    if !seen.insert(field.to_string()) {
                        return Err(format!("record {name} has the field {field} twice"));
                    }
                    let schema = self.parse(f.get("type").ok_or_else(|| format!("field {field} of {name} has no type"))?, &ns)?;
                    out.push(Field { name: field.to_string(), aliases: strings(f.get("aliases"), "field aliases")?, schema, has_default: f.contains_key("default") });
                }
                let index = out.iter().enumerate().map(|(i, f)| (f.name.clone(), i)).collect();
                Kind::Record(out, index)
            }
        };
        self.named[idx].kind = kind;
        Ok(Type::Named(idx))
    }
}

/// Checks whether data written with `writer` can be read with `reader`; the incompatibilities
/// found, each with its path in the reader schema.
pub fn can_read(reader: &Schema, writer: &Schema) -> Vec<String> {
    let mut c = Check { reader, writer, assumed: HashSet::new(), assumed_log: Vec::new(), path: Vec::new(), problems: Vec::new() };
    c.check(&reader.root, &writer.root);
    c.problems
}

/// A step of the path to a problem, rendered only when one is reported (checks that pass, by
/// far the most, build no strings).
#[derive(Clone, Copy)]
enum Step {
    Items,
    Values,
    Field(usize),
    Type,
    Name,
    Size,
    Symbols,
}

struct Check<'a> {
    reader: &'a Schema,
    writer: &'a Schema,
    /// Named pairs being checked (recursive types are assumed compatible inside themselves),
    /// and the order they were added in (so a trial can take its additions back).
    assumed: HashSet<(usize, usize)>,
    assumed_log: Vec<(usize, usize)>,
    path: Vec<Step>,
    problems: Vec<String>,
}

fn names_a_type(t: &Type) -> bool {
    match t {
        Type::Named(_) => true,
        Type::Array(i) | Type::Map(i) => names_a_type(i),
        Type::Union(bs) => bs.iter().any(names_a_type),
        _ => false,
    }
}

fn type_name(s: &Schema, t: &Type) -> String {
    match t {
        Type::Null => "null".into(),
        Type::Boolean => "boolean".into(),
        Type::Int => "int".into(),
        Type::Long => "long".into(),
        Type::Float => "float".into(),
        Type::Double => "double".into(),
        Type::Bytes => "bytes".into(),
        Type::String => "string".into(),
        Type::Array(_) => "array".into(),
        Type::Map(_) => "map".into(),
        Type::Union(_) => "union".into(),
        Type::Named(i) => s.named[*i].fullname.clone(),
    }
}

impl<'a> Check<'a> {
    /// Whether it holds, without recording why (a reader union tries its branches).
    fn quietly(&mut self, r: &'a Type, w: &'a Type) -> bool {
        let (before, assumed, depth) = (self.problems.len(), self.assumed_log.len(), self.path.len());
        self.check(r, w);
        let ok = self.problems.len() == before;
        // A pair found incompatible here must be judged again where it is reported.
        self.problems.truncate(before);
        for pair in self.assumed_log.drain(assumed..) {
            self.assumed.remove(&pair);
        }
        self.path.truncate(depth);
        ok
    }

    fn problem(&mut self, kind: &str, what: String) {
        let mut path = String::new();
        for step in &self.path {
            match step {
                Step::Items => path.push_str("/items"),
                Step::Values => path.push_str("/values"),
                Step::Field(i) => path.push_str(&format!("/fields/{i}")),
                Step::Type => path.push_str("/type"),
                Step::Name => path.push_str("/name"),
                Step::Size => path.push_str("/size"),
                Step::Symbols => path.push_str("/symbols"),
            }
        }
        if path.is_empty() {
            path.push('/');
        }
        self.problems.push(format!("{kind} at {path}: {what}"));
    }

    /// Runs `f` one step deeper in the path.
    fn at(&mut self, step: Step, f: impl FnOnce(&mut Self)) {
        self.path.push(step);
        f(self);
        self.path.pop();
    }

    fn check(&mut self, r: &'a Type, w: &'a Type) {
        use Type::*;
        // Equal types that name no type (a primitive, a union of primitives, an array of
        // them) read each other: the common case between versions, decided at once.
        if r == w && !names_a_type(r) {
            return;
        }
        // A writer union: every branch the writer may have written must be readable.
        if let Union(branches) = w {
            for (i, b) in branches.iter().enumerate() {
                if !self.quietly(r, b) {
                    let name = type_name(self.writer, b);
                    self.problem("MISSING_UNION_BRANCH", format!("the old schema's union branch {i} ({name}) cannot be read by the new schema"));
                }
            }
            return;
        }
        if let Union(branches) = r {
            if !branches.iter().any(|b| self.quietly(b, w)) {
                let name = type_name(self.writer, w);
                self.problem("MISSING_UNION_BRANCH", format!("no branch of the new schema's union reads {name}"));
            }
            return;
        }
        let promoted = matches!((r, w), (Long, Int) | (Float, Int | Long) | (Double, Int | Long | Float) | (String, Bytes) | (Bytes, String));
        match (r, w) {
            (Null, Null) | (Boolean, Boolean) | (Int, Int) | (Long, Long) | (Float, Float) | (Double, Double) | (Bytes, Bytes) | (String, String) => {}
            _ if promoted => {}
            (Array(ri), Array(wi)) => self.at(Step::Items, |c| c.check(ri, wi)),
            (Map(rv), Map(wv)) => self.at(Step::Values, |c| c.check(rv, wv)),
            (Named(ri), Named(wi)) => self.named(*ri, *wi),
            _ => {
                let (rn, wn) = (type_name(self.reader, r), type_name(self.writer, w));
                self.problem("TYPE_MISMATCH", format!("the new schema reads {rn} where the old one wrote {wn}"));
            }
        }
    }

    fn named(&mut self, ri: usize, wi: usize) {
        if !self.assumed.insert((ri, wi)) {
            return;
        }
        self.assumed_log.push((ri, wi));
        let (reader, writer) = (self.reader, self.writer);
        let (rn, wn) = (&reader.named[ri], &writer.named[wi]);
        let simple = |n: &'a str| n.rsplit('.').next().unwrap_or(n);
        if simple(&rn.fullname) != simple(&wn.fullname) && !rn.aliases.contains(&wn.fullname) {
            let (r, w) = (&rn.fullname, &wn.fullname);
            self.at(Step::Name, |c| c.problem("NAME_MISMATCH", format!("the new schema's {r} does not match the old schema's {w} (no alias names it)")));
            return;
        }
        match (&rn.kind, &wn.kind) {
            (Kind::Fixed { size: rs }, Kind::Fixed { size: ws }) => {
                if rs != ws {
                    self.at(Step::Size, |c| c.problem("FIXED_SIZE_MISMATCH", format!("fixed size {rs} in the new schema, {ws} in the old")));
                }
            }
            (Kind::Enum { symbols: rs, default }, Kind::Enum { symbols: ws, .. }) => {
                if default.is_none() {
                    let missing: Vec<&str> = ws.iter().filter(|s| !rs.contains(s)).map(String::as_str).collect();
                    if !missing.is_empty() {
                        self.at(Step::Symbols, |c| c.problem("MISSING_ENUM_SYMBOLS", format!("the new schema's enum lacks {} and has no default", missing.join(", "))));
                    }
                }
            }
            (Kind::Record(rf, _), Kind::Record(wf, by_name)) => {
                for (i, f) in rf.iter().enumerate() {
                    let named = |n: &str| by_name.get(n).map(|&j| &wf[j]);
                    let found = named(&f.name).or_else(|| f.aliases.iter().find_map(|a| named(a)));
                    self.at(Step::Field(i), |c| match found {
                        Some(w) => c.at(Step::Type, |c| c.check(&f.schema, &w.schema)),
                        None if f.has_default => {}
                        None => c.problem("READER_FIELD_MISSING_DEFAULT_VALUE", format!("the new schema's field '{}' has no default and is missing in the old schema", f.name)),
                    });
                }
            }
            _ => {
                let (r, w) = (&rn.fullname, &wn.fullname);
                self.problem("TYPE_MISMATCH", format!("the new schema's {r} and the old schema's {w} are different kinds of type"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Schema {
        Schema::parse(text, &[]).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn ok(reader: &str, writer: &str) -> bool {
        can_read(&s(reader), &s(writer)).is_empty()
    }

    #[test]
    fn primitives_and_promotions() {
        assert!(ok(r#""long""#, r#""int""#));
        assert!(!ok(r#""int""#, r#""long""#));
        assert!(ok(r#""double""#, r#""float""#));
        assert!(ok(r#""float""#, r#""long""#));
        assert!(ok(r#""string""#, r#""bytes""#) && ok(r#""bytes""#, r#""string""#));
        assert!(!ok(r#""string""#, r#""int""#));
        assert!(ok(r#"{"type": "long", "logicalType": "timestamp-millis"}"#, r#""long""#), "logical types read as their underlying type");
    }

    const V1: &str = r#"{"type":"record","name":"User","namespace":"shop","fields":[{"name":"id","type":"long"}]}"#;

    #[test]
    fn record_fields_need_defaults_when_added_and_are_ignored_when_removed() {
        let added_default = r#"{"type":"record","name":"User","namespace":"shop","fields":[{"name":"id","type":"long"},{"name":"email","type":"string","default":""}]}"#;
        let added_bare = r#"{"type":"record","name":"User","namespace":"shop","fields":[{"name":"id","type":"long"},{"name":"email","type":"string"}]}"#;
        assert!(ok(added_default, V1), "new reader, old data: the default fills the field");
        let problems = can_read(&s(added_bare), &s(V1));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("READER_FIELD_MISSING_DEFAULT_VALUE at /fields/1"), "{problems:?}");
        assert!(ok(V1, added_bare), "old reader ignores the writer's extra field");
        let renamed = r#"{"type":"record","name":"User","namespace":"shop","fields":[{"name":"key","aliases":["id"],"type":"long"}]}"#;
        assert!(ok(renamed, V1), "a reader field alias finds the writer's field");
    }

    #[test]
    fn names_match_by_simple_name_or_reader_alias() {
        let other_ns = r#"{"type":"record","name":"User","namespace":"crm","fields":[{"name":"id","type":"long"}]}"#;
        assert!(ok(other_ns, V1), "Java compares simple names");
        let renamed = r#"{"type":"record","name":"Customer","namespace":"shop","fields":[{"name":"id","type":"long"}]}"#;
        assert!(!ok(renamed, V1));
        let aliased = r#"{"type":"record","name":"Customer","namespace":"shop","aliases":["User"],"fields":[{"name":"id","type":"long"}]}"#;
        assert!(ok(aliased, V1), "an alias naming the writer's full name");
    }

    #[test]
    fn enums_unions_arrays_maps_fixed() {
        let e = |symbols: &str, default: &str| format!(r#"{{"type":"enum","name":"E","symbols":[{symbols}]{default}}}"#);
        assert!(ok(&e(r#""A","B","C""#, ""), &e(r#""A","B""#, "")));
        assert!(!ok(&e(r#""A""#, ""), &e(r#""A","B""#, "")));
        assert!(ok(&e(r#""A""#, r#","default":"A""#), &e(r#""A","B""#, "")), "a reader default covers unknown symbols");
        assert!(ok(r#"["null","string"]"#, r#""string""#), "a reader union reads one of its branches");
        assert!(!ok(r#""string""#, r#"["null","string"]"#), "the writer may have written null");
        assert!(ok(r#"["null","long"]"#, r#"["null","int"]"#));
        assert!(ok(r#"{"type":"array","items":"long"}"#, r#"{"type":"array","items":"int"}"#));
        assert!(!ok(r#"{"type":"map","values":"int"}"#, r#"{"type":"map","values":"long"}"#));
        assert!(!ok(r#"{"type":"fixed","name":"F","size":8}"#, r#"{"type":"fixed","name":"F","size":16}"#));
    }

    #[test]
    fn recursive_types_and_references_resolve() {
        let list = r#"{"type":"record","name":"Node","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","Node"],"default":null}]}"#;
        assert!(ok(list, list));
        let base = r#"{"type":"record","name":"Address","namespace":"shop","fields":[{"name":"city","type":"string"}]}"#;
        let user = r#"{"type":"record","name":"User","namespace":"shop","fields":[{"name":"home","type":"Address"}]}"#;
        assert!(Schema::parse(user, &[]).unwrap_err().contains("undefined name"));
        let parsed = Schema::parse(user, &[base]).unwrap();
        assert!(can_read(&parsed, &parsed).is_empty());
    }

    #[test]
    fn invalid_schemas_are_refused_with_the_reason() {
        for (text, reason) in [
            (r#"{"type":"record","name":"R"}"#, "needs \"fields\""),
            (r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"a","type":"int"}]}"#, "twice"),
            (r#"["int","int"]"#, "same type twice"),
            (r#""Nope""#, "undefined name"),
            (r#"{"type":"enum","name":"E","symbols":["A"],"default":"B"}"#, "not a symbol"),
            (r#"{"type":"fixed","name":"1F","size":1}"#, "invalid name"),
        ] {
            let e = Schema::parse(text, &[]).unwrap_err();
            assert!(e.contains(reason), "{text}: {e}");
        }
    }
}
