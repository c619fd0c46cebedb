//! A bounds-checked little-endian reader over untrusted bytes.

use crate::error::Error;

/// Reads fixed-size fields from a byte slice; every read is checked against the slice's end.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    /// Absolute position.
    pub fn pos(&self) -> u64 {
        self.pos as u64
    }

    /// Bytes left.
    pub fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    /// Takes `n` bytes; `what` names the field in the error.
    pub fn take(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<&'a [u8], Error> {
        if n > self.remaining() {
            return Err(Error::Truncated {
                what: what(),
                offset: self.pos(),
                needed: n,
                available: self.remaining(),
            });
        }
        // n <= remaining <= usize::MAX, so the cast and the addition cannot overflow.
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    pub fn array<const N: usize>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<[u8; N], Error> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub fn u8(&mut self, what: impl FnOnce() -> String) -> Result<u8, Error> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u16(&mut self, what: impl FnOnce() -> String) -> Result<u16, Error> {
        self.array(what).map(u16::from_le_bytes)
    }

    pub fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, Error> {
        self.array(what).map(u32::from_le_bytes)
    }

    pub fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, Error> {
        self.array(what).map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded() {
        let mut c = Cursor::new(&[1, 0, 0, 0, 9]);
        assert_eq!(c.u32(|| "a".into()).unwrap(), 1);
        assert!(matches!(
            c.u32(|| "b".into()),
            Err(Error::Truncated {
                offset: 4,
                needed: 4,
                available: 1,
                ..
            })
        ));
        assert!(c.take(u64::MAX, || "c".into()).is_err());
        assert_eq!(c.u8(|| "d".into()).unwrap(), 9);
        assert_eq!(c.remaining(), 0);
    }
}
