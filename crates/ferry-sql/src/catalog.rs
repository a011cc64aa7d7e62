//! The tables a job file declares, checked as Flink checks them: connector options, formats,
//! metadata columns and keys. Pure: nothing here touches a cluster.

use std::collections::{BTreeMap, HashSet};

use sqlparser::ast::Expr;

use crate::error::{fail, Pos, Result};
use crate::format::{Format, FormatOptions};
use crate::parse::{ColumnKind, OptionDdl, TableDdl};
use crate::types::FlinkType;

/// A table over a Kafka topic.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub pos: Pos,
    pub columns: Vec<Column>,
    /// The rowtime column's index and its watermark expression.
    pub watermark: Option<(usize, Expr, Pos)>,
    pub primary_key: Vec<usize>,
    pub kafka: KafkaTable,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub ty: FlinkType,
    pub nullable: bool,
    pub pos: Pos,
    pub source: ColumnSource,
}

#[derive(Debug, Clone)]
pub enum ColumnSource {
    /// A physical column: read from (written to) the record's value and/or key.
    Physical { in_key: bool, in_value: bool },
    Metadata { key: MetadataKey, is_virtual: bool },
    /// `name AS expr`: computed when read, never written.
    Computed(Box<Expr>),
}

/// The Kafka connector's metadata (Flink's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataKey {
    Topic,
    Partition,
    Offset,
    Timestamp,
    TimestampType,
    Headers,
    LeaderEpoch,
}

impl MetadataKey {
    fn parse(key: &str) -> Option<MetadataKey> {
        Some(match key {
            "topic" => MetadataKey::Topic,
            "partition" => MetadataKey::Partition,
            "offset" => MetadataKey::Offset,
            "timestamp" => MetadataKey::Timestamp,
            "timestamp-type" => MetadataKey::TimestampType,
            "headers" => MetadataKey::Headers,
            "leader-epoch" => MetadataKey::LeaderEpoch,
            _ => return None,
        })
    }

    /// Written to the record by a sink (the others are read-only).
    pub fn writable(self) -> bool {
        matches!(self, MetadataKey::Timestamp | MetadataKey::Headers)
    }

    fn accepts(self, ty: &FlinkType) -> bool {
        match self {
            MetadataKey::Topic | MetadataKey::TimestampType => *ty == FlinkType::String,
            MetadataKey::Partition | MetadataKey::LeaderEpoch => *ty == FlinkType::Int,
            MetadataKey::Offset => *ty == FlinkType::BigInt,
            MetadataKey::Timestamp => matches!(ty, FlinkType::TimestampLtz(_) | FlinkType::Timestamp(_)),
            MetadataKey::Headers => matches!(ty, FlinkType::Map(k, v) if **k == FlinkType::String && **v == FlinkType::Bytes),
        }
    }

    fn flink_type(self) -> &'static str {
        match self {
            MetadataKey::Topic | MetadataKey::TimestampType => "STRING",
            MetadataKey::Partition | MetadataKey::LeaderEpoch => "INT",
            MetadataKey::Offset => "BIGINT",
            MetadataKey::Timestamp => "TIMESTAMP_LTZ(3)",
            MetadataKey::Headers => "MAP<STRING, BYTES>",
        }
    }
}

/// Where reading starts (`scan.startup.mode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupMode {
    EarliestOffset,
    LatestOffset,
    /// The group's committed offsets; `properties.auto.offset.reset` (default: none → earliest here,
    /// as Flink's `group-offsets` falls back to the reset strategy).
    GroupOffsets,
    Timestamp(i64),
}

