//! Flink's `avro-confluent` format: Confluent's wire format (a zero byte, the schema id in four
//! big-endian bytes, the Avro binary body) with the schemas in a schema registry that speaks
//! Confluent's API (`ferry registry`, or Confluent's).
//!
//! Reading: the writer's schema comes from the registry by the record's id (once per id); the
//! body is decoded with it and its fields are matched to the table's columns by name, as Flink's
//! reader schema does. Writing: the table's columns give the Avro schema as Flink derives it (a
//! record `org.apache.flink.avro.generated.record`, nullable columns as a union with null first),
//! registered under the subject (`<topic>-value` or `<topic>-key` unless 'avro-confluent.subject'
//! says) before the first record, and every record carries its id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use apache_avro::types::Value as Avro;
use apache_avro::Schema;

use crate::types::FlinkType;
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, SchemaRef, TimeUnit};

/// `'avro-confluent.url'` and what goes with it.
#[derive(Debug, Clone)]
pub struct AvroConfluent {
    pub url: String,
    /// The subject the sink registers its schema under (defaults set by the catalog).
    pub subject: Option<String>,
    /// `Authorization` header: `Basic …` from the user info, or `Bearer …`.
    pub auth: Option<String>,
    registry: Arc<Registry>,
}

impl PartialEq for AvroConfluent {
    fn eq(&self, other: &Self) -> bool {
        (&self.url, &self.subject, &self.auth) == (&other.url, &other.subject, &other.auth)
    }
}

impl Eq for AvroConfluent {}

/// What was read from the registry (made on first use: `check` and `explain` reach no server).
#[derive(Debug, Default)]
struct Registry {
    client: OnceLock<reqwest::blocking::Client>,
    by_id: Mutex<HashMap<u32, Arc<Schema>>>,
    /// The sink's schema and its id, once registered.
    registered: Mutex<Option<(u32, Arc<Schema>)>>,
}

impl AvroConfluent {
    pub fn new(url: String, subject: Option<String>, auth: Option<String>) -> AvroConfluent {
        AvroConfluent { url: url.trim_end_matches('/').to_string(), subject, auth, registry: Arc::default() }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let client = self.registry.client.get_or_init(|| reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap_or_default());
        let mut r = client.request(method, format!("{}{path}", self.url)).header("Accept", "application/vnd.schemaregistry.v1+json");
        if let Some(a) = &self.auth {
            r = r.header("Authorization", a);
        }
        r
    }

    /// The JSON body of a registry answer, or what went wrong (status and Confluent's message).
    fn answer(&self, what: &str, r: reqwest::Result<reqwest::blocking::Response>) -> Result<serde_json::Value, String> {
        let r = r.map_err(|e| format!("{what}: schema registry {} unreachable: {e}", self.url))?;
        let status = r.status();
        let text = r.text().map_err(|e| format!("{what}: schema registry {}: {e}", self.url))?;
        let body: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{what}: schema registry {} answered {status} without JSON: {e}", self.url))?;
        if !status.is_success() {
            return Err(format!("{what}: schema registry {} answered {status}: {}", self.url, body["message"].as_str().unwrap_or("")));
        }
        Ok(body)
    }

