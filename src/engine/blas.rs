//! Matrix products by OpenBLAS (already linked for ndarray-linalg's LAPACK), which picks its
//! kernels for the CPU it runs on (AVX-512 where there is one: twice ndarray's own
//! matrixmultiply on this project's machine): `C = βC + A·B` in f32 (`sgemm`),
//! each operand a view in row-major order or the transpose of one (`a.t()`), as ndarray lays
//! them out.

use ndarray::{ArrayView2, ArrayViewMut2};
use std::os::raw::c_int;

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

unsafe extern "C" {
    fn cblas_sgemm(
        order: c_int,
        transa: c_int,
        transb: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f32,
        a: *const f32,
        lda: c_int,
        b: *const f32,
        ldb: c_int,
        beta: f32,
        c: *mut f32,
        ldc: c_int,
    );
}

/// Why a product was not taken: shapes that do not agree, a matrix in neither row-major order
/// nor its transpose, or a dimension beyond BLAS's 32-bit integers.
#[derive(Debug, thiserror::Error)]
#[error("BLAS product: {0}")]
pub struct BlasError(&'static str);

fn dim(n: usize) -> Result<c_int, BlasError> {
    c_int::try_from(n).map_err(|_| BlasError("dimension beyond 2³¹"))
}

/// An operand as BLAS takes it: transposed or not, and its leading dimension.
struct Operand {
    trans: c_int,
    ld: c_int,
}

/// How `a` (`r × c`, not empty) is laid out: row-major with unit column stride (`NO_TRANS`,
/// ld = its row stride) or the transpose of such a matrix (`TRANS`, ld = its column stride);
/// rows that overlap (a broadcast view) or run backwards are refused.
fn operand<T>(a: &ArrayView2<T>) -> Result<Operand, BlasError> {
    let (r, c) = a.dim();
    let [s0, s1] = [a.strides()[0], a.strides()[1]];
    let (trans, ld, inner) = if s1 == 1 || c == 1 {
        (NO_TRANS, if r > 1 { s0 } else { c as isize }, c)
    } else if s0 == 1 || r == 1 {
        (TRANS, if c > 1 { s1 } else { r as isize }, r)
    } else {
        return Err(BlasError(
            "matrix in neither row-major order nor its transpose",
        ));
    };
    let ld = usize::try_from(ld).map_err(|_| BlasError("rows run backwards"))?;
    if ld < inner {
        return Err(BlasError("rows overlap"));
    }
    Ok(Operand {
        trans,
        ld: dim(ld)?,
    })
}

/// `C = β·C + A·B` in f32: `a` `m × k`, `b` `k × n` (each row-major or a transposed view, as
/// `x.t()` gives), `c` `m × n` row-major (its rows may be apart: a block of a larger matrix).
pub fn gemm_f32(
    beta: f32,
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    mut c: ArrayViewMut2<f32>,
) -> Result<(), BlasError> {
    let (m, k) = a.dim();
    let n = b.ncols();
    if b.nrows() != k || c.dim() != (m, n) {
        return Err(BlasError("shapes of the product do not agree"));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        c.map_inplace(|v| *v *= beta);
        return Ok(());
    }
    let (oa, ob) = (operand(&a)?, operand(&b)?);
    let (mi, ni, ki) = (dim(m)?, dim(n)?, dim(k)?);
    let [r0, r1] = [c.strides()[0], c.strides()[1]];
    if !(r1 == 1 || n == 1) || (m > 1 && r0 < n as isize) {
        return Err(BlasError("product not in row-major order"));
    }
    let ldc = dim(if m > 1 { r0 as usize } else { n })?;
    // SAFETY: `operand` checked that each of `a` and `b` is a non-empty row-major matrix or
    // the transpose of one, rows not overlapping and not backwards, its leading dimension its
    // row (or column) stride, so BLAS reads exactly the view's elements; `c` is row-major m×n
    // with rows `ldc ≥ n` apart, so BLAS writes exactly its elements, borrowed mutably for the
    // call only; every dimension fits in c_int.
    unsafe {
        cblas_sgemm(
            ROW_MAJOR,
            oa.trans,
            ob.trans,
            mi,
            ni,
            ki,
            1.0,
            a.as_ptr(),
            oa.ld,
            b.as_ptr(),
            ob.ld,
            beta,
            c.as_mut_ptr(),
            ldc,
        )
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array2};

    fn matrix(r: usize, c: usize, seed: u64) -> Array2<f32> {
        let mut s = seed;
        Array2::from_shape_fn((r, c), |_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
    }

    fn close<T: Into<f64> + Copy>(a: &Array2<T>, b: &Array2<T>, tol: f64) -> bool {
        a.dim() == b.dim()
            && a.iter()
                .zip(b)
                .all(|(&u, &v)| (u.into() - v.into()).abs() < tol)
    }

    #[test]
    fn products_of_plain_transposed_and_sliced_views_match_ndarray() {
        let (x, y) = (matrix(37, 13, 1), matrix(37, 5, 2));
        // Xᵀ·Y added to C
        let mut c = Array2::from_elem((13, 5), 1.0f32);
        gemm_f32(1.0, x.t(), y.view(), c.view_mut()).unwrap();
        assert!(close(&c, &(x.t().dot(&y) + 1.0), 1e-4));
        // a column slice of rows times a transposed matrix: H·Cᵀ
        let h = x.slice(s![.., 2..11]);
        let w = matrix(4, 9, 3);
        let mut o = Array2::zeros((37, 4));
        gemm_f32(0.0, h, w.t(), o.view_mut()).unwrap();
        assert!(close(&o, &h.dot(&w.t()), 1e-4));
        // into a block of a larger f32 matrix: its other entries untouched
        let mut big = Array2::from_elem((20, 9), 2.0f32);
        gemm_f32(1.0, x.t(), y.view(), big.slice_mut(s![4..17, 1..6])).unwrap();
        assert!(close(
            &big.slice(s![4..17, 1..6]).to_owned(),
            &(x.t().dot(&y) + 2.0),
            1e-4
        ));
        assert_eq!(big.iter().filter(|&&v| v == 2.0).count(), 20 * 9 - 13 * 5);
    }

    #[test]
    fn mismatched_strided_or_broadcast_matrices_are_refused() {
        let x = matrix(8, 4, 3);
        let mut c = Array2::zeros((4, 3));
        assert!(gemm_f32(0.0, x.t(), matrix(7, 3, 4).view(), c.view_mut()).is_err());
        // every other row and column: neither layout BLAS takes
        let y = matrix(8, 6, 5);
        let every_other = y.slice(s![..;2, ..;2]);
        assert!(gemm_f32(0.0, every_other, matrix(3, 3, 6).view(), c.view_mut()).is_err());
        // a broadcast row: every row the same memory
        let row = matrix(1, 3, 7);
        let bcast = row.broadcast((4, 3)).unwrap();
        assert!(gemm_f32(0.0, bcast, matrix(3, 3, 8).view(), c.view_mut()).is_err());
    }
}
