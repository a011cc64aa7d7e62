//! Record formats: Kafka keys and values to Arrow rows and back (`json`, `raw`).
//!
//! Decoding works a batch at a time; a record that does not decode is skipped and counted when
//! the table says `*.ignore-parse-errors`, and otherwise stops the job naming topic, partition
//! and offset (as Flink fails the job).

use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, AsArray, BinaryArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit, TimestampNanosecondType};
use arrow::error::ArrowError;
use arrow::json::writer::{make_encoder, Encoder, EncoderFactory, EncoderOptions, NullableEncoder};

use crate::catalog::Options;
use crate::error::{fail, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Json(JsonOptions),
    Csv(CsvOptions),
    Raw(RawOptions),
    /// Confluent's wire format with a schema registry ([`crate::avro`]).
    AvroConfluent(crate::avro::AvroConfluent),
}

/// Flink's `csv` format: one record per value, no header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    pub delimiter: u8,
    /// `None`: `csv.disable-quote-character`.
    pub quote: Option<u8>,
    pub ignore_parse_errors: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonOptions {
    pub ignore_parse_errors: bool,
    pub fail_on_missing_field: bool,
    /// `json.timestamp-format.standard` = 'ISO-8601' (default 'SQL': `2020-12-30 12:13:14.123`).
    pub iso_timestamps: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawOptions {}

/// The options of one format, read under its prefix (`json.…`, `value.json.…`, `key.raw.…`).
pub(crate) struct FormatOptions<'a> {
    options: &'a mut Options,
    prefix: &'static str,
}

impl<'a> FormatOptions<'a> {
    pub(crate) fn new(options: &'a mut Options, prefix: &'static str) -> Self {
        FormatOptions { options, prefix }
    }

    fn take(&mut self, format: &str, key: &str) -> Option<(String, crate::error::Pos, String)> {
        let full = format!("{}{format}.{key}", self.prefix);
        let at = self.options.pos_of(&full);
        self.options.take(&full).map(|v| (v, at, full))
    }

    fn flag(&mut self, format: &str, key: &str) -> Result<bool> {
        match self.take(format, key) {
            None => Ok(false),
            Some((v, at, full)) => match v.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => fail(at, format!("table {}: '{full}' is true or false, not '{v}'", self.options.table())),
            },
        }
    }
}