/// Where a bounded read stops (`scan.bounded.mode`); unbounded when absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundedMode {
    Unbounded,
    /// The end offsets when the job starts.
    LatestOffset,
    Timestamp(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkPartitioner {
    /// Kafka's: by key hash when the record has a key, else spread.
    Default,
    /// Each sink task writes one partition (one task here: partition 0).
    Fixed,
    RoundRobin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryGuarantee {
    AtLeastOnce,
    None,
    /// Results written in Kafka transactions committed with each checkpoint; the ids start
    /// with the prefix.
    ExactlyOnce { prefix: String },
}

#[derive(Debug, Clone)]
pub struct KafkaTable {
    pub upsert: bool,
    pub topic: String,
    /// `properties.*`, passed to librdkafka (Java-only keys translated or refused).
    pub properties: Vec<(String, String)>,
    pub group_id: Option<String>,
    /// `properties.auto.offset.reset`: where `group-offsets` starts a partition the group has no
    /// offset for (`none`, the default, fails the job, as in Flink).
    pub offset_reset: Option<String>,
    pub startup: StartupMode,
    pub bounded: BoundedMode,
    pub key_format: Option<Format>,
    pub value_format: Format,
    pub key_fields_prefix: String,
    pub partitioner: SinkPartitioner,
    pub delivery: DeliveryGuarantee,
}

/// A client of the cluster whose `properties.*` these are (the group id left out), named
/// `name` in its errors; `None` without `bootstrap.servers`.
pub fn cluster_client(name: impl Into<String>, properties: &[(String, String)]) -> Option<ferry_kafka::ClusterClient> {
    let bootstrap = properties.iter().find(|(k, _)| k == "bootstrap.servers").map(|(_, v)| v.clone())?;
    let mut cluster = ferry_kafka::ClusterClient::new(name.into(), bootstrap);
    cluster.common = properties.iter().filter(|(k, _)| k != "bootstrap.servers" && k != "group.id").cloned().collect();
    Some(cluster)
}

impl Table {
    pub fn from_ddl(ddl: &TableDdl, pos: Pos) -> Result<Table> {
        let mut opts = Options::new(&ddl.options, pos, &ddl.name);
        let connector = opts.required("connector")?;
        let upsert = match connector.as_str() {
            "kafka" => false,
            "upsert-kafka" => true,
            other => return fail(opts.pos_of("connector"), format!("table {}: connector '{other}' is not supported (Ferry reads and writes Kafka: 'kafka' or 'upsert-kafka')", ddl.name)),
        };
        let mut columns = Vec::new();
        let mut seen = HashSet::new();
        for c in &ddl.columns {
            seen.insert(c.name.clone());
            let (ty, nullable, source) = match &c.kind {
                ColumnKind::Physical { ty, not_null } => (ty.clone(), !not_null, ColumnSource::Physical { in_key: false, in_value: true }),
                ColumnKind::Metadata { ty, key, is_virtual } => {
                    let Some(k) = MetadataKey::parse(key) else {
                        return fail(c.pos, format!("table {}: unknown metadata key '{key}' (the Kafka connector has topic, partition, offset, timestamp, timestamp-type, headers, leader-epoch)", ddl.name));
                    };
                    if !k.accepts(ty) {
                        return fail(c.pos, format!("table {}: metadata '{key}' is {}, not {ty}", ddl.name, k.flink_type()));
                    }
                    (ty.clone(), true, ColumnSource::Metadata { key: k, is_virtual: *is_virtual })
                }
                // The type is the expression's: the planner fills it in.
                ColumnKind::Computed(e) => (FlinkType::String, true, ColumnSource::Computed(e.clone())),
            };
            columns.push(Column { name: c.name.clone(), ty, nullable, pos: c.pos, source });
        }
        let index = |columns: &[Column], name: &str| columns.iter().position(|c| c.name == name);
        let mut primary_key = Vec::new();
        for k in &ddl.primary_key {
            match index(&columns, k) {
                Some(i) if matches!(columns[i].source, ColumnSource::Physical { .. }) => primary_key.push(i),
                Some(_) => return fail(pos, format!("table {}: primary key column {k} must be a physical column", ddl.name)),
                None => return fail(pos, format!("table {}: primary key column {k} is not a column of the table", ddl.name)),
            }
        }
        let watermark = match &ddl.watermark {
            None => None,
            Some(w) => match index(&columns, &w.column) {
                Some(i) if matches!(columns[i].ty, FlinkType::Timestamp(p) | FlinkType::TimestampLtz(p) if p <= 3) || matches!(columns[i].source, ColumnSource::Computed(_)) => {
                    Some((i, w.expr.clone(), w.pos))
                }
                Some(i) => return fail(w.pos, format!("table {}: the rowtime column {} must be TIMESTAMP(3) or TIMESTAMP_LTZ(3), not {}", ddl.name, w.column, columns[i].ty)),
                None => return fail(w.pos, format!("table {}: watermark column {} is not a column of the table", ddl.name, w.column)),
            },
        };

        let topic = opts.take("topic");
        if opts.take("topic-pattern").is_some() {
            return fail(opts.pos_of("topic-pattern"), format!("table {}: 'topic-pattern' is not supported; name the topic with 'topic'", ddl.name));
        }
        let Some(topic) = topic else { return fail(pos, format!("table {}: option 'topic' is required", ddl.name)) };
        if topic.contains(';') {
            return fail(opts.pos_of("topic"), format!("table {}: a list of topics is not supported; one table reads one topic", ddl.name));
        }
        let group_id = opts.take("properties.group.id");
        let mut properties = Vec::new();
        let mut reset = None;
        let bootstrap = opts.required("properties.bootstrap.servers")?;
        properties.push(("bootstrap.servers".to_string(), bootstrap));
        for (key, value, at) in opts.take_prefixed("properties.") {
            let translated = match key.as_str() {
                "sasl.jaas.config" => match ferry_kafka::ClusterClient::translate_jaas(&value) {
                    Some(kv) => kv,
                    None => return fail(at, format!("table {}: 'properties.sasl.jaas.config' is not a PLAIN or SCRAM login module with a username and a password", ddl.name)),
                },
                "auto.offset.reset" => {
                    if !["earliest", "latest", "none"].contains(&value.as_str()) {
                        return fail(at, format!("table {}: 'properties.auto.offset.reset' is earliest, latest or none, not '{value}'", ddl.name));
                    }
                    reset = Some(value.clone());
                    continue;
                }
                "enable.auto.commit" | "key.deserializer" | "value.deserializer" | "key.serializer" | "value.serializer" => {
                    return fail(at, format!("table {}: 'properties.{key}' is set by the connector (use scan.startup.mode and the formats)", ddl.name));
                }
                _ => vec![(key.clone(), value.clone())],
            };
            for (k, v) in translated {
                if let Some(problem) = ferry_kafka::ClusterClient::check_property(&k, &v) {
                    return fail(at, format!("table {}: 'properties.{key}': {}", ddl.name, problem.reason));
                }
                properties.push((k, v));
            }
        }
        let startup = if upsert {
            StartupMode::EarliestOffset
        } else {
            match opts.take("scan.startup.mode").as_deref() {
                None | Some("group-offsets") if group_id.is_some() => StartupMode::GroupOffsets,
                None => StartupMode::EarliestOffset,
                Some("earliest-offset") => StartupMode::EarliestOffset,
                Some("latest-offset") => StartupMode::LatestOffset,
                Some("group-offsets") => return fail(opts.pos_of("scan.startup.mode"), format!("table {}: 'group-offsets' needs 'properties.group.id'", ddl.name)),
                Some("timestamp") => StartupMode::Timestamp(opts.millis("scan.startup.timestamp-millis")?),
                Some("specific-offsets") => return fail(opts.pos_of("scan.startup.mode"), format!("table {}: scan.startup.mode 'specific-offsets' is not supported", ddl.name)),
                Some(other) => return fail(opts.pos_of("scan.startup.mode"), format!("table {}: unknown scan.startup.mode '{other}' (earliest-offset, latest-offset, group-offsets, timestamp)", ddl.name)),
            }
        };
        let bounded = match opts.take("scan.bounded.mode").as_deref() {
            None | Some("unbounded") => BoundedMode::Unbounded,
            Some("latest-offset") => BoundedMode::LatestOffset,
            Some("timestamp") => BoundedMode::Timestamp(opts.millis("scan.bounded.timestamp-millis")?),
            Some(other) => return fail(opts.pos_of("scan.bounded.mode"), format!("table {}: scan.bounded.mode '{other}' is not supported (unbounded, latest-offset, timestamp)", ddl.name)),
        };
        opts.take("scan.topic-partition-discovery.interval");
        opts.take("sink.parallelism");

        // Formats: `format` (value only) or `key.format` / `value.format`.
        let value_format_name = match (opts.take("format"), opts.take("value.format")) {
            (Some(_), Some(_)) => return fail(opts.pos_of("value.format"), format!("table {}: set 'format' or 'value.format', not both", ddl.name)),
            (Some(f), None) => (f, ""),
            (None, Some(f)) => (f, "value."),
            (None, None) => return fail(pos, format!("table {}: option 'format' (or 'value.format') is required", ddl.name)),
        };
        let mut value_format = Format::parse(&value_format_name.0, &mut FormatOptions::new(&mut opts, value_format_name.1), &ddl.name)?;
        let mut key_format = match opts.take("key.format") {
            Some(f) => Some(Format::parse(&f, &mut FormatOptions::new(&mut opts, "key."), &ddl.name)?),
            None => None,
        };
        // avro-confluent registers under Confluent's default subjects (TopicNameStrategy).
        for (format, part) in [(Some(&mut value_format), "value"), (key_format.as_mut(), "key")] {
            if let Some(Format::AvroConfluent(a)) = format {
                a.subject.get_or_insert_with(|| format!("{topic}-{part}"));
            }
        }
        let key_fields_prefix = opts.take("key.fields-prefix").unwrap_or_default();
        let key_fields: Vec<String> = match opts.take("key.fields") {
            Some(list) => list.split(';').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            None if upsert => primary_key.iter().map(|i| columns[*i].name.clone()).collect(),
            None => Vec::new(),
        };
        if upsert && primary_key.is_empty() {
            return fail(pos, format!("table {}: an 'upsert-kafka' table needs a PRIMARY KEY (…) NOT ENFORCED: the key of its records", ddl.name));
        }
        if upsert && key_format.is_none() {
            return fail(pos, format!("table {}: an 'upsert-kafka' table needs 'key.format'", ddl.name));
        }
        if !key_fields.is_empty() && key_format.is_none() {
            return fail(opts.pos_of("key.fields"), format!("table {}: 'key.fields' needs 'key.format'", ddl.name));
        }
        if key_format.is_some() && key_fields.is_empty() {
            return fail(opts.pos_of("key.format"), format!("table {}: 'key.format' needs 'key.fields' (the columns that make the key)", ddl.name));
        }
        let except_key = match opts.take("value.fields-include").as_deref() {
            None | Some("ALL") => false,
            Some("EXCEPT_KEY") => true,
            Some(other) => return fail(opts.pos_of("value.fields-include"), format!("table {}: value.fields-include is ALL or EXCEPT_KEY, not '{other}'", ddl.name)),
        };
        if !key_fields_prefix.is_empty() && !except_key {
            return fail(opts.pos_of("key.fields-prefix"), format!("table {}: 'key.fields-prefix' needs 'value.fields-include' = 'EXCEPT_KEY'", ddl.name));
        }
        for k in &key_fields {
            let Some(i) = index(&columns, k) else { return fail(opts.pos_of("key.fields"), format!("table {}: key field {k} is not a column of the table", ddl.name)) };
            let ColumnSource::Physical { in_key, in_value } = &mut columns[i].source else {
                return fail(opts.pos_of("key.fields"), format!("table {}: key field {k} must be a physical column", ddl.name));
            };
            *in_key = true;
            *in_value = !except_key;
        }
        if upsert {
            let key: HashSet<usize> = key_fields.iter().filter_map(|k| index(&columns, k)).collect();
            if key != primary_key.iter().copied().collect() {
                return fail(pos, format!("table {}: an 'upsert-kafka' table's key fields are its PRIMARY KEY columns", ddl.name));
            }
        }
        if matches!(value_format, Format::Raw(_)) {
            let value_columns = columns.iter().filter(|c| matches!(c.source, ColumnSource::Physical { in_value: true, .. })).count();
            if value_columns != 1 {
                return fail(opts.pos_of("format").max(opts.pos_of("value.format")), format!("table {}: the 'raw' format holds exactly one physical column, this table has {value_columns}", ddl.name));
            }
        }

        let partitioner = match opts.take("sink.partitioner").as_deref() {
            None | Some("default") => SinkPartitioner::Default,
            Some("fixed") => SinkPartitioner::Fixed,
            Some("round-robin") => SinkPartitioner::RoundRobin,
            Some(other) => return fail(opts.pos_of("sink.partitioner"), format!("table {}: sink.partitioner '{other}' is not supported (default, fixed, round-robin; custom classes are Java)", ddl.name)),
        };
        let delivery = match opts.take("sink.delivery-guarantee").as_deref() {
            None | Some("at-least-once") => DeliveryGuarantee::AtLeastOnce,
            Some("none") => DeliveryGuarantee::None,
            Some("exactly-once") => match opts.take("sink.transactional-id-prefix") {
                Some(prefix) if !prefix.trim().is_empty() => DeliveryGuarantee::ExactlyOnce { prefix },
                _ => return fail(opts.pos_of("sink.delivery-guarantee"), format!("table {}: sink.delivery-guarantee 'exactly-once' needs 'sink.transactional-id-prefix' (as in Flink)", ddl.name)),
            },
            Some(other) => return fail(opts.pos_of("sink.delivery-guarantee"), format!("table {}: unknown sink.delivery-guarantee '{other}'", ddl.name)),
        };
        opts.take("sink.transactional-id-prefix");
        opts.take("sink.buffer-flush.max-rows");
        opts.take("sink.buffer-flush.interval");
        opts.finish()?;

        Ok(Table {
            name: ddl.name.clone(),
            pos,
            columns,
            watermark,
            primary_key,
            kafka: KafkaTable { upsert, topic, properties, group_id, offset_reset: reset, startup, bounded, key_format, value_format, key_fields_prefix, partitioner, delivery },
        })
    }

    /// Columns a writer provides, in order: physical and non-virtual metadata ones.
    pub fn persisted(&self) -> impl Iterator<Item = (usize, &Column)> {
        self.columns.iter().enumerate().filter(|(_, c)| match &c.source {
            ColumnSource::Physical { .. } => true,
            ColumnSource::Metadata { is_virtual, .. } => !is_virtual,
            ColumnSource::Computed(_) => false,
        })
    }
}

/// A table's `WITH` options, taken one by one; what is left is refused.
pub(crate) struct Options {
    table: String,
    pos: Pos,
    left: BTreeMap<String, (String, Pos)>,
    seen: BTreeMap<String, Pos>,
}

impl Options {
    fn new(list: &[OptionDdl], pos: Pos, table: &str) -> Self {
        let left: BTreeMap<String, (String, Pos)> = list.iter().map(|o| (o.key.clone(), (o.value.clone(), o.pos))).collect();
        let seen = list.iter().map(|o| (o.key.clone(), o.pos)).collect();
        Options { table: table.to_string(), pos, left, seen }
    }

    pub(crate) fn take(&mut self, key: &str) -> Option<String> {
        self.left.remove(key).map(|(v, _)| v)
    }

    fn required(&mut self, key: &str) -> Result<String> {
        match self.take(key) {
            Some(v) => Ok(v),
            None => fail(self.pos, format!("table {}: option '{key}' is required", self.table)),
        }
    }

    /// Where an option was written (the statement's start if it was not).
    pub(crate) fn pos_of(&self, key: &str) -> Pos {
        self.seen.get(key).copied().unwrap_or(self.pos)
    }

    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    fn millis(&mut self, key: &str) -> Result<i64> {
        let at = self.pos_of(key);
        match self.take(key) {
            Some(v) => v.parse().or_else(|_| fail(at, format!("table {}: '{key}' must be milliseconds since the epoch, not '{v}'", self.table))),
            None => fail(self.pos, format!("table {}: option '{key}' is required", self.table)),
        }
    }

    fn take_prefixed(&mut self, prefix: &str) -> Vec<(String, String, Pos)> {
        let keys: Vec<String> = self.left.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        keys.into_iter().map(|k| {
            let (v, at) = self.left.remove(&k).unwrap();
            (k[prefix.len()..].to_string(), v, at)
        }).collect()
    }

    fn finish(self) -> Result<()> {
        match self.left.into_iter().next() {
            None => Ok(()),
            Some((key, (_, at))) => fail(at, format!("table {}: unsupported option '{key}'", self.table)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse_script, Statement};

    fn table(sql: &str) -> Result<Table> {
        let s = parse_script(sql).unwrap().statements.remove(0);
        let Statement::CreateTable(ddl) = s.statement else { panic!() };
        Table::from_ddl(&ddl, s.pos)
    }

    const BASE: &str = "'connector' = 'kafka', 'topic' = 't', 'properties.bootstrap.servers' = '127.0.0.1:9092'";

    #[test]
    fn a_source_with_keys_metadata_and_a_group() {
        let t = table(&format!("CREATE TABLE t (k STRING, v INT, ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp', off BIGINT METADATA FROM 'offset' VIRTUAL) WITH ({BASE}, 'properties.group.id' = 'g', 'key.format' = 'raw', 'key.fields' = 'k', 'value.format' = 'json', 'value.json.ignore-parse-errors' = 'true')")).unwrap();
        assert_eq!(t.kafka.startup, StartupMode::GroupOffsets);
        assert!(matches!(t.columns[0].source, ColumnSource::Physical { in_key: true, in_value: true }));
        assert_eq!(t.persisted().map(|(i, _)| i).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(matches!(t.kafka.value_format, Format::Json(ref o) if o.ignore_parse_errors));
    }

    #[test]
    fn options_flink_would_refuse_are_refused_where_they_are() {
        let e = table(&format!("CREATE TABLE t (a INT) WITH ({BASE},\n 'format' = 'json', 'scan.startup.mode' = 'earliest', 'foo' = 'bar')")).unwrap_err();
        assert_eq!(e.pos, Pos::new(2, 21));
        assert!(e.message.contains("unknown scan.startup.mode 'earliest'"), "{e}");
        let e = table(&format!("CREATE TABLE t (a INT) WITH ({BASE},\n 'format' = 'json', 'foo' = 'bar')")).unwrap_err();
        assert_eq!((e.pos, e.message.as_str()), (Pos::new(2, 21), "table t: unsupported option 'foo'"));
        let e = table(&format!("CREATE TABLE t (a INT METADATA FROM 'offset') WITH ({BASE}, 'format' = 'json')")).unwrap_err();
        assert!(e.message.contains("metadata 'offset' is BIGINT, not INT"), "{e}");
        let e = table("CREATE TABLE t (a INT, PRIMARY KEY (a) NOT ENFORCED) WITH ('connector' = 'upsert-kafka', 'topic' = 't', 'properties.bootstrap.servers' = 'x:1', 'value.format' = 'json')").unwrap_err();
        assert!(e.message.contains("needs 'key.format'"), "{e}");
        let e = table(&format!("CREATE TABLE t (a INT) WITH ({BASE}, 'format' = 'json', 'properties.no.such.thing' = '1')")).unwrap_err();
        assert!(e.message.contains("properties.no.such.thing"), "{e}");
        let e = table(&format!("CREATE TABLE t (a INT, b INT) WITH ({BASE}, 'format' = 'raw')")).unwrap_err();
        assert!(e.message.contains("exactly one physical column"), "{e}");
    }
}
