//! Aggregates over a changelog that need every value to take one back: MIN, MAX and the
//! DISTINCT aggregates. As Flink keeps a map state of value to count for them, the accumulator
//! keeps each value present with its count; MIN and MAX are its ends, a DISTINCT aggregate is
//! its function over the values present (each once). COUNT, SUM and AVG keep a sum and a count
//! (DataFusion's sliding accumulators) and are not built here.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::datatypes::{DataType, Int64Type};
use datafusion_common::{Result, ScalarValue};
use datafusion_expr::Accumulator;
use datafusion_physical_expr::aggregate::AggregateFunctionExpr;

/// A value ordered as SQL orders values of one type.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Value(ScalarValue);

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Values of one column have one type, which ScalarValue orders.
        self.0.partial_cmp(&other.0).unwrap_or(std::cmp::Ordering::Equal)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Min,
    Max,
    /// COUNT(DISTINCT x): how many values are present.
    CountDistinct,
    /// Another DISTINCT aggregate: its function over the values present.
    Distinct,
}

/// The values of a group present in the changelog so far, with their counts (NULLs are not
/// kept: MIN, MAX and DISTINCT aggregates skip them).
#[derive(Debug)]
pub(crate) struct Multiset {
    kind: Kind,
    function: Arc<AggregateFunctionExpr>,
    values: BTreeMap<Value, i64>,
    /// The values' type, from the first batch or state seen.
    data_type: Option<DataType>,
}

/// Whether `f` is kept as a multiset over a changelog.
pub(crate) fn needs_multiset(f: &AggregateFunctionExpr) -> bool {
    f.is_distinct() || matches!(f.fun().name().to_ascii_lowercase().as_str(), "min" | "max")
}

impl Multiset {
    pub(crate) fn new(function: Arc<AggregateFunctionExpr>) -> Result<Multiset, String> {
        let name = function.fun().name().to_ascii_lowercase();
        let kind = match (function.is_distinct(), name.as_str()) {
            (_, "min") => Kind::Min,
            (_, "max") => Kind::Max,
            (true, "count") => Kind::CountDistinct,
            (true, _) => Kind::Distinct,
            _ => return Err(format!("{} is not kept as a multiset", name.to_uppercase())),
        };
        if function.expressions().len() != 1 {
            return Err(format!("{}{} of {} arguments cannot take rows back yet (one can)", name.to_uppercase(), if function.is_distinct() { " DISTINCT" } else { "" }, function.expressions().len()));
        }
        Ok(Multiset { kind, function, values: BTreeMap::new(), data_type: None })
    }

    fn add(&mut self, values: &ArrayRef, by: i64) -> Result<()> {
        self.data_type.get_or_insert_with(|| values.data_type().clone());
        for i in 0..values.len() {
            if values.is_null(i) {
                continue;
            }
            let v = Value(ScalarValue::try_from_array(values, i)?);
            let count = self.values.entry(v.clone()).or_insert(0);
            *count += by;
            if *count <= 0 {
                self.values.remove(&v);
            }
        }
        Ok(())
    }

    fn present(&self) -> Result<ArrayRef> {
        let t = self.data_type.clone().unwrap_or(DataType::Null);
        if self.values.is_empty() {
            return Ok(arrow::array::new_empty_array(&t));
        }
        ScalarValue::iter_to_array(self.values.keys().map(|v| v.0.clone()))
    }
}

impl Accumulator for Multiset {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.add(&values[0], 1)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.add(&values[0], -1)
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let null = || ScalarValue::try_from(self.function.field().data_type());
        match self.kind {
            Kind::Min => self.values.keys().next().map_or_else(null, |v| Ok(v.0.clone())),
            Kind::Max => self.values.keys().next_back().map_or_else(null, |v| Ok(v.0.clone())),
            Kind::CountDistinct => Ok(ScalarValue::Int64(Some(self.values.len() as i64))),
            Kind::Distinct => {
                let mut inner = self.function.create_accumulator()?;
                inner.update_batch(&[self.present()?])?;
                inner.evaluate()
            }
        }
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.values.keys().map(|v| v.0.size()).sum::<usize>() + self.values.len() * 8
    }

    /// The values present and their counts, as two lists.
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let values = self.present()?;
        let counts: ArrayRef = Arc::new(Int64Array::from_iter_values(self.values.values().copied()));
        Ok(vec![list(values), list(counts)])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (values, counts) = (states[0].as_list::<i32>(), states[1].as_list::<i32>());
        for row in 0..values.len() {
            if values.is_null(row) {
                continue;
            }
            let (v, c) = (values.value(row), counts.value(row));
            if !matches!(v.data_type(), DataType::Null) {
                self.data_type.get_or_insert_with(|| v.data_type().clone());
            }
            let c = c.as_primitive::<Int64Type>();
            for i in 0..v.len() {
                if v.is_null(i) {
                    continue;
                }
                *self.values.entry(Value(ScalarValue::try_from_array(&v, i)?)).or_insert(0) += c.value(i);
            }
        }
        Ok(())
    }
}

