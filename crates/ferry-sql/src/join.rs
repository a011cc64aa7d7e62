//! Joins of two tables, as Flink's streaming joins behave.
//!
//! - **Regular joins** (`a [LEFT | RIGHT | FULL] JOIN b ON a.k = b.k [AND …]`): both sides are kept
//!   in state by their equality key; a row joins the rows the other side holds, now and later. The
//!   output is a changelog of +I and -D (Flink's): a retracted input row takes its joined rows
//!   back, and an outer side's row is emitted padded with NULLs while it has no partner, taken back
//!   (-D) when its first partner comes. `SET 'table.exec.state.ttl'` drops rows not written for
//!   that long (processing time, as Flink's state TTL), counted as expired.
//! - **Interval joins** (the condition also bounds one side's time attribute by the other's, e.g.
//!   `b.ts BETWEEN a.ts - INTERVAL '5' SECOND AND a.ts`): a row is kept only while the watermark
//!   lets a partner still come, so state stays bounded; the output is appended rows (+I); an outer
//!   side's unmatched row is emitted padded when it leaves the state. A row whose time is behind
//!   the join's watermark as it arrives (a partner may have left the state) is late: dropped and
//!   counted, as Flink's interval join drops it.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, Int8Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion_physical_expr::PhysicalExpr;

use crate::format;
use crate::ops::{err, evaluate, millis, Operators, RowKind, Rows, Step};
use crate::plan::ScanTable;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
}

impl JoinKind {
    /// Whether side 0 (left) or 1 (right) keeps its unmatched rows (padded with NULLs).
    pub fn outer(self, side: usize) -> bool {
        match self {
            JoinKind::Inner => false,
            JoinKind::Left => side == 0,
            JoinKind::Right => side == 1,
            JoinKind::Full => true,
        }
    }
}

/// An interval join's bounds: `right.time - left.time` lies in `[lower, upper]` (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// The time attribute's column in each side's rows.
    pub time: [usize; 2],
    pub lower: i64,
    pub upper: i64,
}

/// A temporal join's time columns: the left side's `AS OF` time attribute and the versioned
/// table's time attribute, in each side's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Temporal {
    pub time: [usize; 2],
}

/// A join at the bottom of a query: the right table and each side's operators before the join
/// (the left table is the pipeline's source).
pub struct JoinPlan {
    pub right: Arc<ScanTable>,
    pub sides: [Vec<Step>; 2],
    /// Each side's rows as they reach the join.
    pub schemas: [SchemaRef; 2],
    pub keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    /// What the condition asks beyond equal keys, over the joined row.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    pub kind: JoinKind,
    pub interval: Option<Interval>,
    /// A temporal join (`JOIN t FOR SYSTEM_TIME AS OF l.ts`): the right side is versioned.
    pub temporal: Option<Temporal>,
    /// `SET 'table.exec.state.ttl'` for a regular join.
    pub ttl: Option<std::time::Duration>,
    /// The joined row: the left side's columns, then the right side's.
    pub output: SchemaRef,
}

impl JoinPlan {
    /// Whether the join writes a changelog rather than appended rows.
    pub fn updating(&self) -> bool {
        if self.temporal.is_some() {
            // Each probe row is joined once, when the watermark passes it.
            return crate::ops::updating(&self.sides[0]);
        }
        (self.interval.is_none() && self.kind != JoinKind::Inner) || self.sides.iter().any(|s| crate::ops::updating(s))
    }
}

struct Entry {
    row: OwnedRow,
    /// The row's time attribute (interval joins).
    time: i64,
    /// When it was stored (ms, processing time), for the state TTL.
    stored_ms: i64,
    /// Partners it has joined (outer sides: padded while 0).
    matches: u64,
}

/// One side's rows by equality key.
struct Side {
    rows: RowConverter,
    keys: RowConverter,
    by_key: HashMap<Box<[u8]>, Vec<Entry>>,
    len: usize,
}

pub(crate) struct Join<'a> {
    plan: &'a JoinPlan,
    pub(crate) branches: [Operators<'a>; 2],
    sides: [Side; 2],
    /// Rows dropped by the state TTL, and late rows of an interval join.
    pub(crate) expired: u64,
    pub(crate) late: u64,
}

/// Changes the join emits, as row pairs (a side is `None` when padded).
#[derive(Default)]
struct Out {
    pairs: Vec<(Option<OwnedRow>, Option<OwnedRow>)>,
    kinds: Vec<i8>,
}

