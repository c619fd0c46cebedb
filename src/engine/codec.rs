//! ggml's own tensor codecs: dequantize any ggml type to f32 and quantize f32 rows to any type.

use gguf::GgmlType;
use rayon::prelude::*;

/// A codec failure: an unsupported type or inconsistent sizes.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// ggml has no converter for this type.
    #[error("ggml cannot convert tensors of type {0}")]
    Unsupported(&'static str),
    /// Data length does not match the element count for the type.
    #[error("{ty} data of {got} bytes does not hold {n} elements ({want} bytes expected)")]
    Size {
        /// the type
        ty: &'static str,
        /// elements asked for
        n: u64,
        /// bytes given
        got: usize,
        /// bytes expected
        want: u64,
    },
    /// The row length is not a multiple of the type's block size.
    #[error("a row of {0} elements is not a whole number of {1} blocks")]
    RowLength(u64, &'static str),
    /// The type needs an importance matrix and none was given.
    #[error("quantizing to {0} needs an importance matrix; pass one or store the edits as q8_0 (`edit_type`)")]
    NeedsImatrix(&'static str),
}

fn traits(ty: GgmlType) -> &'static llama_cpp_sys_2::ggml_type_traits {
    super::backend::init_backend();
    // SAFETY: ggml returns a pointer into its static type-traits table for every valid type id;
    // GgmlType only holds ids that ggml knows.
    unsafe { &*llama_cpp_sys_2::ggml_get_type_traits(ty.id() as llama_cpp_sys_2::ggml_type) }
}

fn expect_len(ty: GgmlType, n: u64, got: usize) -> Result<u64, CodecError> {
    let bs = ty.block_size();
    if n % bs != 0 {
        return Err(CodecError::RowLength(n, ty.name()));
    }
    let want = n / bs * ty.type_size();
    if want != got as u64 {
        return Err(CodecError::Size {
            ty: ty.name(),
            n,
            got,
            want,
        });
    }
    Ok(want)
}

/// Dequantize `data` (`n` elements of type `ty`, whole blocks) to f32, in parallel over chunks.
pub fn dequantize(ty: GgmlType, data: &[u8], n: u64) -> Result<Vec<f32>, CodecError> {
    expect_len(ty, n, data.len())?;
    if ty == GgmlType::F32 {
        return Ok(data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect());
    }
    let to_float = traits(ty)
        .to_float
        .ok_or(CodecError::Unsupported(ty.name()))?;
    let mut out = vec![0f32; n as usize];
    // Chunks of 64 blocks, split on block boundaries.
    let bs = ty.block_size() as usize;
    let chunk_elems = bs * 64;
    let chunk_bytes = 64 * ty.type_size() as usize;
    out.par_chunks_mut(chunk_elems)
        .zip(data.par_chunks(chunk_bytes))
        .for_each(|(dst, src)| {
            // SAFETY: `src` holds exactly dst.len()/bs whole blocks of `ty` (checked above), and
            // to_float writes dst.len() floats.
            unsafe { to_float(src.as_ptr().cast(), dst.as_mut_ptr(), dst.len() as i64) };
        });
    Ok(out)
}

/// Whether ggml refuses to quantize to `ty` without an importance matrix.
pub fn quantize_requires_imatrix(ty: GgmlType) -> bool {
    super::backend::init_backend();
    // SAFETY: pure query on a valid type id.
    unsafe {
        llama_cpp_sys_2::ggml_quantize_requires_imatrix(ty.id() as llama_cpp_sys_2::ggml_type)
    }
}

/// Quantize row-major f32 `src` (rows of `n_per_row`) to `ty` with ggml's reference quantizer,
/// optionally weighted by a per-column importance vector (`imatrix`, length `n_per_row`).
pub fn quantize(
    ty: GgmlType,
    src: &[f32],
    n_per_row: u64,
    imatrix: Option<&[f32]>,
) -> Result<Vec<u8>, CodecError> {
    if n_per_row == 0 || src.len() as u64 % n_per_row != 0 {
        return Err(CodecError::RowLength(n_per_row, ty.name()));
    }
    let n = src.len() as u64;
    let bs = ty.block_size();
    if n_per_row % bs != 0 {
        return Err(CodecError::RowLength(n_per_row, ty.name()));
    }
    if ty == GgmlType::F32 {
        return Ok(src.iter().flat_map(|v| v.to_le_bytes()).collect());
    }
    if imatrix.is_none() && quantize_requires_imatrix(ty) {
        return Err(CodecError::NeedsImatrix(ty.name()));
    }
    if let Some(im) = imatrix {
        if im.len() as u64 != n_per_row {
            return Err(CodecError::RowLength(im.len() as u64, "importance"));
        }
    }
    // Types that need an importance matrix have no reference quantizer in the type traits, but
    // ggml_quantize_chunk handles them once the matrix is given.
    let by_imatrix = imatrix.is_some() && quantize_requires_imatrix(ty);
    if traits(ty).from_float_ref.is_none()
        && ty != GgmlType::F16
        && ty != GgmlType::BF16
        && !by_imatrix
    {
        return Err(CodecError::Unsupported(ty.name()));
    }
    let row_bytes = (n_per_row / bs * ty.type_size()) as usize;
    let rows = (n / n_per_row) as usize;
    let mut out = vec![0u8; rows * row_bytes];
    let rows_per_chunk = 16usize;
    let imp = imatrix.map_or(std::ptr::null(), |m| m.as_ptr());
    let imp_addr = imp as usize; // raw pointers are not Send; the slice outlives the loop.
    out.par_chunks_mut(rows_per_chunk * row_bytes)
        .zip(src.par_chunks(rows_per_chunk * n_per_row as usize))
        .for_each(|(dst, s)| {
            let nrows = (s.len() as u64 / n_per_row) as i64;
            // SAFETY: `s` holds nrows full rows, `dst` exactly nrows quantized rows; the importance
            // vector (if any) has n_per_row entries and lives for the whole call.
            unsafe {
                llama_cpp_sys_2::ggml_quantize_chunk(
                    ty.id() as llama_cpp_sys_2::ggml_type,
                    s.as_ptr(),
                    dst.as_mut_ptr().cast(),
                    0,
                    nrows,
                    n_per_row as i64,
                    imp_addr as *const f32,
                )
            };
        });
    Ok(out)
}
