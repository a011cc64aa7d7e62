//! Reading an `upsert-kafka` table: its records are upserts by primary key (a record with no
//! value deletes its key), and what follows in the query needs a changelog. As Flink's
//! ChangelogNormalize does, the operator keeps each key's last row and turns a record into +I (a
//! new key), -U/+U (a key's new row; nothing when the row did not change) or -D (a tombstone of a
//! known key; a tombstone of an unknown key is nothing).

use arrow::array::{ArrayRef, Int64Array, Int8Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{OwnedRow, RowConverter, SortField};

use crate::format;
use crate::ops::{err, KeyTable, RowKind, Rows};

/// The primary key's columns in the table's rows.
#[derive(Debug)]
pub struct ChangelogPlan {
    pub key: Vec<usize>,
    pub schema: SchemaRef,
}

pub(crate) struct Normalize<'a> {
    plan: &'a ChangelogPlan,
    keys: KeyTable,
    /// Each key's last row (all columns), `None` once deleted.
    last: Vec<Option<OwnedRow>>,
    rows: RowConverter,
    live: usize,
}

impl<'a> Normalize<'a> {
    pub(crate) fn new(plan: &'a ChangelogPlan) -> Result<Normalize<'a>, String> {
        let key_types: Vec<_> = plan.key.iter().map(|k| plan.schema.field(*k).data_type().clone()).collect();
        let rows = RowConverter::new(plan.schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect()).map_err(err)?;
        Ok(Normalize { plan, keys: KeyTable::new(&key_types)?, last: Vec::new(), rows, live: 0 })
    }

    pub(crate) fn state_rows(&self) -> usize {
        self.live
    }

    fn key_columns(&self, batch: &RecordBatch) -> Vec<ArrayRef> {
        self.plan.key.iter().map(|k| batch.column(*k).clone()).collect()
    }

    /// Upserts (`Insert`) and tombstones (`Delete`) in; the changelog out.
    pub(crate) fn process(&mut self, input: &Rows) -> Result<Rows, String> {
        let batch = &input.batch;
        let groups = self.keys.intern(&self.key_columns(batch), batch.num_rows())?;
        self.last.resize(self.keys.len(), None);
        let converted = self.rows.convert_columns(batch.columns()).map_err(err)?;
        let mut out: Vec<OwnedRow> = Vec::new();
        let (mut kinds, mut watermarks) = (Vec::new(), Vec::new());
        for (i, g) in groups.into_iter().enumerate() {
            let watermark = input.watermarks.as_ref().map_or(i64::MIN, |w| w.value(i));
            let mut emit = |row: OwnedRow, kind: RowKind| {
                out.push(row);
                kinds.push(kind as i8);
                watermarks.push(watermark);
            };
            if input.kind(i) == RowKind::Delete {
                if let Some(old) = self.last[g].take() {
                    self.live -= 1;
                    emit(old, RowKind::Delete);
                }
                continue;
            }
            let row = converted.row(i).owned();
            match self.last[g].replace(row.clone()) {
                Some(old) if old == row => {}
                Some(old) => {
                    emit(old, RowKind::UpdateBefore);
                    emit(row, RowKind::UpdateAfter);
                }
                None => {
                    self.live += 1;
                    emit(row, RowKind::Insert);
                }
            }
        }
        let columns = self.rows.convert_rows(out.iter().map(|r| r.row())).map_err(err)?;
        let batch = RecordBatch::try_new(format::nullable_like(&self.plan.schema), columns).map_err(err)?;
        Ok(Rows { batch, kinds: Some(Int8Array::from(kinds)), watermarks: input.watermarks.as_ref().map(|_| Int64Array::from(watermarks)) })
    }

    /// Every live key's row.
    pub(crate) fn snapshot(&self) -> Result<RecordBatch, String> {
        let columns = self.rows.convert_rows(self.last.iter().flatten().map(|r| r.row())).map_err(err)?;
        RecordBatch::try_new(format::nullable_like(&self.plan.schema), columns).map_err(err)
    }

    pub(crate) fn restore(&mut self, batch: &RecordBatch) -> Result<(), String> {
        *self = Normalize::new(self.plan)?;
        let n = batch.num_rows();
        let rows = Rows { batch: batch.clone(), kinds: None, watermarks: None };
        let changes = self.process(&rows)?;
        if changes.num_rows() != n {
            return Err("the checkpoint's upsert state repeats a key".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int32Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int32Type, Schema};
    use std::sync::Arc;

    fn rows(changes: &[(i32, Option<&str>)]) -> Rows {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, true), Field::new("v", DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(changes.iter().map(|c| c.0).collect::<Vec<_>>())), Arc::new(StringArray::from(changes.iter().map(|c| c.1).collect::<Vec<_>>()))]).unwrap();
        let kinds = changes.iter().map(|c| if c.1.is_none() { RowKind::Delete as i8 } else { RowKind::Insert as i8 }).collect::<Vec<_>>();
        Rows { batch, kinds: Some(Int8Array::from(kinds)), watermarks: None }
    }

    fn changes(r: &Rows) -> Vec<String> {
        (0..r.num_rows()).map(|i| format!("{}{}:{}", r.kind(i).short(), r.batch.column(0).as_primitive::<Int32Type>().value(i), r.batch.column(1).as_string::<i32>().value(i))).collect()
    }

    #[test]
    fn upserts_become_a_changelog_and_survive_a_checkpoint() {
        let input = rows(&[(1, Some("a")), (2, Some("b")), (1, Some("a")), (1, Some("c")), (3, None), (2, None), (2, Some("d"))]);
        let plan = ChangelogPlan { key: vec![0], schema: input.batch.schema() };
        let mut n = Normalize::new(&plan).unwrap();
        let out = n.process(&input).unwrap();
        // The same row again is nothing; a tombstone of an unknown key is nothing.
        assert_eq!(changes(&out), ["+I1:a", "+I2:b", "-U1:a", "+U1:c", "-D2:b", "+I2:d"]);
        assert_eq!(n.state_rows(), 2);
        let state = n.snapshot().unwrap();
        let mut m = Normalize::new(&plan).unwrap();
        m.restore(&state).unwrap();
        let out = m.process(&rows(&[(2, None), (1, Some("e"))])).unwrap();
        assert_eq!(changes(&out), ["-D2:d", "-U1:c", "+U1:e"]);
        assert_eq!(m.state_rows(), 1);
    }
}
