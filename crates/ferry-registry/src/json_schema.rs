//! JSON Schema compatibility, judged as Confluent's diff judges it: a new schema is backward
//! compatible with an old one when it accepts every document the old one accepts. Each change is
//! sorted into one of Confluent's kinds (`TYPE_EXTENDED`, `PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL`,
//! `MAX_LENGTH_DECREASED`, …) at a JSON path (`#/properties/a/items`), and the incompatible kinds
//! are the verdict.
//!
//! Content models: an object whose `additionalProperties` is absent or `true` is open (it may
//! carry any other property with any value), `false` closes it, and a schema there or in
//! `patternProperties` leaves it partially open (other properties must match that schema).
//! Adding a constrained property to an open model is incompatible (old documents may carry it
//! with another value); removing one from a closed model is. Array tuples follow the same rules
//! with `additionalItems`. Loosening (a larger maximum, a smaller minimum, a wider type or enum,
//! fewer required properties) is compatible; tightening is not. `$ref`s resolve within the
//! document and into referenced schemas (by reference name); cycles are assumed compatible where
//! they close. Annotations (`title`, `description`, `default`, `format`, …) never matter.

use std::collections::{BTreeSet, HashMap, HashSet};

use regex::Regex;

pub use crate::compat::Difference;
use serde_json::{Map, Value};

/// A parsed JSON Schema and the schemas it references, by reference name.
#[derive(Debug)]
pub struct Document {
    root: Value,
    references: HashMap<String, Value>,
}

impl Document {
    /// Parses `text` with `references` (name, text); every `$ref` must resolve and every regular
    /// expression must compile, else the reason.
    pub fn parse(text: &str, references: &[(String, String)]) -> Result<Document, String> {
        let parse = |name: &str, text: &str| -> Result<Value, String> {
            let value: Value = serde_json::from_str(text).map_err(|e| format!("{name} is not JSON: {e}"))?;
            if !(value.is_object() || value.is_boolean()) {
                return Err(format!("{name} is not a JSON Schema: a schema is an object or a boolean"));
            }
            Ok(value)
        };
        let root = parse("the schema", text)?;
        let references = references.iter().map(|(n, t)| Ok((n.clone(), parse(&format!("reference '{n}'"), t)?))).collect::<Result<HashMap<_, _>, String>>()?;
        let doc = Document { root, references };
        doc.check(&doc.root, &doc.root)?;
        for r in doc.references.values() {
            doc.check(r, r)?;
        }
        Ok(doc)
    }

    /// Checks that every `$ref` under `value` resolves and every pattern compiles.
    fn check(&self, root: &Value, value: &Value) -> Result<(), String> {
        match value {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    self.resolve(root, r).ok_or_else(|| format!("$ref '{r}' does not resolve (not in this schema nor a reference's name)"))?;
                }
                if let Some(Value::String(p)) = m.get("pattern") {
                    Regex::new(p).map_err(|e| format!("pattern '{p}' is not a regular expression: {e}"))?;
                }
                if let Some(Value::Object(ps)) = m.get("patternProperties") {
                    for p in ps.keys() {
                        Regex::new(p).map_err(|e| format!("patternProperties key '{p}' is not a regular expression: {e}"))?;
                    }
                }
                for (k, v) in m {
                    // Values of these keywords are data, not schemas.
                    if !matches!(k.as_str(), "enum" | "const" | "default" | "examples") {
                        self.check(root, v)?;
                    }
                }
                Ok(())
            }
            Value::Array(a) => a.iter().try_for_each(|v| self.check(root, v)),
            _ => Ok(()),
        }
    }

    /// The schema a `$ref` names, with the root it lives in.
    fn resolve<'a>(&'a self, root: &'a Value, reference: &str) -> Option<(&'a Value, &'a Value)> {
        let (name, fragment) = reference.split_once('#').unwrap_or((reference, ""));
        let root = if name.is_empty() {
            root
        } else {
            self.references.get(name).or_else(|| self.references.iter().find(|(n, _)| n.rsplit('/').next() == name.rsplit('/').next()).map(|(_, v)| v))?
        };
        let target = if fragment.is_empty() { root } else { root.pointer(&fragment.replace("%25", "%"))? };
        Some((root, target))
    }

    /// Follows `$ref`s (at most 32) to the schema they name.
    fn deref<'a>(&'a self, mut at: Loc<'a>) -> Loc<'a> {
        for _ in 0..32 {
            match at.value.get("$ref").and_then(Value::as_str).and_then(|r| self.resolve(at.root, r)) {
                Some((root, value)) => at = Loc { root, value },
                None => break,
            }
        }
        at
    }

    fn top(&self) -> Loc<'_> {
        Loc { root: &self.root, value: &self.root }
    }
}

/// A schema inside a document: where `$ref`s starting with `#` resolve.
#[derive(Clone, Copy)]
struct Loc<'a> {
    root: &'a Value,
    value: &'a Value,
}

impl<'a> Loc<'a> {
    fn at(self, value: &'a Value) -> Loc<'a> {
        Loc { root: self.root, value }
    }
    fn get(self, key: &str) -> Option<Loc<'a>> {
        self.value.get(key).map(|v| self.at(v))
    }
}

/// The changes from `old` to `new` (every document `old` accepts must be accepted by `new` for
/// the result to hold no incompatible change).
pub fn diff(old: &Document, new: &Document) -> Vec<Difference> {
    let mut d = Diff { old, new, seen: HashSet::new() };
    d.compare("#", old.top(), new.top())
}

