//! Flink built-in functions that DataFusion lacks under Flink's name, or types otherwise.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Field, FieldRef, Int64Type, UInt64Type};
use datafusion_common::{Result as DfResult, ScalarValue};
use datafusion_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion_expr::{Accumulator, AggregateUDFImpl, ColumnarValue, GroupsAccumulator, ScalarUDF, Signature, TypeSignature, Volatility};
use datafusion_functions_aggregate::average::Avg;

/// `MOD(a, b)`: the remainder of integer division (DataFusion has only the `%` operator).
pub(crate) fn modulo() -> ScalarUDF {
    datafusion_expr::create_udf(
        "mod",
        vec![DataType::Int64, DataType::Int64],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let rows = args.iter().find_map(|a| if let ColumnarValue::Array(a) = a { Some(a.len()) } else { None }).unwrap_or(1);
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let remainder = arrow::compute::kernels::numeric::rem(&arrays[0], &arrays[1])?;
            Ok(if rows == 1 && args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
                ColumnarValue::Scalar(datafusion_common::ScalarValue::try_from_array(&remainder, 0)?)
            } else {
                ColumnarValue::Array(remainder)
            })
        }),
    )
}

/// `PROCTIME()`: the processing time, a TIMESTAMP_LTZ(3) (a table's computed column `p AS
/// PROCTIME()` is its processing-time attribute; see `plan::scan_table`).
pub(crate) fn proctime() -> ScalarUDF {
    datafusion_expr::create_udf(
        "proctime",
        vec![],
        DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, Some(Arc::from("UTC"))),
        Volatility::Volatile,
        Arc::new(|_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::TimestampMillisecond(Some(crate::watermark::wall_clock_ms()), Some(Arc::from("UTC")))))),
    )
}

/// `AVG` as Flink types it: over TINYINT, SMALLINT, INT and BIGINT the result has the column's
/// type, the quotient truncated toward zero (Java's integer division of a long sum by the
/// count); over other types DataFusion's AVG (DOUBLE; DECIMAL with 4 more digits of scale,
/// where Flink gives DECIMAL(38, max(6, s)): documented).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct FlinkAvg {
    signature: Signature,
    inner: Avg,
}

const INTEGERS: [DataType; 4] = [DataType::Int8, DataType::Int16, DataType::Int32, DataType::Int64];

fn integer(t: &DataType) -> bool {
    INTEGERS.contains(t)
}

/// Ferry's accumulator when the argument is an integer column (not DISTINCT, which is
/// DataFusion's).
fn integer_avg(args: &AccumulatorArgs) -> Option<Box<dyn Accumulator>> {
    let t = args.expr_fields.first()?.data_type();
    (integer(t) && !args.is_distinct).then(|| Box::new(IntegerAvg { ty: t.clone(), sum: 0, count: 0 }) as Box<dyn Accumulator>)
}

impl FlinkAvg {
    pub(crate) fn new() -> Self {
        let inner = Avg::new();
        // Integers exactly as they are (DataFusion's AVG would widen them to DOUBLE first),
        // then DataFusion's own forms.
        let mut forms: Vec<TypeSignature> = INTEGERS.iter().map(|t| TypeSignature::Exact(vec![t.clone()])).collect();
        match inner.signature().type_signature.clone() {
            TypeSignature::OneOf(theirs) => forms.extend(theirs),
            other => forms.push(other),
        }
        FlinkAvg { signature: Signature::one_of(forms, Volatility::Immutable), inner }
    }
}

impl AggregateUDFImpl for FlinkAvg {
    fn name(&self) -> &str {
        "avg"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        match arg_types.first() {
            Some(t) if integer(t) => Ok(t.clone()),
            _ => self.inner.return_type(arg_types),
        }
    }

