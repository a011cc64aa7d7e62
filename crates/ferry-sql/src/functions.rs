//! Flink built-in functions that DataFusion lacks under Flink's name.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion_expr::{ColumnarValue, ScalarUDF, Volatility};

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
}
