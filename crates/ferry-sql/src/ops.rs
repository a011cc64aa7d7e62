//! The operators a pipeline runs over Arrow batches, in order: filters and projections
//! (DataFusion's compiled expressions), window assignment, window aggregates (a window's rows
//! are emitted once the watermark passes its end) and updating aggregates (a changelog per
//! batch). Pure: the run loop brings the rows and the watermark, and takes what comes out.
//!
//! Event time: every row carries the watermark it arrived under (the minimum over the source
//! partitions of each partition's largest watermark expression so far, not counting the row
//! itself). A row whose windows have all fired under that watermark is late: it is dropped and
//! counted, as Flink drops it; a window fires when the watermark reaches its end minus 1 ms.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, Int8Array, RecordBatch, TimestampMillisecondArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType};
use arrow::row::{RowConverter, SortField};
use datafusion_common::ScalarValue;
use datafusion_expr::{Accumulator, EmitTo, GroupsAccumulator};
use datafusion_physical_expr::aggregate::AggregateFunctionExpr;
use datafusion_physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};

use crate::format;
use crate::tvf::WindowKind;

/// A change to a result row, as Flink's `RowKind` (and its byte values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum RowKind {
    Insert = 0,
    UpdateBefore = 1,
    UpdateAfter = 2,
    Delete = 3,
}

impl RowKind {
    pub fn from_i8(v: i8) -> RowKind {
        match v {
            1 => RowKind::UpdateBefore,
            2 => RowKind::UpdateAfter,
            3 => RowKind::Delete,
            _ => RowKind::Insert,
        }
    }

    /// Whether the change adds its row (+I, +U) rather than taking it back (-U, -D).
    pub fn adds(self) -> bool {
        matches!(self, RowKind::Insert | RowKind::UpdateAfter)
    }

    pub fn short(self) -> &'static str {
        match self {
            RowKind::Insert => "+I",
            RowKind::UpdateBefore => "-U",
            RowKind::UpdateAfter => "+U",
            RowKind::Delete => "-D",
        }
    }
}

/// Rows on their way through a pipeline.
#[derive(Debug, Clone)]
pub struct Rows {
    pub batch: RecordBatch,
    /// Each row's change ([`RowKind`] as i8); `None`: every row is an insert.
    pub kinds: Option<Int8Array>,
    /// The watermark each row arrived under (ms); `None` where event time is not tracked.
    pub watermarks: Option<Int64Array>,
}

impl Rows {
    pub fn new(batch: RecordBatch) -> Rows {
        Rows { batch, kinds: None, watermarks: None }
    }

    /// No change: an empty changelog of `schema`.
    pub fn no_changes(schema: SchemaRef) -> Rows {
        Rows { batch: RecordBatch::new_empty(schema), kinds: Some(Int8Array::from(Vec::<i8>::new())), watermarks: None }
    }

    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    pub fn kind(&self, row: usize) -> RowKind {
        self.kinds.as_ref().map_or(RowKind::Insert, |k| RowKind::from_i8(k.value(row)))
    }

    fn filter(self, mask: &BooleanArray) -> Result<Rows, String> {
        let batch = arrow::compute::filter_record_batch(&self.batch, mask).map_err(|e| e.to_string())?;
        let kinds = self.kinds.map(|k| arrow::compute::filter(&k, mask).map(|a| a.as_primitive().clone())).transpose().map_err(|e| e.to_string())?;
        let watermarks = self.watermarks.map(|w| arrow::compute::filter(&w, mask).map(|a| a.as_primitive().clone())).transpose().map_err(|e| e.to_string())?;
        Ok(Rows { batch, kinds, watermarks })
    }

    pub(crate) fn take(&self, indices: &UInt32Array) -> Result<Rows, String> {
        let batch = arrow::compute::take_record_batch(&self.batch, indices).map_err(|e| e.to_string())?;
        let kinds = self.kinds.as_ref().map(|k| arrow::compute::take(k, indices, None).map(|a| a.as_primitive().clone())).transpose().map_err(|e| e.to_string())?;
        let watermarks = self.watermarks.as_ref().map(|w| arrow::compute::take(w, indices, None).map(|a| a.as_primitive().clone())).transpose().map_err(|e| e.to_string())?;
        Ok(Rows { batch, kinds, watermarks })
    }
}

#[cfg(test)]
impl Rows {
    /// Each row as its change and cells (`+I a,1,2`), for tests.
    pub(crate) fn text(&self) -> Vec<String> {
        let b = &self.batch;
        (0..b.num_rows())
            .map(|r| {
                let cells: Vec<String> = b.columns().iter().map(|c| arrow::util::display::array_value_to_string(c, r).unwrap()).collect();
                format!("{} {}", self.kind(r).short(), cells.join(","))
            })
            .collect()
    }
}

/// One operator of a pipeline.
pub enum Step {
    Filter(Arc<dyn PhysicalExpr>),
    Project(Vec<Arc<dyn PhysicalExpr>>, SchemaRef),
    /// A row per window holding the row's time: the input's columns, then `window_start`,
    /// `window_end` and `window_time` (`output`). With `drop_late` (it feeds a window
    /// aggregate), rows whose every window has fired are dropped and counted.
    Window { kind: WindowKind, time: usize, output: SchemaRef, drop_late: bool },
    Aggregate(Box<AggregatePlan>),
    /// `ROW_NUMBER() OVER (PARTITION BY … ORDER BY …)` filtered on the rank: a changelog.
    Rank(Box<crate::topn::RankPlan>),
    /// An upsert-kafka table's records (upserts and tombstones by primary key) as a changelog.
    Changelog(Box<crate::changelog::ChangelogPlan>),
    /// The pipeline's source joined with a second table (always the first step).
    Join(Box<crate::join::JoinPlan>),
}

/// `GROUP BY keys` with `aggregates`: output columns are the keys then the aggregates.
pub struct AggregatePlan {
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// For a window aggregate: the indices in `keys` of `window_start` and `window_end`.
    pub window: Option<(usize, usize)>,
    /// For a SESSION window aggregate: the gap (ms) that ends a session.
    pub session_gap: Option<i64>,
    pub aggregates: Vec<Aggregate>,
    pub output: SchemaRef,
    /// The input is a changelog: its -U and -D rows are taken back from the accumulators, and a
    /// group whose every row was taken back is deleted.
    pub retracting: bool,
}

/// Whether an aggregate can take rows back exactly, checkpoint included: COUNT, SUM and AVG
/// (their state is a sum and a count), MIN, MAX and the DISTINCT aggregates (every value kept
/// with its count, [`crate::retract`]).
pub(crate) fn check_retractable(f: &Arc<AggregateFunctionExpr>) -> Result<(), String> {
    let name = f.fun().name().to_ascii_lowercase();
    if crate::retract::needs_multiset(f) {
        return crate::retract::Multiset::new(f.clone()).map(|_| ());
    }
    if !matches!(name.as_str(), "count" | "sum" | "avg") {
        return Err(format!("{} cannot take rows back yet (COUNT, SUM, AVG, MIN, MAX and DISTINCT aggregates can)", name.to_uppercase()));
    }
    let acc = f.create_sliding_accumulator().map_err(err)?;
    if !acc.supports_retract_batch() {
        return Err(format!("{} cannot take rows back", name.to_uppercase()));
    }
    Ok(())
}

/// An accumulator that takes rows back.
fn retracting_accumulator(f: &Arc<AggregateFunctionExpr>) -> Result<Box<dyn Accumulator>, String> {
    if crate::retract::needs_multiset(f) {
        return Ok(Box::new(crate::retract::Multiset::new(f.clone())?));
    }
    f.create_sliding_accumulator().map_err(err)
}

impl AggregatePlan {
    /// A window aggregate's keys over `batch`: window starts and ends (ms), and the other keys.
    pub(crate) fn window_keys(&self, batch: &RecordBatch) -> Result<(TimestampMillisecondArray, TimestampMillisecondArray, Vec<ArrayRef>), String> {
        let (ws, we) = self.window.ok_or("not a window aggregate")?;
        let keys = self.keys.iter().map(|k| evaluate(k, batch)).collect::<Result<Vec<_>, _>>()?;
        let others = keys.iter().enumerate().filter(|(k, _)| *k != ws && *k != we).map(|(_, a)| a.clone()).collect();
        Ok((millis(&keys[ws])?, millis(&keys[we])?, others))
    }

