//! Named f32 tensors, the one value type the core works on (latent weights,
//! pseudo-gradients, outer steps), with the elementwise arithmetic DiLoCo needs.

use crate::error::{Error, Result};

/// One tensor (row-major f32 values and their shape) and tensors by name: ternary-core's
/// types, the same ones bitnet-model's weights use, so weights move between a BitNet
/// trainer and DiLoCo without conversion.
pub use ternary_core::tensor::{NamedTensor, WeightMap};

/// Tensors by name, in name order (so iteration, and therefore every reduction, is
/// deterministic): the same type as bitnet-model's `WeightMap`.
pub type ParamMap = WeightMap;

/// `a - b` per tensor; both must have the same names and shapes.
pub fn sub(a: &ParamMap, b: &ParamMap) -> Result<ParamMap> {
    zip_map(a, b, |x, y| x - y)
}

/// `a + b` per tensor; both must have the same names and shapes.
pub fn add(a: &ParamMap, b: &ParamMap) -> Result<ParamMap> {
    zip_map(a, b, |x, y| x + y)
}

fn zip_map(a: &ParamMap, b: &ParamMap, f: impl Fn(f32, f32) -> f32) -> Result<ParamMap> {
    check_same_layout(a, b)?;
    Ok(a.iter()
        .map(|(name, ta)| {
            let tb = &b[name];
            let data = ta
                .data
                .iter()
                .zip(&tb.data)
                .map(|(&x, &y)| f(x, y))
                .collect();
            (
                name.clone(),
                NamedTensor {
                    shape: ta.shape.clone(),
                    data,
                },
            )
        })
        .collect())
}

/// `a += s * b` in place, tensor by tensor.
pub fn axpy(a: &mut ParamMap, s: f32, b: &ParamMap) -> Result<()> {
    check_same_layout(a, b)?;
    for (name, ta) in a.iter_mut() {
        for (x, &y) in ta.data.iter_mut().zip(&b[name].data) {
            *x += s * y;
        }
    }
    Ok(())
}

/// Multiplies every value by `s`.
pub fn scale(a: &mut ParamMap, s: f32) {
    for t in a.values_mut() {
        for x in &mut t.data {
            *x *= s;
        }
    }
}

/// Global L2 norm over all tensors (accumulated in f64).
pub fn l2_norm(a: &ParamMap) -> f64 {
    a.values()
        .flat_map(|t| &t.data)
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// Total number of values.
pub fn numel(a: &ParamMap) -> usize {
    a.values().map(|t| t.data.len()).sum()
}

/// The tensors of `a` whose names are in `names` (cloned).
pub fn subset<'n>(a: &ParamMap, names: impl IntoIterator<Item = &'n String>) -> ParamMap {
    names
        .into_iter()
        .filter_map(|n| a.get(n).map(|t| (n.clone(), t.clone())))
        .collect()
}

/// Errors unless `a` and `b` have exactly the same names and shapes.
pub fn check_same_layout(a: &ParamMap, b: &ParamMap) -> Result<()> {
    for (name, ta) in a {
        let Some(tb) = b.get(name) else {
            return Err(Error::Tensor {
                name: name.clone(),
                message: "missing from the other operand".into(),
            });
        };
        if ta.shape != tb.shape || ta.data.len() != tb.data.len() {
            return Err(Error::Tensor {
                name: name.clone(),
                message: format!("shape {:?} vs {:?}", ta.shape, tb.shape),
            });
        }
    }
    if let Some(extra) = b.keys().find(|k| !a.contains_key(*k)) {
        return Err(Error::Tensor {
            name: extra.clone(),
            message: "not present in the reference layout".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(vals: &[(&str, Vec<f32>)]) -> ParamMap {
        vals.iter()
            .map(|(n, d)| {
                (
                    (*n).to_string(),
                    NamedTensor::new(vec![d.len()], d.clone()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn arithmetic_and_layout_errors() {
        let a = map(&[("a", vec![1.0, 2.0]), ("b", vec![3.0])]);
        let b = map(&[("a", vec![0.5, 0.5]), ("b", vec![1.0])]);
        let d = sub(&a, &b).unwrap();
        assert_eq!(d["a"].data, vec![0.5, 1.5]);
        assert_eq!(add(&d, &b).unwrap(), a);
        assert!((l2_norm(&b) - 1.5f64.sqrt()).abs() < 1e-12);
        let c = map(&[("a", vec![1.0])]);
        let err = sub(&a, &c).unwrap_err().to_string();
        assert!(err.contains("`a`"), "{err}");
        assert!(NamedTensor::new(vec![2, 2], vec![0.0; 3]).is_err());
    }
}
