//! Calibration input handling shared by the statistics collectors.
//!
//! A batch is either [tokens, in] (one calibration sequence, as the reference's forward hook
//! sees a 2-D input after `unsqueeze(0)`) or [batch, seq, in] (`batch` sequences). The
//! reference's running averages count **sequences**, not tokens: `b` below.

use ndarray::{ArrayView2, ArrayViewD, CowArray, Ix2};

use crate::error::{PruneError, Result, check_finite};

/// A batch flattened to [tokens, in], with the number of sequences it holds.
pub(crate) struct FlatBatch<'a> {
    /// [tokens, in]
    pub x: CowArray<'a, f32, Ix2>,
    /// Number of calibration sequences in the batch (the reference's `inp.shape[0]`).
    pub sequences: usize,
}

/// Validates a calibration batch for a layer with `in_features` inputs and flattens it.
pub(crate) fn flatten_batch<'a>(
    layer: &str,
    x: ArrayViewD<'a, f32>,
    in_features: usize,
) -> Result<FlatBatch<'a>> {
    let shape = x.shape().to_vec();
    let (sequences, tokens) = match shape.len() {
        2 => (1, shape[0]),
        3 => (shape[0], shape[0] * shape[1]),
        _ => {
            return Err(PruneError::BatchRank {
                layer: layer.to_string(),
                got: shape,
            });
        }
    };
    let last = shape[shape.len() - 1];
    if last != in_features {
        let mut expected = shape.clone();
        let n = expected.len();
        expected[n - 1] = in_features;
        return Err(PruneError::ShapeMismatch {
            layer: layer.to_string(),
            what: "calibration batch (last axis = in-features)".into(),
            expected,
            got: shape,
        });
    }
    check_finite(layer, "calibration activations", &shape, x.iter())?;
    let x: CowArray<'a, f32, Ix2> = if shape.len() == 2 {
        match x.into_dimensionality::<Ix2>() {
            Ok(v) => CowArray::from(v),
            Err(_) => unreachable_shape(layer, &shape)?,
        }
    } else if x.is_standard_layout() {
        match x.into_shape_with_order((tokens, in_features)) {
            Ok(v) => match v.into_dimensionality::<Ix2>() {
                Ok(v) => CowArray::from(v),
                Err(_) => unreachable_shape(layer, &shape)?,
            },
            Err(_) => unreachable_shape(layer, &shape)?,
        }
    } else {
        let owned: Vec<f32> = x.iter().copied().collect();
        match ndarray::Array2::from_shape_vec((tokens, in_features), owned) {
            Ok(a) => CowArray::from(a),
            Err(_) => unreachable_shape(layer, &shape)?,
        }
    };
    Ok(FlatBatch { x, sequences })
}

fn unreachable_shape<T>(layer: &str, shape: &[usize]) -> Result<T> {
    Err(PruneError::BatchRank {
        layer: layer.to_string(),
        got: shape.to_vec(),
    })
}

/// Checks that a weight is [out, in] with finite entries.
pub(crate) fn check_weight(layer: &str, weight: &ArrayView2<f32>) -> Result<()> {
    check_finite(layer, "weight", weight.shape(), weight.iter())
}