/// Keywords that constrain documents; a schema with none of them accepts everything.
const VALIDATION: &[&str] = &[
    "type", "enum", "const", "properties", "required", "additionalProperties", "patternProperties", "items", "prefixItems", "additionalItems", "maxLength", "minLength", "pattern", "maximum",
    "minimum", "exclusiveMaximum", "exclusiveMinimum", "multipleOf", "maxItems", "minItems", "uniqueItems", "contains", "maxProperties", "minProperties", "dependencies", "dependentRequired",
    "dependentSchemas", "propertyNames", "oneOf", "anyOf", "allOf", "not", "if", "then", "else",
];
/// `true`, for models that leave a keyword out.
static TRUE: Value = Value::Bool(true);

/// No members, for keywords left out.
static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

const COMBINATORS: &[&str] = &["oneOf", "anyOf", "allOf", "not"];

/// What a content model allows for a name (property) or position (tuple item) it does not list.
enum Cover<'a> {
    Anything,
    Nothing,
    Schemas(Vec<Loc<'a>>),
}

struct Diff<'a> {
    old: &'a Document,
    new: &'a Document,
    /// Pairs under comparison, so a recursive schema closes its cycle.
    seen: HashSet<(usize, usize)>,
}

fn accepts_anything(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Object(m) => !m.keys().any(|k| VALIDATION.contains(&k.as_str())),
        _ => true,
    }
}

fn accepts_nothing(v: &Value) -> bool {
    v == &Value::Bool(false)
}

fn has_combinator(v: &Value) -> bool {
    v.as_object().is_some_and(|m| COMBINATORS.iter().any(|k| m.contains_key(*k)))
}

/// The schema without its combinators (whether anything else constrains it).
fn rest_constrains(v: &Value) -> bool {
    v.as_object().is_some_and(|m| m.keys().any(|k| VALIDATION.contains(&k.as_str()) && !COMBINATORS.contains(&k.as_str())))
}

fn types(v: &Value) -> Option<BTreeSet<String>> {
    match v.get("type")? {
        Value::String(t) => Some(BTreeSet::from([t.clone()])),
        Value::Array(ts) => Some(ts.iter().filter_map(|t| t.as_str().map(String::from)).collect()),
        _ => None,
    }
}

fn admits_type(set: &BTreeSet<String>, t: &str) -> bool {
    set.contains(t) || (t == "integer" && set.contains("number"))
}

fn enum_values(v: &Value) -> Option<Vec<&Value>> {
    if let Some(Value::Array(values)) = v.get("enum") {
        return Some(values.iter().collect());
    }
    v.get("const").map(|c| vec![c])
}

