//! Tensor directory entries.

use crate::error::{Error, Result};
use crate::types::GgmlType;

/// One entry of the tensor directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_v.weight`.
    pub name: String,
    /// Dimensions as stored: `ne0` (elements per row) first.
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Start of the data relative to the data section.
    pub offset: u64,
    /// Size of the data in bytes (without padding).
    pub size: u64,
}

impl TensorInfo {
    /// A validated entry with its size computed from type and shape; `offset` is 0 until the
    /// entry is placed by [`crate::Header::new`].
    pub fn new(name: impl Into<String>, dims: Vec<u64>, ggml_type: GgmlType) -> Result<Self> {
        let name = name.into();
        check_name(&name)?;
        let size = check_shape(&name, &dims, ggml_type)?;
        Ok(TensorInfo {
            name,
            dims,
            ggml_type,
            offset: 0,
            size,
        })
    }

    /// Number of elements (saturating; validated entries never saturate).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |n, &d| n.saturating_mul(d))
    }

    /// Elements per row (`ne0`; 1 for a scalar).
    pub fn ne0(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows (elements / `ne0`).
    pub fn n_rows(&self) -> u64 {
        self.n_elements() / self.ne0().max(1)
    }
}

/// The layer and the rest of a per-layer tensor's name, as llama.cpp names them:
/// `blk.{layer}.{rest}` → `(layer, rest)` (`blk.3.ffn_down.weight` → `(3, "ffn_down.weight")`);
/// `None` for a tensor outside the blocks.
pub fn block_of(name: &str) -> Option<(usize, &str)> {
    let (layer, rest) = name.strip_prefix("blk.")?.split_once('.')?;
    Some((layer.parse().ok()?, rest))
}

/// Checks a tensor name's length (ggml keeps names in `char[64]`, NUL included).
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.len() > crate::MAX_TENSOR_NAME {
        return Err(Error::TensorNameTooLong {
            name: name.to_owned(),
            len: name.len() as u64,
        });
    }
    Ok(())
}

/// Checks dims and type together and returns the byte size.
pub(crate) fn check_shape(name: &str, dims: &[u64], ggml_type: GgmlType) -> Result<u64> {
    if dims.len() > crate::MAX_DIMS {
        return Err(Error::TooManyDims {
            name: name.to_owned(),
            n_dims: dims.len() as u64,
        });
    }
    let overflow = || Error::ShapeOverflow {
        name: name.to_owned(),
        dims: dims.to_vec(),
    };
    let mut n: u64 = 1;
    for (axis, &d) in dims.iter().enumerate() {
        if d == 0 {
            return Err(Error::ZeroDim {
                name: name.to_owned(),
                axis,
            });
        }
        n = n.checked_mul(d).ok_or_else(overflow)?;
    }
    if n > i64::MAX as u64 {
        return Err(overflow());
    }
    let ne0 = dims.first().copied().unwrap_or(1);
    if ne0 % ggml_type.block_size() != 0 {
        return Err(Error::NotBlockMultiple {
            name: name.to_owned(),
            ggml_type,
            ne0,
            block: ggml_type.block_size(),
        });
    }
    ggml_type.nbytes(dims).ok_or_else(overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_validates_and_sizes() {
        let t = TensorInfo::new("w", vec![576, 192], GgmlType::Q4_1).unwrap();
        assert_eq!(t.size, 576 / 32 * 20 * 192);
        assert_eq!((t.n_elements(), t.ne0(), t.n_rows()), (576 * 192, 576, 192));
        assert!(matches!(
            TensorInfo::new("w", vec![100], GgmlType::Q4_K),
            Err(Error::NotBlockMultiple {
                ne0: 100,
                block: 256,
                ..
            })
        ));
        assert!(matches!(
            TensorInfo::new("w", vec![4, 0], GgmlType::F32),
            Err(Error::ZeroDim { axis: 1, .. })
        ));
        assert!(matches!(
            TensorInfo::new("w", vec![1; 5], GgmlType::F32),
            Err(Error::TooManyDims { n_dims: 5, .. })
        ));
        assert!(matches!(
            TensorInfo::new("w", vec![1 << 32, 1 << 32], GgmlType::F32),
            Err(Error::ShapeOverflow { .. })
        ));
        assert!(TensorInfo::new("x".repeat(63), vec![1], GgmlType::F32).is_ok());
        assert!(matches!(
            TensorInfo::new("x".repeat(64), vec![1], GgmlType::F32),
            Err(Error::TensorNameTooLong { len: 64, .. })
        ));
    }

    #[test]
    fn block_names_split_into_layer_and_rest() {
        assert_eq!(
            block_of("blk.3.ffn_down.weight"),
            Some((3, "ffn_down.weight"))
        );
        assert_eq!(block_of("blk.12.attn_q.bias"), Some((12, "attn_q.bias")));
        assert_eq!(block_of("token_embd.weight"), None);
        assert_eq!(block_of("blk.x.ffn_down.weight"), None);
        assert_eq!(block_of("blk.3"), None);
    }
}