impl Format {
    pub(crate) fn parse(name: &str, opts: &mut FormatOptions<'_>, table: &str) -> Result<Format> {
        let at = opts.options.pos_of(&format!("{}format", opts.prefix)).max(opts.options.pos_of("format"));
        match name {
            "json" => {
                let ignore_parse_errors = opts.flag("json", "ignore-parse-errors")?;
                let fail_on_missing_field = opts.flag("json", "fail-on-missing-field")?;
                if ignore_parse_errors && fail_on_missing_field {
                    return fail(at, format!("table {table}: json.ignore-parse-errors and json.fail-on-missing-field cannot both be true"));
                }
                let iso_timestamps = match opts.take("json", "timestamp-format.standard") {
                    None => false,
                    Some((v, _, _)) if v == "SQL" => false,
                    Some((v, _, _)) if v == "ISO-8601" => true,
                    Some((v, at, full)) => return fail(at, format!("table {table}: '{full}' is SQL or ISO-8601, not '{v}'")),
                };
                for key in ["map-null-key.mode", "map-null-key.literal", "encode.decimal-as-plain-number", "encode.ignore-null-fields"] {
                    if let Some((_, at, full)) = opts.take("json", key) {
                        return fail(at, format!("table {table}: '{full}' is not supported"));
                    }
                }
                Ok(Format::Json(JsonOptions { ignore_parse_errors, fail_on_missing_field, iso_timestamps }))
            }
            "raw" => {
                if let Some((v, at, full)) = opts.take("raw", "charset") {
                    if !v.eq_ignore_ascii_case("UTF-8") {
                        return fail(at, format!("table {table}: '{full}' = '{v}': only UTF-8 is supported"));
                    }
                }
                if let Some((v, at, full)) = opts.take("raw", "endianness") {
                    if v != "big-endian" {
                        return fail(at, format!("table {table}: '{full}' = '{v}': only big-endian is supported"));
                    }
                }
                Ok(Format::Raw(RawOptions {}))
            }
            "csv" => {
                let single = |opts: &mut FormatOptions<'_>, key: &str, default: u8| -> Result<u8> {
                    match opts.take("csv", key) {
                        None => Ok(default),
                        Some((v, at, full)) => {
                            let v = if v == "\\t" { "\t".to_string() } else { v };
                            match v.as_bytes() {
                                [b] if b.is_ascii() => Ok(*b),
                                _ => fail(at, format!("table {table}: '{full}' is one ASCII character, not '{v}'")),
                            }
                        }
                    }
                };
                let delimiter = single(opts, "field-delimiter", b',')?;
                let quote = single(opts, "quote-character", b'"')?;
                let quote = if opts.flag("csv", "disable-quote-character")? { None } else { Some(quote) };
                let ignore_parse_errors = opts.flag("csv", "ignore-parse-errors")?;
                for key in ["allow-comments", "array-element-delimiter", "escape-character", "null-literal", "write-bigdecimal-in-scientific-notation"] {
                    if let Some((_, at, full)) = opts.take("csv", key) {
                        return fail(at, format!("table {table}: '{full}' is not supported"));
                    }
                }
                Ok(Format::Csv(CsvOptions { delimiter, quote, ignore_parse_errors }))
            }
            "avro-confluent" => {
                let url = match (opts.take("avro-confluent", "url"), opts.take("avro-confluent", "schema-registry.url")) {
                    (Some((v, _, _)), None) | (None, Some((v, _, _))) => v,
                    (Some(_), Some((_, at, full))) => return fail(at, format!("table {table}: '{full}' repeats 'avro-confluent.url'")),
                    (None, None) => return fail(at, format!("table {table}: format 'avro-confluent' needs '{}avro-confluent.url' (the schema registry)", opts.prefix)),
                };
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return fail(at, format!("table {table}: avro-confluent.url '{url}' is not an http:// or https:// URL"));
                }
                let subject = opts.take("avro-confluent", "subject").map(|(v, _, _)| v);
                let auth = match (opts.take("avro-confluent", "basic-auth.credentials-source"), opts.take("avro-confluent", "basic-auth.user-info"), opts.take("avro-confluent", "bearer-auth.credentials-source"), opts.take("avro-confluent", "bearer-auth.token")) {
                    (source, Some((info, _, _)), None, None) if source.as_ref().is_none_or(|(v, _, _)| v == "USER_INFO") => Some(format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, info.as_bytes()))),
                    (None, None, source, Some((token, _, _))) if source.as_ref().is_none_or(|(v, _, _)| v == "STATIC_TOKEN") => Some(format!("Bearer {token}")),
                    (None, None, None, None) => None,
                    _ => return fail(at, format!("table {table}: avro-confluent credentials: 'basic-auth.user-info' (with credentials-source USER_INFO) or 'bearer-auth.token' (STATIC_TOKEN), one of them")),
                };
                for key in ["schema", "ssl.keystore.location", "ssl.truststore.location", "properties"] {
                    if let Some((_, at, full)) = opts.take("avro-confluent", key) {
                        return fail(at, format!("table {table}: '{full}' is not supported yet"));
                    }
                }
                Ok(Format::AvroConfluent(crate::avro::AvroConfluent::new(url, subject, auth)))
            }
            "avro" | "debezium-json" | "canal-json" | "maxwell-json" | "ogg-json" | "protobuf" | "debezium-avro-confluent" => {
                fail(at, format!("table {table}: format '{name}' is not supported yet (json, csv, raw, avro-confluent)"))
            }
            other => fail(at, format!("table {table}: unknown format '{other}'")),
        }
    }

    pub fn ignores_parse_errors(&self) -> bool {
        match self {
            Format::Json(o) => o.ignore_parse_errors,
            Format::Csv(o) => o.ignore_parse_errors,
            Format::Raw(_) | Format::AvroConfluent(_) => false,
        }
    }

    /// The option that skips records that do not decode (`json.ignore-parse-errors`, …), if the
    /// format has one.
    pub fn ignore_option(&self) -> Option<&'static str> {
        match self {
            Format::Csv(_) => Some("csv.ignore-parse-errors"),
            Format::Json(_) => Some("json.ignore-parse-errors"),
            Format::Raw(_) | Format::AvroConfluent(_) => None,
        }
    }
}

/// One record that failed to decode: its index in the batch and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    pub index: usize,
    pub reason: String,
}