    /// A fresh row accumulator per aggregate.
    pub(crate) fn accumulators(&self) -> Result<Vec<Box<dyn Accumulator>>, String> {
        if self.retracting {
            return self.aggregates.iter().map(|a| retracting_accumulator(&a.function)).collect();
        }
        self.aggregates.iter().map(|a| a.function.create_accumulator().map_err(err)).collect()
    }

    /// How many state columns each aggregate has in a checkpoint.
    pub(crate) fn state_widths(&self) -> Result<Vec<usize>, String> {
        if self.retracting {
            // A retracting accumulator's state may be wider than the function's (SUM keeps a count).
            return self.accumulators()?.iter_mut().map(|a| a.state().map(|s| s.len()).map_err(err)).collect();
        }
        self.aggregates.iter().map(|a| a.function.state_fields().map(|f| f.len()).map_err(err)).collect()
    }

    /// Each row accumulator's intermediate state, for a checkpoint; taking it may consume it, so
    /// the accumulators are rebuilt from what they gave.
    pub(crate) fn take_states(&self, accumulators: &mut [Box<dyn Accumulator>]) -> Result<Vec<Vec<ScalarValue>>, String> {
        let mut states = Vec::with_capacity(accumulators.len());
        for (acc, fresh) in accumulators.iter_mut().zip(self.accumulators()?) {
            let state = acc.state().map_err(err)?;
            let arrays = state.iter().map(ScalarValue::to_array).collect::<datafusion_common::Result<Vec<_>>>().map_err(err)?;
            *acc = fresh;
            acc.merge_batch(&arrays).map_err(err)?;
            states.push(state);
        }
        Ok(states)
    }

    /// State columns for `states` (one entry per row, each as [`AggregatePlan::take_states`]
    /// gave it): every aggregate's state fields in turn.
    pub(crate) fn state_columns(&self, states: &[Vec<Vec<ScalarValue>>]) -> Result<Vec<ArrayRef>, String> {
        let mut columns = Vec::new();
        for (j, width) in self.state_widths()?.into_iter().enumerate() {
            for f in 0..width {
                columns.push(ScalarValue::iter_to_array(states.iter().map(|s| s[j][f].clone())).map_err(err)?);
            }
        }
        Ok(columns)
    }

    /// Row accumulators holding row `row` of [`AggregatePlan::state_columns`] (`columns` starts
    /// with the first aggregate's first state field).
    pub(crate) fn accumulators_from(&self, columns: &[ArrayRef], row: usize) -> Result<Vec<Box<dyn Accumulator>>, String> {
        let mut accumulators = self.accumulators()?;
        let mut at = 0;
        for (acc, width) in accumulators.iter_mut().zip(self.state_widths()?) {
            let state: Vec<ArrayRef> = columns.get(at..at + width).ok_or("the checkpoint's aggregate state is short")?.iter().map(|c| c.slice(row, 1)).collect();
            acc.merge_batch(&state).map_err(err)?;
            at += width;
        }
        Ok(accumulators)
    }
}

pub struct Aggregate {
    pub function: Arc<AggregateFunctionExpr>,
    /// `FILTER (WHERE …)`.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Filter(e) => write!(f, "filter {e}"),
            Step::Project(exprs, schema) => {
                write!(f, "project ")?;
                for (i, (e, field)) in exprs.iter().zip(schema.fields()).enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{e} AS {}", field.name())?;
                }
                Ok(())
            }
            Step::Window { kind, time, output, .. } => {
                let how = match kind {
                    WindowKind::Tumble { size } => format!("size {size} ms"),
                    WindowKind::Hop { slide, size } => format!("slide {slide} ms, size {size} ms"),
                    WindowKind::Cumulate { step, size } => format!("step {step} ms, size {size} ms"),
                    WindowKind::Session { gap } => format!("gap {gap} ms, merged per key by the aggregate"),
                };
                write!(f, "window {} on {} ({how})", kind.name(), output.field(*time).name())
            }
            Step::Rank(r) => {
                let keys: Vec<String> = r.partition.iter().map(ToString::to_string).collect();
                let order: Vec<String> = r.order.iter().map(|(e, o)| format!("{e}{}", if o.descending { " DESC" } else { "" })).collect();
                write!(f, "top {} per [{}] by [{}] (a changelog of ranks)", r.limit, keys.join(", "), order.join(", "))
            }
            Step::Join(j) => {
                let keys = |s: usize| j.keys[s].iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
                let how = match j.interval {
                    Some(i) => format!("interval join, right time - left time in [{} ms, {} ms]", i.lower, i.upper),
                    None => format!("regular join{}", j.ttl.map_or(String::new(), |t| format!(", state TTL {} ms", t.as_millis()))),
                };
                write!(f, "{:?} join with {} on [{}] = [{}]{} ({how})", j.kind, j.right.table.name, keys(0), keys(1), j.filter.as_ref().map_or(String::new(), |e| format!(" and {e}")))?;
                for (name, steps) in ["left", "right"].iter().zip(&j.sides) {
                    for s in steps {
                        write!(f, "\n      {name}: {s}")?;
                    }
                }
                Ok(())
            }
            Step::Changelog(c) => {
                let keys: Vec<&str> = c.key.iter().map(|k| c.schema.field(*k).name().as_str()).collect();
                write!(f, "upserts by [{}] as a changelog (each key's last row kept)", keys.join(", "))
            }
            Step::Aggregate(a) => {
                let keys: Vec<String> = a.keys.iter().map(ToString::to_string).collect();
                let aggs: Vec<String> = a.aggregates.iter().map(|g| g.function.name().to_string()).collect();
                let what = if a.window.is_some() { "window aggregate (emitted when the watermark passes window_end)" } else { "updating aggregate (a changelog)" };
                write!(f, "{what} by [{}]: {}", keys.join(", "), aggs.join(", "))
            }
        }
    }
}

/// Whether the steps' output is a changelog (it updates rows already emitted).
pub fn updating(steps: &[Step]) -> bool {
    steps.iter().any(|s| matches!(s, Step::Aggregate(a) if a.window.is_none()) || matches!(s, Step::Rank(_) | Step::Changelog(_)) || matches!(s, Step::Join(j) if j.updating()))
}

/// The running state of a pipeline's steps.
pub struct Operators<'a> {
    steps: &'a [Step],
    states: Vec<State<'a>>,
    /// Rows dropped because every window they belong to had fired.
    pub late: u64,
    windows: Vec<(i64, i64)>,
}

