//! Protobuf schemas: `.proto` text or a base64 `FileDescriptorProto` (what Confluent's
//! serializers register) in, one printed `.proto` text stored, a compiled descriptor out for
//! `format=serialized`, and compatibility judged with Confluent's diff kinds.
//!
//! Parsing and compiling (imports resolved against the schema's references, Google's well-known
//! files built in) are protox's; printing and the diff are here. The printed text is the
//! canonical form: two spellings of one file (comments, spacing, option order aside) print the
//! same and so get the same id, and printing is a fixpoint (printing the parse of a printed file
//! gives it back).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use base64::Engine as _;
use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto, UninterpretedOption};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use crate::compat::Difference;

/// The name the schema's own file has in a compiled descriptor (Confluent's default name).
pub const FILE_NAME: &str = "default";

/// Parses `.proto` text, or a base64 `FileDescriptorProto`, without resolving imports or type
/// names. The error names line and column.
pub fn parse(text: &str) -> Result<FileDescriptorProto, String> {
    if let Some(file) = decode_base64(text) {
        return Ok(file);
    }
    protox_parse::parse(FILE_NAME, text).map_err(|e| {
        let at = e.span().map(|s| position(text, s.start)).map(|(l, c)| format!(" at line {l}, column {c}")).unwrap_or_default();
        format!("invalid Protobuf schema{at}: {e}")
    })
}

fn decode_base64(text: &str) -> Option<FileDescriptorProto> {
    let trimmed = text.trim();
    if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')) {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(trimmed).ok()?;
    let file = FileDescriptorProto::decode(bytes.as_slice()).ok()?;
    // Text that happens to be base64 (a one-word schema) rarely decodes to a file with a type.
    (!file.message_type.is_empty() || !file.enum_type.is_empty() || !file.service.is_empty()).then_some(file)
}

fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The canonical text of a schema (see the module notes); `None` when it does not parse.
pub fn canonical(text: &str) -> Option<String> {
    parse(text).ok().map(|f| print(&f))
}

/// Compiles a schema with its references (name → text, transitively), resolving imports and
/// types. Returns every file, the schema's own last (named [`FILE_NAME`]).
pub fn compile(text: &str, references: &[(String, String)]) -> Result<Vec<FileDescriptorProto>, String> {
    let mut files = HashMap::new();
    let mut main = parse(text)?;
    main.name = Some(FILE_NAME.to_string());
    files.insert(FILE_NAME.to_string(), main);
    for (name, text) in references {
        let mut file = parse(text).map_err(|e| format!("reference '{name}': {e}"))?;
        file.name = Some(name.clone());
        files.insert(name.clone(), file);
    }
    let mut chain = ChainFileResolver::new();
    chain.add(Sources(files));
    chain.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    compiler.include_imports(true).include_source_info(false);
    compiler.open_file(FILE_NAME).map_err(|e| format!("invalid Protobuf schema: {e}"))?;
    let mut set = compiler.file_descriptor_set().file;
    if let Some(i) = set.iter().position(|f| f.name() == FILE_NAME) {
        let main = set.remove(i);
        set.push(main);
    }
    Ok(set)
}

struct Sources(HashMap<String, FileDescriptorProto>);

impl FileResolver for Sources {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        self.0.get(name).map(|f| File::from_file_descriptor_proto(f.clone())).ok_or_else(|| protox::Error::file_not_found(name))
    }
}

/// The compiled schema as Confluent's `format=serialized` answers it: base64 of its
/// `FileDescriptorProto`.
pub fn serialized(text: &str, references: &[(String, String)]) -> Result<String, String> {
    let files = compile(text, references)?;
    let main = files.last().ok_or("nothing compiled")?;
    Ok(base64::engine::general_purpose::STANDARD.encode(main.encode_to_vec()))
}

// ---- printing ----