    fn accumulator(&self, args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        integer_avg(&args).map_or_else(|| self.inner.accumulator(args), Ok)
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        integer_avg(&args).map_or_else(|| self.inner.create_sliding_accumulator(args), Ok)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        match args.input_fields.first().map(|f| f.data_type()) {
            Some(t) if integer(t) && !args.is_distinct => Ok(vec![
                Arc::new(Field::new(datafusion_expr::utils::format_state_name(args.name, "count"), DataType::UInt64, true)),
                Arc::new(Field::new(datafusion_expr::utils::format_state_name(args.name, "sum"), DataType::Int64, true)),
            ]),
            _ => self.inner.state_fields(args),
        }
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        !args.expr_fields.first().is_some_and(|f| integer(f.data_type())) && self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(&self, args: AccumulatorArgs) -> DfResult<Box<dyn GroupsAccumulator>> {
        self.inner.create_groups_accumulator(args)
    }
}

/// The running sum (a BIGINT, wrapping as Flink's long does) and count of an integer AVG.
#[derive(Debug)]
struct IntegerAvg {
    ty: DataType,
    sum: i64,
    count: u64,
}

impl IntegerAvg {
    fn add(&mut self, values: &ArrayRef, sign: i64) -> DfResult<()> {
        let values = arrow::compute::cast(values, &DataType::Int64)?;
        for v in values.as_primitive::<Int64Type>().iter().flatten() {
            self.sum = self.sum.wrapping_add(sign.wrapping_mul(v));
            self.count = if sign > 0 { self.count + 1 } else { self.count.saturating_sub(1) };
        }
        Ok(())
    }
}

impl Accumulator for IntegerAvg {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        self.add(&values[0], 1)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        self.add(&values[0], -1)
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        if self.count == 0 {
            return ScalarValue::try_from(&self.ty);
        }
        // Truncated toward zero, as Java's long division.
        let quotient = i128::from(self.sum) / i128::from(self.count);
        ScalarValue::Int64(Some(quotient as i64)).cast_to(&self.ty)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::UInt64(Some(self.count)), ScalarValue::Int64(Some(self.sum))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        let (counts, sums) = (states[0].as_primitive::<UInt64Type>(), states[1].as_primitive::<Int64Type>());
        for i in 0..counts.len() {
            if counts.is_valid(i) && sums.is_valid(i) {
                self.count += counts.value(i);
                self.sum = self.sum.wrapping_add(sums.value(i));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::Int64Type;

    #[test]
    fn mod_is_the_remainder() {
        let f = modulo();
        let args = datafusion_expr::ScalarFunctionArgs {
            args: vec![ColumnarValue::Array(Arc::new(Int64Array::from(vec![246, 247, -7]))), ColumnarValue::Scalar(datafusion_common::ScalarValue::Int64(Some(123)))],
            arg_fields: vec![Arc::new(arrow::datatypes::Field::new("a", DataType::Int64, true)), Arc::new(arrow::datatypes::Field::new("b", DataType::Int64, true))],
            number_rows: 3,
            return_field: Arc::new(arrow::datatypes::Field::new("r", DataType::Int64, true)),
            config_options: Arc::default(),
        };
        let ColumnarValue::Array(out) = f.invoke_with_args(args).unwrap() else { panic!("an array") };
        assert_eq!(out.as_primitive::<Int64Type>().values().to_vec(), vec![0, 1, -7]);
    }

    /// Flink's AVG of an integer column: the column's type, truncated toward zero; retractable.
    #[test]
    fn avg_of_integers_is_an_integer_as_in_flink() {
        let avg = FlinkAvg::new();
        assert_eq!(avg.return_type(&[DataType::Int32]).unwrap(), DataType::Int32);
        assert_eq!(avg.return_type(&[DataType::Float64]).unwrap(), DataType::Float64);
        let mut acc = IntegerAvg { ty: DataType::Int64, sum: 0, count: 0 };
        let values: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(2), None, Some(4)]));
        acc.update_batch(&[values]).unwrap();
        assert_eq!(acc.evaluate().unwrap(), datafusion_common::ScalarValue::Int64(Some(2)), "7 / 3");
        acc.update_batch(&[Arc::new(Int64Array::from(vec![-20]))]).unwrap();
        assert_eq!(acc.evaluate().unwrap(), datafusion_common::ScalarValue::Int64(Some(-3)), "-13 / 4 truncates toward zero");
        acc.retract_batch(&[Arc::new(Int64Array::from(vec![-20, 4]))]).unwrap();
        assert_eq!(acc.evaluate().unwrap(), datafusion_common::ScalarValue::Int64(Some(1)), "3 / 2");
        // Through its state, as a checkpoint keeps it.
        let state: Vec<ArrayRef> = acc.state().unwrap().iter().map(|v| v.to_array().unwrap()).collect();
        let mut again = IntegerAvg { ty: DataType::Int64, sum: 0, count: 0 };
        again.merge_batch(&state).unwrap();
        assert_eq!(again.evaluate().unwrap(), datafusion_common::ScalarValue::Int64(Some(1)));
        again.retract_batch(&[Arc::new(Int64Array::from(vec![1, 2]))]).unwrap();
        assert_eq!(again.evaluate().unwrap(), datafusion_common::ScalarValue::Int64(None), "no rows: NULL");
    }
}