enum State<'a> {
    None,
    Window(WindowAggregate<'a>),
    Group(GroupAggregate<'a>),
    TopN(crate::topn::TopN<'a>),
    Session(crate::session::SessionAggregate<'a>),
    Changelog(crate::changelog::Normalize<'a>),
    Join(Box<crate::join::Join<'a>>),
}

pub(crate) fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub(crate) fn evaluate(e: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef, String> {
    e.evaluate(batch).and_then(|v| v.into_array(batch.num_rows())).map_err(err)
}

impl<'a> Operators<'a> {
    pub fn new(steps: &'a [Step]) -> Result<Operators<'a>, String> {
        let mut states = Vec::new();
        for s in steps {
            states.push(match s {
                Step::Aggregate(a) if a.session_gap.is_some() => State::Session(crate::session::SessionAggregate::new(a)?),
                Step::Aggregate(a) if a.window.is_some() => State::Window(WindowAggregate::new(a)?),
                Step::Aggregate(a) => State::Group(GroupAggregate::new(a)?),
                Step::Rank(r) => State::TopN(crate::topn::TopN::new(r)?),
                Step::Changelog(c) => State::Changelog(crate::changelog::Normalize::new(c)?),
                Step::Join(j) => State::Join(Box::new(crate::join::Join::new(j)?)),
                _ => State::None,
            });
        }
        Ok(Operators { steps, states, late: 0, windows: Vec::new() })
    }

    /// Rows held in state (groups of open windows and of updating aggregates).
    pub fn state_rows(&self) -> usize {
        self.states
            .iter()
            .map(|s| match s {
                State::None => 0,
                State::Window(w) => w.windows.values().map(|g| g.keys.len()).sum(),
                State::Group(g) => g.keys.len(),
                State::TopN(t) => t.state_rows(),
                State::Session(t) => t.state_rows(),
                State::Changelog(c) => c.state_rows(),
                State::Join(j) => j.state_rows(),
            })
            .sum()
    }

    /// Rows a join's state TTL dropped.
    pub fn expired(&self) -> u64 {
        self.states.iter().map(|s| if let State::Join(j) = s { j.expired } else { 0 }).sum()
    }

    /// How many state batches [`Operators::snapshot`] gives (a join: one per side, then its
    /// branches').
    pub fn slots(&self) -> usize {
        self.states.iter().map(|s| if let State::Join(j) = s { 2 + j.branches.iter().map(Operators::slots).sum::<usize>() } else { 1 }).sum()
    }

    /// The state of every step (`None` for a stateless one), as batches a checkpoint writes.
    /// The accumulators are rebuilt from the state they gave, so the job goes on unchanged.
    pub fn snapshot(&mut self) -> Result<Vec<Option<RecordBatch>>, String> {
        let mut out = Vec::new();
        for s in &mut self.states {
            match s {
                State::None => out.push(None),
                State::Window(w) => out.push(Some(w.snapshot()?)),
                State::Group(g) => out.push(Some(g.snapshot()?)),
                State::TopN(t) => out.push(Some(t.snapshot()?)),
                State::Session(t) => out.push(Some(t.snapshot()?)),
                State::Changelog(c) => out.push(Some(c.snapshot()?)),
                State::Join(j) => out.extend(j.snapshot()?),
            }
        }
        Ok(out)
    }

    /// Puts back what [`Operators::snapshot`] gave (same steps, in order).
    pub fn restore(&mut self, states: Vec<Option<RecordBatch>>) -> Result<(), String> {
        if states.len() != self.slots() {
            return Err(format!("the checkpoint has {} steps, the query {}", states.len(), self.slots()));
        }
        let mut states = states.into_iter();
        for state in self.states.iter_mut() {
            if let State::Join(j) = state {
                j.restore(&mut states)?;
                continue;
            }
            match (state, states.next().flatten()) {
                (State::None, None) => {}
                (State::Window(w), Some(b)) => w.restore(&b)?,
                (State::Group(g), Some(b)) => g.restore(&b)?,
                (State::TopN(t), Some(b)) => t.restore(&b)?,
                (State::Session(t), Some(b)) => t.restore(&b)?,
                (State::Changelog(c), Some(b)) => c.restore(&b)?,
                _ => return Err("the checkpoint's steps are not the query's".into()),
            }
        }
        Ok(())
    }

    /// Runs `rows` through every step; `watermark` is the watermark after them (`i64::MAX` at
    /// the end of a bounded input: every window fires).
    pub fn process(&mut self, rows: Rows, watermark: i64) -> Result<Rows, String> {
        self.process_side(0, rows, [watermark, watermark])
    }

    /// Runs rows of source `side` (0: the pipeline's source; 1: the table a join reads) through
    /// its steps, under each source's watermark (the join and what follows it take the least).
    pub fn process_side(&mut self, side: usize, mut rows: Rows, watermarks: [i64; 2]) -> Result<Rows, String> {
        let mut watermark = watermarks[0];
        let mut start = 0;
        if let Some(State::Join(j)) = self.states.first_mut() {
            let late_before = j.branches[side].late + j.late;
            let branch = j.branches[side].process(rows, watermarks[side])?;
            watermark = watermarks[0].min(watermarks[1]);
            rows = j.process(side, &branch, watermarks)?;
            self.late += j.branches[side].late + j.late - late_before;
            start = 1;
        } else if side != 0 {
            return Err("rows of a second source without a join".into());
        }
        for (step, state) in self.steps.iter().zip(self.states.iter_mut()).skip(start) {
            rows = match (step, state) {
                (Step::Filter(e), _) => {
                    let mask = evaluate(e, &rows.batch)?;
                    let mask = mask.as_any().downcast_ref::<BooleanArray>().ok_or("the WHERE condition is not BOOLEAN")?;
                    // NULL is not true: the row goes.
                    rows.filter(&null_as_false(mask))?
                }
                (Step::Project(exprs, schema), _) => {
                    let columns = exprs.iter().map(|e| evaluate(e, &rows.batch)).collect::<Result<Vec<_>, _>>()?;
                    let schema = format::nullable_like(schema);
                    Rows { batch: RecordBatch::try_new(schema, columns).map_err(err)?, ..rows }
                }
                (Step::Window { kind, time, output, drop_late }, _) => assign_windows(rows, *kind, *time, output, *drop_late, &mut self.late, &mut self.windows)?,
                (Step::Aggregate(_), State::Window(w)) => w.process(&rows, watermark)?,
                (Step::Aggregate(_), State::Group(g)) => g.process(&rows)?,
                (Step::Rank(_), State::TopN(t)) => t.process(&rows)?,
                (Step::Aggregate(_), State::Session(t)) => t.process(&rows, watermark, &mut self.late)?,
                (Step::Changelog(_), State::Changelog(c)) => c.process(&rows)?,
                (Step::Join(_), _) => return Err("a join is the first step of a pipeline".into()),
                (Step::Aggregate(_) | Step::Rank(_) | Step::Changelog(_), _) => unreachable!("aggregates, ranks and changelogs have their state"),
            };
        }
        Ok(rows)
    }
}

/// A condition's mask: NULL is not true.
fn null_as_false(mask: &BooleanArray) -> BooleanArray {
    if mask.null_count() == 0 {
        mask.clone()
    } else {
        arrow::compute::prep_null_mask_filter(mask)
    }
}

/// The milliseconds of a time column (TIMESTAMP or TIMESTAMP_LTZ of any precision).
pub(crate) fn millis(column: &ArrayRef) -> Result<TimestampMillisecondArray, String> {
    let a = arrow::compute::cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None)).map_err(err)?;
    Ok(a.as_primitive::<TimestampMillisecondType>().clone())
}

fn assign_windows(rows: Rows, kind: WindowKind, time: usize, output: &SchemaRef, drop_late: bool, late: &mut u64, windows: &mut Vec<(i64, i64)>) -> Result<Rows, String> {
    let times = millis(rows.batch.column(time))?;
    let mut take = Vec::with_capacity(rows.num_rows());
    let (mut starts, mut ends) = (Vec::with_capacity(rows.num_rows()), Vec::with_capacity(rows.num_rows()));
    for i in 0..rows.num_rows() {
        if times.is_null(i) {
            return Err(format!("a row has a NULL time attribute {}: it cannot be put in a window", output.field(time).name()));
        }
        kind.assign(times.value(i), windows);
        let watermark = rows.watermarks.as_ref().map_or(i64::MIN, |w| w.value(i));
        if drop_late && windows.last().is_some_and(|(_, end)| end - 1 <= watermark) {
            *late += 1;
            continue;
        }
        for (start, end) in windows.iter() {
            take.push(i as u32);
            starts.push(*start);
            ends.push(*end);
        }
    }
    let taken = rows.take(&UInt32Array::from(take))?;
    let mut columns = taken.batch.columns().to_vec();
    let n = output.fields().len();
    columns.push(Arc::new(TimestampMillisecondArray::from(starts)));
    columns.push(Arc::new(TimestampMillisecondArray::from(ends.clone())));
    let window_time: ArrayRef = Arc::new(TimestampMillisecondArray::from(ends.iter().map(|e| e - 1).collect::<Vec<_>>()));
    columns.push(arrow::compute::cast(&window_time, output.field(n - 1).data_type()).map_err(err)?);
    let schema = format::nullable_like(output);
    Ok(Rows { batch: RecordBatch::try_new(schema, columns).map_err(err)?, ..taken })
}

/// Group keys: each distinct key gets an index, in order of arrival.
pub(crate) struct KeyTable {
    /// `None` when there are no key columns (one group).
    converter: Option<RowConverter>,
    index: HashMap<Box<[u8]>, usize>,
    keys: Vec<Box<[u8]>>,
    single: bool,
}

impl KeyTable {
    pub(crate) fn new(types: &[DataType]) -> Result<KeyTable, String> {
        let converter = if types.is_empty() { None } else { Some(RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect()).map_err(err)?) };
        Ok(KeyTable { converter, index: HashMap::new(), keys: Vec::new(), single: false })
    }

    pub(crate) fn len(&self) -> usize {
        if self.converter.is_none() {
            usize::from(self.single)
        } else {
            self.keys.len()
        }
    }

    /// Each row's group index.
    pub(crate) fn intern(&mut self, columns: &[ArrayRef], num_rows: usize) -> Result<Vec<usize>, String> {
        let Some(converter) = &self.converter else {
            self.single = true;
            return Ok(vec![0; num_rows]);
        };
        let rows = converter.convert_columns(columns).map_err(err)?;
        let mut out = Vec::with_capacity(num_rows);
        for row in rows.iter() {
            let g = match self.index.get(row.as_ref()) {
                Some(g) => *g,
                None => {
                    let bytes: Box<[u8]> = row.as_ref().into();
                    let g = self.keys.len();
                    self.keys.push(bytes.clone());
                    self.index.insert(bytes, g);
                    g
                }
            };
            out.push(g);
        }
        Ok(out)
    }

    /// The key columns of the given groups.
    pub(crate) fn columns(&self, groups: &[usize]) -> Result<Vec<ArrayRef>, String> {
        match &self.converter {
            None => Ok(Vec::new()),
            Some(c) => {
                let parser = c.parser();
                c.convert_rows(groups.iter().map(|g| parser.parse(&self.keys[*g]))).map_err(err)
            }
        }
    }
}

/// The arguments of each aggregate over `batch`, and its FILTER mask.
pub(crate) fn arguments(aggregates: &[Aggregate], batch: &RecordBatch) -> Result<Vec<(Vec<ArrayRef>, Option<BooleanArray>)>, String> {
    aggregates
        .iter()
        .map(|a| {
            let args = a.function.expressions().iter().map(|e| evaluate(e, batch)).collect::<Result<Vec<_>, _>>()?;
            let filter = match &a.filter {
                Some(f) => {
                    let m = evaluate(f, batch)?;
                    let m = m.as_any().downcast_ref::<BooleanArray>().ok_or("FILTER (WHERE …) is not BOOLEAN")?.clone();
                    Some(null_as_false(&m))
                }
                None => None,
            };
            Ok((args, filter))
        })
        .collect()
}

/// A window aggregate reads appended rows only.
pub(crate) fn window_input(rows: &Rows) -> Result<(), String> {
    if retractions(rows) {
        return Err("a window aggregate over a changelog is not supported".into());
    }
    Ok(())
}

pub(crate) fn retractions(rows: &Rows) -> bool {
    rows.kinds.as_ref().is_some_and(|k| k.values().iter().any(|v| !RowKind::from_i8(*v).adds()))
}

/// Keyed windows: per window (end, start) its groups and their accumulators.
struct WindowAggregate<'a> {
    plan: &'a AggregatePlan,
    windows: BTreeMap<(i64, i64), WindowGroups>,
    key_types: Vec<DataType>,
}

struct WindowGroups {
    keys: KeyTable,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
}

fn groups_accumulator(f: &AggregateFunctionExpr) -> Result<Box<dyn GroupsAccumulator>, String> {
    if f.groups_accumulator_supported() {
        return f.create_groups_accumulator().map_err(err);
    }
    let f = f.clone();
    Ok(Box::new(GroupsAccumulatorAdapter::new(move || f.create_accumulator())))
}

impl<'a> WindowAggregate<'a> {
    fn new(plan: &'a AggregatePlan) -> Result<Self, String> {
        let (ws, we) = plan.window.expect("a window aggregate");
        let key_types = (0..plan.keys.len()).filter(|k| *k != ws && *k != we).map(|k| plan.output.field(k).data_type().clone()).collect();
        Ok(WindowAggregate { plan, windows: BTreeMap::new(), key_types })
    }

    /// Columns: window end, window start, the other keys, then each aggregate's state fields.
    fn snapshot(&mut self) -> Result<RecordBatch, String> {
        let plan = self.plan;
        let mut parts: Vec<Vec<ArrayRef>> = Vec::new();
        for ((end, start), w) in &mut self.windows {
            let n = w.keys.len();
            if n == 0 {
                continue;
            }
            let groups: Vec<usize> = (0..n).collect();
            let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![*end; n])), Arc::new(Int64Array::from(vec![*start; n]))];
            columns.extend(w.keys.columns(&groups)?);
            for (acc, a) in w.accumulators.iter_mut().zip(&plan.aggregates) {
                let state = acc.state(EmitTo::All).map_err(err)?;
                let mut fresh = groups_accumulator(&a.function)?;
                fresh.merge_batch(&state, &groups, n).map_err(err)?;
                *acc = fresh;
                columns.extend(state);
            }
            parts.push(columns);
        }
        state_batch(parts)
    }

    fn restore(&mut self, batch: &RecordBatch) -> Result<(), String> {
        let plan = self.plan;
        self.windows.clear();
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let ends = batch.column(0).as_primitive::<arrow::datatypes::Int64Type>().clone();
        let starts = batch.column(1).as_primitive::<arrow::datatypes::Int64Type>().clone();
        let mut per_window: BTreeMap<(i64, i64), Vec<u32>> = BTreeMap::new();
        for i in 0..batch.num_rows() {
            per_window.entry((ends.value(i), starts.value(i))).or_default().push(i as u32);
        }
        let nkeys = self.key_types.len();
        for (window, indices) in per_window {
            let take = UInt32Array::from(indices);
            let columns = batch.columns()[2..].iter().map(|c| arrow::compute::take(c, &take, None)).collect::<Result<Vec<_>, _>>().map_err(err)?;
            let mut keys = KeyTable::new(&self.key_types)?;
            let groups = keys.intern(&columns[..nkeys], take.len())?;
            let total = keys.len();
            let mut accumulators = Vec::new();
            let mut at = nkeys;
            for (a, width) in plan.aggregates.iter().zip(plan.state_widths()?) {
                let mut acc = groups_accumulator(&a.function)?;
                acc.merge_batch(columns.get(at..at + width).ok_or("the checkpoint's window state is short")?, &groups, total).map_err(err)?;
                accumulators.push(acc);
                at += width;
            }
            self.windows.insert(window, WindowGroups { keys, accumulators });
        }
        Ok(())
    }

    fn process(&mut self, rows: &Rows, watermark: i64) -> Result<Rows, String> {
        let plan = self.plan;
        let (ws, we) = plan.window.expect("a window aggregate");
        window_input(rows)?;
        let batch = &rows.batch;
        if batch.num_rows() > 0 {
            let (starts, ends, others) = plan.window_keys(batch)?;
            let args = arguments(&plan.aggregates, batch)?;
            // Rows per window, in arrival order.
            let mut per_window: BTreeMap<(i64, i64), Vec<u32>> = BTreeMap::new();
            for i in 0..batch.num_rows() {
                let (start, end) = (starts.value(i), ends.value(i));
                let arrived_under = rows.watermarks.as_ref().map_or(i64::MIN, |w| w.value(i));
                // This window fired before the row came (its record is counted as late by the
                // window step only when all its windows had fired).
                if end - 1 <= arrived_under {
                    continue;
                }
                per_window.entry((end, start)).or_default().push(i as u32);
            }
            for (window, indices) in per_window {
                let take = UInt32Array::from(indices);
                let key_columns = others.iter().map(|a| arrow::compute::take(a, &take, None)).collect::<Result<Vec<_>, _>>().map_err(err)?;
                let state = match self.windows.entry(window) {
                    std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        let accumulators = plan.aggregates.iter().map(|a| groups_accumulator(&a.function)).collect::<Result<Vec<_>, _>>()?;
                        v.insert(WindowGroups { keys: KeyTable::new(&self.key_types)?, accumulators })
                    }
                };
                let groups = state.keys.intern(&key_columns, take.len())?;
                let total = state.keys.len();
                for ((values, filter), acc) in args.iter().zip(state.accumulators.iter_mut()) {
                    let values = values.iter().map(|a| arrow::compute::take(a, &take, None)).collect::<Result<Vec<_>, _>>().map_err(err)?;
                    let filter = filter.as_ref().map(|f| arrow::compute::take(f, &take, None).map(|a| a.as_boolean().clone())).transpose().map_err(err)?;
                    acc.update_batch(&values, &groups, filter.as_ref(), total).map_err(err)?;
                }
            }
        }
        // Fire every window the watermark has passed, earliest end first.
        let mut outputs = Vec::new();
        while let Some(entry) = self.windows.first_entry() {
            let (end, start) = *entry.key();
            if end - 1 > watermark {
                break;
            }
            let mut state = entry.remove();
            let n = state.keys.len();
            if n == 0 {
                continue;
            }
            let groups: Vec<usize> = (0..n).collect();
            let mut others = state.keys.columns(&groups)?.into_iter();
            let mut columns = Vec::with_capacity(plan.output.fields().len());
            for k in 0..plan.keys.len() {
                let column: ArrayRef = if k == ws || k == we {
                    let v = if k == ws { start } else { end };
                    let a: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![v; n]));
                    arrow::compute::cast(&a, plan.output.field(k).data_type()).map_err(err)?
                } else {
                    others.next().ok_or("a key column is missing")?
                };
                columns.push(column);
            }
            for acc in &mut state.accumulators {
                columns.push(acc.evaluate(EmitTo::All).map_err(err)?);
            }
            outputs.push(output_batch(&plan.output, columns)?);
        }
        let schema = format::nullable_like(&plan.output);
        let batch = arrow::compute::concat_batches(&schema, &outputs).map_err(err)?;
        Ok(Rows::new(batch))
    }
}