impl Out {
    fn push(&mut self, left: Option<OwnedRow>, right: Option<OwnedRow>, kind: RowKind) {
        self.pairs.push((left, right));
        self.kinds.push(kind as i8);
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl<'a> Join<'a> {
    pub(crate) fn new(plan: &'a JoinPlan) -> Result<Join<'a>, String> {
        let side = |s: usize| -> Result<Side, String> {
            let schema = &plan.schemas[s];
            let rows = RowConverter::new(schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect()).map_err(err)?;
            let key_types = plan.keys[s].iter().map(|k| k.data_type(schema)).collect::<datafusion_common::Result<Vec<_>>>().map_err(err)?;
            let keys = RowConverter::new(key_types.into_iter().map(SortField::new).collect()).map_err(err)?;
            Ok(Side { rows, keys, by_key: HashMap::new(), len: 0 })
        };
        Ok(Join { plan, branches: [Operators::new(&plan.sides[0])?, Operators::new(&plan.sides[1])?], sides: [side(0)?, side(1)?], expired: 0, late: 0 })
    }

    pub(crate) fn state_rows(&self) -> usize {
        self.sides.iter().map(|s| s.len).sum::<usize>() + self.branches.iter().map(Operators::state_rows).sum::<usize>()
    }

    /// A batch of side `side`'s rows (after its branch) joined, under each side's watermark (the
    /// join's is the least of them).
    pub(crate) fn process(&mut self, side: usize, rows: &Rows, watermarks: [i64; 2]) -> Result<Rows, String> {
        if self.plan.temporal.is_some() {
            return self.process_temporal(side, rows, watermarks);
        }
        let plan = self.plan;
        let other = 1 - side;
        let watermark = watermarks[0].min(watermarks[1]);
        let mut out = Out::default();
        // A row past the state TTL is never joined (Flink's TTL never returns an expired row).
        // Interval joins drop rows after the batch: its watermark is the one after all its rows.
        if plan.interval.is_none() {
            self.expire(watermark, &mut out);
        }
        if rows.num_rows() > 0 {
            let batch = &rows.batch;
            let key_columns = plan.keys[side].iter().map(|k| evaluate(k, batch)).collect::<Result<Vec<_>, _>>()?;
            let keys = self.sides[side].keys.convert_columns(&key_columns).map_err(err)?;
            let converted = self.sides[side].rows.convert_columns(batch.columns()).map_err(err)?;
            let times = match plan.interval {
                Some(i) => Some(millis(batch.column(i.time[side]))?),
                None => None,
            };
            let now = now_ms();
            for i in 0..batch.num_rows() {
                // A key with a NULL joins nothing.
                let null_key = key_columns.iter().any(|c| c.is_null(i));
                let row = converted.row(i).owned();
                let time = times.as_ref().map_or(0, |t| if t.is_null(i) { i64::MIN } else { t.value(i) });
                if plan.interval.is_some() {
                    // Behind the join's watermark as the row arrived (its side's before it, the
                    // other side's now), a partner may have left the state: late, as in Flink.
                    let arrived = rows.watermarks.as_ref().map_or(watermarks[side], |w| w.value(i)).min(watermarks[other]);
                    if times.as_ref().is_some_and(|t| t.is_null(i)) || time < arrived {
                        self.late += 1;
                        continue;
                    }
                }
                let key: Box<[u8]> = keys.row(i).as_ref().into();
                let adds = rows.kind(i).adds();
                // The other side's rows with this key that meet the condition.
                let partners: Vec<usize> = if null_key { Vec::new() } else { self.partners(side, &key, &row, time)? };
                if adds {
                    for p in &partners {
                        let entry = &mut self.sides[other].by_key.get_mut(&key).expect("partners exist")[*p];
                        if entry.matches == 0 && plan.kind.outer(other) && plan.interval.is_none() {
                            let padded = entry.row.clone();
                            out.push_pair(other, Some(padded), None, RowKind::Delete);
                        }
                        entry.matches += 1;
                        let partner = entry.row.clone();
                        out.push_pair(side, Some(row.clone()), Some(partner), RowKind::Insert);
                    }
                    if partners.is_empty() && plan.kind.outer(side) && plan.interval.is_none() {
                        out.push_pair(side, Some(row.clone()), None, RowKind::Insert);
                    }
                    self.sides[side].by_key.entry(key).or_default().push(Entry { row, time, stored_ms: now, matches: partners.len() as u64 });
                    self.sides[side].len += 1;
                } else {
                    // A retraction: the stored copy goes, with what it joined.
                    let Some(list) = self.sides[side].by_key.get_mut(&key) else { continue };
                    let Some(at) = list.iter().position(|e| e.row == row) else { continue };
                    list.swap_remove(at);
                    if list.is_empty() {
                        self.sides[side].by_key.remove(&key);
                    }
                    self.sides[side].len -= 1;
                    for p in &partners {
                        let entry = &mut self.sides[other].by_key.get_mut(&key).expect("partners exist")[*p];
                        entry.matches = entry.matches.saturating_sub(1);
                        let partner = entry.row.clone();
                        out.push_pair(side, Some(row.clone()), Some(partner.clone()), RowKind::Delete);
                        if entry.matches == 0 && plan.kind.outer(other) {
                            out.push_pair(other, Some(partner), None, RowKind::Insert);
                        }
                    }
                    if partners.is_empty() && plan.kind.outer(side) {
                        out.push_pair(side, Some(row), None, RowKind::Delete);
                    }
                }
            }
        }
        self.expire(watermark, &mut out);
        self.emit(out, watermark)
    }

    /// A temporal join: left rows wait until the watermark passes their time, then join the
    /// right row (by key) that was current at that time: the last version at or before it, none
    /// if that version is a deletion. Versions the watermark has passed go, but the last one.
    fn process_temporal(&mut self, side: usize, rows: &Rows, watermarks: [i64; 2]) -> Result<Rows, String> {
        let plan = self.plan;
        let temporal = plan.temporal.expect("a temporal join");
        let other = 1 - side;
        let watermark = watermarks[0].min(watermarks[1]);
        if rows.num_rows() > 0 {
            let batch = &rows.batch;
            let key_columns = plan.keys[side].iter().map(|k| evaluate(k, batch)).collect::<Result<Vec<_>, _>>()?;
            let keys = self.sides[side].keys.convert_columns(&key_columns).map_err(err)?;
            let converted = self.sides[side].rows.convert_columns(batch.columns()).map_err(err)?;
            let times = millis(batch.column(temporal.time[side]))?;
            for i in 0..batch.num_rows() {
                if times.is_null(i) {
                    self.late += 1;
                    continue;
                }
                let time = times.value(i);
                let key: Box<[u8]> = keys.row(i).as_ref().into();
                let row = converted.row(i).owned();
                if side == 0 {
                    let arrived = rows.watermarks.as_ref().map_or(watermarks[side], |w| w.value(i)).min(watermarks[other]);
                    if time < arrived {
                        // The version current then may be gone.
                        self.late += 1;
                        continue;
                    }
                    self.sides[0].by_key.entry(key).or_default().push(Entry { row, time, stored_ms: 0, matches: 0 });
                    self.sides[0].len += 1;
                } else {
                    let deleted = match rows.kind(i) {
                        RowKind::UpdateBefore => continue,
                        RowKind::Delete => 1,
                        RowKind::Insert | RowKind::UpdateAfter => 0,
                    };
                    let list = self.sides[1].by_key.entry(key).or_default();
                    // In time order; a later change at the same time comes after (and wins).
                    let at = list.partition_point(|e| e.time <= time);
                    list.insert(at, Entry { row, time, stored_ms: 0, matches: deleted });
                    self.sides[1].len += 1;
                }
            }
        }
        // Left rows the watermark has passed: joined with the version of their time.
        let mut fired: Vec<(OwnedRow, Option<OwnedRow>)> = Vec::new();
        if watermark > i64::MIN {
            let [probes, versioned] = &mut self.sides;
            let versions = &versioned.by_key;
            for (key, waiting) in probes.by_key.iter_mut() {
                waiting.retain(|e| {
                    if e.time > watermark {
                        return true;
                    }
                    let version = versions.get(key).and_then(|l| l.iter().rev().find(|v| v.time <= e.time)).filter(|v| v.matches == 0);
                    fired.push((e.row.clone(), version.map(|v| v.row.clone())));
                    false
                });
            }
            self.sides[0].by_key.retain(|_, l| !l.is_empty());
            self.sides[0].len -= fired.len();
            // Versions before the last one the watermark has passed can serve no left row now.
            let mut dropped = 0;
            for list in self.sides[1].by_key.values_mut() {
                let passed = list.partition_point(|v| v.time <= watermark);
                if passed > 1 {
                    list.drain(..passed - 1);
                    dropped += passed - 1;
                }
                if list.len() == 1 && list[0].matches == 1 && list[0].time <= watermark {
                    list.clear();
                    dropped += 1;
                }
            }
            self.sides[1].by_key.retain(|_, l| !l.is_empty());
            self.sides[1].len -= dropped;
        }
        let mut out = Out::default();
        let candidates: Vec<usize> = (0..fired.len()).filter(|i| fired[*i].1.is_some()).collect();
        let mut joined = vec![false; fired.len()];
        if !candidates.is_empty() {
            let pairs: Vec<(Option<OwnedRow>, Option<OwnedRow>)> = candidates.iter().map(|i| (Some(fired[*i].0.clone()), fired[*i].1.clone())).collect();
            let pass = match &plan.filter {
                Some(f) => {
                    let mask = evaluate(f, &self.joined(&pairs)?)?;
                    let mask = mask.as_any().downcast_ref::<BooleanArray>().ok_or("the join condition is not BOOLEAN")?.clone();
                    (0..pairs.len()).map(|j| mask.is_valid(j) && mask.value(j)).collect()
                }
                None => vec![true; pairs.len()],
            };
            for (j, i) in candidates.iter().enumerate() {
                joined[*i] = pass[j];
            }
        }
        for (i, (left, right)) in fired.into_iter().enumerate() {
            if joined[i] {
                out.push(Some(left), right, RowKind::Insert);
            } else if plan.kind.outer(0) {
                out.push(Some(left), None, RowKind::Insert);
            }
        }
        self.emit(out, watermark)
    }

    /// Indices of the other side's rows under `key` that meet the condition with `row`.
    fn partners(&self, side: usize, key: &[u8], row: &OwnedRow, time: i64) -> Result<Vec<usize>, String> {
        let other = 1 - side;
        let Some(list) = self.sides[other].by_key.get(key) else { return Ok(Vec::new()) };
        let in_range = |e: &Entry| match self.plan.interval {
            // right.time - left.time within [lower, upper]
            Some(i) => {
                let d = if side == 0 { e.time - time } else { time - e.time };
                i.lower <= d && d <= i.upper
            }
            None => true,
        };
        let candidates: Vec<usize> = (0..list.len()).filter(|p| in_range(&list[*p])).collect();
        let Some(filter) = &self.plan.filter else { return Ok(candidates) };
        if candidates.is_empty() {
            return Ok(candidates);
        }
        let pairs: Vec<(Option<OwnedRow>, Option<OwnedRow>)> = candidates
            .iter()
            .map(|p| {
                let partner = Some(list[*p].row.clone());
                if side == 0 { (Some(row.clone()), partner) } else { (partner, Some(row.clone())) }
            })
            .collect();
        let joined = self.joined(&pairs)?;
        let mask = evaluate(filter, &joined)?;
        let mask = mask.as_any().downcast_ref::<BooleanArray>().ok_or("the join condition is not BOOLEAN")?;
        Ok(candidates.into_iter().enumerate().filter(|(j, _)| mask.is_valid(*j) && mask.value(*j)).map(|(_, p)| p).collect())
    }

    /// Joined rows of the output schema for `pairs`.
    fn joined(&self, pairs: &[(Option<OwnedRow>, Option<OwnedRow>)]) -> Result<RecordBatch, String> {
        let mut columns: Vec<ArrayRef> = Vec::new();
        for s in 0..2 {
            let converter = &self.sides[s].rows;
            let present: Vec<bool> = pairs.iter().map(|p| if s == 0 { p.0.is_some() } else { p.1.is_some() }).collect();
            let rows: Vec<_> = pairs.iter().filter_map(|p| if s == 0 { p.0.as_ref() } else { p.1.as_ref() }).map(|r| r.row()).collect();
            let dense = converter.convert_rows(rows).map_err(err)?;
            if present.iter().all(|p| *p) {
                columns.extend(dense);
                continue;
            }
            // Padded rows: NULL where the side is absent.
            let mut index = Vec::with_capacity(pairs.len());
            let mut next = 0u32;
            for p in &present {
                index.push(p.then(|| {
                    next += 1;
                    next - 1
                }));
            }
            let take = arrow::array::UInt32Array::from(index);
            for c in dense {
                columns.push(arrow::compute::take(&c, &take, None).map_err(err)?);
            }
        }
        RecordBatch::try_new(format::nullable_like(&self.plan.output), columns).map_err(err)
    }

    /// Drops what can no longer join: for an interval join, rows the watermark has passed by
    /// their reach (an outer side's unmatched row is emitted padded now); for a regular join with
    /// a TTL, rows stored longer ago than it.
    fn expire(&mut self, watermark: i64, out: &mut Out) {
        let plan = self.plan;
        let (interval, ttl) = (plan.interval, plan.ttl);
        if interval.is_none() && ttl.is_none() {
            return;
        }
        let cutoff = ttl.map_or(i64::MIN, |t| now_ms() - t.as_millis() as i64);
        for side in 0..2 {
            let outer = plan.kind.outer(side);
            let mut gone = Vec::new();
            let mut expired = 0;
            for list in self.sides[side].by_key.values_mut() {
                list.retain(|e| {
                    let keep = match interval {
                        Some(i) => (if side == 0 { e.time.saturating_add(i.upper) } else { e.time.saturating_sub(i.lower) }) >= watermark,
                        None => e.stored_ms >= cutoff,
                    };
                    if !keep {
                        if interval.is_some() && outer && e.matches == 0 {
                            gone.push(e.row.clone());
                        }
                        if interval.is_none() {
                            expired += 1;
                        }
                    }
                    keep
                });
            }
            self.sides[side].by_key.retain(|_, l| !l.is_empty());
            self.sides[side].len = self.sides[side].by_key.values().map(Vec::len).sum();
            self.expired += expired;
            for row in gone {
                out.push_pair(side, Some(row), None, RowKind::Insert);
            }
        }
    }

    fn emit(&self, out: Out, watermark: i64) -> Result<Rows, String> {
        let batch = self.joined(&out.pairs)?;
        let n = batch.num_rows();
        Ok(Rows { batch, kinds: Some(Int8Array::from(out.kinds)), watermarks: Some(Int64Array::from(vec![watermark; n])) })
    }

    /// Each side's stored rows (with time, stored time and matches), then each branch's state.
    pub(crate) fn snapshot(&mut self) -> Result<Vec<Option<RecordBatch>>, String> {
        let mut out = Vec::new();
        for side in &self.sides {
            let entries: Vec<&Entry> = side.by_key.values().flatten().collect();
            let mut columns = side.rows.convert_rows(entries.iter().map(|e| e.row.row())).map_err(err)?;
            columns.push(Arc::new(Int64Array::from(entries.iter().map(|e| e.time).collect::<Vec<_>>())));
            columns.push(Arc::new(Int64Array::from(entries.iter().map(|e| e.stored_ms).collect::<Vec<_>>())));
            columns.push(Arc::new(Int64Array::from(entries.iter().map(|e| e.matches as i64).collect::<Vec<_>>())));
            out.push(Some(crate::ops::state_batch(vec![columns])?));
        }
        for b in &mut self.branches {
            out.extend(b.snapshot()?);
        }
        Ok(out)
    }

    pub(crate) fn restore(&mut self, states: &mut impl Iterator<Item = Option<RecordBatch>>) -> Result<(), String> {
        for s in 0..2 {
            let batch = states.next().flatten().ok_or("the checkpoint lacks a join side")?;
            let width = self.plan.schemas[s].fields().len();
            if batch.num_columns() != width + 3 {
                return Err("the checkpoint's join state does not fit the query".into());
            }
            let rows = self.sides[s].rows.convert_columns(&batch.columns()[..width]).map_err(err)?;
            let data = RecordBatch::try_new(format::nullable_like(&self.plan.schemas[s]), batch.columns()[..width].to_vec()).map_err(err)?;
            let key_columns = self.plan.keys[s].iter().map(|k| evaluate(k, &data)).collect::<Result<Vec<_>, _>>()?;
            let keys = self.sides[s].keys.convert_columns(&key_columns).map_err(err)?;
            let int = |c: usize| batch.column(width + c).as_any().downcast_ref::<Int64Array>().cloned().ok_or("the checkpoint's join state does not fit the query");
            let (time, stored, matches) = (int(0)?, int(1)?, int(2)?);
            let side = &mut self.sides[s];
            side.by_key.clear();
            for i in 0..batch.num_rows() {
                side.by_key.entry(keys.row(i).as_ref().into()).or_default().push(Entry { row: rows.row(i).owned(), time: time.value(i), stored_ms: stored.value(i), matches: matches.value(i) as u64 });
            }
            side.len = batch.num_rows();
        }
        for b in &mut self.branches {
            let n = b.slots();
            b.restore(states.by_ref().take(n).collect())?;
        }
        Ok(())
    }
}

impl Out {
    /// A change from `side`'s point of view: `this` is its row, `partner` the other side's.
    fn push_pair(&mut self, side: usize, this: Option<OwnedRow>, partner: Option<OwnedRow>, kind: RowKind) {
        if side == 0 {
            self.push(this, partner, kind);
        } else {
            self.push(partner, this, kind);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::plan_script;
    use arrow::array::{StringArray, TimestampMillisecondArray};

    const TABLES: &str = "CREATE TABLE orders (id BIGINT, customer STRING, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH ('connector' = 'kafka', 'topic' = 'orders', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'format' = 'json');
CREATE TABLE customers (name STRING, tier STRING) WITH ('connector' = 'kafka', 'topic' = 'customers', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'format' = 'json');
CREATE TABLE payments (order_id BIGINT, paid TIMESTAMP(3), WATERMARK FOR paid AS paid) WITH ('connector' = 'kafka', 'topic' = 'payments', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'format' = 'json');
";

    fn sink(columns: &str) -> String {
        format!("CREATE TABLE results ({columns}) WITH ('connector' = 'kafka', 'topic' = 'out', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'format' = 'json');\n")
    }

    fn upsert_sink(columns: &str, key: &str) -> String {
        format!("CREATE TABLE results ({columns}, PRIMARY KEY ({key}) NOT ENFORCED) WITH ('connector' = 'upsert-kafka', 'topic' = 'out', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'key.format' = 'json', 'value.format' = 'json');\n")
    }

    fn orders(rows: &[(i64, &str, i64)]) -> Rows {
        let batch = RecordBatch::try_from_iter_with_nullable(vec![
            ("id", Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())) as ArrayRef, true),
            ("customer", Arc::new(StringArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())), true),
            ("ts", Arc::new(TimestampMillisecondArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())), true),
        ])
        .unwrap();
        Rows::new(batch)
    }

    fn customers(rows: &[(&str, &str)]) -> Rows {
        let batch = RecordBatch::try_from_iter_with_nullable(vec![
            ("name", Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())) as ArrayRef, true),
            ("tier", Arc::new(StringArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())), true),
        ])
        .unwrap();
        Rows::new(batch)
    }

    fn payments(rows: &[(i64, i64)]) -> Rows {
        let batch = RecordBatch::try_from_iter_with_nullable(vec![
            ("order_id", Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())) as ArrayRef, true),
            ("paid", Arc::new(TimestampMillisecondArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())), true),
        ])
        .unwrap();
        Rows::new(batch)
    }

    fn text(rows: &Rows) -> Vec<String> {
        rows.text()
    }

    #[test]
    fn a_regular_join_joins_what_either_side_holds_and_outer_rows_are_taken_back_when_matched() {
        let sql = format!("{TABLES}{}INSERT INTO results SELECT o.id, c.tier FROM orders o JOIN customers c ON o.customer = c.name WHERE c.tier <> 'none';", sink("id BIGINT, tier STRING"));
        let job = plan_script(&sql).unwrap();
        let p = &job.pipelines[0];
        assert!(!p.updating, "an inner join of appended rows appends");
        let mut ops = Operators::new(&p.steps).unwrap();
        let w = [i64::MIN, i64::MIN];
        assert!(text(&ops.process_side(0, orders(&[(1, "ann", 0), (2, "bob", 0)]), w).unwrap()).is_empty());
        assert_eq!(text(&ops.process_side(1, customers(&[("ann", "gold"), ("cy", "none")]), w).unwrap()), ["+I 1,gold"]);
        assert_eq!(text(&ops.process_side(0, orders(&[(3, "ann", 0), (4, "cy", 0)]), w).unwrap()), ["+I 3,gold"]);
        assert_eq!(ops.state_rows(), 6);

        // LEFT JOIN: an order without a customer is padded, then taken back when one comes.
        let sql = format!("{TABLES}{}INSERT INTO results SELECT o.id, c.tier FROM orders o LEFT JOIN customers c ON o.customer = c.name AND c.tier <> 'none';", upsert_sink("id BIGINT, tier STRING", "id"));
        let job = plan_script(&sql).unwrap();
        let p = &job.pipelines[0];
        assert!(p.updating);
        let mut ops = Operators::new(&p.steps).unwrap();
        assert_eq!(text(&ops.process_side(0, orders(&[(1, "ann", 0), (2, "bob", 0)]), w).unwrap()), ["+I 1,", "+I 2,"]);
        // A customer the ON condition refuses is no partner.
        assert_eq!(text(&ops.process_side(1, customers(&[("bob", "none"), ("ann", "gold"), ("ann", "silver")]), w).unwrap()), ["-D 1,", "+I 1,gold", "+I 1,silver"]);
        // Through a checkpoint.
        let state = ops.snapshot().unwrap();
        assert_eq!(state.len(), ops.slots());
        let mut again = Operators::new(&p.steps).unwrap();
        again.restore(state).unwrap();
        assert_eq!(text(&again.process_side(1, customers(&[("bob", "gold")]), w).unwrap()), ["-D 2,", "+I 2,gold"]);
        assert_eq!(text(&again.process_side(0, orders(&[(5, "zed", 0)]), w).unwrap()), ["+I 5,"]);
    }

    #[test]
    fn an_interval_join_keeps_rows_while_a_partner_may_come() {
        let sql = format!("{TABLES}{}INSERT INTO results SELECT o.id, p.paid FROM orders o LEFT JOIN payments p ON o.id = p.order_id AND p.paid BETWEEN o.ts AND o.ts + INTERVAL '10' SECOND;", sink("id BIGINT, paid TIMESTAMP(3)"));
        let job = plan_script(&sql).unwrap();
        let p = &job.pipelines[0];
        assert!(!p.updating, "an interval join appends, outer rows too");
        let Step::Join(j) = &p.steps[0] else { panic!("a join first") };
        assert_eq!(j.interval.map(|i| (i.lower, i.upper)), Some((0, 10_000)));
        let mut ops = Operators::new(&p.steps).unwrap();
        assert!(text(&ops.process_side(0, orders(&[(1, "a", 1_000), (2, "b", 2_000), (3, "c", 3_000)]), [i64::MIN, i64::MIN]).unwrap()).is_empty());
        // 1 paid in time, 2 paid too late (outside its interval), 3 never.
        assert_eq!(text(&ops.process_side(1, payments(&[(1, 5_000), (2, 12_001)]), [3_000, i64::MIN]).unwrap()), ["+I 1,1970-01-01T00:00:05"]);
        // The watermark passes 12 s: orders 1 (matched) and 2 (not) leave; 2 is emitted padded.
        assert_eq!(text(&ops.process_side(1, payments(&[]), [20_000, 12_001]).unwrap()), ["+I 2,"]);
        assert_eq!(ops.state_rows(), 2, "order 3 and payment 2 still wait");
        // A payment whose every possible order has left is late.
        ops.process_side(1, payments(&[(9, 1_500)]), [20_000, 12_001]).unwrap();
        assert_eq!(ops.late, 1);
        assert_eq!(text(&ops.process_side(1, payments(&[]), [i64::MAX, i64::MAX]).unwrap()), ["+I 3,"]);
        assert_eq!(ops.state_rows(), 0);
    }

    #[test]
    fn a_regular_join_forgets_rows_past_the_state_ttl() {
        let sql = format!("{TABLES}SET 'table.exec.state.ttl' = '50 ms';\n{}INSERT INTO results SELECT o.id, c.tier FROM orders o JOIN customers c ON o.customer = c.name;", sink("id BIGINT, tier STRING"));
        let job = plan_script(&sql).unwrap();
        let mut ops = Operators::new(&job.pipelines[0].steps).unwrap();
        let w = [i64::MIN, i64::MIN];
        ops.process_side(1, customers(&[("ann", "gold")]), w).unwrap();
        assert_eq!(text(&ops.process_side(0, orders(&[(1, "ann", 0)]), w).unwrap()), ["+I 1,gold"]);
        std::thread::sleep(std::time::Duration::from_millis(120));
        assert!(text(&ops.process_side(0, orders(&[(2, "ann", 0)]), w).unwrap()).is_empty(), "the customer expired");
        assert_eq!(ops.expired(), 2, "the customer and order 1");
        assert_eq!(ops.state_rows(), 1);
    }

    const RATES: &str = "CREATE TABLE rates (currency STRING, rate BIGINT, since TIMESTAMP(3), WATERMARK FOR since AS since, PRIMARY KEY (currency) NOT ENFORCED) WITH ('connector' = 'upsert-kafka', 'topic' = 'rates', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'key.format' = 'json', 'value.format' = 'json');\n";

    /// Rate changes (currency, rate or a deletion, time).
    fn rates(job: &crate::plan::Job, rows: &[(&str, Option<i64>, i64)]) -> Rows {
        let Step::Join(j) = &job.pipelines[0].steps[0] else { panic!("a join first") };
        let batch = RecordBatch::try_new(
            format::nullable_like(&j.right.schema),
            vec![
                Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())) as ArrayRef,
                Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                Arc::new(TimestampMillisecondArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        let kinds = rows.iter().map(|r| if r.1.is_some() { RowKind::Insert as i8 } else { RowKind::Delete as i8 }).collect::<Vec<_>>();
        Rows { batch, kinds: Some(Int8Array::from(kinds)), watermarks: None }
    }

    #[test]
    fn a_temporal_join_joins_each_row_with_the_version_of_its_time() {
        // orders' customer column holds a currency here.
        let sql = format!("{TABLES}{RATES}{}INSERT INTO results SELECT o.id, r.rate FROM orders AS o LEFT JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.customer = r.currency;", sink("id BIGINT, rate BIGINT"));
        let job = plan_script(&sql).unwrap();
        let p = &job.pipelines[0];
        assert!(!p.updating, "a temporal join appends");
        let mut ops = Operators::new(&p.steps).unwrap();
        // The rate upserts become a changelog first (upsert-kafka), then versions.
        ops.process_side(1, rates(&job, &[("eur", Some(10), 1_000), ("eur", Some(11), 5_000), ("usd", Some(20), 2_000)]), [i64::MIN, 2_000]).unwrap();
        // Orders wait for the watermark.
        assert!(text(&ops.process_side(0, orders(&[(1, "eur", 4_000), (2, "eur", 6_000), (3, "usd", 1_500), (4, "chf", 3_000)]), [i64::MIN, 5_000]).unwrap()).is_empty());
        let out = ops.process_side(0, orders(&[]), [4_500, 5_000]).unwrap();
        let mut got = text(&out);
        got.sort();
        // At 4 s eur was 10; usd had no version at 1.5 s; chf has none.
        assert_eq!(got, ["+I 1,10", "+I 3,", "+I 4,"]);
        // usd deleted at 7 s; order 5 at 8 s finds no usd; order 2 (6 s) finds eur 11.
        ops.process_side(1, rates(&job, &[("usd", None, 7_000)]), [4_500, 7_000]).unwrap();
        ops.process_side(0, orders(&[(5, "usd", 8_000)]), [4_500, 7_000]).unwrap();
        let state = ops.snapshot().unwrap();
        let mut again = Operators::new(&p.steps).unwrap();
        again.restore(state).unwrap();
        let mut got = text(&again.process_side(0, orders(&[]), [i64::MAX, i64::MAX]).unwrap());
        got.sort();
        assert_eq!(got, ["+I 2,11", "+I 5,"]);
        // A row behind the watermark is late.
        again.process_side(0, orders(&[(6, "eur", 100)]), [9_000, 9_000]).unwrap();
        assert_eq!(again.late, 1);
    }

    #[test]
    fn joins_are_refused_where_they_cannot_run() {
        for (query, refused) in [
            ("SELECT o.id, c.tier FROM orders o JOIN customers c ON o.id > 3", "needs an equality"),
            ("SELECT o.id, c.tier FROM orders o JOIN customers c ON o.customer = c.name JOIN payments p ON p.order_id = o.id", "more than two tables"),
            ("SELECT o.id, c.tier FROM orders o JOIN customers FOR SYSTEM_TIME AS OF o.ts AS c ON o.customer = c.name", "needs a WATERMARK"),
            ("SELECT c.name, c.tier FROM customers FOR SYSTEM_TIME AS OF c.x AS c", "temporal join"),
            ("SELECT o.id, CAST(p.order_id AS STRING) FROM orders o JOIN payments FOR SYSTEM_TIME AS OF o.id AS p ON o.id = p.order_id", "time attribute is ts"),
        ] {
            let sql = format!("{TABLES}{}INSERT INTO results {query};", sink("id BIGINT, tier STRING"));
            let e = plan_script(&sql).err().expect("refused").to_string();
            assert!(e.contains(refused) && e.starts_with("5:1:"), "{e}");
        }
        let sql = format!("{TABLES}{}INSERT INTO results SELECT o.id, c.tier FROM orders o LEFT JOIN customers c ON o.customer = c.name;", sink("id BIGINT, tier STRING"));
        assert!(plan_script(&sql).err().expect("refused").to_string().contains("takes appended rows only"));
    }
}