/// Decodes a batch of payloads (`None`: a null value) into rows of `schema` (all nullable).
/// Returns the rows of the records that decoded, and the ones that did not; a null payload is a
/// row of nulls.
pub fn decode(format: &Format, schema: &SchemaRef, payloads: &[Option<&[u8]>]) -> (RecordBatch, Vec<usize>, Vec<BadRecord>) {
    match format {
        Format::Raw(_) => decode_raw(schema, payloads),
        Format::Json(o) => decode_json(o, schema, payloads),
        Format::AvroConfluent(a) => decode_avro(a, schema, payloads),
        Format::Csv(o) => decode_csv(o, schema, payloads),
    }
}

fn csv_decoder(options: &CsvOptions, schema: &SchemaRef, rows: usize) -> arrow::csv::reader::Decoder {
    let mut b = arrow::csv::ReaderBuilder::new(schema.clone()).with_header(false).with_delimiter(options.delimiter).with_batch_size(rows.max(1));
    if let Some(q) = options.quote {
        b = b.with_quote(q);
    }
    b.build_decoder()
}

/// One record: its bytes and a line end (a value may or may not end with one).
fn csv_line(bytes: &[u8]) -> Vec<u8> {
    let mut line = bytes.to_vec();
    if !line.ends_with(b"\n") {
        line.push(b'\n');
    }
    line
}

fn decode_csv(options: &CsvOptions, schema: &SchemaRef, payloads: &[Option<&[u8]>]) -> (RecordBatch, Vec<usize>, Vec<BadRecord>) {
    // Fast path: the whole batch at once. Any failure: record by record, to say which.
    let decode_all = |lines: &[Vec<u8>]| -> Result<RecordBatch, String> {
        let mut decoder = csv_decoder(options, schema, lines.len());
        for line in lines {
            let mut at = 0;
            while at < line.len() {
                let n = decoder.decode(&line[at..]).map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                at += n;
            }
        }
        let batch = decoder.flush().map_err(|e| e.to_string())?.unwrap_or_else(|| RecordBatch::new_empty(schema.clone()));
        if batch.num_rows() == lines.len() {
            Ok(batch)
        } else {
            Err(format!("{} CSV lines in {} records", batch.num_rows(), lines.len()))
        }
    };
    // A null value is a row of nulls, as for JSON (the run loop drops tombstones before).
    let empty = vec![b','; schema.fields().len().saturating_sub(1)];
    let lines: Vec<Vec<u8>> = payloads.iter().map(|p| csv_line(p.unwrap_or(&empty))).collect();
    if let Ok(batch) = decode_all(&lines) {
        return (batch, (0..payloads.len()).collect(), Vec::new());
    }
    let mut good = Vec::new();
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match decode_all(std::slice::from_ref(line)) {
            Ok(b) => {
                good.push(b);
                rows.push(i);
            }
            Err(reason) => bad.push(BadRecord { index: i, reason }),
        }
    }
    let batch = if good.is_empty() { RecordBatch::new_empty(schema.clone()) } else { arrow::compute::concat_batches(schema, &good).expect("batches of one schema") };
    (batch, rows, bad)
}

fn decode_raw(schema: &SchemaRef, payloads: &[Option<&[u8]>]) -> (RecordBatch, Vec<usize>, Vec<BadRecord>) {
    let field = &schema.fields()[0];
    let mut bad = Vec::new();
    let mut rows = Vec::with_capacity(payloads.len());
    let array: ArrayRef = match field.data_type() {
        DataType::Utf8 => {
            let mut values = Vec::with_capacity(payloads.len());
            for (i, p) in payloads.iter().enumerate() {
                match p.map(std::str::from_utf8) {
                    Some(Err(e)) => bad.push(BadRecord { index: i, reason: format!("not UTF-8: {e}") }),
                    Some(Ok(s)) => {
                        values.push(Some(s));
                        rows.push(i);
                    }
                    None => {
                        values.push(None);
                        rows.push(i);
                    }
                }
            }
            Arc::new(StringArray::from(values))
        }
        _ => {
            rows.extend(0..payloads.len());
            Arc::new(BinaryArray::from(payloads.to_vec()))
        }
    };
    (RecordBatch::try_new(schema.clone(), vec![array]).expect("one column of the schema's type"), rows, bad)
}