/// State columns as one batch (columns named by position; parts concatenated).
pub(crate) fn state_batch(parts: Vec<Vec<ArrayRef>>) -> Result<RecordBatch, String> {
    let Some(first) = parts.first() else {
        return Ok(RecordBatch::new_empty(Arc::new(Schema::empty())));
    };
    let fields: Vec<Field> = first.iter().enumerate().map(|(i, a)| Field::new(format!("c{i}"), a.data_type().clone(), true)).collect();
    let schema = Arc::new(Schema::new(fields));
    let batches = parts.into_iter().map(|columns| RecordBatch::try_new(schema.clone(), columns)).collect::<Result<Vec<_>, _>>().map_err(err)?;
    arrow::compute::concat_batches(&schema, &batches).map_err(err)
}

/// Output columns as a batch of the plan's schema (types cast where an accumulator's differ).
pub(crate) fn output_batch(output: &SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch, String> {
    let columns = columns
        .into_iter()
        .zip(output.fields())
        .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c) } else { arrow::compute::cast(&c, f.data_type()).map_err(err) })
        .collect::<Result<Vec<_>, _>>()?;
    let schema = format::nullable_like(output);
    RecordBatch::try_new(schema, columns).map_err(err)
}

/// `GROUP BY` without windows: every batch changes some groups, and each change is emitted
/// (+I for a new group; -U old and +U new for a changed one; nothing when the result is equal).
struct GroupAggregate<'a> {
    plan: &'a AggregatePlan,
    keys: KeyTable,
    accumulators: Vec<Vec<Box<dyn Accumulator>>>,
    last: Vec<Option<Vec<ScalarValue>>>,
    /// Rows in each group: added less taken back.
    counts: Vec<i64>,
}