fn number(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn push(out: &mut Vec<Difference>, path: &str, kind: &'static str, compatible: bool) {
    out.push(Difference { path: path.to_string(), kind, compatible });
}

fn compatible(diffs: &[Difference]) -> bool {
    diffs.iter().all(|d| d.compatible)
}

fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

impl<'a> Diff<'a> {
    fn compare(&mut self, path: &str, old: Loc<'a>, new: Loc<'a>) -> Vec<Difference> {
        let (old, new) = (self.old.deref(old), self.new.deref(new));
        let key = (old.value as *const Value as usize, new.value as *const Value as usize);
        if !self.seen.insert(key) {
            return Vec::new();
        }
        let out = self.compare_values(path, old, new);
        self.seen.remove(&key);
        out
    }

    fn compare_values(&mut self, path: &str, old: Loc<'a>, new: Loc<'a>) -> Vec<Difference> {
        let mut out = Vec::new();
        if accepts_anything(new.value) || accepts_nothing(old.value) {
            if !accepts_anything(old.value) {
                push(&mut out, path, "TYPE_EXTENDED", true);
            }
            return out;
        }
        if accepts_anything(old.value) || accepts_nothing(new.value) {
            push(&mut out, path, "TYPE_NARROWED", false);
            return out;
        }
        if has_combinator(old.value) || has_combinator(new.value) {
            self.combined(path, old, new, &mut out);
            if !(rest_constrains(old.value) && rest_constrains(new.value)) {
                return out;
            }
        }
        self.keywords(path, old, new, &mut out);
        out
    }

    /// Sum types (`oneOf`, `anyOf`), product types (`allOf`) and `not`.
    fn combined(&mut self, path: &str, old: Loc<'a>, new: Loc<'a>, out: &mut Vec<Difference>) {
        let branches = |l: Loc<'a>, k: &str| -> Option<Vec<Loc<'a>>> { l.value.get(k).and_then(Value::as_array).map(|a| a.iter().map(|v| l.at(v)).collect()) };
        let sum = |l: Loc<'a>| branches(l, "oneOf").map(|b| ("oneOf", b)).or_else(|| branches(l, "anyOf").map(|b| ("anyOf", b)));
        match (sum(old), sum(new)) {
            (Some((ok, ob)), Some((nk, nb))) => {
                let path = format!("{path}/{nk}");
                if ob.len() > nb.len() {
                    push(out, &path, "SUM_TYPE_NARROWED", false);
                } else if !self.matches_all(&path, &ob, &nb, false) {
                    push(out, &path, "COMBINED_TYPE_SUBSCHEMAS_CHANGED", false);
                } else if nb.len() > ob.len() {
                    push(out, &path, "SUM_TYPE_EXTENDED", true);
                } else if ok != nk {
                    push(out, &path, "COMBINED_TYPE_CHANGED", ok == "oneOf");
                }
            }
            (None, Some((nk, nb))) if !has_combinator(old.value) => {
                // One old schema becomes a branch of a sum type.
                let path = format!("{path}/{nk}");
                let covered = nb.iter().enumerate().any(|(i, b)| compatible(&self.compare(&format!("{path}/{i}"), old, *b)));
                push(out, &path, if covered { "SUM_TYPE_EXTENDED" } else { "COMBINED_TYPE_CHANGED" }, covered);
            }
            (Some((ok, ob)), None) if !has_combinator(new.value) => {
                let path = format!("{path}/{ok}");
                let all = ob.iter().enumerate().all(|(i, b)| compatible(&self.compare(&format!("{path}/{i}"), *b, new)));
                if !all {
                    push(out, &path, if ob.len() > 1 { "SUM_TYPE_NARROWED" } else { "COMBINED_TYPE_CHANGED" }, false);
                }
            }
            _ => {}
        }
        match (branches(old, "allOf"), branches(new, "allOf")) {
            (Some(ob), Some(nb)) => {
                let path = format!("{path}/allOf");
                if nb.len() > ob.len() {
                    push(out, &path, "PRODUCT_TYPE_EXTENDED", false);
                } else if !self.matches_all(&path, &nb, &ob, true) {
                    push(out, &path, "COMBINED_TYPE_SUBSCHEMAS_CHANGED", false);
                } else if nb.len() < ob.len() {
                    push(out, &path, "PRODUCT_TYPE_NARROWED", true);
                }
            }
            (None, Some(nb)) => {
                // Every new conjunct must accept what the old schema accepted.
                let path = format!("{path}/allOf");
                if !nb.iter().enumerate().all(|(i, b)| compatible(&self.compare(&format!("{path}/{i}"), old, *b))) {
                    push(out, &path, "PRODUCT_TYPE_EXTENDED", false);
                }
            }
            (Some(ob), None) => {
                let path = format!("{path}/allOf");
                if !ob.iter().enumerate().any(|(i, b)| compatible(&self.compare(&format!("{path}/{i}"), *b, new))) {
                    push(out, &path, "COMBINED_TYPE_CHANGED", false);
                }
            }
            (None, None) => {}
        }
        match (old.get("not"), new.get("not")) {
            (Some(o), Some(n)) => {
                // What the new schema excludes must have been excluded before.
                let inner = self.compare(&format!("{path}/not"), n, o);
                if !compatible(&inner) {
                    push(out, &format!("{path}/not"), "NOT_TYPE_EXTENDED", false);
                } else if !inner.is_empty() {
                    push(out, &format!("{path}/not"), "NOT_TYPE_NARROWED", true);
                }
            }
            (None, Some(_)) => push(out, &format!("{path}/not"), "NOT_TYPE_EXTENDED", false),
            (Some(_), None) => push(out, &format!("{path}/not"), "NOT_TYPE_NARROWED", true),
            (None, None) => {}
        }
    }

    /// Whether every schema of `from` is compatible with a distinct schema of `to` (a matching;
    /// `reverse` compares to→from, for product types whose new conjuncts must accept the old).
    fn matches_all(&mut self, path: &str, from: &[Loc<'a>], to: &[Loc<'a>], reverse: bool) -> bool {
        let mut fits = vec![vec![false; to.len()]; from.len()];
        for (i, f) in from.iter().enumerate() {
            for (j, t) in to.iter().enumerate() {
                let d = if reverse { self.compare(&format!("{path}/{j}"), *t, *f) } else { self.compare(&format!("{path}/{i}"), *f, *t) };
                fits[i][j] = compatible(&d);
            }
        }
        // Kuhn's augmenting paths: small sets, so the simple algorithm.
        fn augment(i: usize, fits: &[Vec<bool>], seen: &mut [bool], owner: &mut [Option<usize>]) -> bool {
            for j in 0..owner.len() {
                if fits[i][j] && !seen[j] {
                    seen[j] = true;
                    if owner[j].is_none_or(|k| augment(k, fits, seen, owner)) {
                        owner[j] = Some(i);
                        return true;
                    }
                }
            }
            false
        }
        let mut owner = vec![None; to.len()];
        (0..from.len()).all(|i| augment(i, &fits, &mut vec![false; to.len()], &mut owner))
    }

    fn keywords(&mut self, path: &str, old: Loc<'a>, new: Loc<'a>, out: &mut Vec<Difference>) {
        let (o, n) = (old.value, new.value);
        match (enum_values(o), enum_values(n)) {
            (Some(ov), Some(nv)) => {
                let grew = ov.iter().all(|v| nv.contains(v));
                let shrank = nv.iter().all(|v| ov.contains(v));
                match (grew, shrank) {
                    (true, true) => {}
                    (true, false) => push(out, path, "ENUM_ARRAY_EXTENDED", true),
                    (false, true) => push(out, path, "ENUM_ARRAY_NARROWED", false),
                    (false, false) => push(out, path, "ENUM_ARRAY_CHANGED", false),
                }
            }
            (None, Some(_)) => push(out, path, "ENUM_ARRAY_NARROWED", false),
            (Some(ov), None) => {
                // Dropping an enum is compatible when the new schema accepts every old value's type.
                if let Some(nt) = types(n) {
                    if !ov.iter().all(|v| admits_type(&nt, value_type(v))) {
                        push(out, path, "TYPE_CHANGED", false);
                        return;
                    }
                }
                push(out, path, "ENUM_ARRAY_EXTENDED", true);
                return;
            }
            (None, None) => {}
        }
        match (types(o), types(n)) {
            (Some(ot), Some(nt)) => {
                let widened = ot.iter().all(|t| admits_type(&nt, t));
                let narrowed = nt.iter().all(|t| admits_type(&ot, t));
                match (widened, narrowed) {
                    (true, true) => {}
                    (true, false) => push(out, path, "TYPE_EXTENDED", true),
                    (false, true) => push(out, path, "TYPE_NARROWED", false),
                    (false, false) => {
                        push(out, path, "TYPE_CHANGED", false);
                        return;
                    }
                }
            }
            (None, Some(_)) if enum_values(o).is_none() => push(out, path, "TYPE_NARROWED", false),
            (Some(_), None) => push(out, path, "TYPE_EXTENDED", true),
            _ => {}
        }
        self.strings(path, o, n, out);
        self.numbers(path, o, n, out);
        self.objects(path, old, new, out);
        self.arrays(path, old, new, out);
        if ["if", "then", "else"].iter().any(|k| o.get(*k) != n.get(*k)) {
            push(out, path, "CONDITIONAL_CHANGED", false);
        }
    }

    fn strings(&mut self, path: &str, o: &Value, n: &Value, out: &mut Vec<Difference>) {
        upper_bound(out, path, "MAX_LENGTH", number(o, "maxLength"), number(n, "maxLength"));
        lower_bound(out, path, "MIN_LENGTH", number(o, "minLength"), number(n, "minLength"));
        match (o.get("pattern"), n.get("pattern")) {
            (None, Some(_)) => push(out, path, "PATTERN_ADDED", false),
            (Some(_), None) => push(out, path, "PATTERN_REMOVED", true),
            (Some(a), Some(b)) if a != b => push(out, path, "PATTERN_CHANGED", false),
            _ => {}
        }
    }

    fn numbers(&mut self, path: &str, o: &Value, n: &Value, out: &mut Vec<Difference>) {
        upper_bound(out, path, "MAXIMUM", number(o, "maximum"), number(n, "maximum"));
        lower_bound(out, path, "MINIMUM", number(o, "minimum"), number(n, "minimum"));
        upper_bound(out, path, "EXCLUSIVE_MAXIMUM", number(o, "exclusiveMaximum"), number(n, "exclusiveMaximum"));
        lower_bound(out, path, "EXCLUSIVE_MINIMUM", number(o, "exclusiveMinimum"), number(n, "exclusiveMinimum"));
        // Draft 4 spells exclusivity as a flag on maximum/minimum.
        for (key, kind) in [("exclusiveMaximum", "EXCLUSIVE_MAXIMUM"), ("exclusiveMinimum", "EXCLUSIVE_MINIMUM")] {
            let (a, b) = (o.get(key).and_then(Value::as_bool).unwrap_or(false), n.get(key).and_then(Value::as_bool).unwrap_or(false));
            if a != b {
                out.push(Difference { path: path.to_string(), kind: if b { flag_added(kind) } else { flag_removed(kind) }, compatible: !b });
            }
        }
        match (number(o, "multipleOf"), number(n, "multipleOf")) {
            (None, Some(_)) => push(out, path, "MULTIPLE_OF_ADDED", false),
            (Some(_), None) => push(out, path, "MULTIPLE_OF_REMOVED", true),
            (Some(a), Some(b)) if a != b => {
                if divides(b, a) {
                    push(out, path, "MULTIPLE_OF_REDUCED", true);
                } else if divides(a, b) {
                    push(out, path, "MULTIPLE_OF_EXPANDED", false);
                } else {
                    push(out, path, "MULTIPLE_OF_CHANGED", false);
                }
            }
            _ => {}
        }
    }

    fn objects(&mut self, path: &str, old: Loc<'a>, new: Loc<'a>, out: &mut Vec<Difference>) {
        let (o, n) = (old.value, new.value);
        upper_bound(out, path, "MAX_PROPERTIES", number(o, "maxProperties"), number(n, "maxProperties"));
        lower_bound(out, path, "MIN_PROPERTIES", number(o, "minProperties"), number(n, "minProperties"));
        let props = |l: Loc<'a>| l.value.get("properties").and_then(Value::as_object).unwrap_or(&EMPTY);
        let (op, np) = (props(old), props(new));
        let required = |v: &Value| -> BTreeSet<String> { v.get("required").and_then(Value::as_array).map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default() };
        let (or, nr) = (required(o), required(n));
        for (name, ov) in op {
            let p = format!("{path}/properties/{}", escape(name));
            match np.get(name) {
                Some(nv) => {
                    let d = self.compare(&p, old.at(ov), new.at(nv));
                    out.extend(d);
                }
                None => match self.cover(new, name) {
                    Cover::Anything => push(out, &p, "PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL", true),
                    Cover::Nothing => push(out, &p, "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL", false),
                    Cover::Schemas(s) => {
                        let ok = s.iter().all(|c| compatible(&self.compare(&p, old.at(ov), *c)));
                        push(out, &p, if ok { "PROPERTY_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL" } else { "PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL" }, ok);
                    }
                },
            }
        }
        for (name, nv) in np {
            if op.contains_key(name) {
                continue;
            }
            let p = format!("{path}/properties/{}", escape(name));
            match self.cover(old, name) {
                Cover::Anything if accepts_anything(self.new.deref(new.at(nv)).value) => push(out, &p, "PROPERTY_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL", true),
                Cover::Anything => push(out, &p, "PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL", false),
                Cover::Nothing if nr.contains(name) => push(out, &p, "REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL", false),
                Cover::Nothing => push(out, &p, "OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL", true),
                Cover::Schemas(s) => {
                    let ok = s.iter().all(|c| compatible(&self.compare(&p, *c, new.at(nv))));
                    push(out, &p, if ok { "PROPERTY_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL" } else { "PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL" }, ok);
                }
            }
        }
        for name in nr.difference(&or) {
            let p = format!("{path}/required/{}", escape(name));
            if !op.contains_key(name) && matches!(self.cover(old, name), Cover::Nothing) {
                continue; // said above, as a required property added to a closed model
            }
            let has_default = np.get(name).is_some_and(|v| self.new.deref(new.at(v)).value.get("default").is_some());
            push(out, &p, if has_default { "REQUIRED_ATTRIBUTE_WITH_DEFAULT_ADDED" } else { "REQUIRED_ATTRIBUTE_ADDED" }, has_default);
        }
        for name in or.difference(&nr) {
            push(out, &format!("{path}/required/{}", escape(name)), "REQUIRED_ATTRIBUTE_REMOVED", true);
        }
        // What the models say about unlisted names.
        let ap = |l: Loc<'a>| l.get("additionalProperties");
        match (ap(old).map(|l| l.value), ap(new).map(|l| l.value)) {
            (Some(Value::Bool(false)), Some(Value::Bool(false))) => {}
            (_, Some(Value::Bool(false))) => push(out, &format!("{path}/additionalProperties"), "ADDITIONAL_PROPERTIES_REMOVED", false),
            (Some(Value::Bool(false)), _) => push(out, &format!("{path}/additionalProperties"), "ADDITIONAL_PROPERTIES_ADDED", true),
            (Some(a), Some(b)) if !(accepts_anything(a) && accepts_anything(b)) => {
                let d = self.compare(&format!("{path}/additionalProperties"), old.at(a), new.at(b));
                let kind = if compatible(&d) { "ADDITIONAL_PROPERTIES_EXTENDED" } else { "ADDITIONAL_PROPERTIES_NARROWED" };
                if !d.is_empty() {
                    push(out, &format!("{path}/additionalProperties"), kind, compatible(&d));
                }
            }
            (None, Some(b)) if !accepts_anything(b) => push(out, &format!("{path}/additionalProperties"), "ADDITIONAL_PROPERTIES_NARROWED", false),
            (Some(a), None) if !accepts_anything(a) => push(out, &format!("{path}/additionalProperties"), "ADDITIONAL_PROPERTIES_EXTENDED", true),
            _ => {}
        }
        let pp = |l: Loc<'a>| l.value.get("patternProperties").and_then(Value::as_object).unwrap_or(&EMPTY);
        let (opp, npp) = (pp(old), pp(new));
        for (pattern, ov) in opp {
            let p = format!("{path}/patternProperties/{}", escape(pattern));
            match npp.get(pattern) {
                Some(nv) => out.extend(self.compare(&p, old.at(ov), new.at(nv))),
                None => {
                    let fallback = ap(new).unwrap_or(new.at(&TRUE));
                    let d = self.compare(&p, old.at(ov), fallback);
                    push(out, &p, if compatible(&d) { "PATTERN_PROPERTY_REMOVED" } else { "PATTERN_PROPERTY_REMOVED_NOT_COVERED" }, compatible(&d));
                }
            }
        }
        for (pattern, nv) in npp {
            if !opp.contains_key(pattern) {
                let p = format!("{path}/patternProperties/{}", escape(pattern));
                let d = match ap(old) {
                    Some(a) => self.compare(&p, a, new.at(nv)),
                    None => self.compare(&p, old.at(&TRUE), new.at(nv)),
                };
                push(out, &p, if compatible(&d) { "PATTERN_PROPERTY_ADDED" } else { "PATTERN_PROPERTY_ADDED_NOT_COVERED" }, compatible(&d));
            }
        }
        match (old.get("propertyNames"), new.get("propertyNames")) {
            (Some(a), Some(b)) => out.extend(self.compare(&format!("{path}/propertyNames"), a, b)),
            (None, Some(b)) if !accepts_anything(b.value) => push(out, &format!("{path}/propertyNames"), "PROPERTY_NAMES_ADDED", false),
            _ => {}
        }
        self.dependencies(path, o, n, out);
    }

    /// `dependencies`, `dependentRequired`, `dependentSchemas`: a new or larger dependency
    /// constrains documents; a smaller or removed one frees them.
    fn dependencies(&mut self, path: &str, o: &Value, n: &Value, out: &mut Vec<Difference>) {
        for key in ["dependencies", "dependentRequired", "dependentSchemas"] {
                let (od, nd) = (o.get(key).and_then(Value::as_object).unwrap_or(&EMPTY), n.get(key).and_then(Value::as_object).unwrap_or(&EMPTY));
            for (name, nv) in nd {
                let p = format!("{path}/{key}/{}", escape(name));
                match (od.get(name), nv) {
                    (None, _) => push(out, &p, "DEPENDENCY_ADDED", false),
                    (Some(Value::Array(a)), Value::Array(b)) => {
                        if !b.iter().all(|x| a.contains(x)) {
                            push(out, &p, "DEPENDENCY_ARRAY_EXTENDED", false);
                        } else if b.len() < a.len() {
                            push(out, &p, "DEPENDENCY_ARRAY_NARROWED", true);
                        }
                    }
                    (Some(a), b) if a != b => push(out, &p, "DEPENDENCY_CHANGED", false),
                    _ => {}
                }
            }
            for name in od.keys().filter(|k| !nd.contains_key(*k)) {
                push(out, &format!("{path}/{key}/{}", escape(name)), "DEPENDENCY_REMOVED", true);
            }
        }
    }

    /// What `schema`'s object model says about a property it does not list.
    fn cover(&self, schema: Loc<'a>, name: &str) -> Cover<'a> {
        let mut matched = Vec::new();
        if let Some(pp) = schema.value.get("patternProperties").and_then(Value::as_object) {
            for (pattern, v) in pp {
                if Regex::new(pattern).is_ok_and(|r| r.is_match(name)) {
                    matched.push(schema.at(v));
                }
            }
        }
        if !matched.is_empty() {
            return Cover::Schemas(matched);
        }
        match schema.get("additionalProperties") {
            None => Cover::Anything,
            Some(a) if accepts_anything(a.value) => Cover::Anything,
            Some(a) if accepts_nothing(a.value) => Cover::Nothing,
            Some(a) => Cover::Schemas(vec![a]),
        }
    }

    fn arrays(&mut self, path: &str, old: Loc<'a>, new: Loc<'a>, out: &mut Vec<Difference>) {
        let (o, n) = (old.value, new.value);
        upper_bound(out, path, "MAX_ITEMS", number(o, "maxItems"), number(n, "maxItems"));
        lower_bound(out, path, "MIN_ITEMS", number(o, "minItems"), number(n, "minItems"));
        match (o.get("uniqueItems").and_then(Value::as_bool).unwrap_or(false), n.get("uniqueItems").and_then(Value::as_bool).unwrap_or(false)) {
            (false, true) => push(out, path, "UNIQUE_ITEMS_ADDED", false),
            (true, false) => push(out, path, "UNIQUE_ITEMS_REMOVED", true),
            _ => {}
        }
        match (old.get("contains"), new.get("contains")) {
            (None, Some(_)) => push(out, &format!("{path}/contains"), "CONTAINS_ADDED", false),
            (Some(_), None) => push(out, &format!("{path}/contains"), "CONTAINS_REMOVED", true),
            (Some(a), Some(b)) => out.extend(self.compare(&format!("{path}/contains"), a, b)),
            _ => {}
        }
        let (ot, orest) = tuple(old);
        let (nt, nrest) = tuple(new);
        for i in 0..ot.len().max(nt.len()) {
            let p = format!("{path}/items/{i}");
            match (ot.get(i), nt.get(i)) {
                (Some(a), Some(b)) => out.extend(self.compare(&p, *a, *b)),
                (Some(a), None) => match &nrest {
                    Cover::Anything => push(out, &p, "ITEM_REMOVED_FROM_OPEN_CONTENT_MODEL", true),
                    Cover::Nothing => push(out, &p, "ITEM_REMOVED_FROM_CLOSED_CONTENT_MODEL", false),
                    Cover::Schemas(s) => {
                        let ok = compatible(&self.compare(&p, *a, s[0]));
                        push(out, &p, if ok { "ITEM_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL" } else { "ITEM_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL" }, ok);
                    }
                },
                (None, Some(b)) => match &orest {
                    Cover::Anything if accepts_anything(self.new.deref(*b).value) => {}
                    Cover::Anything => push(out, &p, "ITEM_ADDED_TO_OPEN_CONTENT_MODEL", false),
                    Cover::Nothing => push(out, &p, "ITEM_ADDED_TO_CLOSED_CONTENT_MODEL", true),
                    Cover::Schemas(s) => {
                        let ok = compatible(&self.compare(&p, s[0], *b));
                        push(out, &p, if ok { "ITEM_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL" } else { "ITEM_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL" }, ok);
                    }
                },
                (None, None) => {}
            }
        }
        let p = if ot.is_empty() && nt.is_empty() { format!("{path}/items") } else { format!("{path}/additionalItems") };
        match (orest, nrest) {
            (_, Cover::Anything) | (Cover::Nothing, _) => {}
            (Cover::Anything, _) | (_, Cover::Nothing) => push(out, &p, if ot.is_empty() && nt.is_empty() { "TYPE_NARROWED" } else { "ADDITIONAL_ITEMS_REMOVED" }, false),
            (Cover::Schemas(a), Cover::Schemas(b)) => out.extend(self.compare(&p, a[0], b[0])),
        }
    }
}

/// An array schema as a tuple: the listed positions and what any further item may be
/// (`items` as one schema is a tuple of none; `prefixItems` is 2020-12's spelling).
fn tuple(l: Loc<'_>) -> (Vec<Loc<'_>>, Cover<'_>) {
    let rest = |key: &str| match l.get(key) {
        None => Cover::Anything,
        Some(a) if accepts_anything(a.value) => Cover::Anything,
        Some(a) if accepts_nothing(a.value) => Cover::Nothing,
        Some(a) => Cover::Schemas(vec![a]),
    };
    if let Some(Value::Array(prefix)) = l.value.get("prefixItems") {
        return (prefix.iter().map(|v| l.at(v)).collect(), rest("items"));
    }
    match l.value.get("items") {
        Some(Value::Array(prefix)) => (prefix.iter().map(|v| l.at(v)).collect(), rest("additionalItems")),
        _ => (Vec::new(), rest("items")),
    }
}

fn value_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A maximum: adding or lowering it rejects documents the old schema took.
fn upper_bound(out: &mut Vec<Difference>, path: &str, name: &'static str, old: Option<f64>, new: Option<f64>) {
    bound(out, path, name, old, new, true);
}

/// A minimum: adding or raising it rejects documents the old schema took.
fn lower_bound(out: &mut Vec<Difference>, path: &str, name: &'static str, old: Option<f64>, new: Option<f64>) {
    bound(out, path, name, old, new, false);
}

fn bound(out: &mut Vec<Difference>, path: &str, name: &'static str, old: Option<f64>, new: Option<f64>, upper: bool) {
    let kind = |change: &str| -> &'static str { kind_name(name, change) };
    match (old, new) {
        (None, Some(_)) => push(out, path, kind("ADDED"), false),
        (Some(_), None) => push(out, path, kind("REMOVED"), true),
        (Some(a), Some(b)) if b > a => push(out, path, kind("INCREASED"), upper),
        (Some(a), Some(b)) if b < a => push(out, path, kind("DECREASED"), !upper),
        _ => {}
    }
}

/// `MAX_LENGTH` + `INCREASED` → `MAX_LENGTH_INCREASED`, from a fixed table (kinds are static).
fn kind_name(name: &str, change: &str) -> &'static str {
    const KINDS: &[&str] = &[
        "MAX_LENGTH_ADDED", "MAX_LENGTH_REMOVED", "MAX_LENGTH_INCREASED", "MAX_LENGTH_DECREASED",
        "MIN_LENGTH_ADDED", "MIN_LENGTH_REMOVED", "MIN_LENGTH_INCREASED", "MIN_LENGTH_DECREASED",
        "MAXIMUM_ADDED", "MAXIMUM_REMOVED", "MAXIMUM_INCREASED", "MAXIMUM_DECREASED",
        "MINIMUM_ADDED", "MINIMUM_REMOVED", "MINIMUM_INCREASED", "MINIMUM_DECREASED",
        "EXCLUSIVE_MAXIMUM_ADDED", "EXCLUSIVE_MAXIMUM_REMOVED", "EXCLUSIVE_MAXIMUM_INCREASED", "EXCLUSIVE_MAXIMUM_DECREASED",
        "EXCLUSIVE_MINIMUM_ADDED", "EXCLUSIVE_MINIMUM_REMOVED", "EXCLUSIVE_MINIMUM_INCREASED", "EXCLUSIVE_MINIMUM_DECREASED",
        "MAX_ITEMS_ADDED", "MAX_ITEMS_REMOVED", "MAX_ITEMS_INCREASED", "MAX_ITEMS_DECREASED",
        "MIN_ITEMS_ADDED", "MIN_ITEMS_REMOVED", "MIN_ITEMS_INCREASED", "MIN_ITEMS_DECREASED",
        "MAX_PROPERTIES_ADDED", "MAX_PROPERTIES_REMOVED", "MAX_PROPERTIES_INCREASED", "MAX_PROPERTIES_DECREASED",
        "MIN_PROPERTIES_ADDED", "MIN_PROPERTIES_REMOVED", "MIN_PROPERTIES_INCREASED", "MIN_PROPERTIES_DECREASED",
    ];
    KINDS.iter().find(|k| k.strip_prefix(name).and_then(|r| r.strip_prefix('_')) == Some(change)).copied().unwrap_or("CHANGED")
}

fn flag_added(kind: &str) -> &'static str {
    kind_name(kind, "ADDED")
}