/// Prints a file as `.proto` text: syntax, package, imports, options, then types in order.
pub fn print(file: &FileDescriptorProto) -> String {
    let mut out = String::new();
    let proto3 = file.syntax() == "proto3";
    let syntax = if file.syntax.is_none() || file.syntax() == "proto2" { "proto2" } else { file.syntax() };
    let _ = writeln!(out, "syntax = {};", quote(syntax));
    if let Some(package) = &file.package {
        let _ = writeln!(out, "package {package};");
    }
    if !file.dependency.is_empty() {
        out.push('\n');
        for (i, d) in file.dependency.iter().enumerate() {
            let kind = if file.public_dependency.contains(&(i as i32)) {
                "public "
            } else if file.weak_dependency.contains(&(i as i32)) {
                "weak "
            } else {
                ""
            };
            let _ = writeln!(out, "import {kind}{};", quote(d));
        }
    }
    let options = file.options.as_ref().map(file_options).unwrap_or_default();
    if !options.is_empty() {
        out.push('\n');
        for o in options {
            let _ = writeln!(out, "option {o};");
        }
    }
    let p = Printer { proto3 };
    for m in &file.message_type {
        out.push('\n');
        p.message(&mut out, m, 0);
    }
    for e in &file.enum_type {
        out.push('\n');
        p.enumeration(&mut out, e, 0);
    }
    p.extensions(&mut out, &file.extension, 0);
    for s in &file.service {
        out.push('\n');
        let _ = writeln!(out, "service {} {{", s.name());
        for o in s.options.as_ref().map(|o| uninterpreted(&o.uninterpreted_option, o.deprecated)).unwrap_or_default() {
            let _ = writeln!(out, "  option {o};");
        }
        for m in &s.method {
            let stream = |yes: bool| if yes { "stream " } else { "" };
            let _ = write!(out, "  rpc {} ({}{}) returns ({}{})", m.name(), stream(m.client_streaming()), m.input_type(), stream(m.server_streaming()), m.output_type());
            let options = m.options.as_ref().map(|o| uninterpreted(&o.uninterpreted_option, o.deprecated)).unwrap_or_default();
            if options.is_empty() {
                out.push_str(";\n");
            } else {
                out.push_str(" {\n");
                for o in options {
                    let _ = writeln!(out, "    option {o};");
                }
                out.push_str("  }\n");
            }
        }
        out.push_str("}\n");
    }
    out
}

struct Printer {
    proto3: bool,
}

impl Printer {
    fn message(&self, out: &mut String, m: &DescriptorProto, depth: usize) {
        let pad = "  ".repeat(depth);
        let _ = writeln!(out, "{pad}message {} {{", m.name());
        let inner = "  ".repeat(depth + 1);
        for o in m.options.as_ref().map(|o| uninterpreted(&o.uninterpreted_option, o.deprecated)).unwrap_or_default() {
            let _ = writeln!(out, "{inner}option {o};");
        }
        let entries: HashMap<&str, &DescriptorProto> = m.nested_type.iter().filter(|n| n.options.as_ref().is_some_and(|o| o.map_entry())).map(|n| (n.name(), n)).collect();
        let synthetic: BTreeSet<i32> = (0..m.oneof_decl.len() as i32).filter(|&i| m.field.iter().filter(|f| f.oneof_index == Some(i)).all(|f| f.proto3_optional())).collect();
        let mut oneofs_done = BTreeSet::new();
        for f in &m.field {
            match f.oneof_index {
                Some(i) if !synthetic.contains(&i) => {
                    if oneofs_done.insert(i) {
                        let decl = &m.oneof_decl[i as usize];
                        let _ = writeln!(out, "{inner}oneof {} {{", decl.name());
                        for o in decl.options.as_ref().map(|o| uninterpreted(&o.uninterpreted_option, None)).unwrap_or_default() {
                            let _ = writeln!(out, "{inner}  option {o};");
                        }
                        for g in m.field.iter().filter(|g| g.oneof_index == Some(i)) {
                            self.field(out, g, &entries, depth + 2, true);
                        }
                        let _ = writeln!(out, "{inner}}}");
                    }
                }
                _ => self.field(out, f, &entries, depth + 1, false),
            }
        }
        if !m.reserved_range.is_empty() {
            let _ = writeln!(out, "{inner}reserved {};", m.reserved_range.iter().map(|r| range(r.start(), r.end() - 1, 536_870_911)).collect::<Vec<_>>().join(", "));
        }
        if !m.reserved_name.is_empty() {
            let _ = writeln!(out, "{inner}reserved {};", m.reserved_name.iter().map(|n| quote(n)).collect::<Vec<_>>().join(", "));
        }
        for r in &m.extension_range {
            let _ = writeln!(out, "{inner}extensions {};", range(r.start(), r.end() - 1, 536_870_911));
        }
        for n in &m.nested_type {
            if !entries.contains_key(n.name()) {
                self.message(out, n, depth + 1);
            }
        }
        for e in &m.enum_type {
            self.enumeration(out, e, depth + 1);
        }
        self.extensions(out, &m.extension, depth + 1);
        let _ = writeln!(out, "{pad}}}");
    }

