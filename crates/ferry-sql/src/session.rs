//! SESSION window aggregates: per group key, a session is a burst of rows each less than `gap`
//! after the one before. A row at `t` opens `[t, t + gap)` and merges every session of its key
//! that overlaps (their accumulators merged by their intermediate state); a session is emitted
//! when the watermark reaches its end minus 1 ms. A row whose merged session would already have
//! fired under the watermark it arrived under is late: dropped and counted, as Flink's merging
//! window operator drops it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Int64Type};
use datafusion_common::ScalarValue;
use datafusion_expr::Accumulator;

use crate::ops::{arguments, err, output_batch, state_batch, window_input, AggregatePlan, KeyTable, Rows};

struct Session {
    end: i64,
    accumulators: Vec<Box<dyn Accumulator>>,
}

pub struct SessionAggregate<'a> {
    plan: &'a AggregatePlan,
    gap: i64,
    key_types: Vec<DataType>,
    keys: KeyTable,
    /// Per key (its index in `keys`): sessions by start, never overlapping.
    sessions: HashMap<usize, BTreeMap<i64, Session>>,
}

impl<'a> SessionAggregate<'a> {
    pub fn new(plan: &'a AggregatePlan) -> Result<Self, String> {
        let (ws, we) = plan.window.ok_or("a session aggregate groups by window_start and window_end")?;
        let gap = plan.session_gap.ok_or("a session aggregate has a gap")?;
        let key_types: Vec<DataType> = (0..plan.keys.len()).filter(|k| *k != ws && *k != we).map(|k| plan.output.field(k).data_type().clone()).collect();
        Ok(SessionAggregate { plan, gap, keys: KeyTable::new(&key_types)?, key_types, sessions: HashMap::new() })
    }

    pub fn state_rows(&self) -> usize {
        self.sessions.values().map(BTreeMap::len).sum()
    }