fn flag_removed(kind: &str) -> &'static str {
    kind_name(kind, "REMOVED")
}

/// Whether `b` divides `a` (every multiple of `a` is a multiple of `b`).
fn divides(b: f64, a: f64) -> bool {
    b != 0.0 && {
        let q = a / b;
        (q - q.round()).abs() < 1e-9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Document {
        Document::parse(text, &[]).unwrap()
    }

    /// The incompatible kinds of old → new, as "path kind".
    fn breaks(old: &str, new: &str) -> Vec<String> {
        diff(&doc(old), &doc(new)).into_iter().filter(|d| !d.compatible).map(|d| format!("{} {}", d.path, d.kind)).collect()
    }

    fn fine(old: &str, new: &str) {
        assert_eq!(breaks(old, new), Vec::<String>::new(), "{old} -> {new}");
    }

    #[test]
    fn open_models_may_lose_properties_and_closed_models_may_gain_them() {
        let open_ab = r#"{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"}}}"#;
        let open_a = r#"{"type":"object","properties":{"a":{"type":"string"}}}"#;
        fine(open_ab, open_a);
        assert_eq!(breaks(open_a, open_ab), ["#/properties/b PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL"]);
        fine(open_a, r#"{"type":"object","properties":{"a":{"type":"string"},"b":{}}}"#);
        let closed_a = r#"{"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false}"#;
        let closed_ab = r#"{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"}},"additionalProperties":false}"#;
        fine(closed_a, closed_ab);
        assert_eq!(breaks(closed_ab, closed_a), ["#/properties/b PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL"]);
        let required = r#"{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"}},"required":["b"],"additionalProperties":false}"#;
        assert_eq!(breaks(closed_a, required), ["#/properties/b REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL"]);
        assert_eq!(breaks(open_a, closed_a), ["#/additionalProperties ADDITIONAL_PROPERTIES_REMOVED"]);
        fine(closed_a, open_a);
    }

    #[test]
    fn partially_open_models_judge_by_what_covers_the_name() {
        let old = r#"{"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":{"type":"string"}}"#;
        fine(old, r#"{"type":"object","properties":{"a":{"type":"string"},"b":{"type":["string","null"]}},"additionalProperties":{"type":"string"}}"#);
        assert_eq!(
            breaks(old, r#"{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"}},"additionalProperties":{"type":"string"}}"#),
            ["#/properties/b PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"]
        );
        let patterned = r#"{"type":"object","properties":{"x_1":{"type":"integer"}},"patternProperties":{"^x_":{"type":"number"}},"additionalProperties":false}"#;
        fine(patterned, r#"{"type":"object","patternProperties":{"^x_":{"type":"number"}},"additionalProperties":false}"#);
    }

    #[test]
    fn loosening_is_compatible_and_tightening_is_not() {
        fine(r#"{"type":"string","maxLength":5,"minLength":2}"#, r#"{"type":"string","maxLength":10}"#);
        assert_eq!(breaks(r#"{"type":"string","maxLength":10}"#, r#"{"type":"string","maxLength":5}"#), ["# MAX_LENGTH_DECREASED"]);
        assert_eq!(breaks(r#"{"type":"string"}"#, r#"{"type":"string","pattern":"^a"}"#), ["# PATTERN_ADDED"]);
        fine(r#"{"type":"number","minimum":0,"maximum":10}"#, r#"{"type":"number","minimum":-1}"#);
        assert_eq!(breaks(r#"{"type":"number","minimum":0}"#, r#"{"type":"number","minimum":1}"#), ["# MINIMUM_INCREASED"]);
        fine(r#"{"type":"integer","multipleOf":10}"#, r#"{"type":"integer","multipleOf":5}"#);
        assert_eq!(breaks(r#"{"type":"integer","multipleOf":5}"#, r#"{"type":"integer","multipleOf":10}"#), ["# MULTIPLE_OF_EXPANDED"]);
        fine(r#"{"type":"integer"}"#, r#"{"type":"number"}"#);
        assert_eq!(breaks(r#"{"type":"number"}"#, r#"{"type":"integer"}"#), ["# TYPE_NARROWED"]);
        fine(r#"{"type":"string"}"#, r#"{"type":["string","null"]}"#);
        assert_eq!(breaks(r#"{"type":"string"}"#, r#"{"type":"boolean"}"#), ["# TYPE_CHANGED"]);
        fine(r#"{"enum":["a","b"]}"#, r#"{"enum":["a","b","c"]}"#);
        assert_eq!(breaks(r#"{"enum":["a","b"]}"#, r#"{"enum":["a"]}"#), ["# ENUM_ARRAY_NARROWED"]);
        fine(r#"{"type":"string","enum":["a"]}"#, r#"{"type":"string"}"#);
        let with_b = r#"{"type":"object","properties":{"b":{"type":"integer"}}}"#;
        assert_eq!(breaks(with_b, r#"{"type":"object","properties":{"b":{"type":"integer"}},"required":["b"]}"#), ["#/required/b REQUIRED_ATTRIBUTE_ADDED"]);
        fine(with_b, r#"{"type":"object","properties":{"b":{"type":"integer","default":0}},"required":["b"]}"#);
        fine(r#"{"type":"object","properties":{"b":{"type":"integer"}},"required":["b"]}"#, with_b);
        assert_eq!(breaks(r#"{"type":"array","items":{"type":"string"}}"#, r#"{"type":"array","items":{"type":"string"},"uniqueItems":true}"#), ["# UNIQUE_ITEMS_ADDED"]);
        assert_eq!(breaks(r#"{"type":"array","items":{"type":"number"}}"#, r#"{"type":"array","items":{"type":"integer"}}"#), ["#/items TYPE_NARROWED"]);
        assert_eq!(breaks("{}", r#"{"type":"string"}"#), ["# TYPE_NARROWED"]);
        fine(r#"{"type":"string"}"#, "true");
    }

    #[test]
    fn sum_types_may_grow_and_product_types_may_shrink() {
        fine(r#"{"type":"string"}"#, r#"{"oneOf":[{"type":"null"},{"type":"string"}]}"#);
        fine(r#"{"oneOf":[{"type":"string"},{"type":"null"}]}"#, r#"{"oneOf":[{"type":"null"},{"type":"string"},{"type":"integer"}]}"#);
        assert_eq!(breaks(r#"{"oneOf":[{"type":"string"},{"type":"null"}]}"#, r#"{"oneOf":[{"type":"string"}]}"#), ["#/oneOf SUM_TYPE_NARROWED"]);
        assert_eq!(breaks(r#"{"oneOf":[{"type":"string"},{"type":"null"}]}"#, r#"{"type":"string"}"#), ["#/oneOf SUM_TYPE_NARROWED"]);
        assert_eq!(breaks(r#"{"allOf":[{"type":"string"}]}"#, r#"{"allOf":[{"type":"string"},{"maxLength":3}]}"#), ["#/allOf PRODUCT_TYPE_EXTENDED"]);
        fine(r#"{"allOf":[{"type":"string"},{"maxLength":3}]}"#, r#"{"allOf":[{"type":"string"}]}"#);
    }

    #[test]
    fn references_resolve_in_the_document_and_across_subjects() {
        let local = |t: &str| format!(r##"{{"type":"object","properties":{{"a":{{"$ref":"#/definitions/A"}}}},"definitions":{{"A":{{"type":"{t}"}}}}}}"##);
        fine(&local("integer"), &local("number"));
        assert_eq!(breaks(&local("number"), &local("integer")), ["#/properties/a TYPE_NARROWED"]);
        let refs = |t: &str| vec![("address.json".to_string(), format!(r#"{{"type":"object","properties":{{"zip":{{"type":"{t}"}}}}}}"#))];
        let main = r#"{"type":"object","properties":{"home":{"$ref":"address.json"}}}"#;
        let (old, new) = (Document::parse(main, &refs("string")).unwrap(), Document::parse(main, &refs("integer")).unwrap());
        let d: Vec<_> = diff(&old, &new).into_iter().filter(|d| !d.compatible).map(|d| format!("{} {}", d.path, d.kind)).collect();
        assert_eq!(d, ["#/properties/home/properties/zip TYPE_CHANGED"]);
        let recursive = r##"{"type":"object","properties":{"next":{"$ref":"#"},"v":{"type":"integer"}}}"##;
        fine(recursive, recursive);
        assert!(Document::parse(r#"{"$ref":"missing.json"}"#, &[]).unwrap_err().contains("does not resolve"));
        assert!(Document::parse(r#"{"type":"string","pattern":"("}"#, &[]).is_err());
        assert!(Document::parse("[1]", &[]).is_err());
    }
}