/// One list scalar holding `values`.
fn list(values: ArrayRef) -> ScalarValue {
    ScalarValue::List(Arc::new(arrow::array::ListArray::new(
        Arc::new(arrow::datatypes::Field::new_list_field(values.data_type().clone(), true)),
        arrow::buffer::OffsetBuffer::from_lengths([values.len()]),
        values,
        None,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};
    use datafusion_expr::AggregateUDF;
    use datafusion_physical_expr::aggregate::AggregateExprBuilder;

    fn function(udaf: Arc<AggregateUDF>, distinct: bool) -> Arc<AggregateFunctionExpr> {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let column = datafusion_physical_expr::expressions::col("v", &schema).unwrap();
        Arc::new(AggregateExprBuilder::new(udaf, vec![column]).schema(schema).alias("f").with_distinct(distinct).build().unwrap())
    }

    #[test]
    fn a_multiset_answers_as_a_recomputation_after_every_change_and_checkpoint() {
        use datafusion_functions_aggregate::{count::count_udaf, min_max::max_udaf, min_max::min_udaf, sum::sum_udaf};
        let cases: [(&str, Arc<AggregateFunctionExpr>, fn(&[i64]) -> ScalarValue); 4] = [
            ("MIN", function(min_udaf(), false), |v| ScalarValue::Int64(v.iter().min().copied())),
            ("MAX", function(max_udaf(), false), |v| ScalarValue::Int64(v.iter().max().copied())),
            ("COUNT DISTINCT", function(count_udaf(), true), |v| ScalarValue::Int64(Some(v.iter().collect::<std::collections::BTreeSet<_>>().len() as i64))),
            ("SUM DISTINCT", function(sum_udaf(), true), |v| ScalarValue::Int64((!v.is_empty()).then(|| v.iter().collect::<std::collections::BTreeSet<_>>().into_iter().sum()))),
        ];
        for (name, f, recompute) in cases {
            assert!(needs_multiset(&f), "{name}");
            let mut acc = Multiset::new(f.clone()).unwrap();
            let mut present: Vec<i64> = Vec::new();
            let mut seed = 11_u64;
            for step in 0..400 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let value = ((seed >> 33) % 12) as i64;
                // Take back a value present two times in five (a changelog never takes back
                // what it did not add); a NULL now and then, which changes nothing.
                if (seed >> 20) % 5 < 2 && !present.is_empty() {
                    let v = present.remove((value as usize) % present.len());
                    acc.retract_batch(&[Arc::new(Int64Array::from(vec![v]))]).unwrap();
                } else if step % 37 == 0 {
                    acc.update_batch(&[Arc::new(Int64Array::from(vec![None]))]).unwrap();
                } else {
                    present.push(value);
                    acc.update_batch(&[Arc::new(Int64Array::from(vec![value]))]).unwrap();
                }
                assert_eq!(acc.evaluate().unwrap(), recompute(&present), "{name} after step {step}");
                if step % 50 == 0 {
                    // Through a checkpoint's state: the same answers after.
                    let state: Vec<ArrayRef> = acc.state().unwrap().iter().map(|s| s.to_array().unwrap()).collect();
                    acc = Multiset::new(f.clone()).unwrap();
                    acc.merge_batch(&state).unwrap();
                    assert_eq!(acc.evaluate().unwrap(), recompute(&present), "{name} restored at step {step}");
                }
            }
        }
        assert!(!needs_multiset(&function(sum_udaf(), false)));
    }
}