    pub fn process(&mut self, rows: &Rows, watermark: i64, late: &mut u64) -> Result<Rows, String> {
        let plan = self.plan;
        let (ws, we) = plan.window.expect("checked in new");
        window_input(rows)?;
        let batch = &rows.batch;
        if batch.num_rows() > 0 {
            // The window step assigned each row `[t, t + gap)`: its start is the row's time.
            let (times, _, others) = plan.window_keys(batch)?;
            let groups = self.keys.intern(&others, batch.num_rows())?;
            let args = arguments(&plan.aggregates, batch)?;
            for (i, g) in groups.iter().enumerate() {
                let (t, end) = (times.value(i), times.value(i) + self.gap);
                let arrived_under = rows.watermarks.as_ref().map_or(i64::MIN, |w| w.value(i));
                let sessions = self.sessions.entry(*g).or_default();
                // A session the watermark this row came under has passed is closed (it fires at
                // the end of the batch): the row cannot join it.
                let overlapping: Vec<i64> = sessions.range(..end).rev().filter(|(_, s)| s.end - 1 > arrived_under).take_while(|(_, s)| s.end > t).map(|(start, _)| *start).collect();
                let start = overlapping.iter().copied().chain([t]).min().unwrap_or(t);
                let merged_end = overlapping.iter().map(|s| sessions[s].end).chain([end]).max().unwrap_or(end);
                if merged_end - 1 <= arrived_under {
                    *late += 1;
                    continue;
                }
                let mut merged: Option<Session> = None;
                for s in overlapping {
                    let mut other = sessions.remove(&s).expect("listed above");
                    match &mut merged {
                        None => merged = Some(other),
                        Some(m) => {
                            for (into, from) in m.accumulators.iter_mut().zip(other.accumulators.iter_mut()) {
                                let state = from.state().map_err(err)?.iter().map(ScalarValue::to_array).collect::<datafusion_common::Result<Vec<_>>>().map_err(err)?;
                                into.merge_batch(&state).map_err(err)?;
                            }
                        }
                    }
                }
                let mut session = match merged {
                    Some(s) => s,
                    None => Session { end, accumulators: plan.accumulators()? },
                };
                session.end = merged_end;
                for ((values, filter), acc) in args.iter().zip(session.accumulators.iter_mut()) {
                    if filter.as_ref().is_some_and(|f| !f.value(i)) {
                        continue;
                    }
                    let row: Vec<ArrayRef> = values.iter().map(|a| a.slice(i, 1)).collect();
                    acc.update_batch(&row).map_err(err)?;
                }
                sessions.insert(start, session);
            }
        }
        // Emit the sessions the watermark has passed, by end, start and key.
        let mut fired: Vec<(i64, i64, usize, Vec<ScalarValue>)> = Vec::new();
        for (g, sessions) in &mut self.sessions {
            let done: Vec<i64> = sessions.iter().filter(|(_, s)| s.end - 1 <= watermark).map(|(start, _)| *start).collect();
            for start in done {
                let mut s = sessions.remove(&start).expect("listed above");
                let values = s.accumulators.iter_mut().map(|a| a.evaluate()).collect::<datafusion_common::Result<Vec<_>>>().map_err(err)?;
                fired.push((s.end, start, *g, values));
            }
        }
        self.sessions.retain(|_, s| !s.is_empty());
        let schema = crate::format::nullable_like(&plan.output);
        if fired.is_empty() {
            return Ok(Rows::new(RecordBatch::new_empty(schema)));
        }
        fired.sort_by_key(|(end, start, g, _)| (*end, *start, *g));
        let groups: Vec<usize> = fired.iter().map(|f| f.2).collect();
        let mut others = self.keys.columns(&groups)?.into_iter();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for k in 0..plan.keys.len() {
            if k == ws || k == we {
                let times: ArrayRef = Arc::new(TimestampMillisecondArray::from(fired.iter().map(|f| if k == ws { f.1 } else { f.0 }).collect::<Vec<_>>()));
                columns.push(arrow::compute::cast(&times, plan.output.field(k).data_type()).map_err(err)?);
            } else {
                columns.push(others.next().ok_or("a key column is missing")?);
            }
        }
        for j in 0..plan.aggregates.len() {
            columns.push(ScalarValue::iter_to_array(fired.iter().map(|f| f.3[j].clone())).map_err(err)?);
        }
        Ok(Rows::new(output_batch(&plan.output, columns)?))
    }

    /// Columns: the keys, session start, session end, then each aggregate's state fields.
    pub fn snapshot(&mut self) -> Result<RecordBatch, String> {
        let plan = self.plan;
        let mut groups = Vec::new();
        let mut bounds = Vec::new();
        let mut states = Vec::new();
        for (g, sessions) in &mut self.sessions {
            for (start, s) in sessions.iter_mut() {
                groups.push(*g);
                bounds.push((*start, s.end));
                states.push(plan.take_states(&mut s.accumulators)?);
            }
        }
        if groups.is_empty() {
            return state_batch(Vec::new());
        }
        let mut columns = self.keys.columns(&groups)?;
        columns.push(Arc::new(Int64Array::from(bounds.iter().map(|b| b.0).collect::<Vec<_>>())));
        columns.push(Arc::new(Int64Array::from(bounds.iter().map(|b| b.1).collect::<Vec<_>>())));
        columns.extend(plan.state_columns(&states)?);
        state_batch(vec![columns])
    }

    pub fn restore(&mut self, batch: &RecordBatch) -> Result<(), String> {
        self.keys = KeyTable::new(&self.key_types)?;
        self.sessions.clear();
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let nkeys = self.key_types.len();
        let groups = self.keys.intern(&batch.columns()[..nkeys], n)?;
        let starts = batch.column(nkeys).as_primitive::<Int64Type>().clone();
        let ends = batch.column(nkeys + 1).as_primitive::<Int64Type>().clone();
        for (i, g) in groups.iter().enumerate() {
            let accumulators = self.plan.accumulators_from(&batch.columns()[nkeys + 2..], i)?;
            self.sessions.entry(*g).or_default().insert(starts.value(i), Session { end: ends.value(i), accumulators });
        }
        Ok(())
    }
}
