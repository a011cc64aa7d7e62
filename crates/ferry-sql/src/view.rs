//! Materialized views: a query's result kept by primary key, as SQL Stream Builder keeps it, and
//! read through endpoints. Pure: the pipeline applies changes, the REST API reads.
//!
//! A change (+I, +U) puts its row under its key, a retraction (-U, -D) removes the key's row. With
//! `ignore-nulls`, a NULL in a new row keeps the value it would overwrite. Retention drops rows
//! not changed for `retention`, keeping at least the `min-row-retention-count` newest.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use datafusion_common::ScalarValue;
use datafusion_expr::LogicalPlan;

use crate::error::Pos;
use crate::ops::Rows;

/// A view as declared: its columns, key, retention and endpoints.
pub struct ViewPlan {
    pub name: String,
    pub pos: Pos,
    pub schema: SchemaRef,
    /// Indices of the primary key's columns in `schema`.
    pub key: Vec<usize>,
    pub retention: Option<Duration>,
    pub min_rows: usize,
    pub ignore_nulls: bool,
    pub endpoints: BTreeMap<String, Endpoint>,
}

/// `'endpoint.NAME' = 'SELECT … FROM view [WHERE …]'`: columns and filters, `{param}` for a
/// request parameter.
pub struct Endpoint {
    pub sql: String,
    /// The planned query with its parameters as placeholders (`$param`), and their types.
    pub plan: LogicalPlan,
    pub params: Vec<(String, arrow::datatypes::DataType)>,
}

/// One row and when it last changed (ms since the epoch).
struct Entry {
    row: Vec<ScalarValue>,
    changed_ms: i64,
}

/// A view's current rows, ordered by key.
pub struct ViewTable {
    pub plan: Arc<ViewPlan>,
    converter: RowConverter,
    rows: BTreeMap<Box<[u8]>, Entry>,
    /// The pipeline's watermark and the source offsets (next to read, per topic and partition)
    /// the rows reflect.
    pub watermark: Option<i64>,
    pub offsets: BTreeMap<(String, i32), i64>,
    /// Changes applied so far; the cached batch is rebuilt when it moves.
    pub version: u64,
    cached: Option<(u64, RecordBatch)>,
}