    /// The writer's schema of id `id`.
    fn schema(&self, id: u32) -> Result<Arc<Schema>, String> {
        if let Some(s) = self.registry.by_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id) {
            return Ok(s.clone());
        }
        let what = format!("schema id {id}");
        let body = self.answer(&what, self.request(reqwest::Method::GET, &format!("/schemas/ids/{id}")).send())?;
        if body["schemaType"].as_str().is_some_and(|t| t != "AVRO") {
            return Err(format!("{what} is a {} schema, not Avro", body["schemaType"].as_str().unwrap_or("?")));
        }
        let text = body["schema"].as_str().ok_or_else(|| format!("{what}: the registry's answer has no schema"))?;
        let schema = Arc::new(Schema::parse_str(text).map_err(|e| format!("{what}: not an Avro schema: {e}"))?);
        self.registry.by_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, schema.clone());
        Ok(schema)
    }

    /// Records as JSON objects (fields by name), for the JSON decoder of the table's columns; a
    /// record that is not in the wire format or whose schema cannot be read is an error.
    pub(crate) fn to_json(&self, payload: &[u8]) -> Result<Vec<u8>, String> {
        let [0, a, b, c, d, body @ ..] = payload else {
            return Err("not Confluent's wire format (a zero byte and a 4-byte schema id first)".into());
        };
        let id = u32::from_be_bytes([*a, *b, *c, *d]);
        let schema = self.schema(id)?;
        let value = read(&schema, body).map_err(|e| format!("schema id {id}: the body does not decode: {e}"))?;
        let json = json_of(value)?;
        serde_json::to_vec(&json).map_err(|e| e.to_string())
    }

    /// The records of `batch` in the wire format, its schema registered first.
    pub(crate) fn encode(&self, batch: &RecordBatch) -> Result<Vec<Option<Vec<u8>>>, String> {
        let (id, schema) = self.registered(&batch.schema())?;
        let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema).build().map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let fields = batch.schema().fields().iter().zip(batch.columns()).map(|(f, c)| Ok((f.name().clone(), nullable(avro_value(c, row)?)))).collect::<Result<Vec<_>, String>>()?;
            let mut bytes = vec![0];
            bytes.extend_from_slice(&id.to_be_bytes());
            bytes.extend(writer.write_value_to_vec(Avro::Record(fields)).map_err(|e| format!("a row does not fit its Avro schema: {e}"))?);
            out.push(Some(bytes));
        }
        Ok(out)
    }

    fn registered(&self, columns: &SchemaRef) -> Result<(u32, Arc<Schema>), String> {
        let mut registered = self.registry.registered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(r) = registered.as_ref() {
            return Ok(r.clone());
        }
        let subject = self.subject.clone().ok_or("avro-confluent: no subject to register the schema under")?;
        let text = schema_of(columns)?;
        let schema = Arc::new(Schema::parse_str(&text).map_err(|e| format!("the table's Avro schema: {e}"))?);
        let body = serde_json::json!({"schemaType": "AVRO", "schema": text});
        let what = format!("registering the schema under subject {subject}");
        let answer = self.answer(&what, self.request(reqwest::Method::POST, &format!("/subjects/{subject}/versions")).header("Content-Type", "application/vnd.schemaregistry.v1+json").body(body.to_string()).send())?;
        let id = answer["id"].as_u64().and_then(|i| u32::try_from(i).ok()).ok_or_else(|| format!("{what}: the registry's answer has no id"))?;
        *registered = Some((id, schema.clone()));
        Ok((id, schema))
    }
}

/// One datum written with `schema`.
fn read(schema: &Schema, body: &[u8]) -> apache_avro::AvroResult<Avro> {
    apache_avro::reader::datum::GenericDatumReader::builder(schema).build()?.read_value(&mut &body[..])
}

/// An Avro value as JSON for the table's decoder: unions unwrapped, logical types as their
/// numbers (timestamps in their unit, dates in days), records as objects.
fn json_of(v: Avro) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match v {
        Avro::Null => J::Null,
        Avro::Boolean(b) => J::Bool(b),
        Avro::Int(i) | Avro::Date(i) | Avro::TimeMillis(i) => J::from(i),
        Avro::Long(i) | Avro::TimestampMillis(i) | Avro::LocalTimestampMillis(i) | Avro::TimeMicros(i) => J::from(i),
        Avro::TimestampMicros(i) | Avro::LocalTimestampMicros(i) => J::from(i / 1_000),
        Avro::Float(f) => J::from(f),
        Avro::Double(f) => J::from(f),
        Avro::String(s) | Avro::Enum(_, s) => J::String(s),
        Avro::Uuid(u) => J::String(u.to_string()),
        Avro::Bytes(b) | Avro::Fixed(_, b) => J::String(String::from_utf8_lossy(&b).into_owned()),
        Avro::Union(_, v) => json_of(*v)?,
        Avro::Array(items) => J::Array(items.into_iter().map(json_of).collect::<Result<_, _>>()?),
        Avro::Map(m) => J::Object(m.into_iter().map(|(k, v)| Ok((k, json_of(v)?))).collect::<Result<_, String>>()?),
        Avro::Record(fields) => J::Object(fields.into_iter().map(|(k, v)| Ok((k, json_of(v)?))).collect::<Result<_, String>>()?),
        other => return Err(format!("Avro value {other:?} is not supported yet")),
    })
}