/// Avro records read as JSON objects, then the table's columns by name from those.
fn decode_avro(format: &crate::avro::AvroConfluent, schema: &SchemaRef, payloads: &[Option<&[u8]>]) -> (RecordBatch, Vec<usize>, Vec<BadRecord>) {
    let mut json = Vec::with_capacity(payloads.len());
    let mut at = Vec::with_capacity(payloads.len());
    let mut bad = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        match p.map(|bytes| format.to_json(bytes)).transpose() {
            Ok(j) => {
                json.push(j);
                at.push(i);
            }
            Err(reason) => bad.push(BadRecord { index: i, reason }),
        }
    }
    let refs: Vec<Option<&[u8]>> = json.iter().map(|j| j.as_deref()).collect();
    let (rows, good, more) = decode_json(&JsonOptions::default(), schema, &refs);
    bad.extend(more.into_iter().map(|b| BadRecord { index: at[b.index], reason: b.reason }));
    bad.sort_by_key(|b| b.index);
    (rows, good.into_iter().map(|g| at[g]).collect(), bad)
}

fn json_decoder(schema: &SchemaRef, rows: usize) -> arrow::json::reader::Decoder {
    arrow::json::ReaderBuilder::new(schema.clone()).with_batch_size(rows.max(1)).with_strict_mode(false).build_decoder().expect("a decoder for a nullable schema")
}

fn decode_json(options: &JsonOptions, schema: &SchemaRef, payloads: &[Option<&[u8]>]) -> (RecordBatch, Vec<usize>, Vec<BadRecord>) {
    // Fast path: the whole batch at once. Any failure: record by record, to say which.
    let mut decoder = json_decoder(schema, payloads.len());
    let mut ok = true;
    for p in payloads {
        match p {
            Some(bytes) => {
                let before = decoder.len();
                if decoder.decode(bytes).is_err() || decoder.has_partial_record() || decoder.len() != before + 1 {
                    ok = false;
                    break;
                }
            }
            None => {
                if decoder.decode(b"{}").is_err() {
                    ok = false;
                    break;
                }
            }
        }
    }
    if ok {
        if let Ok(Some(batch)) = decoder.flush() {
            if !options.fail_on_missing_field || missing_field(schema, payloads).is_none() {
                return (batch, (0..payloads.len()).collect(), Vec::new());
            }
        }
    }
    let mut good = Vec::new();
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        let mut one = json_decoder(schema, 1);
        let bytes = p.unwrap_or(b"{}");
        let result = match one.decode(bytes) {
            Err(e) => Err(e.to_string()),
            Ok(_) if one.has_partial_record() => Err("the value ends inside a JSON value".to_string()),
            Ok(_) if one.len() != 1 => Err(format!("{} JSON values in one record", one.len())),
            Ok(_) => match one.flush() {
                Ok(Some(b)) => Ok(b),
                Ok(None) => Err("no JSON value".to_string()),
                Err(e) => Err(e.to_string()),
            },
        };
        let result = result.and_then(|b| match (options.fail_on_missing_field, p) {
            (true, Some(bytes)) => match missing_field(schema, &[Some(bytes)]) {
                Some(f) => Err(format!("field {f} is missing")),
                None => Ok(b),
            },
            _ => Ok(b),
        });
        match result {
            Ok(b) => {
                good.push(b);
                rows.push(i);
            }
            Err(reason) => bad.push(BadRecord { index: i, reason }),
        }
    }
    let batch = if good.is_empty() {
        RecordBatch::new_empty(schema.clone())
    } else {
        arrow::compute::concat_batches(schema, &good).expect("batches of one schema")
    };
    (batch, rows, bad)
}

/// The first top-level field of `schema` absent from one of the JSON objects.
fn missing_field(schema: &SchemaRef, payloads: &[Option<&[u8]>]) -> Option<String> {
    for bytes in payloads.iter().flatten() {
        let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(bytes) else { continue };
        if let Some(f) = schema.fields().iter().find(|f| !map.contains_key(f.name())) {
            return Some(f.name().clone());
        }
    }
    None
}