impl ViewTable {
    pub fn new(plan: Arc<ViewPlan>) -> Result<ViewTable, String> {
        let fields = plan.key.iter().map(|k| SortField::new(plan.schema.field(*k).data_type().clone())).collect();
        let converter = RowConverter::new(fields).map_err(|e| e.to_string())?;
        Ok(ViewTable { plan, converter, rows: BTreeMap::new(), watermark: None, offsets: BTreeMap::new(), version: 0, cached: None })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Applies a batch of changes in order.
    pub fn apply(&mut self, rows: &Rows, now_ms: i64) -> Result<(), String> {
        let batch = &rows.batch;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let keys: Vec<ArrayRef> = self.plan.key.iter().map(|k| batch.column(*k).clone()).collect();
        let converted = self.converter.convert_columns(&keys).map_err(|e| e.to_string())?;
        for i in 0..batch.num_rows() {
            let key: Box<[u8]> = converted.row(i).as_ref().into();
            if !rows.kind(i).adds() {
                self.rows.remove(&key);
                continue;
            }
            let mut row = batch.columns().iter().map(|c| ScalarValue::try_from_array(c, i)).collect::<datafusion_common::Result<Vec<_>>>().map_err(|e| e.to_string())?;
            if self.plan.ignore_nulls {
                if let Some(old) = self.rows.get(&key) {
                    for (new, old) in row.iter_mut().zip(&old.row) {
                        if new.is_null() {
                            *new = old.clone();
                        }
                    }
                }
            }
            self.rows.insert(key, Entry { row, changed_ms: now_ms });
        }
        self.version += 1;
        Ok(())
    }

    /// Drops rows not changed within the retention, keeping the newest `min_rows`.
    pub fn expire(&mut self, now_ms: i64) {
        let Some(retention) = self.plan.retention else { return };
        let cutoff = now_ms - retention.as_millis() as i64;
        let old = self.rows.values().filter(|e| e.changed_ms < cutoff).count();
        if old == 0 || self.rows.len() <= self.plan.min_rows {
            return;
        }
        let mut removable = (self.rows.len() - self.plan.min_rows).min(old);
        // The oldest first.
        let mut ages: Vec<(i64, Box<[u8]>)> = self.rows.iter().filter(|(_, e)| e.changed_ms < cutoff).map(|(k, e)| (e.changed_ms, k.clone())).collect();
        ages.sort();
        for (_, key) in ages {
            if removable == 0 {
                break;
            }
            self.rows.remove(&key);
            removable -= 1;
        }
        self.version += 1;
    }

    /// Every row, in key order, as one batch (cached until the next change).
    pub fn batch(&mut self) -> Result<RecordBatch, String> {
        if let Some((v, b)) = &self.cached {
            if *v == self.version {
                return Ok(b.clone());
            }
        }
        let schema = crate::format::nullable_like(&self.plan.schema);
        let batch = if self.rows.is_empty() { RecordBatch::new_empty(schema) } else { RecordBatch::try_new(schema, self.columns()?).map_err(|e| e.to_string())? };
        self.cached = Some((self.version, batch.clone()));
        Ok(batch)
    }

    /// The view's columns over every row, in key order (there is at least one row).
    fn columns(&self) -> Result<Vec<ArrayRef>, String> {
        let mut columns = Vec::with_capacity(self.plan.schema.fields().len());
        for (c, field) in self.plan.schema.fields().iter().enumerate() {
            let array = ScalarValue::iter_to_array(self.rows.values().map(|e| e.row[c].clone())).map_err(|e| e.to_string())?;
            columns.push(if array.data_type() == field.data_type() { array } else { arrow::compute::cast(&array, field.data_type()).map_err(|e| e.to_string())? });
        }
        Ok(columns)
    }

    /// Every row with when it last changed (a last column `changed_ms`), for a checkpoint.
    pub fn snapshot(&self) -> Result<RecordBatch, String> {
        let mut fields: Vec<arrow::datatypes::Field> = self.plan.schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
        fields.push(arrow::datatypes::Field::new("changed_ms", arrow::datatypes::DataType::Int64, false));
        let schema = Arc::new(arrow::datatypes::Schema::new(fields));
        if self.rows.is_empty() {
            return Ok(RecordBatch::new_empty(schema));
        }
        let mut columns = self.columns()?;
        columns.push(Arc::new(arrow::array::Int64Array::from(self.rows.values().map(|e| e.changed_ms).collect::<Vec<_>>())));
        RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())
    }

    /// Puts back the rows of [`ViewTable::snapshot`].
    pub fn restore(&mut self, batch: &RecordBatch) -> Result<(), String> {
        self.rows.clear();
        let n = self.plan.schema.fields().len();
        if batch.num_columns() != n + 1 {
            return Err(format!("the checkpoint's view has {} columns, the view {}", batch.num_columns().saturating_sub(1), n));
        }
        let keys: Vec<ArrayRef> = self.plan.key.iter().map(|k| batch.column(*k).clone()).collect();
        let converted = self.converter.convert_columns(&keys).map_err(|e| e.to_string())?;
        let changed = batch.column(n).as_any().downcast_ref::<arrow::array::Int64Array>().ok_or("the checkpoint's view has no change times")?;
        for i in 0..batch.num_rows() {
            let row = (0..n).map(|c| ScalarValue::try_from_array(batch.column(c), i)).collect::<datafusion_common::Result<Vec<_>>>().map_err(|e| e.to_string())?;
            self.rows.insert(converted.row(i).as_ref().into(), Entry { row, changed_ms: changed.value(i) });
        }
        self.version += 1;
        Ok(())
    }

