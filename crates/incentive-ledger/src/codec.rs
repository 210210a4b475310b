//! Canonical binary encoding primitives.
//!
//! Every field has exactly one encoding: fixed-width big-endian integers, fixed-size byte
//! arrays, and `u32` length prefixes for variable data. There are no maps, no optional
//! whitespace and no floats, so two honest encoders always produce the same bytes and a
//! signature covers exactly one meaning. The reader never allocates more than the bytes that
//! are actually present, so hostile length prefixes cannot exhaust memory.

use crate::error::{Error, Result};

/// Appends canonical fields to a byte buffer.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// Empty writer.
    pub fn new() -> Self {
        Self::default()
    }
    /// One byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// Big-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Big-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Big-endian two's-complement i64.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Fixed-size bytes, no prefix.
    pub fn fixed(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    /// `u32` length prefix, then the bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        let len = u32::try_from(v.len()).expect("field longer than 4 GiB");
        self.u32(len);
        self.buf.extend_from_slice(v);
        self
    }
    /// A UTF-8 string as prefixed bytes.
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
    /// Bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }
}

/// Reads canonical fields from untrusted bytes; every error names the byte offset.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }
    /// Current offset.
    pub fn offset(&self) -> usize {
        self.pos
    }
    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(Error::decode(
                self.pos,
                format!("{what}: need {n} bytes, {} left", self.remaining()),
            ));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// One byte.
    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    /// Big-endian u32.
    pub fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes(b.try_into().expect("4 bytes")))
    }
    /// Big-endian u64.
    pub fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.take(8, what)?;
        Ok(u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }
    /// Big-endian i64.
    pub fn i64(&mut self, what: &str) -> Result<i64> {
        let b = self.take(8, what)?;
        Ok(i64::from_be_bytes(b.try_into().expect("8 bytes")))
    }
    /// Fixed-size array.
    pub fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let b = self.take(N, what)?;
        Ok(b.try_into().expect("N bytes"))
    }
    /// Length-prefixed bytes of at most `max` bytes. The prefix is checked against both `max`
    /// and the bytes present before anything is copied.
    pub fn bytes(&mut self, max: usize, what: &str) -> Result<&'a [u8]> {
        let at = self.pos;
        let len = self.u32(what)? as usize;
        if len > max {
            return Err(Error::decode(
                at,
                format!("{what}: length {len} exceeds the limit {max}"),
            ));
        }
        if len > self.remaining() {
            return Err(Error::decode(
                at,
                format!(
                    "{what}: length {len} but only {} bytes follow",
                    self.remaining()
                ),
            ));
        }
        self.take(len, what)
    }
    /// Length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str(&mut self, max: usize, what: &str) -> Result<String> {
        let at = self.pos;
        let b = self.bytes(max, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| Error::decode(at, format!("{what}: not UTF-8")))
    }
    /// A `u32` element count for a list whose elements take at least `min_elem` bytes each,
    /// bounded by `max`; the bound by remaining bytes keeps allocation proportional to input.
    pub fn count(&mut self, max: usize, min_elem: usize, what: &str) -> Result<usize> {
        let at = self.pos;
        let n = self.u32(what)? as usize;
        if n > max || n.saturating_mul(min_elem.max(1)) > self.remaining() {
            return Err(Error::decode(
                at,
                format!(
                    "{what}: count {n} exceeds the limit {max} or the {} bytes left",
                    self.remaining()
                ),
            ));
        }
        Ok(n)
    }
    /// Fails unless every byte was consumed: trailing bytes would give one meaning two encodings.
    pub fn finish(&self, what: &str) -> Result<()> {
        if self.remaining() != 0 {
            return Err(Error::decode(
                self.pos,
                format!("{what}: {} trailing bytes", self.remaining()),
            ));
        }
        Ok(())
    }
}

/// Lower-case hex of bytes.
pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// Parses lower- or upper-case hex of exactly `N` bytes.
pub fn unhex<const N: usize>(s: &str) -> Result<[u8; N]> {
    let s = s.trim();
    if s.len() != 2 * N {
        return Err(Error::Invalid(format!(
            "expected {} hex digits, got {}",
            2 * N,
            s.len()
        )));
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .map_err(|_| Error::Invalid(format!("bad hex digit near position {}", 2 * i)))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_length_prefix_is_refused_before_allocation() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 1, 2]);
        let e = r.bytes(usize::MAX, "blob").unwrap_err();
        assert!(e.to_string().contains("byte 0"), "{e}");
        let mut r = Reader::new(&[0x7f, 0xff, 0xff, 0xff]);
        assert!(r.count(usize::MAX, 1, "list").is_err());
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut r = Reader::new(&[0, 0, 0, 1, 9]);
        assert_eq!(r.u32("x").unwrap(), 1);
        assert!(r.finish("msg").unwrap_err().to_string().contains("byte 4"));
    }

    proptest! {
        #[test]
        fn fields_round_trip(a in any::<u64>(), b in any::<i64>(), s in ".{0,40}", v in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut w = Writer::new();
            w.u64(a).i64(b).str(&s).bytes(&v);
            let bytes = w.finish();
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(r.u64("a").unwrap(), a);
            prop_assert_eq!(r.i64("b").unwrap(), b);
            prop_assert_eq!(r.str(1000, "s").unwrap(), s);
            prop_assert_eq!(r.bytes(1000, "v").unwrap(), &v[..]);
            r.finish("all").unwrap();
        }

        #[test]
        fn hex_round_trips(b in any::<[u8; 32]>()) {
            prop_assert_eq!(unhex::<32>(&hex(&b)).unwrap(), b);
        }
    }
}