    fn field(&self, out: &mut String, f: &FieldDescriptorProto, entries: &HashMap<&str, &DescriptorProto>, depth: usize, in_oneof: bool) {
        let pad = "  ".repeat(depth);
        let entry = (f.label() == Label::Repeated && f.r#type.is_none_or(|_| f.r#type() == Type::Message)).then(|| entries.get(last_segment(f.type_name()))).flatten();
        let kind = match entry {
            Some(e) => {
                let part = |n: i32| e.field.iter().find(|g| g.number() == n).map(type_name).unwrap_or_default();
                format!("map<{}, {}>", part(1), part(2))
            }
            None => {
                let label = match f.label() {
                    _ if in_oneof => "",
                    Label::Repeated => "repeated ",
                    Label::Required => "required ",
                    Label::Optional if f.proto3_optional() || !self.proto3 => "optional ",
                    Label::Optional => "",
                };
                format!("{label}{}", type_name(f))
            }
        };
        let mut options = Vec::new();
        if let Some(d) = &f.default_value {
            let value = if matches!(f.r#type.map(|_| f.r#type()), Some(Type::String | Type::Bytes)) { quote(d) } else { d.clone() };
            options.push(format!("default = {value}"));
        }
        if let Some(j) = &f.json_name {
            // Only a name other than the one protoc derives is worth keeping.
            if *j != json_name(f.name()) {
                options.push(format!("json_name = {}", quote(j)));
            }
        }
        if let Some(o) = &f.options {
            if let Some(p) = o.packed {
                options.push(format!("packed = {p}"));
            }
            if let Some(l) = o.lazy {
                options.push(format!("lazy = {l}"));
            }
            options.extend(uninterpreted(&o.uninterpreted_option, o.deprecated));
        }
        let options = if options.is_empty() { String::new() } else { format!(" [{}]", options.join(", ")) };
        let _ = writeln!(out, "{pad}{kind} {} = {}{options};", f.name(), f.number());
    }

    fn enumeration(&self, out: &mut String, e: &EnumDescriptorProto, depth: usize) {
        let pad = "  ".repeat(depth);
        let _ = writeln!(out, "{pad}enum {} {{", e.name());
        for o in e.options.as_ref().map(|o| {
            let mut v = uninterpreted(&o.uninterpreted_option, o.deprecated);
            if let Some(a) = o.allow_alias {
                v.insert(0, format!("allow_alias = {a}"));
            }
            v
        }).unwrap_or_default() {
            let _ = writeln!(out, "{pad}  option {o};");
        }
        for v in &e.value {
            let options = v.options.as_ref().map(|o| uninterpreted(&o.uninterpreted_option, o.deprecated)).unwrap_or_default();
            let options = if options.is_empty() { String::new() } else { format!(" [{}]", options.join(", ")) };
            let _ = writeln!(out, "{pad}  {} = {}{options};", v.name(), v.number());
        }
        if !e.reserved_range.is_empty() {
            let _ = writeln!(out, "{pad}  reserved {};", e.reserved_range.iter().map(|r| range(r.start(), r.end(), i32::MAX)).collect::<Vec<_>>().join(", "));
        }
        if !e.reserved_name.is_empty() {
            let _ = writeln!(out, "{pad}  reserved {};", e.reserved_name.iter().map(|n| quote(n)).collect::<Vec<_>>().join(", "));
        }
        let _ = writeln!(out, "{pad}}}");
    }

    fn extensions(&self, out: &mut String, fields: &[FieldDescriptorProto], depth: usize) {
        let mut by_extendee: BTreeMap<&str, Vec<&FieldDescriptorProto>> = BTreeMap::new();
        for f in fields {
            by_extendee.entry(f.extendee()).or_default().push(f);
        }
        let pad = "  ".repeat(depth);
        for (extendee, fields) in by_extendee {
            let _ = writeln!(out, "{pad}extend {extendee} {{");
            for f in fields {
                self.field(out, f, &HashMap::new(), depth + 1, false);
            }
            let _ = writeln!(out, "{pad}}}");
        }
    }
}

fn range(start: i32, end: i32, max: i32) -> String {
    match end {
        e if e == start => start.to_string(),
        e if e >= max => format!("{start} to max"),
        e => format!("{start} to {e}"),
    }
}

fn last_segment(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

fn type_name(f: &FieldDescriptorProto) -> String {
    match f.r#type.map(|_| f.r#type()) {
        None | Some(Type::Message | Type::Enum | Type::Group) => f.type_name().to_string(),
        Some(t) => t.as_str_name().trim_start_matches("TYPE_").to_ascii_lowercase(),
    }
}

/// protoc's JSON name: snake_case to lowerCamelCase.
fn json_name(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\{:03o}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn file_options(o: &prost_types::FileOptions) -> Vec<String> {
    let mut out = Vec::new();
    let strings = [
        ("java_package", &o.java_package),
        ("java_outer_classname", &o.java_outer_classname),
        ("go_package", &o.go_package),
        ("objc_class_prefix", &o.objc_class_prefix),
        ("csharp_namespace", &o.csharp_namespace),
        ("swift_prefix", &o.swift_prefix),
        ("php_class_prefix", &o.php_class_prefix),
        ("php_namespace", &o.php_namespace),
        ("php_metadata_namespace", &o.php_metadata_namespace),
        ("ruby_package", &o.ruby_package),
    ];
    for (name, value) in strings {
        if let Some(v) = value {
            out.push(format!("{name} = {}", quote(v)));
        }
    }
    let flags = [
        ("java_multiple_files", o.java_multiple_files),
        ("java_string_check_utf8", o.java_string_check_utf8),
        ("cc_generic_services", o.cc_generic_services),
        ("java_generic_services", o.java_generic_services),
        ("py_generic_services", o.py_generic_services),
        ("cc_enable_arenas", o.cc_enable_arenas),
    ];
    for (name, value) in flags {
        if let Some(v) = value {
            out.push(format!("{name} = {v}"));
        }
    }
    if o.optimize_for.is_some() {
        out.push(format!("optimize_for = {}", o.optimize_for().as_str_name()));
    }
    out.extend(uninterpreted(&o.uninterpreted_option, o.deprecated));
    out.sort();
    out
}

/// Options as written (`name = value`), sorted so their order in the source does not matter.
fn uninterpreted(options: &[UninterpretedOption], deprecated: Option<bool>) -> Vec<String> {
    let mut out: Vec<String> = options
        .iter()
        .map(|o| {
            let name = o.name.iter().map(|p| if p.is_extension { format!("({})", p.name_part) } else { p.name_part.clone() }).collect::<Vec<_>>().join(".");
            let value = if let Some(v) = &o.identifier_value {
                v.clone()
            } else if let Some(v) = o.positive_int_value {
                v.to_string()
            } else if let Some(v) = o.negative_int_value {
                v.to_string()
            } else if let Some(v) = o.double_value {
                v.to_string()
            } else if let Some(v) = &o.string_value {
                quote(&String::from_utf8_lossy(v))
            } else if let Some(v) = &o.aggregate_value {
                format!("{{ {v} }}")
            } else {
                String::new()
            };
            format!("{name} = {value}")
        })
        .collect();
    if let Some(d) = deprecated {
        out.push(format!("deprecated = {d}"));
    }
    out.sort();
    out
}

// ---- compatibility ----

/// The changes from `old` to `new` (compiled files: types resolved), with Confluent's kinds.
/// FORWARD checks call it with the two swapped.
pub fn diff(old: &FileDescriptorProto, new: &FileDescriptorProto) -> Vec<Difference> {
    let mut out = Vec::new();
    let d = |out: &mut Vec<Difference>, path: String, kind: &'static str, compatible: bool| out.push(Difference { path, kind, compatible });
    if old.package() != new.package() {
        d(&mut out, "#/".into(), "PACKAGE_CHANGED", false);
    }
    let (om, nm) = (messages(old), messages(new));
    let (oe, ne) = (enums(old), enums(new));
    for (name, o) in &om {
        match nm.get(name) {
            None => d(&mut out, format!("#/{name}"), "MESSAGE_REMOVED", false),
            Some(n) => message_diff(&mut out, name, o, n),
        }
    }
    for name in nm.keys().filter(|n| !om.contains_key(*n)) {
        d(&mut out, format!("#/{name}"), "MESSAGE_ADDED", true);
    }
    for (name, o) in &oe {
        match ne.get(name) {
            None => d(&mut out, format!("#/{name}"), "ENUM_REMOVED", true),
            Some(n) => {
                let (ov, nv): (BTreeMap<_, _>, BTreeMap<_, _>) = (o.value.iter().map(|v| (v.number(), v.name())).collect(), n.value.iter().map(|v| (v.number(), v.name())).collect());
                for (number, name_now) in &nv {
                    match ov.get(number) {
                        None => d(&mut out, format!("#/{name}/{number}"), "ENUM_CONST_ADDED", true),
                        Some(was) if was != name_now => d(&mut out, format!("#/{name}/{number}"), "ENUM_CONST_CHANGED", true),
                        _ => {}
                    }
                }
                for number in ov.keys().filter(|k| !nv.contains_key(*k)) {
                    d(&mut out, format!("#/{name}/{number}"), "ENUM_CONST_REMOVED", true);
                }
            }
        }
    }
    for name in ne.keys().filter(|n| !oe.contains_key(*n)) {
        d(&mut out, format!("#/{name}"), "ENUM_ADDED", true);
    }
    out
}

/// Every message of a file by full name (without the leading dot), map entries left out.
fn messages(file: &FileDescriptorProto) -> BTreeMap<String, &DescriptorProto> {
    fn walk<'a>(prefix: &str, list: &'a [DescriptorProto], out: &mut BTreeMap<String, &'a DescriptorProto>) {
        for m in list {
            let name = if prefix.is_empty() { m.name().to_string() } else { format!("{prefix}.{}", m.name()) };
            if !m.options.as_ref().is_some_and(|o| o.map_entry()) {
                out.insert(name.clone(), m);
            }
            walk(&name, &m.nested_type, out);
        }
    }
    let mut out = BTreeMap::new();
    walk(file.package(), &file.message_type, &mut out);
    out
}

fn enums(file: &FileDescriptorProto) -> BTreeMap<String, &EnumDescriptorProto> {
    fn walk<'a>(prefix: &str, messages: &'a [DescriptorProto], out: &mut BTreeMap<String, &'a EnumDescriptorProto>) {
        for m in messages {
            let name = if prefix.is_empty() { m.name().to_string() } else { format!("{prefix}.{}", m.name()) };
            for e in &m.enum_type {
                out.insert(format!("{name}.{}", e.name()), e);
            }
            walk(&name, &m.nested_type, out);
        }
    }
    let mut out = BTreeMap::new();
    let prefix = file.package();
    for e in &file.enum_type {
        out.insert(if prefix.is_empty() { e.name().to_string() } else { format!("{prefix}.{}", e.name()) }, e);
    }
    walk(prefix, &file.message_type, &mut out);
    out
}

/// What a field holds, for comparing kinds: a scalar by type, a named type by full name, or a
/// map by its key and value.
#[derive(PartialEq, Eq, Debug)]
enum Kind {
    Scalar(Type),
    Message(String),
    Enum(String),
    Map(Box<Kind>, Box<Kind>),
}

fn kind(f: &FieldDescriptorProto, owner: &DescriptorProto) -> Kind {
    let name = f.type_name().trim_start_matches('.').to_string();
    match f.r#type() {
        Type::Message | Type::Group => {
            let entry = owner.nested_type.iter().find(|n| n.options.as_ref().is_some_and(|o| o.map_entry()) && name.ends_with(&format!(".{}", n.name())));
            match entry {
                Some(e) if f.label() == Label::Repeated => {
                    let part = |n: i32| e.field.iter().find(|g| g.number() == n).map(|g| kind(g, e)).unwrap_or(Kind::Scalar(Type::Bytes));
                    Kind::Map(Box::new(part(1)), Box::new(part(2)))
                }
                _ => Kind::Message(name),
            }
        }
        Type::Enum => Kind::Enum(name),
        t => Kind::Scalar(t),
    }
}