    /// The row under `key` (one value per key column, as text), if any.
    pub fn lookup(&self, key: &[ScalarValue]) -> Result<Option<RecordBatch>, String> {
        let columns = key.iter().map(|v| v.to_array()).collect::<datafusion_common::Result<Vec<_>>>().map_err(|e| e.to_string())?;
        let converted = self.converter.convert_columns(&columns).map_err(|e| e.to_string())?;
        let Some(entry) = self.rows.get(converted.row(0).as_ref()) else { return Ok(None) };
        let schema = crate::format::nullable_like(&self.plan.schema);
        let columns = entry.row.iter().zip(schema.fields()).map(|(v, f)| v.to_array().and_then(|a| Ok(arrow::compute::cast(&a, f.data_type())?))).collect::<datafusion_common::Result<Vec<_>>>().map_err(|e| e.to_string())?;
        RecordBatch::try_new(schema, columns).map(Some).map_err(|e| e.to_string())
    }
}

/// The views of a job, shared by its pipelines (writers) and the REST API (readers).
pub type Views = Arc<HashMap<String, Arc<std::sync::RwLock<ViewTable>>>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::RowKind;
    use arrow::array::{Int64Array, Int8Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    fn plan(ignore_nulls: bool, retention: Option<Duration>, min_rows: usize) -> Arc<ViewPlan> {
        let schema = Arc::new(Schema::new(vec![Field::new("item", DataType::Utf8, true), Field::new("n", DataType::Int64, true)]));
        Arc::new(ViewPlan { name: "v".into(), pos: Pos::default(), schema, key: vec![0], retention, min_rows, ignore_nulls, endpoints: BTreeMap::new() })
    }

    fn changes(plan: &ViewPlan, rows: &[(RowKind, &str, Option<i64>)]) -> Rows {
        let batch = RecordBatch::try_new(
            crate::format::nullable_like(&plan.schema),
            vec![Arc::new(StringArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())), Arc::new(Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>()))],
        )
        .unwrap();
        Rows { batch, kinds: Some(Int8Array::from(rows.iter().map(|r| r.0 as i8).collect::<Vec<_>>())), watermarks: None }
    }

    fn contents(t: &mut ViewTable) -> Vec<String> {
        let b = t.batch().unwrap();
        (0..b.num_rows()).map(|r| b.columns().iter().map(|c| arrow::util::display::array_value_to_string(c, r).unwrap()).collect::<Vec<_>>().join(",")).collect()
    }

    #[test]
    fn changes_are_kept_by_key_and_retractions_remove() {
        let p = plan(false, None, 0);
        let mut t = ViewTable::new(p.clone()).unwrap();
        t.apply(&changes(&p, &[(RowKind::Insert, "b", Some(1)), (RowKind::Insert, "a", Some(2)), (RowKind::UpdateBefore, "b", Some(1)), (RowKind::UpdateAfter, "b", Some(5))]), 0).unwrap();
        assert_eq!(contents(&mut t), ["a,2", "b,5"]);
        t.apply(&changes(&p, &[(RowKind::UpdateBefore, "a", Some(2))]), 0).unwrap();
        assert_eq!(contents(&mut t), ["b,5"]);
        assert!(t.lookup(&[ScalarValue::Utf8(Some("b".into()))]).unwrap().is_some());
        assert!(t.lookup(&[ScalarValue::Utf8(Some("a".into()))]).unwrap().is_none());
    }

    #[test]
    fn nulls_can_be_ignored_and_old_rows_expire_above_the_minimum() {
        let p = plan(true, Some(Duration::from_secs(10)), 1);
        let mut t = ViewTable::new(p.clone()).unwrap();
        t.apply(&changes(&p, &[(RowKind::Insert, "a", Some(1)), (RowKind::Insert, "b", Some(2))]), 0).unwrap();
        t.apply(&changes(&p, &[(RowKind::UpdateAfter, "a", None)]), 5_000).unwrap();
        assert_eq!(contents(&mut t), ["a,1", "b,2"], "a NULL does not overwrite");
        t.expire(12_000);
        assert_eq!(contents(&mut t), ["a,1"], "b unchanged for 12 s goes");
        t.expire(100_000);
        assert_eq!(contents(&mut t), ["a,1"], "the newest row stays (min-row-retention-count 1)");
    }
}