/// Encodes the rows of `batch` one record each.
pub fn encode(format: &Format, batch: &RecordBatch) -> Result<Vec<Option<Vec<u8>>>, String> {
    match format {
        Format::AvroConfluent(a) => a.encode(batch),
        Format::Csv(o) => {
            let mut out = Vec::with_capacity(batch.num_rows());
            for row in 0..batch.num_rows() {
                let mut buf = Vec::with_capacity(64);
                {
                    let mut b = arrow::csv::WriterBuilder::new().with_header(false).with_delimiter(o.delimiter).with_timestamp_format("%Y-%m-%d %H:%M:%S%.3f".to_string()).with_timestamp_tz_format("%Y-%m-%d %H:%M:%S%.3fZ".to_string());
                    if let Some(q) = o.quote {
                        b = b.with_quote(q);
                    }
                    let mut w = b.build(&mut buf);
                    w.write(&batch.slice(row, 1)).map_err(|e| e.to_string())?;
                }
                while buf.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                    buf.pop();
                }
                out.push(Some(buf));
            }
            Ok(out)
        }
        Format::Raw(_) => {
            let column = batch.column(0);
            Ok(match column.data_type() {
                DataType::Utf8 => {
                    let a = column.as_any().downcast_ref::<StringArray>().ok_or("a STRING column")?;
                    (0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i).as_bytes().to_vec())).collect()
                }
                DataType::Binary => {
                    let a = column.as_any().downcast_ref::<BinaryArray>().ok_or("a BYTES column")?;
                    (0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i).to_vec())).collect()
                }
                other => return Err(format!("the raw format writes STRING or BYTES, not {other}")),
            })
        }
        Format::Json(o) => {
            let options = EncoderOptions::default().with_explicit_nulls(true).with_encoder_factory(Arc::new(FlinkEncoders { iso: o.iso_timestamps }));
            let fields: Vec<FieldRef> = batch.schema().fields().iter().cloned().collect();
            let mut encoders = Vec::with_capacity(fields.len());
            for (f, c) in fields.iter().zip(batch.columns()) {
                encoders.push(make_encoder(f, c.as_ref(), &options).map_err(|e| e.to_string())?);
            }
            let names: Vec<Vec<u8>> = fields.iter().map(|f| serde_json::to_vec(f.name()).expect("a string encodes")).collect();
            let mut out = Vec::with_capacity(batch.num_rows());
            for row in 0..batch.num_rows() {
                let mut buf = Vec::with_capacity(64);
                buf.push(b'{');
                for (i, e) in encoders.iter_mut().enumerate() {
                    if i > 0 {
                        buf.push(b',');
                    }
                    buf.extend_from_slice(&names[i]);
                    buf.push(b':');
                    if e.is_null(row) {
                        buf.extend_from_slice(b"null");
                    } else {
                        e.encode(row, &mut buf);
                    }
                }
                buf.push(b'}');
                out.push(Some(buf));
            }
            Ok(out)
        }
    }
}

/// Flink's JSON text for timestamps: `2023-11-14 22:13:20.25` (the fraction's trailing zeros
/// dropped, no fraction for a whole second), `Z` after a TIMESTAMP_LTZ, `T` instead of the space
/// with `json.timestamp-format.standard` = 'ISO-8601'.
#[derive(Debug)]
struct FlinkEncoders {
    iso: bool,
}

impl EncoderFactory for FlinkEncoders {
    fn make_default_encoder<'a>(&self, _field: &'a FieldRef, array: &'a dyn Array, _options: &'a EncoderOptions) -> Result<Option<NullableEncoder<'a>>, ArrowError> {
        let DataType::Timestamp(unit, tz) = array.data_type() else { return Ok(None) };
        let nanos: Vec<i64> = {
            let a = arrow::compute::cast(array, &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
            let a = a.as_primitive::<TimestampNanosecondType>();
            a.iter().map(|v| v.unwrap_or_default()).collect()
        };
        let _ = unit;
        let encoder = TimestampText { nanos, iso: self.iso, zone: tz.is_some() };
        Ok(Some(NullableEncoder::new(Box::new(encoder), array.nulls().cloned())))
    }
}

struct TimestampText {
    nanos: Vec<i64>,
    iso: bool,
    zone: bool,
}