impl<'a> GroupAggregate<'a> {
    fn new(plan: &'a AggregatePlan) -> Result<Self, String> {
        let types: Vec<DataType> = (0..plan.keys.len()).map(|k| plan.output.field(k).data_type().clone()).collect();
        Ok(GroupAggregate { plan, keys: KeyTable::new(&types)?, accumulators: Vec::new(), last: Vec::new(), counts: Vec::new() })
    }

    /// Columns: the keys, each aggregate's state fields, then each aggregate's last emitted
    /// value and whether there is one.
    fn snapshot(&mut self) -> Result<RecordBatch, String> {
        let plan = self.plan;
        let n = self.keys.len();
        if n == 0 {
            return state_batch(Vec::new());
        }
        let groups: Vec<usize> = (0..n).collect();
        let mut columns = self.keys.columns(&groups)?;
        let states = self.accumulators.iter_mut().map(|accs| plan.take_states(accs)).collect::<Result<Vec<_>, _>>()?;
        columns.extend(plan.state_columns(&states)?);
        for j in 0..plan.aggregates.len() {
            let field = plan.output.field(plan.keys.len() + j);
            let values = self.last.iter().map(|l| l.as_ref().map_or_else(|| ScalarValue::try_from(field.data_type()), |v| Ok(v[j].clone()))).collect::<datafusion_common::Result<Vec<_>>>().map_err(err)?;
            columns.push(ScalarValue::iter_to_array(values).map_err(err)?);
        }
        columns.push(Arc::new(BooleanArray::from(self.last.iter().map(Option::is_some).collect::<Vec<_>>())));
        if plan.retracting {
            columns.push(Arc::new(Int64Array::from(self.counts.clone())));
        }
        state_batch(vec![columns])
    }

    fn restore(&mut self, batch: &RecordBatch) -> Result<(), String> {
        let plan = self.plan;
        let types: Vec<DataType> = (0..plan.keys.len()).map(|k| plan.output.field(k).data_type().clone()).collect();
        self.keys = KeyTable::new(&types)?;
        self.accumulators.clear();
        self.last.clear();
        self.counts.clear();
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let nkeys = plan.keys.len();
        let groups = self.keys.intern(&batch.columns()[..nkeys], n)?;
        if groups != (0..n).collect::<Vec<_>>() {
            return Err("the checkpoint's groups repeat a key".into());
        }
        let last_at = nkeys + plan.state_widths()?.iter().sum::<usize>();
        let has_last = batch.columns().get(last_at + plan.aggregates.len()).ok_or("the checkpoint's group state is short")?.as_boolean().clone();
        match batch.columns().get(last_at + plan.aggregates.len() + 1) {
            Some(counts) if plan.retracting => self.counts = counts.as_primitive::<Int64Type>().values().to_vec(),
            None if !plan.retracting => self.counts = vec![1; n],
            _ => return Err("the checkpoint's group state does not fit the query".into()),
        }
        for g in 0..n {
            let accs = plan.accumulators_from(&batch.columns()[nkeys..], g)?;
            self.accumulators.push(accs);
            self.last.push(if has_last.value(g) {
                Some((0..plan.aggregates.len()).map(|j| ScalarValue::try_from_array(batch.column(last_at + j), g)).collect::<datafusion_common::Result<Vec<_>>>().map_err(err)?)
            } else {
                None
            });
        }
        Ok(())
    }

    fn process(&mut self, rows: &Rows) -> Result<Rows, String> {
        let plan = self.plan;
        let schema = format::nullable_like(&plan.output);
        let batch = &rows.batch;
        if batch.num_rows() == 0 {
            return Ok(Rows::no_changes(schema));
        }
        if !plan.retracting && retractions(rows) {
            return Err("an aggregate over a changelog (an updating input) is not supported yet".into());
        }
        let keys = plan.keys.iter().map(|k| evaluate(k, batch)).collect::<Result<Vec<_>, _>>()?;
        let groups = self.keys.intern(&keys, batch.num_rows())?;
        let args = arguments(&plan.aggregates, batch)?;
        // Rows per group, groups in order of first arrival in the batch.
        let mut order: Vec<usize> = Vec::new();
        let mut rows_of: HashMap<usize, Vec<u32>> = HashMap::new();
        for (i, g) in groups.iter().enumerate() {
            rows_of
                .entry(*g)
                .or_insert_with(|| {
                    order.push(*g);
                    Vec::new()
                })
                .push(i as u32);
        }
        while self.accumulators.len() < self.keys.len().max(1) {
            self.accumulators.push(plan.accumulators()?);
            self.last.push(None);
            self.counts.push(0);
        }
        let mut emitted_groups = Vec::new();
        let mut kinds = Vec::new();
        let mut values: Vec<Vec<ScalarValue>> = vec![Vec::new(); plan.aggregates.len()];
        for g in order {
            let (adds, takes): (Vec<u32>, Vec<u32>) = rows_of.remove(&g).unwrap_or_default().into_iter().partition(|i| rows.kind(*i as usize).adds());
            for ((args, filter), acc) in args.iter().zip(self.accumulators[g].iter_mut()) {
                for (adding, rows) in [(true, &adds), (false, &takes)] {
                    if rows.is_empty() {
                        continue;
                    }
                    let take = UInt32Array::from(rows.clone());
                    let mut taken = args.iter().map(|a| arrow::compute::take(a, &take, None)).collect::<Result<Vec<_>, _>>().map_err(err)?;
                    if let Some(f) = filter {
                        let f = arrow::compute::take(f, &take, None).map_err(err)?;
                        taken = taken.iter().map(|a| arrow::compute::filter(a, f.as_boolean())).collect::<Result<Vec<_>, _>>().map_err(err)?;
                    }
                    if adding {
                        acc.update_batch(&taken).map_err(err)?;
                    } else {
                        acc.retract_batch(&taken).map_err(err)?;
                    }
                }
            }
            self.counts[g] += adds.len() as i64 - takes.len() as i64;
            if plan.retracting && self.counts[g] <= 0 {
                // Every row of the group taken back: its result row is deleted, its state cleared.
                self.counts[g] = 0;
                self.accumulators[g] = plan.accumulators()?;
                if let Some(before) = self.last[g].take() {
                    emitted_groups.push(g);
                    kinds.push(RowKind::Delete as i8);
                    for (j, v) in before.into_iter().enumerate() {
                        values[j].push(v);
                    }
                }
                continue;
            }
            let now = self.accumulators[g].iter_mut().map(|a| a.evaluate()).collect::<datafusion_common::Result<Vec<_>>>().map_err(err)?;
            match self.last[g].take() {
                Some(before) if before == now => {
                    self.last[g] = Some(before);
                    continue;
                }
                Some(before) => {
                    emitted_groups.push(g);
                    kinds.push(RowKind::UpdateBefore as i8);
                    for (j, v) in before.into_iter().enumerate() {
                        values[j].push(v);
                    }
                    emitted_groups.push(g);
                    kinds.push(RowKind::UpdateAfter as i8);
                }
                None => {
                    emitted_groups.push(g);
                    kinds.push(RowKind::Insert as i8);
                }
            }
            for (j, v) in now.iter().enumerate() {
                values[j].push(v.clone());
            }
            self.last[g] = Some(now);
        }
        if emitted_groups.is_empty() {
            return Ok(Rows::no_changes(schema));
        }
        let mut columns = self.keys.columns(&emitted_groups)?;
        for (j, v) in values.into_iter().enumerate() {
            let field = plan.output.field(plan.keys.len() + j);
            let array = if v.is_empty() { arrow::array::new_empty_array(field.data_type()) } else { ScalarValue::iter_to_array(v).map_err(err)? };
            columns.push(array);
        }
        Ok(Rows { batch: output_batch(&plan.output, columns)?, kinds: Some(Int8Array::from(kinds)), watermarks: None })
    }
}