/// `["null", T]`: a nullable column's union (Flink's derivation puts null first).
fn nullable(v: Avro) -> Avro {
    match v {
        Avro::Null => Avro::Union(0, Box::new(Avro::Null)),
        v => Avro::Union(1, Box::new(v)),
    }
}

fn avro_value(column: &ArrayRef, row: usize) -> Result<Avro, String> {
    if column.is_null(row) {
        return Ok(Avro::Null);
    }
    Ok(match column.data_type() {
        DataType::Boolean => Avro::Boolean(column.as_boolean().value(row)),
        DataType::Int8 => Avro::Int(i32::from(column.as_primitive::<Int8Type>().value(row))),
        DataType::Int16 => Avro::Int(i32::from(column.as_primitive::<Int16Type>().value(row))),
        DataType::Int32 => Avro::Int(column.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => Avro::Long(column.as_primitive::<Int64Type>().value(row)),
        DataType::Float32 => Avro::Float(column.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => Avro::Double(column.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Avro::String(column.as_string::<i32>().value(row).to_string()),
        DataType::Binary => Avro::Bytes(column.as_binary::<i32>().value(row).to_vec()),
        DataType::Date32 => Avro::Date(column.as_primitive::<Date32Type>().value(row)),
        DataType::Timestamp(_, _) => {
            let ms = arrow::compute::cast(&column.slice(row, 1), &DataType::Timestamp(TimeUnit::Millisecond, None)).map_err(|e| e.to_string())?;
            Avro::TimestampMillis(ms.as_primitive::<arrow::datatypes::TimestampMillisecondType>().value(0))
        }
        DataType::Struct(fields) => {
            let s = column.as_struct();
            Avro::Record(fields.iter().zip(s.columns()).map(|(f, c)| Ok((f.name().clone(), nullable(avro_value(c, row)?)))).collect::<Result<_, String>>()?)
        }
        DataType::List(_) => {
            let items = column.as_list::<i32>().value(row);
            Avro::Array((0..items.len()).map(|i| avro_value(&items, i).map(nullable)).collect::<Result<_, _>>()?)
        }
        other => return Err(format!("{other} columns cannot be written as Avro yet")),
    })
}

/// The Avro schema Flink derives from a row type, as JSON text.
pub(crate) fn schema_of(columns: &SchemaRef) -> Result<String, String> {
    let fields = columns.fields().iter().map(|f| Ok(serde_json::json!({"name": f.name(), "type": ["null", avro_type(f.name(), f.data_type())?], "default": null}))).collect::<Result<Vec<_>, String>>()?;
    Ok(serde_json::json!({"type": "record", "name": "record", "namespace": "org.apache.flink.avro.generated", "fields": fields}).to_string())
}

fn avro_type(name: &str, t: &DataType) -> Result<serde_json::Value, String> {
    use serde_json::json;
    Ok(match t {
        DataType::Boolean => json!("boolean"),
        DataType::Int8 | DataType::Int16 | DataType::Int32 => json!("int"),
        DataType::Int64 => json!("long"),
        DataType::Float32 => json!("float"),
        DataType::Float64 => json!("double"),
        DataType::Utf8 => json!("string"),
        DataType::Binary => json!("bytes"),
        DataType::Date32 => json!({"type": "int", "logicalType": "date"}),
        DataType::Timestamp(_, _) => json!({"type": "long", "logicalType": "timestamp-millis"}),
        DataType::Struct(fields) => {
            let fields = fields.iter().map(|f| Ok(json!({"name": f.name(), "type": ["null", avro_type(&format!("{name}_{}", f.name()), f.data_type())?], "default": null}))).collect::<Result<Vec<_>, String>>()?;
            json!({"type": "record", "name": format!("record_{name}"), "fields": fields})
        }
        DataType::List(item) => json!({"type": "array", "items": ["null", avro_type(name, item.data_type())?]}),
        other => return Err(format!("column {name}: {other} cannot be written as Avro yet")),
    })
}

/// A table's columns from the Avro record schema of its values, as Flink's
/// `AvroSchemaConverter` derives them: each field's name, Flink type, and whether it is nullable
/// (a union with null). For the console's tables from a schema registry.
pub fn columns_of(schema_text: &str) -> Result<Vec<(String, FlinkType, bool)>, String> {
    let schema = Schema::parse_str(schema_text).map_err(|e| format!("not an Avro schema: {e}"))?;
    let Schema::Record(record) = &schema else { return Err("not an Avro record: a table needs named fields".into()) };
    let mut named = std::collections::HashMap::new();
    named.insert(record.name.clone(), &schema);
    record.fields.iter().map(|f| flink_of(&f.schema, &mut named).map_err(|e| format!("field {}: {e}", f.name)).map(|(t, nullable)| (f.name.clone(), t, nullable))).collect()
}

/// An Avro schema's Flink type and whether it may be null.
fn flink_of<'a>(schema: &'a Schema, named: &mut std::collections::HashMap<apache_avro::schema::Name, &'a Schema>) -> Result<(FlinkType, bool), String> {
    let not_null = |t| Ok((t, false));
    match schema {
        Schema::Null => Err("a field that is always null has no Flink type".into()),
        Schema::Boolean => not_null(FlinkType::Boolean),
        Schema::Int => not_null(FlinkType::Int),
        Schema::Long => not_null(FlinkType::BigInt),
        Schema::Float => not_null(FlinkType::Float),
        Schema::Double => not_null(FlinkType::Double),
        Schema::Bytes | Schema::Fixed(_) => not_null(FlinkType::Bytes),
        Schema::String | Schema::Uuid(_) | Schema::Enum(_) => {
            if let Schema::Enum(e) = schema {
                named.insert(e.name.clone(), schema);
            }
            not_null(FlinkType::String)
        }
        Schema::Decimal(d) => match (u8::try_from(d.precision), i8::try_from(d.scale)) {
            (Ok(p), Ok(s)) if (1..=38).contains(&p) => not_null(FlinkType::Decimal(p, s)),
            _ => Err(format!("decimal({}, {}) is beyond Flink's DECIMAL(38)", d.precision, d.scale)),
        },
        Schema::Date => not_null(FlinkType::Date),
        Schema::TimeMillis | Schema::TimeMicros => not_null(FlinkType::Time),
        Schema::TimestampMillis => not_null(FlinkType::Timestamp(3)),
        Schema::TimestampMicros => not_null(FlinkType::Timestamp(6)),
        Schema::TimestampNanos => not_null(FlinkType::Timestamp(9)),
        Schema::LocalTimestampMillis => not_null(FlinkType::TimestampLtz(3)),
        Schema::LocalTimestampMicros => not_null(FlinkType::TimestampLtz(6)),
        Schema::LocalTimestampNanos => not_null(FlinkType::TimestampLtz(9)),
        Schema::Array(a) => {
            let (item, nullable) = flink_of(&a.items, named)?;
            not_null(FlinkType::Array(Box::new(item), !nullable))
        }
        Schema::Map(m) => not_null(FlinkType::Map(Box::new(FlinkType::String), Box::new(flink_of(&m.types, named)?.0))),
        Schema::Record(r) => {
            named.insert(r.name.clone(), schema);
            let fields = r.fields.iter().map(|f| flink_of(&f.schema, named).map(|(t, nullable)| (f.name.clone(), t, !nullable)).map_err(|e| format!("{}: {e}", f.name))).collect::<Result<_, String>>()?;
            not_null(FlinkType::Row(fields))
        }
        Schema::Union(u) => {
            let others: Vec<&Schema> = u.variants().iter().filter(|v| !matches!(v, Schema::Null)).collect();
            match others.as_slice() {
                [one] => Ok((flink_of(one, named)?.0, others.len() < u.variants().len())),
                _ => Err("a union of several types has no Flink type (only a type or null)".into()),
            }
        }
        Schema::Ref { name } => match named.get(name).copied() {
            Some(Schema::Record(_)) => Err(format!("the recursive type {name} has no Flink type")),
            Some(s) => flink_of(s, named),
            None => Err(format!("unknown type {name}")),
        },
        Schema::BigDecimal | Schema::Duration(_) => Err(format!("{schema:?} has no Flink type Ferry reads")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema as ArrowSchema};

    #[test]
    fn a_records_fields_become_columns_as_flink_derives_them() {
        let text = r#"{"type":"record","name":"order","namespace":"shop","fields":[
            {"name":"id","type":"long"},
            {"name":"customer","type":["null","string"],"default":null},
            {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
            {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"day","type":["null",{"type":"int","logicalType":"date"}]},
            {"name":"kind","type":{"type":"enum","name":"kind","symbols":["A","B"]}},
            {"name":"again","type":"kind"},
            {"name":"tags","type":{"type":"array","items":"string"}},
            {"name":"attrs","type":{"type":"map","values":["null","long"]}},
            {"name":"ship","type":["null",{"type":"record","name":"address","fields":[{"name":"city","type":"string"},{"name":"zip","type":["null","int"]}]}]}
        ]}"#;
        let columns: Vec<String> = columns_of(text).unwrap().iter().map(|(n, t, nullable)| format!("{n} {t}{}", if *nullable { "" } else { " NOT NULL" })).collect();
        assert_eq!(
            columns,
            [
                "id BIGINT NOT NULL",
                "customer STRING",
                "amount DECIMAL(10, 2) NOT NULL",
                "at TIMESTAMP(3) NOT NULL",
                "day DATE",
                "kind STRING NOT NULL",
                "again STRING NOT NULL",
                "tags ARRAY<STRING NOT NULL> NOT NULL",
                "attrs MAP<STRING, BIGINT> NOT NULL",
                "ship ROW<`city` STRING NOT NULL, `zip` INT>",
            ]
        );
        assert!(columns_of(r#""string""#).unwrap_err().contains("not an Avro record"));
        let union = r#"{"type":"record","name":"r","fields":[{"name":"x","type":["int","string"]}]}"#;
        assert!(columns_of(union).unwrap_err().starts_with("field x: a union of several types"), "{:?}", columns_of(union));
        let recursive = r#"{"type":"record","name":"node","fields":[{"name":"next","type":["null","node"]}]}"#;
        assert!(columns_of(recursive).unwrap_err().contains("recursive"));
    }

    #[test]
    fn rows_round_trip_through_the_schema_flink_derives() {
        let schema = Arc::new(ArrowSchema::new(vec![Field::new("id", DataType::Int64, true), Field::new("name", DataType::Utf8, true), Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true)]));
        let text = schema_of(&schema).unwrap();
        assert!(text.contains(r#""namespace":"org.apache.flink.avro.generated""#) && text.contains(r#""logicalType":"timestamp-millis""#), "{text}");
        let avro = Schema::parse_str(&text).unwrap();
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![Some(7), None])), Arc::new(StringArray::from(vec![Some("a"), Some("b")])), Arc::new(TimestampMillisecondArray::from(vec![Some(1_000), None]))]).unwrap();
        // What encode writes after the 5-byte header, decoded again.
        for row in 0..2 {
            let fields = schema.fields().iter().zip(batch.columns()).map(|(f, c)| (f.name().clone(), nullable(avro_value(c, row).unwrap()))).collect();
            let bytes = apache_avro::writer::datum::GenericDatumWriter::builder(&avro).build().unwrap().write_value_to_vec(Avro::Record(fields)).unwrap();
            let back = json_of(read(&avro, &bytes).unwrap()).unwrap();
            let want = if row == 0 { serde_json::json!({"id": 7, "name": "a", "ts": 1000}) } else { serde_json::json!({"id": null, "name": "b", "ts": null}) };
            assert_eq!(back, want);
        }
        let f = AvroConfluent::new("http://127.0.0.1:1".into(), None, None);
        assert!(f.to_json(b"{}").unwrap_err().contains("wire format"));
        assert!(f.to_json(&[0, 0, 0, 0, 1, 2]).unwrap_err().contains("unreachable"), "no registry listens there");
    }
}