impl Encoder for TimestampText {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let n = self.nanos[idx];
        let t = chrono::DateTime::from_timestamp(n.div_euclid(1_000_000_000), n.rem_euclid(1_000_000_000) as u32).unwrap_or_default().naive_utc();
        let mut text = t.format(if self.iso { "%Y-%m-%dT%H:%M:%S" } else { "%Y-%m-%d %H:%M:%S" }).to_string();
        let fraction = n.rem_euclid(1_000_000_000);
        if fraction > 0 {
            let digits = format!("{fraction:09}");
            text.push('.');
            text.push_str(digits.trim_end_matches('0'));
        }
        if self.zone {
            text.push('Z');
        }
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// A schema whose fields are all nullable (what decoding produces).
pub fn nullable(fields: impl IntoIterator<Item = Field>) -> SchemaRef {
    Arc::new(Schema::new(fields.into_iter().map(|f| f.with_nullable(true)).collect::<Vec<_>>()))
}

/// `schema` with every field nullable.
pub fn nullable_like(schema: &Schema) -> SchemaRef {
    nullable(schema.fields().iter().map(|f| f.as_ref().clone()))
}

/// A column of `len` nulls of `t`.
pub fn nulls(t: &DataType, len: usize) -> ArrayRef {
    new_null_array(t, len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int32Array;
    use arrow::datatypes::Int32Type;

    fn schema() -> SchemaRef {
        nullable([Field::new("a", DataType::Int32, true), Field::new("s", DataType::Utf8, true)])
    }

    #[test]
    fn json_rows_and_the_records_that_do_not_decode() {
        let payloads: Vec<Option<&[u8]>> = vec![Some(br#"{"a": 1, "s": "x"}"#), Some(b"{oops"), Some(br#"{"a": "nope"}"#), None, Some(br#"{"s": "y", "extra": 1}"#)];
        let (batch, rows, bad) = decode(&Format::Json(JsonOptions::default()), &schema(), &payloads);
        assert_eq!(rows, [0, 3, 4]);
        assert_eq!(bad.iter().map(|b| b.index).collect::<Vec<_>>(), [1, 2]);
        let a = batch.column(0).as_primitive::<Int32Type>();
        assert_eq!(a, &Int32Array::from(vec![Some(1), None, None]));
        assert_eq!(batch.column(1).as_string::<i32>().value(2), "y");
        let strict = Format::Json(JsonOptions { fail_on_missing_field: true, ..Default::default() });
        let (_, rows, bad) = decode(&strict, &schema(), &[Some(br#"{"a": 1, "s": "x"}"#), Some(br#"{"a": 2}"#)]);
        assert_eq!((rows, bad[0].reason.as_str()), (vec![0], "field s is missing"));
    }

    #[test]
    fn json_out_uses_flinks_timestamp_format() {
        use arrow::array::TimestampMillisecondArray;
        let schema = nullable([Field::new("n", DataType::Int32, true), Field::new("ts", DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None), true)]);
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(vec![Some(1), None])), Arc::new(TimestampMillisecondArray::from(vec![Some(1_700_000_000_120), None]))]).unwrap();
        let out = encode(&Format::Json(JsonOptions::default()), &batch).unwrap();
        assert_eq!(String::from_utf8(out[0].clone().unwrap()).unwrap(), r#"{"n":1,"ts":"2023-11-14 22:13:20.12"}"#);
        assert_eq!(String::from_utf8(out[1].clone().unwrap()).unwrap(), r#"{"n":null,"ts":null}"#);
    }
}

#[cfg(test)]
mod csv_tests {
    use super::*;

    #[test]
    fn csv_records_decode_and_encode_as_flink_writes_them() {
        let schema = nullable([
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("amount", DataType::Decimal128(10, 2), true),
        ]);
        let format = Format::Csv(CsvOptions { delimiter: b',', quote: Some(b'"'), ignore_parse_errors: false });
        let payloads: Vec<Option<&[u8]>> = vec![Some(b"1,ann,2023-11-14 22:13:20.250,1.50"), Some(b"2,\"b,ob\",2023-11-14 22:13:21,2\n"), Some(b"x,cy,2023-11-14 22:13:22,3")];
        let (rows, good, bad) = decode(&format, &schema, &payloads);
        assert_eq!((good, bad.len(), bad[0].index), (vec![0, 1], 1, 2), "{bad:?}");
        assert_eq!(rows.num_rows(), 2);
        let text: Vec<String> = encode(&format, &rows).unwrap().into_iter().map(|v| String::from_utf8(v.unwrap()).unwrap()).collect();
        assert_eq!(text, ["1,ann,2023-11-14 22:13:20.250,1.50", "2,\"b,ob\",2023-11-14 22:13:21.000,2.00"]);
    }
}

#[cfg(test)]
mod json_tests {
    use super::*;

    #[test]
    fn decimals_are_json_numbers_as_flink_writes_them() {
        let schema = nullable([Field::new("price", DataType::Decimal128(23, 3), true)]);
        let format = Format::Json(JsonOptions::default());
        let (rows, _, bad) = decode(&format, &schema, &[Some(br#"{"price": 90.8}"#), Some(br#"{"price": null}"#)]);
        assert!(bad.is_empty());
        let text: Vec<String> = encode(&format, &rows).unwrap().into_iter().map(|v| String::from_utf8(v.unwrap()).unwrap()).collect();
        assert_eq!(text, [r#"{"price":90.800}"#, r#"{"price":null}"#]);
    }
}