fn message_diff(out: &mut Vec<Difference>, name: &str, old: &DescriptorProto, new: &DescriptorProto) {
    let path = |n: i32| format!("#/{name}/{n}");
    let d = |out: &mut Vec<Difference>, path: String, kind: &'static str, compatible: bool| out.push(Difference { path, kind, compatible });
    // Real oneofs (not proto3 `optional`'s synthetic ones) by index: name and member count.
    let oneof = |m: &DescriptorProto, f: &FieldDescriptorProto| -> Option<String> {
        let i = f.oneof_index?;
        let synthetic = m.field.iter().filter(|g| g.oneof_index == Some(i)).all(|g| g.proto3_optional());
        (!synthetic).then(|| m.oneof_decl.get(i as usize).map(|o| o.name().to_string())).flatten()
    };
    let members = |m: &DescriptorProto, o: &str| m.field.iter().filter(|f| oneof(m, f).as_deref() == Some(o)).count();
    let of: BTreeMap<i32, &FieldDescriptorProto> = old.field.iter().map(|f| (f.number(), f)).collect();
    let nf: BTreeMap<i32, &FieldDescriptorProto> = new.field.iter().map(|f| (f.number(), f)).collect();
    let old_oneofs: BTreeSet<String> = old.field.iter().filter_map(|f| oneof(old, f)).collect();
    let mut moved_in: BTreeMap<String, usize> = BTreeMap::new();
    for (number, o) in &of {
        let Some(n) = nf.get(number) else {
            if o.label() == Label::Required {
                d(out, path(*number), "REQUIRED_FIELD_REMOVED", false);
            } else if let Some(x) = oneof(old, o) {
                d(out, path(*number), "ONEOF_FIELD_REMOVED", !new.field.iter().any(|f| oneof(new, f).as_deref() == Some(x.as_str())) && members(old, &x) == 1);
            } else {
                d(out, path(*number), "FIELD_REMOVED", true);
            }
            continue;
        };
        if o.name() != n.name() {
            d(out, path(*number), "FIELD_NAME_CHANGED", true);
        }
        match (kind(o, old), kind(n, new)) {
            (a, b) if a == b => {}
            (Kind::Scalar(Type::String), Kind::Scalar(Type::Bytes)) => d(out, path(*number), "FIELD_STRING_TO_BYTES", true),
            (Kind::Scalar(Type::Bytes), Kind::Scalar(Type::String)) => d(out, path(*number), "FIELD_BYTES_TO_STRING", true),
            (Kind::Scalar(_), Kind::Scalar(_)) => d(out, path(*number), "FIELD_SCALAR_KIND_CHANGED", false),
            (Kind::Message(_), Kind::Message(_)) | (Kind::Enum(_), Kind::Enum(_)) => d(out, path(*number), "FIELD_NAMED_TYPE_CHANGED", false),
            (Kind::Map(..), Kind::Map(..)) => d(out, path(*number), "FIELD_NAMED_TYPE_CHANGED", false),
            _ => d(out, path(*number), "FIELD_KIND_CHANGED", false),
        }
        match (o.label(), n.label()) {
            (a, b) if a == b => {}
            (Label::Required, _) => d(out, path(*number), "REQUIRED_FIELD_REMOVED", false),
            (_, Label::Required) => d(out, path(*number), "REQUIRED_FIELD_ADDED", false),
            _ if !matches!(kind(o, old), Kind::Map(..)) => d(out, path(*number), "FIELD_LABEL_CHANGED", false),
            _ => {}
        }
        match (oneof(old, o), oneof(new, n)) {
            (None, Some(x)) if old_oneofs.contains(&x) => d(out, path(*number), "FIELD_MOVED_TO_EXISTING_ONEOF", false),
            (None, Some(x)) => *moved_in.entry(x).or_default() += 1,
            (Some(x), None) if members(old, &x) > 1 => d(out, path(*number), "ONEOF_FIELD_REMOVED", false),
            (Some(a), Some(b)) if a != b => d(out, path(*number), "FIELD_MOVED_TO_EXISTING_ONEOF", false),
            _ => {}
        }
    }
    for (number, n) in &nf {
        if of.contains_key(number) {
            continue;
        }
        if n.label() == Label::Required {
            d(out, path(*number), "REQUIRED_FIELD_ADDED", false);
        } else if oneof(new, n).is_some_and(|x| old_oneofs.contains(&x)) {
            d(out, path(*number), "ONEOF_FIELD_ADDED", true);
        } else {
            d(out, path(*number), "FIELD_ADDED", true);
        }
    }
    for (x, count) in moved_in {
        d(out, format!("#/{name}/{x}"), if count > 1 { "MULTIPLE_FIELDS_MOVED_TO_ONEOF" } else { "ONEOF_ADDED" }, count <= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &str = r#"
        syntax = "proto3";
        package shop;
        import "money.proto";
        option java_package = "com.shop";
        // an order
        message Order {
          string id = 1;
          repeated Line lines = 2;
          map<string, int64> tags = 3;
          optional Money total = 4;
          oneof paid { string card = 5; string cash = 6; }
          message Line { string sku = 1; int32 count = 2; }
          enum State { NEW = 0; SHIPPED = 1; }
          State state = 7;
          reserved 9, 11 to 20;
        }
    "#;
    const MONEY: &str = "syntax = \"proto3\";\npackage shop;\nmessage Money { int64 cents = 1; string currency = 2; }\n";

    fn refs() -> Vec<(String, String)> {
        vec![("money.proto".to_string(), MONEY.to_string())]
    }

    #[test]
    fn printing_is_canonical_and_a_fixpoint() {
        let printed = canonical(ORDER).unwrap();
        assert_eq!(canonical(&printed).unwrap(), printed, "printing the printed file changes it:\n{printed}");
        for line in ["syntax = \"proto3\";", "import \"money.proto\";", "option java_package = \"com.shop\";", "  map<string, int64> tags = 3;", "  optional Money total = 4;", "  oneof paid {", "    string card = 5;", "  reserved 9, 11 to 20;", "    SHIPPED = 1;"] {
            assert!(printed.lines().any(|l| l == line), "{line:?} missing from:\n{printed}");
        }
        let respaced = ORDER.replace("  ", " ").replace("// an order", "");
        assert_eq!(canonical(&respaced).unwrap(), printed);
        // The compiled descriptor, as a serializer registers it, prints the same text.
        let compiled = compile(ORDER, &refs()).unwrap().pop().unwrap();
        let base64 = base64::engine::general_purpose::STANDARD.encode(compiled.encode_to_vec());
        let from_descriptor = canonical(&base64).unwrap();
        assert_eq!(canonical(&from_descriptor).unwrap(), from_descriptor);
        assert!(from_descriptor.contains("map<string, int64> tags = 3;"), "{from_descriptor}");
        assert!(parse("syntax = \"proto3\";\nmessage { }").unwrap_err().contains("line 2, column 9"));
    }

    #[test]
    fn serialized_is_the_compiled_file_with_its_imports_resolved() {
        let b = serialized(ORDER, &refs()).unwrap();
        let file = FileDescriptorProto::decode(base64::engine::general_purpose::STANDARD.decode(b).unwrap().as_slice()).unwrap();
        assert_eq!(file.name(), FILE_NAME);
        let total = file.message_type[0].field.iter().find(|f| f.name() == "total").unwrap();
        assert_eq!(total.type_name(), ".shop.Money");
        assert!(compile(ORDER, &[]).unwrap_err().contains("money.proto"));
    }

    fn breaks(old: &str, new: &str) -> Vec<String> {
        let (o, n) = (compile(old, &refs()).unwrap().pop().unwrap(), compile(new, &refs()).unwrap().pop().unwrap());
        diff(&o, &n).into_iter().filter(|d| !d.compatible).map(|d| format!("{} {}", d.path, d.kind)).collect()
    }

    #[test]
    fn confluents_kinds_decide() {
        let v = |body: &str| format!("syntax = \"proto3\";\npackage shop;\nimport \"money.proto\";\nmessage Order {{ {body} }}\n");
        let none: Vec<String> = Vec::new();
        assert_eq!(breaks(&v("string id = 1;"), &v("string id = 1; int32 n = 2;")), none, "field added");
        assert_eq!(breaks(&v("string id = 1; int32 n = 2;"), &v("string id = 1;")), none, "field removed");
        assert_eq!(breaks(&v("string id = 1;"), &v("string name = 1;")), none, "renamed");
        assert_eq!(breaks(&v("string id = 1;"), &v("bytes id = 1;")), none, "string to bytes");
        assert_eq!(breaks(&v("string id = 1;"), &v("int64 id = 1;")), ["#/shop.Order/1 FIELD_SCALAR_KIND_CHANGED"]);
        assert_eq!(breaks(&v("Money m = 1;"), &v("string m = 1;")), ["#/shop.Order/1 FIELD_KIND_CHANGED"]);
        assert_eq!(breaks(&v("Money m = 1; message Other {}"), &v("Other m = 1; message Other {}")), ["#/shop.Order/1 FIELD_NAMED_TYPE_CHANGED"]);
        assert_eq!(breaks(&v("string a = 1; string b = 2;"), &v("oneof x { string a = 1; string b = 2; }")), ["#/shop.Order/x MULTIPLE_FIELDS_MOVED_TO_ONEOF"]);
        assert_eq!(breaks(&v("string a = 1;"), &v("oneof x { string a = 1; }")), none, "one field into a new oneof");
        assert_eq!(breaks(&v("oneof x { string a = 1; string b = 2; }"), &v("oneof x { string a = 1; }")), ["#/shop.Order/2 ONEOF_FIELD_REMOVED"]);
        assert_eq!(breaks(&v("oneof x { string a = 1; }"), &v("string a = 1;")), none, "a oneof's single field moved out");
        assert_eq!(breaks(&v("oneof x { string a = 1; } string b = 2;"), &v("oneof x { string a = 1; string b = 2; }")), ["#/shop.Order/2 FIELD_MOVED_TO_EXISTING_ONEOF"]);
        assert_eq!(breaks(&v("message In {}"), &v("")), ["#/shop.Order.In MESSAGE_REMOVED"]);
        assert_eq!(breaks(&v("enum E { A = 0; B = 1; }"), &v("enum E { A = 0; }")), none, "enum constant removed");
        assert_eq!(breaks(&v("map<string, int32> m = 1;"), &v("map<string, int64> m = 1;")), ["#/shop.Order/1 FIELD_NAMED_TYPE_CHANGED"]);
        assert_eq!(breaks(&v("map<string, int32> m = 1;"), &v("map<string, int32> renamed = 1;")), none, "a map's field renamed");
        let other_package = v("string id = 1;").replace("package shop;", "package shop2;");
        assert!(breaks(&v("string id = 1;"), &other_package).contains(&"#/ PACKAGE_CHANGED".to_string()));
        let proto2 = |body: &str| format!("syntax = \"proto2\";\nmessage M {{ {body} }}\n");
        assert_eq!(breaks(&proto2("optional string a = 1;"), &proto2("optional string a = 1; required int32 b = 2;")), ["#/M/2 REQUIRED_FIELD_ADDED"]);
    }
}
