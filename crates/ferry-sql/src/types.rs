//! Flink's data types and the Arrow types Ferry holds them in.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, TimeUnit};

/// A column type as declared in Flink DDL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlinkType {
    String,
    Boolean,
    Bytes,
    Decimal(u8, i8),
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Float,
    Double,
    Date,
    /// Held in milliseconds (Flink's runtime precision for TIME).
    Time,
    /// `TIMESTAMP(p)`: a wall-clock time without zone.
    Timestamp(u32),
    /// `TIMESTAMP_LTZ(p)`: an instant, shown in the session's zone (UTC).
    TimestampLtz(u32),
    /// Item type and whether items are NOT NULL.
    Array(Box<FlinkType>, bool),
    Map(Box<FlinkType>, Box<FlinkType>),
    /// Fields: name, type, NOT NULL.
    Row(Vec<(String, FlinkType, bool)>),
}

fn unit(precision: u32) -> TimeUnit {
    match precision {
        0..=3 => TimeUnit::Millisecond,
        4..=6 => TimeUnit::Microsecond,
        _ => TimeUnit::Nanosecond,
    }
}

impl FlinkType {
    pub fn arrow(&self) -> DataType {
        match self {
            FlinkType::String => DataType::Utf8,
            FlinkType::Boolean => DataType::Boolean,
            FlinkType::Bytes => DataType::Binary,
            FlinkType::Decimal(p, s) => DataType::Decimal128(*p, *s),
            FlinkType::TinyInt => DataType::Int8,
            FlinkType::SmallInt => DataType::Int16,
            FlinkType::Int => DataType::Int32,
            FlinkType::BigInt => DataType::Int64,
            FlinkType::Float => DataType::Float32,
            FlinkType::Double => DataType::Float64,
            FlinkType::Date => DataType::Date32,
            FlinkType::Time => DataType::Time32(TimeUnit::Millisecond),
            FlinkType::Timestamp(p) => DataType::Timestamp(unit(*p), None),
            FlinkType::TimestampLtz(p) => DataType::Timestamp(unit(*p), Some(Arc::from("UTC"))),
            FlinkType::Array(item, not_null) => DataType::List(Arc::new(Field::new("item", item.arrow(), !*not_null))),
            FlinkType::Map(k, v) => {
                let entries = Field::new("entries", DataType::Struct(Fields::from(vec![Field::new("key", k.arrow(), false), Field::new("value", v.arrow(), true)])), false);
                DataType::Map(Arc::new(entries), false)
            }
            FlinkType::Row(fields) => DataType::Struct(fields.iter().map(|(n, t, not_null)| Field::new(n, t.arrow(), !*not_null)).collect()),
        }
    }

    /// The Flink type an Arrow type is shown as (a query's result columns).
    pub fn from_arrow(t: &DataType) -> Option<FlinkType> {
        let precision = |u: &TimeUnit| match u {
            TimeUnit::Second => 0,
            TimeUnit::Millisecond => 3,
            TimeUnit::Microsecond => 6,
            TimeUnit::Nanosecond => 9,
        };
        Some(match t {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => FlinkType::String,
            DataType::Boolean => FlinkType::Boolean,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => FlinkType::Bytes,
            DataType::Decimal128(p, s) => FlinkType::Decimal(*p, *s),
            DataType::Int8 => FlinkType::TinyInt,
            DataType::Int16 | DataType::UInt8 => FlinkType::SmallInt,
            DataType::Int32 | DataType::UInt16 => FlinkType::Int,
            DataType::Int64 | DataType::UInt32 | DataType::UInt64 => FlinkType::BigInt,
            DataType::Float16 | DataType::Float32 => FlinkType::Float,
            DataType::Float64 => FlinkType::Double,
            DataType::Date32 | DataType::Date64 => FlinkType::Date,
            DataType::Time32(_) | DataType::Time64(_) => FlinkType::Time,
            DataType::Timestamp(u, None) => FlinkType::Timestamp(precision(u)),
            DataType::Timestamp(u, Some(_)) => FlinkType::TimestampLtz(precision(u)),
            DataType::List(f) | DataType::LargeList(f) => FlinkType::Array(Box::new(FlinkType::from_arrow(f.data_type())?), !f.is_nullable()),
            DataType::Struct(fields) => FlinkType::Row(fields.iter().map(|f| Some((f.name().clone(), FlinkType::from_arrow(f.data_type())?, !f.is_nullable()))).collect::<Option<_>>()?),
            DataType::Map(entries, _) => match entries.data_type() {
                DataType::Struct(kv) if kv.len() == 2 => FlinkType::Map(Box::new(FlinkType::from_arrow(kv[0].data_type())?), Box::new(FlinkType::from_arrow(kv[1].data_type())?)),
                _ => return None,
            },
            _ => return None,
        })
    }
}

impl fmt::Display for FlinkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlinkType::String => write!(f, "STRING"),
            FlinkType::Boolean => write!(f, "BOOLEAN"),
            FlinkType::Bytes => write!(f, "BYTES"),
            FlinkType::Decimal(p, s) => write!(f, "DECIMAL({p}, {s})"),
            FlinkType::TinyInt => write!(f, "TINYINT"),
            FlinkType::SmallInt => write!(f, "SMALLINT"),
            FlinkType::Int => write!(f, "INT"),
            FlinkType::BigInt => write!(f, "BIGINT"),
            FlinkType::Float => write!(f, "FLOAT"),
            FlinkType::Double => write!(f, "DOUBLE"),
            FlinkType::Date => write!(f, "DATE"),
            FlinkType::Time => write!(f, "TIME(3)"),
            FlinkType::Timestamp(p) => write!(f, "TIMESTAMP({p})"),
            FlinkType::TimestampLtz(p) => write!(f, "TIMESTAMP_LTZ({p})"),
            FlinkType::Array(t, not_null) => write!(f, "ARRAY<{t}{}>", if *not_null { " NOT NULL" } else { "" }),
            FlinkType::Map(k, v) => write!(f, "MAP<{k}, {v}>"),
            FlinkType::Row(fields) => {
                write!(f, "ROW<")?;
                for (i, (n, t, not_null)) in fields.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "`{n}` {t}{}", if *not_null { " NOT NULL" } else { "" })?;
                }
                write!(f, ">")
            }
        }
    }
}
