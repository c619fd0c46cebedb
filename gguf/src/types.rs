//! ggml tensor types: ids, names and block geometry, as in ggml's `type_traits` table.

use std::fmt;
use std::str::FromStr;

macro_rules! ggml_types {
    ($($variant:ident = $id:literal, $name:literal, $block:literal, $size:literal, $quant:literal;)*) => {
        /// A ggml tensor element type. Ids are those of `enum ggml_type` in `ggml.h`.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum GgmlType {
            $(
                #[doc = concat!("ggml `", $name, "`: ", stringify!($block), " elements in ", stringify!($size), " bytes.")]
                $variant,
            )*
        }

        impl GgmlType {
            /// Every type this crate knows, in id order.
            pub const ALL: &'static [GgmlType] = &[$(GgmlType::$variant),*];

            /// The type with ggml id `id`, or `None` for unknown and removed ids.
            pub fn from_id(id: u32) -> Option<Self> {
                match id {
                    $($id => Some(GgmlType::$variant),)*
                    _ => None,
                }
            }

            /// The ggml id stored in GGUF tensor infos.
            pub fn id(self) -> u32 {
                match self { $(GgmlType::$variant => $id,)* }
            }

            /// ggml's name for the type (`ggml_type_name`), e.g. `"q4_K"`.
            pub fn name(self) -> &'static str {
                match self { $(GgmlType::$variant => $name,)* }
            }

            /// Elements per block (`ggml_blck_size`).
            pub fn block_size(self) -> u64 {
                match self { $(GgmlType::$variant => $block,)* }
            }

            /// Bytes per block (`ggml_type_size`).
            pub fn type_size(self) -> u64 {
                match self { $(GgmlType::$variant => $size,)* }
            }

            /// Whether the type is a block-quantized format (`ggml_is_quantized`).
            pub fn is_quantized(self) -> bool {
                match self { $(GgmlType::$variant => $quant,)* }
            }
        }
    };
}

ggml_types! {
    F32 = 0, "f32", 1, 4, false;
    F16 = 1, "f16", 1, 2, false;
    Q4_0 = 2, "q4_0", 32, 18, true;
    Q4_1 = 3, "q4_1", 32, 20, true;
    Q5_0 = 6, "q5_0", 32, 22, true;
    Q5_1 = 7, "q5_1", 32, 24, true;
    Q8_0 = 8, "q8_0", 32, 34, true;
    Q8_1 = 9, "q8_1", 32, 36, true;
    Q2_K = 10, "q2_K", 256, 84, true;
    Q3_K = 11, "q3_K", 256, 110, true;
    Q4_K = 12, "q4_K", 256, 144, true;
    Q5_K = 13, "q5_K", 256, 176, true;
    Q6_K = 14, "q6_K", 256, 210, true;
    Q8_K = 15, "q8_K", 256, 292, true;
    IQ2_XXS = 16, "iq2_xxs", 256, 66, true;
    IQ2_XS = 17, "iq2_xs", 256, 74, true;
    IQ3_XXS = 18, "iq3_xxs", 256, 98, true;
    IQ1_S = 19, "iq1_s", 256, 50, true;
    IQ4_NL = 20, "iq4_nl", 32, 18, true;
    IQ3_S = 21, "iq3_s", 256, 110, true;
    IQ2_S = 22, "iq2_s", 256, 82, true;
    IQ4_XS = 23, "iq4_xs", 256, 136, true;
    I8 = 24, "i8", 1, 1, false;
    I16 = 25, "i16", 1, 2, false;
    I32 = 26, "i32", 1, 4, false;
    I64 = 27, "i64", 1, 8, false;
    F64 = 28, "f64", 1, 8, false;
    IQ1_M = 29, "iq1_m", 256, 56, true;
    BF16 = 30, "bf16", 1, 2, false;
    TQ1_0 = 34, "tq1_0", 256, 54, true;
    TQ2_0 = 35, "tq2_0", 256, 66, true;
    MXFP4 = 39, "mxfp4", 32, 17, true;
    NVFP4 = 40, "nvfp4", 64, 36, true;
    Q1_0 = 41, "q1_0", 128, 18, true;
    Q2_0 = 42, "q2_0", 64, 18, true;
}

