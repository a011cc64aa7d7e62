//! Kafka's protocol `Struct` encoding as MM2's internal records use it: fields in schema
//! order, `STRING` = int16 length + UTF-8, integers big-endian.

/// A record being encoded. A `STRING` longer than 32,767 bytes cannot be encoded (MM2's own
/// encoder throws); the record then fails as a whole in [`Writer::into_bytes`].
#[derive(Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
    too_long: Option<usize>,
}

impl Writer {
    pub(crate) fn string(&mut self, s: &str) {
        match i16::try_from(s.len()) {
            Ok(len) => {
                self.i16(len);
                self.buf.extend_from_slice(s.as_bytes());
            }
            Err(_) => self.too_long = Some(s.len()),
        }
    }
    pub(crate) fn i16(&mut self, v: i16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn into_bytes(self) -> Result<Vec<u8>, String> {
        match self.too_long {
            None => Ok(self.buf),
            Some(len) => Err(format!("a string of {len} bytes does not fit MM2's record format (at most 32767)")),
        }
    }
}

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!("truncated record: needed {n} more bytes, {} left", self.buf.len()));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub(crate) fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }
    pub(crate) fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }
    /// MM2's INT16 version header; only version 0 exists.
    pub(crate) fn version_0(&mut self, record: &str) -> Result<(), String> {
        match self.i16()? {
            0 => Ok(()),
            v => Err(format!("unsupported {record} version {v}")),
        }
    }
    pub(crate) fn string(&mut self) -> Result<String, String> {
        let len = self.i16()?;
        let len = usize::try_from(len).map_err(|_| format!("negative string length {len}"))?;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|e| format!("invalid UTF-8: {e}"))
    }
    pub(crate) fn finish(&self) -> Result<(), String> {
        if self.buf.is_empty() { Ok(()) } else { Err(format!("{} trailing bytes", self.buf.len())) }
    }
}
