//! Top-N, as Flink writes it: `ROW_NUMBER() OVER (PARTITION BY … ORDER BY …) AS rn` in a
//! subquery, filtered by `rn <= N` (or `rn < N`, `rn = 1`) outside it. The operator keeps each
//! partition's first N rows (an append-only input never takes a row back, so rows past N are
//! gone for good) and emits a changelog of (rank, row): when a batch changes a partition's list,
//! the ranks whose row changed are taken back (-U, or -D when the list got shorter) and then
//! given their new rows (+U, or +I for a new rank), so an upsert table keyed by the partition
//! and the rank, or by the row's own key, ends with the current list.
//!
//! Ties keep arrival order. `ROW_NUMBER` is planned by DataFusion through [`RowNumber`], a
//! window function that is never evaluated: the [`TopN`] operator numbers the rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, UInt64Array};
use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion_common::ScalarValue;
use datafusion_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion_expr::{Expr, LogicalPlan, PartitionEvaluator, Signature, Volatility, WindowUDFImpl};
use datafusion_physical_expr::PhysicalExpr;

use crate::ops::{RowKind, Rows};

/// `ROW_NUMBER()` for DataFusion's planner.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RowNumber {
    signature: Signature,
}

impl Default for RowNumber {
    fn default() -> Self {
        RowNumber { signature: Signature::nullary(Volatility::Immutable) }
    }
}