impl GgmlType {
    /// Bytes taken by a row of `ne0` elements, or `None` when `ne0` is not a multiple of the
    /// block size or the size overflows.
    pub fn row_bytes(self, ne0: u64) -> Option<u64> {
        if ne0 % self.block_size() != 0 {
            return None;
        }
        (ne0 / self.block_size()).checked_mul(self.type_size())
    }

    /// Bytes taken by a tensor of shape `dims` (ne0 first), or `None` when the shape is invalid
    /// for this type (empty row, ne0 not a block multiple) or its size overflows `i64`.
    pub fn nbytes(self, dims: &[u64]) -> Option<u64> {
        let ne0 = dims.first().copied().unwrap_or(1);
        let mut bytes = self.row_bytes(ne0)?;
        for &d in dims.iter().skip(1) {
            bytes = bytes.checked_mul(d)?;
        }
        (bytes <= i64::MAX as u64).then_some(bytes)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GgmlType {
    type Err = String;

    /// Parses a ggml type name, ignoring case (`"Q4_K"`, `"q4_k"` and `"q4_K"` all work).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GgmlType::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown ggml type {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_ggml_type_traits() {
        // (type, block, bytes) from ggml.c `type_traits` with the block structs of ggml-common.h.
        let expected = [
            (GgmlType::F32, 1, 4),
            (GgmlType::F16, 1, 2),
            (GgmlType::BF16, 1, 2),
            (GgmlType::Q4_0, 32, 18),
            (GgmlType::Q4_1, 32, 20),
            (GgmlType::Q5_0, 32, 22),
            (GgmlType::Q5_1, 32, 24),
            (GgmlType::Q8_0, 32, 34),
            (GgmlType::Q8_1, 32, 36),
            (GgmlType::Q2_K, 256, 84),
            (GgmlType::Q3_K, 256, 110),
            (GgmlType::Q4_K, 256, 144),
            (GgmlType::Q5_K, 256, 176),
            (GgmlType::Q6_K, 256, 210),
            (GgmlType::Q8_K, 256, 292),
            (GgmlType::IQ4_NL, 32, 18),
            (GgmlType::IQ4_XS, 256, 136),
            (GgmlType::TQ1_0, 256, 54),
            (GgmlType::TQ2_0, 256, 66),
            (GgmlType::MXFP4, 32, 17),
            (GgmlType::I64, 1, 8),
        ];
        for (t, block, size) in expected {
            assert_eq!((t.block_size(), t.type_size()), (block, size), "{t}");
        }
    }

    #[test]
    fn ids_round_trip_and_removed_ids_are_unknown() {
        for &t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(t.name().parse::<GgmlType>(), Ok(t));
        }
        for removed in [4, 5, 31, 32, 33, 36, 37, 38, 43, u32::MAX] {
            assert_eq!(GgmlType::from_id(removed), None, "{removed}");
        }
        assert_eq!(GgmlType::BF16.id(), 30);
        assert_eq!(GgmlType::MXFP4.id(), 39);
        assert_eq!(GgmlType::Q4_K.name(), "q4_K");
        assert_eq!("Q4_K".parse::<GgmlType>(), Ok(GgmlType::Q4_K));
    }

    #[test]
    fn row_and_tensor_bytes() {
        assert_eq!(GgmlType::Q4_1.row_bytes(576), Some(18 * 20));
        assert_eq!(GgmlType::Q4_K.row_bytes(100), None);
        assert_eq!(GgmlType::F32.nbytes(&[3, 5]), Some(60));
        assert_eq!(GgmlType::F32.nbytes(&[]), Some(4));
        assert_eq!(GgmlType::F32.nbytes(&[1 << 40, 1 << 30]), None);
        assert!(GgmlType::Q4_0.is_quantized() && !GgmlType::BF16.is_quantized());
    }
}