/// The schema of a window step's output: the input's columns and the window's.
pub fn window_schema(input: &Schema, time: usize) -> SchemaRef {
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    let time_type = match input.field(time).data_type() {
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Millisecond, tz.clone()),
        other => other.clone(),
    };
    fields.push(Field::new("window_start", DataType::Timestamp(TimeUnit::Millisecond, None), false));
    fields.push(Field::new("window_end", DataType::Timestamp(TimeUnit::Millisecond, None), false));
    fields.push(Field::new("window_time", time_type, false));
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::plan_script;
    use arrow::array::{Int64Array, StringArray};

    const TABLES: &str = "CREATE TABLE bids (item STRING, price BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ('connector' = 'kafka', 'topic' = 'bids', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'format' = 'json');\n";

    fn sink(columns: &str, upsert: bool) -> String {
        if upsert {
            format!("CREATE TABLE results ({columns}, PRIMARY KEY (item) NOT ENFORCED) WITH ('connector' = 'upsert-kafka', 'topic' = 'out', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'key.format' = 'json', 'value.format' = 'json');\n")
        } else {
            format!("CREATE TABLE results ({columns}) WITH ('connector' = 'kafka', 'topic' = 'out', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'format' = 'json');\n")
        }
    }

    /// Source rows (item, price, ts in ms) with the watermark each arrived under.
    fn rows(job: &crate::plan::Job, data: &[(&str, i64, i64)], watermarks: &[i64]) -> Rows {
        let schema = format::nullable_like(&job.pipelines[0].source.schema);
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(data.iter().map(|d| d.0).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(data.iter().map(|d| d.1).collect::<Vec<_>>())),
                Arc::new(TimestampMillisecondArray::from(data.iter().map(|d| d.2).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        Rows { batch, kinds: None, watermarks: Some(Int64Array::from(watermarks.to_vec())) }
    }

    fn text(rows: &Rows) -> Vec<String> {
        rows.text()
    }

    #[test]
    fn a_tumbling_window_fires_when_the_watermark_passes_its_end_and_drops_late_rows() {
        let sql = format!("{TABLES}{}INSERT INTO results SELECT item, window_start, COUNT(*), SUM(price) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY item, window_start, window_end;", sink("item STRING, ws TIMESTAMP(3), n BIGINT, total BIGINT", false));
        let job = plan_script(&sql).unwrap();
        let p = &job.pipelines[0];
        assert!(!p.updating);
        assert!(matches!(p.steps.iter().find(|s| matches!(s, Step::Window { .. })), Some(Step::Window { drop_late: true, .. })));
        let mut ops = Operators::new(&p.steps).unwrap();
        // Window [0, 10 s): a, a, b; [10 s, 20 s): a.
        let out = ops.process(rows(&job, &[("a", 1, 1_000), ("b", 2, 9_000), ("a", 4, 5_000), ("a", 3, 12_000)], &[i64::MIN, 0, 8_000, 8_000]), 11_000).unwrap();
        assert_eq!(text(&out), ["+I a,1970-01-01T00:00:00,2,5", "+I b,1970-01-01T00:00:00,1,2"]);
        assert_eq!(ops.state_rows(), 1);
        // A row for the fired window is late: dropped and counted.
        let out = ops.process(rows(&job, &[("a", 100, 2_000)], &[11_000]), 11_000).unwrap();
        assert!(text(&out).is_empty());
        assert_eq!(ops.late, 1);
        let out = ops.process(rows(&job, &[], &[]), i64::MAX).unwrap();
        assert_eq!(text(&out), ["+I a,1970-01-01T00:00:10,1,3"]);
    }

    /// An aggregate grouped by an earlier window aggregate's window (renamed) is a window
    /// aggregate too: its rows are final and appended (Nexmark q5's MaxBids).
    #[test]
    fn a_window_aggregate_of_a_window_aggregate_fires_with_its_windows() {
        let sql = format!(
            "{TABLES}{}INSERT INTO results SELECT ws, MAX(n) FROM (SELECT item, COUNT(*) AS n, window_start AS ws, window_end AS we FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY item, window_start, window_end) GROUP BY ws, we;",
            sink("ws TIMESTAMP(3), top BIGINT", false)
        );
        let job = plan_script(&sql).unwrap();
        let p = &job.pipelines[0];
        assert!(!p.updating, "{}", crate::plan::explain(&job));
        let mut ops = Operators::new(&p.steps).unwrap();
        let out = ops.process(rows(&job, &[("a", 1, 1_000), ("b", 2, 9_000), ("a", 4, 5_000), ("c", 3, 12_000), ("c", 3, 13_000), ("a", 3, 14_000)], &[i64::MIN; 6]), 11_000).unwrap();
        assert_eq!(text(&out), ["+I 1970-01-01T00:00:00,2"]);
        let out = ops.process(rows(&job, &[], &[]), i64::MAX).unwrap();
        assert_eq!(text(&out), ["+I 1970-01-01T00:00:10,2"]);
        // Grouped by something else, it stays an updating aggregate.
        let sql = sql.replace("GROUP BY ws, we;", "GROUP BY ws;");
        assert!(plan_script(&sql).err().expect("an updating result into an append-only sink").to_string().contains("takes appended rows only"));
    }

    #[test]
    fn hopping_and_cumulating_windows_hold_a_row_in_several_windows() {
        let sql = format!("{TABLES}{}INSERT INTO results SELECT item, window_start, window_end, SUM(price) FROM TABLE(HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND)) GROUP BY item, window_start, window_end;", sink("item STRING, ws TIMESTAMP(3), we TIMESTAMP(3), total BIGINT", false));
        let job = plan_script(&sql).unwrap();
        let mut ops = Operators::new(&job.pipelines[0].steps).unwrap();
        ops.process(rows(&job, &[("a", 1, 7_000), ("a", 10, 12_000)], &[i64::MIN, 6_000]), 11_000).unwrap();
        // [0,10) fired before the second row came; a row for [5,15) and [10,20) still counts.
        let out = ops.process(rows(&job, &[("a", 100, 9_999)], &[11_000]), i64::MAX).unwrap();
        assert_eq!(text(&out), ["+I a,1970-01-01T00:00:05,1970-01-01T00:00:15,111", "+I a,1970-01-01T00:00:10,1970-01-01T00:00:20,10"]);
        assert_eq!(ops.late, 0, "the row was in a window that had not fired");

        let sql = format!("{TABLES}{}INSERT INTO results SELECT item, window_start, window_end, SUM(price) FROM TABLE(CUMULATE(TABLE bids, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '4' SECOND)) GROUP BY item, window_start, window_end;", sink("item STRING, ws TIMESTAMP(3), we TIMESTAMP(3), total BIGINT", false));
        let job = plan_script(&sql).unwrap();
        let mut ops = Operators::new(&job.pipelines[0].steps).unwrap();
        let out = ops.process(rows(&job, &[("a", 1, 500), ("a", 2, 2_500)], &[i64::MIN, i64::MIN]), i64::MAX).unwrap();
        assert_eq!(text(&out), ["+I a,1970-01-01T00:00:00,1970-01-01T00:00:02,1", "+I a,1970-01-01T00:00:00,1970-01-01T00:00:04,3"]);
    }

    const ACCOUNTS: &str = "CREATE TABLE accounts (id BIGINT, region STRING, amount BIGINT, PRIMARY KEY (id) NOT ENFORCED) WITH ('connector' = 'upsert-kafka', 'topic' = 'accounts', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'key.format' = 'json', 'value.format' = 'json');\n";

    /// Upserts (id, region, amount) and tombstones (id, None) of the accounts table.
    fn upserts(job: &crate::plan::Job, data: &[(i64, Option<(&str, i64)>)]) -> Rows {
        let schema = format::nullable_like(&job.pipelines[0].source.schema);
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(data.iter().map(|d| d.0).collect::<Vec<_>>())),
                Arc::new(StringArray::from(data.iter().map(|d| d.1.map(|v| v.0)).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(data.iter().map(|d| d.1.map(|v| v.1)).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        let kinds = data.iter().map(|d| if d.1.is_some() { RowKind::Insert as i8 } else { RowKind::Delete as i8 }).collect::<Vec<_>>();
        Rows { batch, kinds: Some(Int8Array::from(kinds)), watermarks: None }
    }

    #[test]
    fn an_aggregate_over_an_upsert_table_takes_changes_back_and_deletes_emptied_groups() {
        let sql = format!("{ACCOUNTS}CREATE TABLE results (region STRING, n BIGINT, total BIGINT, average DOUBLE, PRIMARY KEY (region) NOT ENFORCED) WITH ('connector' = 'upsert-kafka', 'topic' = 'out', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'key.format' = 'json', 'value.format' = 'json');\nINSERT INTO results SELECT region, COUNT(*), SUM(amount), AVG(amount) FROM accounts WHERE amount > 0 GROUP BY region;");
        let job = plan_script(&sql).unwrap();
        let p = &job.pipelines[0];
        assert!(p.updating && matches!(p.steps[0], Step::Changelog(_)), "{}", crate::plan::explain(&job));
        let mut ops = Operators::new(&p.steps).unwrap();
        let out = ops.process(upserts(&job, &[(1, Some(("eu", 10))), (2, Some(("eu", 20))), (3, Some(("us", 5)))]), i64::MIN).unwrap();
        assert_eq!(text(&out), ["+I eu,2,30,15.0", "+I us,1,5,5.0"]);
        // 1 moves to us; 3 is deleted; 2's filter stops holding; a tombstone of an unknown key.
        let out = ops.process(upserts(&job, &[(1, Some(("us", 7))), (3, None), (2, Some(("eu", -1))), (9, None)]), i64::MIN).unwrap();
        assert_eq!(text(&out), ["-D eu,2,30,15.0", "-U us,1,5,5.0", "+U us,1,7,7.0"]);
        // Through a checkpoint: state rows are the two live accounts and the us group.
        let state = ops.snapshot().unwrap();
        let mut again = Operators::new(&p.steps).unwrap();
        again.restore(state).unwrap();
        let out = again.process(upserts(&job, &[(4, Some(("eu", 1))), (1, None), (5, Some(("us", 3)))]), i64::MIN).unwrap();
        assert_eq!(text(&out), ["+I eu,1,1,1.0", "-U us,1,7,7.0", "+U us,1,3,3.0"]);
        assert_eq!(again.state_rows(), 3 + 2, "accounts 2, 4, 5 and groups eu, us");

        // MIN, MAX and DISTINCT keep every value with its count.
        let sql = format!("{ACCOUNTS}CREATE TABLE spread (region STRING, low BIGINT, high BIGINT, amounts BIGINT, distinct_total BIGINT, PRIMARY KEY (region) NOT ENFORCED) WITH ('connector' = 'upsert-kafka', 'topic' = 'spread', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'key.format' = 'json', 'value.format' = 'json');\nINSERT INTO spread SELECT region, MIN(amount), MAX(amount), COUNT(DISTINCT amount), SUM(DISTINCT amount) FROM accounts GROUP BY region;");
        let job = plan_script(&sql).unwrap();
        let steps = &job.pipelines[0].steps;
        let mut ops = Operators::new(steps).unwrap();
        let out = ops.process(upserts(&job, &[(1, Some(("eu", 10))), (2, Some(("eu", 20))), (3, Some(("eu", 10)))]), i64::MIN).unwrap();
        assert_eq!(text(&out), ["+I eu,10,20,2,30"]);
        let out = ops.process(upserts(&job, &[(2, None)]), i64::MIN).unwrap();
        assert_eq!(text(&out), ["-U eu,10,20,2,30", "+U eu,10,10,1,10"], "20 taken back; 10 is still there once more");
        let state = ops.snapshot().unwrap();
        let mut ops = Operators::new(steps).unwrap();
        ops.restore(state).unwrap();
        let out = ops.process(upserts(&job, &[(1, Some(("eu", 5)))]), i64::MIN).unwrap();
        assert_eq!(text(&out), ["-U eu,10,10,1,10", "+U eu,5,10,2,15"]);
        let out = ops.process(upserts(&job, &[(1, None), (3, None)]), i64::MIN).unwrap();
        assert_eq!(text(&out), ["-D eu,5,10,2,15"]);

        // What cannot take rows back is refused with its place.
        let (query, refused) = ("SELECT region, STDDEV_POP(amount) FROM accounts GROUP BY region", "STDDEV_POP cannot take rows back");
        let sql = format!("{ACCOUNTS}CREATE TABLE o2 (region STRING, v DOUBLE, PRIMARY KEY (region) NOT ENFORCED) WITH ('connector' = 'upsert-kafka', 'topic' = 'o2', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'key.format' = 'json', 'value.format' = 'json');\nINSERT INTO o2 {query};");
        let e = plan_script(&sql).err().expect("refused").to_string();
        assert!(e.contains(refused) && e.starts_with("3:1:"), "{e}");
        // An append-only sink cannot take a changelog.
        let sql = format!("{ACCOUNTS}CREATE TABLE plain (id BIGINT, amount BIGINT) WITH ('connector' = 'kafka', 'topic' = 'p', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'format' = 'json');\nINSERT INTO plain SELECT id, amount FROM accounts;");
        assert!(plan_script(&sql).err().expect("refused").to_string().contains("takes appended rows only"));
    }

    #[test]
    fn an_updating_aggregate_emits_a_changelog() {
        let sql = format!("{TABLES}{}INSERT INTO results SELECT item, COUNT(*), COUNT(DISTINCT price), MAX(price) FROM bids GROUP BY item HAVING SUM(price) < 100;", sink("item STRING, n BIGINT, prices BIGINT, top BIGINT", true));
        let job = plan_script(&sql).unwrap();
        let p = &job.pipelines[0];
        assert!(p.updating);
        let mut ops = Operators::new(&p.steps).unwrap();
        let out = ops.process(rows(&job, &[("a", 5, 0), ("b", 7, 0), ("a", 5, 0)], &[0, 0, 0]), 0).unwrap();
        assert_eq!(text(&out), ["+I a,2,1,5", "+I b,1,1,7"]);
        // b passes 100: its -U goes through HAVING, its +U does not (the sink deletes b).
        let out = ops.process(rows(&job, &[("a", 6, 0), ("b", 200, 0)], &[0, 0]), 0).unwrap();
        assert_eq!(text(&out), ["-U a,2,1,5", "+U a,3,2,6", "-U b,1,1,7"]);
        let err = plan_script(&format!("{TABLES}{}INSERT INTO results SELECT item, COUNT(*) FROM bids GROUP BY item;", sink("item STRING, n BIGINT", false))).err().unwrap();
        assert!(err.message.contains("takes appended rows only"), "{err}");
    }

    #[test]
    fn state_restored_from_a_snapshot_goes_on_as_if_nothing_happened() {
        let sql = format!("{TABLES}{}INSERT INTO results SELECT item, window_start, COUNT(DISTINCT price), SUM(price) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY item, window_start, window_end;", sink("item STRING, ws TIMESTAMP(3), n BIGINT, total BIGINT", false));
        let updating = format!("{TABLES}{}INSERT INTO results SELECT item, COUNT(*), AVG(price), MAX(price) FROM bids GROUP BY item;", sink("item STRING, n BIGINT, mean DOUBLE, top BIGINT", true));
        for sql in [sql, updating] {
            let job = plan_script(&sql).unwrap();
            let steps = &job.pipelines[0].steps;
            let first = rows(&job, &[("a", 1, 1_000), ("b", 2, 2_000), ("a", 1, 3_000), ("a", 5, 12_000)], &[i64::MIN; 4]);
            let second = rows(&job, &[("a", 7, 4_000), ("b", 2, 15_000), ("c", 3, 16_000)], &[0; 3]);
            let mut straight = Operators::new(steps).unwrap();
            let mut want = text(&straight.process(first.clone(), 0).unwrap());
            want.extend(text(&straight.process(second.clone(), 0).unwrap()));
            want.extend(text(&straight.process(rows(&job, &[], &[]), i64::MAX).unwrap()));

            let mut before = Operators::new(steps).unwrap();
            let mut got = text(&before.process(first, 0).unwrap());
            let snapshot = before.snapshot().unwrap();
            // The snapshot leaves the running operators as they were...
            let mut same = Operators::new(steps).unwrap();
            same.restore(snapshot.clone()).unwrap();
            assert_eq!(same.state_rows(), before.state_rows());
            // ...and operators restored from it give the rest of the output.
            let mut after = Operators::new(steps).unwrap();
            after.restore(snapshot).unwrap();
            got.extend(text(&after.process(second.clone(), 0).unwrap()));
            got.extend(text(&after.process(rows(&job, &[], &[]), i64::MAX).unwrap()));
            assert_eq!(got, want, "{sql}");
            let mut rest = text(&before.process(second, 0).unwrap());
            rest.extend(text(&before.process(rows(&job, &[], &[]), i64::MAX).unwrap()));
            assert_eq!(rest, want[want.len() - rest.len()..], "the snapshotted operators go on too");
        }
    }

    #[test]
    fn top_n_keeps_the_first_rows_per_partition_and_emits_rank_changes() {
        let sql = format!("{TABLES}{}INSERT INTO results SELECT item, price, rn FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY item ORDER BY price DESC) AS rn FROM bids) WHERE rn <= 2;", sink("item STRING, price BIGINT, rn BIGINT", true));
        let job = plan_script(&sql).unwrap();
        let p = &job.pipelines[0];
        assert!(p.updating);
        assert!(matches!(p.steps.iter().find(|s| matches!(s, Step::Rank(_))), Some(Step::Rank(r)) if r.limit == 2), "{}", crate::plan::explain(&job));
        let mut ops = Operators::new(&p.steps).unwrap();
        let out = ops.process(rows(&job, &[("a", 5, 0), ("b", 1, 0), ("a", 7, 0)], &[0; 3]), 0).unwrap();
        assert_eq!(text(&out), ["+I a,7,1", "+I a,5,2", "+I b,1,1"]);
        // 6 enters a at rank 2 (5 leaves); 1 ties b's 1 and comes after it; 3 is past a's top 2.
        let out = ops.process(rows(&job, &[("a", 6, 0), ("b", 1, 0), ("a", 3, 0)], &[0; 3]), 0).unwrap();
        assert_eq!(text(&out), ["-U a,5,2", "+U a,6,2", "+I b,1,2"]);
        assert_eq!(ops.state_rows(), 4);
        let snapshot = ops.snapshot().unwrap();
        let mut restored = Operators::new(&p.steps).unwrap();
        restored.restore(snapshot).unwrap();
        let out = restored.process(rows(&job, &[("a", 9, 0)], &[0]), 0).unwrap();
        assert_eq!(text(&out), ["-U a,7,1", "-U a,6,2", "+U a,9,1", "+U a,7,2"]);
        for (query, want) in [
            ("SELECT item, price FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY item ORDER BY price) AS rn FROM bids)", "filter its rank"),
            ("SELECT item, price FROM (SELECT *, RANK() OVER (PARTITION BY item ORDER BY price) AS rn FROM bids) WHERE rn = 1", "function 'rank'"),
        ] {
            let e = plan_script(&format!("{TABLES}{}INSERT INTO results {query};", sink("item STRING, price BIGINT", true))).err().unwrap();
            assert!(e.message.contains(want), "{query}: {e}");
        }
    }

    #[test]
    fn session_windows_merge_per_key_and_drop_rows_for_fired_sessions() {
        let sql = format!("{TABLES}{}INSERT INTO results SELECT item, window_start, window_end, COUNT(*), SUM(price) FROM TABLE(SESSION(TABLE bids PARTITION BY item, DESCRIPTOR(ts), INTERVAL '5' SECOND)) GROUP BY item, window_start, window_end;", sink("item STRING, ws TIMESTAMP(3), we TIMESTAMP(3), n BIGINT, total BIGINT", false));
        let job = plan_script(&sql).unwrap();
        let steps = &job.pipelines[0].steps;
        let mut ops = Operators::new(steps).unwrap();
        assert!(text(&ops.process(rows(&job, &[("a", 1, 0), ("b", 2, 1_000), ("a", 3, 3_000)], &[i64::MIN; 3]), 5_000).unwrap()).is_empty());
        // a's row at 6 s extends its session to 11 s; b's ends at 6 s and fires.
        let out = ops.process(rows(&job, &[("a", 4, 6_000)], &[5_000]), 9_000).unwrap();
        assert_eq!(text(&out), ["+I b,1970-01-01T00:00:01,1970-01-01T00:00:06,1,2"]);
        // c at 1 s comes after its session would have fired: late.
        let snapshot = ops.snapshot().unwrap();
        let out = ops.process(rows(&job, &[("a", 5, 20_000), ("c", 6, 1_000)], &[9_000, 9_000]), 12_000).unwrap();
        assert_eq!(text(&out), ["+I a,1970-01-01T00:00:00,1970-01-01T00:00:11,3,8"]);
        assert_eq!(ops.late, 1);
        let out = ops.process(rows(&job, &[], &[]), i64::MAX).unwrap();
        assert_eq!(text(&out), ["+I a,1970-01-01T00:00:20,1970-01-01T00:00:25,1,5"]);
        // The same from the snapshot taken before the last two batches.
        let mut restored = Operators::new(steps).unwrap();
        restored.restore(snapshot).unwrap();
        let mut again = text(&restored.process(rows(&job, &[("a", 5, 20_000), ("c", 6, 1_000)], &[9_000, 9_000]), 12_000).unwrap());
        again.extend(text(&restored.process(rows(&job, &[], &[]), i64::MAX).unwrap()));
        assert_eq!(again, ["+I a,1970-01-01T00:00:00,1970-01-01T00:00:11,3,8", "+I a,1970-01-01T00:00:20,1970-01-01T00:00:25,1,5"]);
        let e = plan_script(&format!("{TABLES}{}INSERT INTO results SELECT item FROM TABLE(SESSION(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND));", sink("item STRING", false))).err().unwrap();
        assert!(e.message.contains("SESSION windows are supported in a window aggregate"), "{e}");
    }

    #[test]
    fn window_functions_are_checked_where_they_are_written() {
        let e = plan_script(&format!("{TABLES}{}INSERT INTO results SELECT item, window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(item), INTERVAL '1' MINUTE)) GROUP BY item, window_start, window_end;", sink("item STRING, ws TIMESTAMP(3), n BIGINT", false))).err().unwrap();
        assert!(e.message.contains("DESCRIPTOR(item): the time attribute of bids is ts"), "{e}");
        assert_eq!(e.pos.line, 3, "{e}");
        let e = plan_script(&format!("{TABLES}{}INSERT INTO results SELECT item FROM TABLE(HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '7' SECOND, INTERVAL '10' SECOND));", sink("item STRING", false))).err().unwrap();
        assert!(e.message.contains("whole multiple of the slide"), "{e}");
        // Named arguments, and a window table function without an aggregate.
        let job = plan_script(&format!("{TABLES}{}INSERT INTO results SELECT item, window_end FROM TABLE(TUMBLE(DATA => TABLE bids, TIMECOL => DESCRIPTOR(ts), SIZE => INTERVAL '1' MINUTES));", sink("item STRING, we TIMESTAMP(3)", false))).unwrap();
        let mut ops = Operators::new(&job.pipelines[0].steps).unwrap();
        let out = ops.process(rows(&job, &[("a", 1, 61_000)], &[i64::MIN]), 0).unwrap();
        assert_eq!(text(&out), ["+I a,1970-01-01T00:02:00"]);
    }
}