impl WindowUDFImpl for RowNumber {
    fn name(&self) -> &str {
        "row_number"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(&self, _: PartitionEvaluatorArgs) -> datafusion_common::Result<Box<dyn PartitionEvaluator>> {
        datafusion_common::not_impl_err!("ROW_NUMBER is evaluated by Ferry's Top-N operator")
    }

    fn field(&self, args: WindowUDFFieldArgs) -> datafusion_common::Result<FieldRef> {
        // Flink's ROW_NUMBER is a BIGINT.
        Ok(Arc::new(Field::new(args.name(), DataType::Int64, false)))
    }
}

/// A Top-N: the input's columns then the rank (`output`).
pub struct RankPlan {
    pub partition: Vec<Arc<dyn PhysicalExpr>>,
    pub order: Vec<(Arc<dyn PhysicalExpr>, SortOptions)>,
    /// Rows kept per partition (0 until the filter on the rank is seen).
    pub limit: usize,
    /// The rank column's name in the Window node's output.
    pub rank_name: String,
    pub output: SchemaRef,
}

/// Whether `name`, read by a node above `plan`, is the rank column of the window below (through
/// projections that pass or rename it, and subquery aliases).
pub fn is_rank_column(plan: &LogicalPlan, name: &str) -> bool {
    match plan {
        LogicalPlan::SubqueryAlias(a) => is_rank_column(&a.input, name),
        LogicalPlan::Projection(p) => p.expr.iter().zip(p.schema.fields()).any(|(e, f)| {
            f.name() == name
                && match e {
                    Expr::Column(c) => is_rank_column(&p.input, &c.name),
                    Expr::Alias(a) => matches!(a.expr.as_ref(), Expr::Column(c) if is_rank_column(&p.input, &c.name)),
                    _ => false,
                }
        }),
        LogicalPlan::Filter(f) => is_rank_column(&f.input, name),
        LogicalPlan::Window(w) => w.schema.fields().last().is_some_and(|f| f.name() == name),
        _ => false,
    }
}

/// The rows kept per partition that `predicate` (`rn <= N`, `rn < N`, `rn = 1`, `N >= rn`) says,
/// if it bounds the rank column; and the conjuncts left.
pub fn rank_bound(predicate: &Expr, input: &LogicalPlan) -> (Option<usize>, Vec<Expr>) {
    let mut bound = None;
    let mut rest = Vec::new();
    for conjunct in datafusion_expr::utils::split_conjunction(predicate) {
        let found = match conjunct {
            Expr::BinaryExpr(b) => {
                let literal = |e: &Expr| match e {
                    Expr::Literal(v, _) => v.clone().cast_to(&DataType::Int64).ok().and_then(|v| if let ScalarValue::Int64(Some(n)) = v { Some(n) } else { None }),
                    Expr::Cast(c) => match c.expr.as_ref() {
                        Expr::Literal(v, _) => v.clone().cast_to(&DataType::Int64).ok().and_then(|v| if let ScalarValue::Int64(Some(n)) = v { Some(n) } else { None }),
                        _ => None,
                    },
                    _ => None,
                };
                let column = |e: &Expr| match e {
                    Expr::Column(c) => Some(c.name.clone()),
                    Expr::Cast(c) => match c.expr.as_ref() {
                        Expr::Column(c) => Some(c.name.clone()),
                        _ => None,
                    },
                    _ => None,
                };
                use datafusion_expr::Operator::*;
                let (name, op, n) = match (column(&b.left), literal(&b.right), literal(&b.left), column(&b.right)) {
                    (Some(c), Some(n), _, _) => (Some(c), Some(b.op), n),
                    (_, _, Some(n), Some(c)) => (Some(c), b.op.swap(), n),
                    _ => (None, None, 0),
                };
                match (name, op) {
                    (Some(c), Some(op)) if is_rank_column(input, &c) => match op {
                        LtEq if n >= 1 => Some(n as usize),
                        Lt if n >= 2 => Some(n as usize - 1),
                        Eq if n == 1 => Some(1),
                        _ => None,
                    },
                    _ => None,
                }
            }
            _ => None,
        };
        match found {
            Some(n) if bound.is_none() => bound = Some(n),
            _ => rest.push(conjunct.clone()),
        }
    }
    (bound, rest)
}

struct Partition {
    /// (order key, arrival) → the row's values.
    rows: BTreeMap<(Box<[u8]>, u64), Vec<ScalarValue>>,
}

/// The running Top-N.
pub struct TopN<'a> {
    plan: &'a RankPlan,
    partition_keys: Option<RowConverter>,
    order_keys: Option<RowConverter>,
    partitions: HashMap<Box<[u8]>, Partition>,
    arrivals: u64,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl<'a> TopN<'a> {
    pub fn new(plan: &'a RankPlan) -> Result<TopN<'a>, String> {
        let width = plan.output.fields().len() - 1;
        let input = &Schema::new(plan.output.fields().iter().take(width).cloned().collect::<Vec<_>>());
        let types = |exprs: &mut dyn Iterator<Item = (&Arc<dyn PhysicalExpr>, Option<SortOptions>)>| -> Result<Option<RowConverter>, String> {
            let fields = exprs.map(|(e, o)| e.data_type(input).map(|t| match o {
                Some(o) => SortField::new_with_options(t, o),
                None => SortField::new(t),
            })).collect::<datafusion_common::Result<Vec<_>>>().map_err(err)?;
            if fields.is_empty() {
                Ok(None)
            } else {
                RowConverter::new(fields).map(Some).map_err(err)
            }
        };
        let partition_keys = types(&mut plan.partition.iter().map(|e| (e, None)))?;
        let order_keys = types(&mut plan.order.iter().map(|(e, o)| (e, Some(*o))))?;
        Ok(TopN { plan, partition_keys, order_keys, partitions: HashMap::new(), arrivals: 0 })
    }

    pub fn state_rows(&self) -> usize {
        self.partitions.values().map(|p| p.rows.len()).sum()
    }

    fn keys(converter: &Option<RowConverter>, exprs: &[&Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> Result<Vec<Box<[u8]>>, String> {
        let Some(c) = converter else { return Ok(vec![Box::from(&[][..]); batch.num_rows()]) };
        let columns = exprs.iter().map(|e| e.evaluate(batch).and_then(|v| v.into_array(batch.num_rows()))).collect::<datafusion_common::Result<Vec<_>>>().map_err(err)?;
        let rows = c.convert_columns(&columns).map_err(err)?;
        Ok(rows.iter().map(|r| Box::from(r.as_ref())).collect())
    }

    /// Each row's partition key.
    fn partition_keys(&self, batch: &RecordBatch) -> Result<Vec<Box<[u8]>>, String> {
        let exprs: Vec<&Arc<dyn PhysicalExpr>> = self.plan.partition.iter().collect();
        Self::keys(&self.partition_keys, &exprs, batch)
    }

    /// Adds `batch`'s rows (of partitions `pkeys`, with their arrival numbers) without emitting
    /// anything; returns the partitions touched, in order of first touch.
    fn add(&mut self, batch: &RecordBatch, pkeys: &[Box<[u8]>], arrivals: Option<&[u64]>) -> Result<Vec<Box<[u8]>>, String> {
        let order_exprs: Vec<&Arc<dyn PhysicalExpr>> = self.plan.order.iter().map(|(e, _)| e).collect();
        let okeys = Self::keys(&self.order_keys, &order_exprs, batch)?;
        let mut touched: Vec<Box<[u8]>> = Vec::new();
        for i in 0..batch.num_rows() {
            let arrival = match arrivals {
                Some(a) => a[i],
                None => {
                    self.arrivals += 1;
                    self.arrivals
                }
            };
            self.arrivals = self.arrivals.max(arrival);
            let partition = self.partitions.entry(pkeys[i].clone()).or_insert_with(|| Partition { rows: BTreeMap::new() });
            let key = (okeys[i].clone(), arrival);
            // Past the N-th already: never ranked (the input only grows).
            if partition.rows.len() >= self.plan.limit && partition.rows.last_key_value().is_some_and(|(last, _)| *last < key) {
                continue;
            }
            let row = batch.columns().iter().map(|c| ScalarValue::try_from_array(c, i)).collect::<datafusion_common::Result<Vec<_>>>().map_err(err)?;
            partition.rows.insert(key, row);
            while partition.rows.len() > self.plan.limit {
                partition.rows.pop_last();
            }
            if !touched.contains(&pkeys[i]) {
                touched.push(pkeys[i].clone());
            }
        }
        Ok(touched)
    }

    pub fn process(&mut self, rows: &Rows) -> Result<Rows, String> {
        if rows.kinds.as_ref().is_some_and(|k| k.values().iter().any(|v| !RowKind::from_i8(*v).adds())) {
            return Err("Top-N over a changelog (an updating input) is not supported yet".into());
        }
        // Each touched partition's list before the batch.
        let pkeys = self.partition_keys(&rows.batch)?;
        let mut before: HashMap<Box<[u8]>, Vec<Vec<ScalarValue>>> = HashMap::new();
        for k in &pkeys {
            if !before.contains_key(k) {
                before.insert(k.clone(), self.partitions.get(k).map(|p| p.rows.values().cloned().collect()).unwrap_or_default());
            }
        }
        let touched = self.add(&rows.batch, &pkeys, None)?;
        let mut retract: Vec<(RowKind, u64, Vec<ScalarValue>)> = Vec::new();
        let mut add: Vec<(RowKind, u64, Vec<ScalarValue>)> = Vec::new();
        for k in touched {
            let old = before.remove(&k).unwrap_or_default();
            let new: Vec<Vec<ScalarValue>> = self.partitions.get(&k).map(|p| p.rows.values().cloned().collect()).unwrap_or_default();
            for rank in 0..old.len().max(new.len()) {
                match (old.get(rank), new.get(rank)) {
                    (Some(o), Some(n)) if o == n => {}
                    (Some(o), Some(n)) => {
                        retract.push((RowKind::UpdateBefore, rank as u64 + 1, o.clone()));
                        add.push((RowKind::UpdateAfter, rank as u64 + 1, n.clone()));
                    }
                    (Some(o), None) => retract.push((RowKind::Delete, rank as u64 + 1, o.clone())),
                    (None, Some(n)) => add.push((RowKind::Insert, rank as u64 + 1, n.clone())),
                    (None, None) => {}
                }
            }
        }
        let changes: Vec<(RowKind, u64, Vec<ScalarValue>)> = retract.into_iter().chain(add).collect();
        let schema = crate::format::nullable_like(&self.plan.output);
        if changes.is_empty() {
            return Ok(Rows::no_changes(schema));
        }
        let width = self.plan.output.fields().len() - 1;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(width + 1);
        for c in 0..width {
            let array = ScalarValue::iter_to_array(changes.iter().map(|(_, _, row)| row[c].clone())).map_err(err)?;
            let t = schema.field(c).data_type();
            columns.push(if array.data_type() == t { array } else { arrow::compute::cast(&array, t).map_err(err)? });
        }
        columns.push(Arc::new(arrow::array::Int64Array::from(changes.iter().map(|(_, r, _)| *r as i64).collect::<Vec<_>>())));
        let kinds = arrow::array::Int8Array::from(changes.iter().map(|(k, _, _)| *k as i8).collect::<Vec<_>>());
        Ok(Rows { batch: RecordBatch::try_new(schema, columns).map_err(err)?, kinds: Some(kinds), watermarks: None })
    }

    /// Every kept row (the input's columns) and its arrival number, for a checkpoint.
    pub fn snapshot(&self) -> Result<RecordBatch, String> {
        let width = self.plan.output.fields().len() - 1;
        let mut fields: Vec<Field> = self.plan.output.fields().iter().take(width).map(|f| f.as_ref().clone().with_nullable(true)).collect();
        fields.push(Field::new("arrival", DataType::UInt64, false));
        let schema = Arc::new(Schema::new(fields));
        let rows: Vec<(&u64, &Vec<ScalarValue>)> = self.partitions.values().flat_map(|p| p.rows.iter().map(|((_, a), r)| (a, r))).collect();
        if rows.is_empty() {
            return Ok(RecordBatch::new_empty(schema));
        }
        let mut columns: Vec<ArrayRef> = Vec::new();
        for c in 0..width {
            let array = ScalarValue::iter_to_array(rows.iter().map(|(_, r)| r[c].clone())).map_err(err)?;
            let t = schema.field(c).data_type();
            columns.push(if array.data_type() == t { array } else { arrow::compute::cast(&array, t).map_err(err)? });
        }
        columns.push(Arc::new(UInt64Array::from(rows.iter().map(|(a, _)| **a).collect::<Vec<_>>())));
        RecordBatch::try_new(schema, columns).map_err(err)
    }

    pub fn restore(&mut self, batch: &RecordBatch) -> Result<(), String> {
        self.partitions.clear();
        self.arrivals = 0;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let width = batch.num_columns() - 1;
        let arrivals: Vec<u64> = batch.column(width).as_primitive::<arrow::datatypes::UInt64Type>().values().to_vec();
        let input_fields: Vec<Field> = self.plan.output.fields().iter().take(width).map(|f| f.as_ref().clone().with_nullable(true)).collect();
        let rows = RecordBatch::try_new(Arc::new(Schema::new(input_fields)), batch.columns()[..width].to_vec()).map_err(err)?;
        let pkeys = self.partition_keys(&rows)?;
        self.add(&rows, &pkeys, Some(&arrivals))?;
        Ok(())
    }
}
