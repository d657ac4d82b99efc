//! SPDY/3.1 frames on the wire, and their name/value header blocks
//! compressed with zlib primed by the protocol's dictionary.
//!
//! Every frame starts with 8 bytes. A control frame: the high bit set, a
//! 15-bit version (3), a 16-bit type, then 8 bits of flags and a 24-bit
//! length. A data frame: the high bit clear, a 31-bit stream id, flags and
//! length. Header blocks are `u32 count` then `u32 len, name, u32 len, value`
//! pairs, compressed with one zlib stream per direction for the whole
//! connection (each block ends with a sync flush).

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use thiserror::Error;

pub const VERSION: u16 = 3;

/// FIN on SYN_STREAM, SYN_REPLY, HEADERS and DATA: the sender's half of the
/// stream ends.
pub const FLAG_FIN: u8 = 0x01;
/// On SYN_STREAM: the receiver may not send on this stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes used here.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;

/// The largest frame accepted (the length field has 24 bits; nobody here
/// needs more than a few hundred KiB).
const MAX_FRAME: usize = 1 << 20;
/// The largest decompressed header block accepted.
const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// Header names and values, in order; SPDY/3 names are lowercase.
pub type Headers = Vec<(String, String)>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// `(flags, id, value)` entries.
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type this implementation does not know; the
    /// spec says to ignore it.
    Unknown {
        kind: u16,
    },
}

#[derive(Debug, Error)]
pub enum FrameError {
    #[error("SPDY control frame of version {0} (only 3 is spoken)")]
    Version(u16),
    #[error("SPDY frame of {0} bytes is larger than the limit")]
    TooLarge(usize),
    #[error("SPDY {what} frame is too short ({len} bytes)")]
    Short { what: &'static str, len: usize },
    #[error("SPDY header block: {0}")]
    HeaderBlock(String),
    #[error("zlib: {0}")]
    Zlib(String),
}

/// The zlib dictionary of SPDY/3 (draft 3, section 2.6.10.1): the
/// length-prefixed words, then a run of unprefixed text.
const DICTIONARY_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized",
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The dictionary bytes, built once.
pub fn dictionary() -> &'static [u8] {
    static DICT: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
        let mut d = Vec::with_capacity(1423);
        for w in DICTIONARY_WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(DICTIONARY_TAIL.as_bytes());
        d
    });
    &DICT
}

/// Writes frames; owns the sending direction's compression context.
#[derive(Debug)]
pub struct Encoder {
    deflate: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // Cannot fail on a fresh stream with zlib headers.
        let _ = deflate.set_dictionary(dictionary());
        Self { deflate }
    }

    fn header_block(&mut self, headers: &Headers) -> Result<Vec<u8>, FrameError> {
        let mut plain = Vec::new();
        plain.put_u32(headers.len() as u32);
        for (k, v) in headers {
            plain.put_u32(k.len() as u32);
            plain.extend_from_slice(k.to_ascii_lowercase().as_bytes());
            plain.put_u32(v.len() as u32);
            plain.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let start = self.deflate.total_in();
        loop {
            let consumed = (self.deflate.total_in() - start) as usize;
            out.reserve(256);
            self.deflate
                .compress_vec(&plain[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| FrameError::Zlib(e.to_string()))?;
            // Done when all input is in and the flush left spare room.
            if (self.deflate.total_in() - start) as usize == plain.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// Appends `frame`'s bytes to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let control = |out: &mut Vec<u8>, kind: u16, flags: u8, body: &[u8]| {
            out.put_u16(0x8000 | VERSION);
            out.put_u16(kind);
            out.put_u32((u32::from(flags) << 24) | body.len() as u32);
            out.extend_from_slice(body);
        };
        match frame {
            Frame::SynStream { stream_id, associated_to, priority, flags, headers } => {
                let mut body = Vec::new();
                body.put_u32(stream_id & 0x7fff_ffff);
                body.put_u32(associated_to & 0x7fff_ffff);
                body.put_u8((priority & 0x7) << 5);
                body.put_u8(0);
                body.extend_from_slice(&self.header_block(headers)?);
                control(out, SYN_STREAM, *flags, &body);
            }
            Frame::SynReply { stream_id, flags, headers } | Frame::Headers { stream_id, flags, headers } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) { SYN_REPLY } else { HEADERS };
                let mut body = Vec::new();
                body.put_u32(stream_id & 0x7fff_ffff);
                body.extend_from_slice(&self.header_block(headers)?);
                control(out, kind, *flags, &body);
            }
            Frame::RstStream { stream_id, status } => {
                let mut body = Vec::new();
                body.put_u32(stream_id & 0x7fff_ffff);
                body.put_u32(*status);
                control(out, RST_STREAM, 0, &body);
            }
            Frame::Settings { flags, entries } => {
                let mut body = Vec::new();
                body.put_u32(entries.len() as u32);
                for (f, id, value) in entries {
                    body.put_u32((u32::from(*f) << 24) | (id & 0x00ff_ffff));
                    body.put_u32(*value);
                }
                control(out, SETTINGS, *flags, &body);
            }
            Frame::Ping { id } => control(out, PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last_good_stream_id, status } => {
                let mut body = Vec::new();
                body.put_u32(last_good_stream_id & 0x7fff_ffff);
                body.put_u32(*status);
                control(out, GOAWAY, 0, &body);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut body = Vec::new();
                body.put_u32(stream_id & 0x7fff_ffff);
                body.put_u32(delta & 0x7fff_ffff);
                control(out, WINDOW_UPDATE, 0, &body);
            }
            Frame::Data { stream_id, flags, data } => {
                if data.len() >= 1 << 24 {
                    return Err(FrameError::TooLarge(data.len()));
                }
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32((u32::from(*flags) << 24) | data.len() as u32);
                out.extend_from_slice(data);
            }
            Frame::Unknown { kind } => control(out, *kind, 0, &[]),
        }
        Ok(())
    }
}

/// Reads frames; owns the receiving direction's decompression context.
#[derive(Debug)]
pub struct Decoder {
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self { inflate: Decompress::new(true) }
    }

    fn header_block(&mut self, mut input: &[u8]) -> Result<Headers, FrameError> {
        let mut plain: Vec<u8> = Vec::with_capacity(input.len() * 4 + 64);
        loop {
            if plain.len() > MAX_HEADER_BLOCK {
                return Err(FrameError::HeaderBlock("larger than the limit".into()));
            }
            plain.reserve(1024);
            let before = self.inflate.total_in();
            let r = self.inflate.decompress_vec(input, &mut plain, FlushDecompress::Sync);
            input = &input[(self.inflate.total_in() - before) as usize..];
            match r {
                Ok(Status::Ok | Status::BufError) if input.is_empty() && plain.len() < plain.capacity() => break,
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(dictionary()).map_err(|e| FrameError::Zlib(e.to_string()))?;
                }
                Err(e) => return Err(FrameError::Zlib(e.to_string())),
            }
        }
        parse_block(&plain)
    }

    /// Takes one whole frame off the front of `buf`, or `None` until more
    /// bytes arrive.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = (u32::from_be_bytes([0, buf[5], buf[6], buf[7]])) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if buf.len() < 8 + len {
            buf.reserve(8 + len - buf.len());
            return Ok(None);
        }
        let first = buf.get_u32();
        let flags_len = buf.get_u32();
        let flags = (flags_len >> 24) as u8;
        let mut body = buf.split_to(len).freeze();
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data { stream_id: first & 0x7fff_ffff, flags, data: body }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let kind = (first & 0xffff) as u16;
        let need = |what: &'static str, n: usize| {
            if len < n { Err(FrameError::Short { what, len }) } else { Ok(()) }
        };
        let frame = match kind {
            SYN_STREAM => {
                need("SYN_STREAM", 10)?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                let associated_to = body.get_u32() & 0x7fff_ffff;
                let priority = body.get_u8() >> 5;
                body.advance(1);
                Frame::SynStream { stream_id, associated_to, priority, flags, headers: self.header_block(&body)? }
            }
            SYN_REPLY | HEADERS => {
                need("SYN_REPLY", 4)?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                let headers = self.header_block(&body)?;
                if kind == SYN_REPLY {
                    Frame::SynReply { stream_id, flags, headers }
                } else {
                    Frame::Headers { stream_id, flags, headers }
                }
            }
            RST_STREAM => {
                need("RST_STREAM", 8)?;
                Frame::RstStream { stream_id: body.get_u32() & 0x7fff_ffff, status: body.get_u32() }
            }
            SETTINGS => {
                need("SETTINGS", 4)?;
                let n = body.get_u32() as usize;
                need("SETTINGS", 4 + n.saturating_mul(8))?;
                let entries = (0..n)
                    .map(|_| {
                        let idf = body.get_u32();
                        ((idf >> 24) as u8, idf & 0x00ff_ffff, body.get_u32())
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            PING => {
                need("PING", 4)?;
                Frame::Ping { id: body.get_u32() }
            }
            GOAWAY => {
                need("GOAWAY", 4)?;
                let last_good_stream_id = body.get_u32() & 0x7fff_ffff;
                let status = if body.remaining() >= 4 { body.get_u32() } else { 0 };
                Frame::GoAway { last_good_stream_id, status }
            }
            WINDOW_UPDATE => {
                need("WINDOW_UPDATE", 8)?;
                Frame::WindowUpdate { stream_id: body.get_u32() & 0x7fff_ffff, delta: body.get_u32() & 0x7fff_ffff }
            }
            kind => Frame::Unknown { kind },
        };
        Ok(Some(frame))
    }
}

fn parse_block(mut b: &[u8]) -> Result<Headers, FrameError> {
    let bad = |what: &str| FrameError::HeaderBlock(what.to_owned());
    let take = |b: &mut &[u8]| -> Result<String, FrameError> {
        if b.len() < 4 {
            return Err(bad("truncated length"));
        }
        let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if b.len() < 4 + n {
            return Err(bad("truncated string"));
        }
        let s = String::from_utf8_lossy(&b[4..4 + n]).into_owned();
        *b = &b[4 + n..];
        Ok(s)
    };
    if b.len() < 4 {
        return Err(bad("no pair count"));
    }
    let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    b = &b[4..];
    let mut out = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let k = take(&mut b)?;
        let v = take(&mut b)?;
        out.push((k, v));
    }
    Ok(out)
}

/// The value of header `name` (case-insensitive), if present.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(enc: &mut Encoder, dec: &mut Decoder, frames: &[Frame]) {
        let mut wire = Vec::new();
        for f in frames {
            enc.encode(f, &mut wire).expect("valid in this test");
        }
        let mut buf = BytesMut::from(&wire[..]);
        for f in frames {
            assert_eq!(dec.decode(&mut buf).expect("valid in this test").as_ref(), Some(f));
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn the_dictionary_is_spdy3s_by_length_and_zlib_id() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // zlib names a preset dictionary by its Adler-32 (RFC 1950).
        let (mut a, mut b) = (1u32, 0u32);
        for &x in d {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn every_frame_kind_survives_encoding_and_decoding() {
        let headers = |t: &str| vec![("streamtype".to_owned(), t.to_owned()), ("port".into(), "8080".into())];
        let frames = vec![
            Frame::SynStream { stream_id: 1, associated_to: 0, priority: 0, flags: 0, headers: headers("error") },
            Frame::SynStream { stream_id: 3, associated_to: 0, priority: 2, flags: FLAG_FIN, headers: headers("data") },
            Frame::SynReply { stream_id: 1, flags: 0, headers: vec![] },
            Frame::Headers { stream_id: 3, flags: 0, headers: headers("x") },
            Frame::Data { stream_id: 3, flags: 0, data: Bytes::from_static(b"hello") },
            Frame::Data { stream_id: 3, flags: FLAG_FIN, data: Bytes::new() },
            Frame::RstStream { stream_id: 5, status: RST_CANCEL },
            Frame::Settings { flags: 0, entries: vec![(0, 7, 65536)] },
            Frame::Ping { id: 7 },
            Frame::WindowUpdate { stream_id: 1, delta: 4096 },
            Frame::GoAway { last_good_stream_id: 3, status: 0 },
        ];
        // Both directions keep their zlib context across frames: decode
        // with one decoder in order, as a peer does.
        roundtrip(&mut Encoder::new(), &mut Decoder::new(), &frames);
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let mut wire = Vec::new();
        Encoder::new()
            .encode(&Frame::Data { stream_id: 1, flags: 0, data: Bytes::from_static(b"abc") }, &mut wire)
            .expect("valid in this test");
        let mut dec = Decoder::new();
        let mut buf = BytesMut::from(&wire[..5]);
        assert_eq!(dec.decode(&mut buf).expect("valid in this test"), None);
        buf.extend_from_slice(&wire[5..]);
        assert!(matches!(dec.decode(&mut buf).expect("valid in this test"), Some(Frame::Data { stream_id: 1, .. })));
    }

    #[test]
    fn a_control_frame_of_another_version_is_an_error() {
        let wire = [0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(matches!(Decoder::new().decode(&mut BytesMut::from(&wire[..])), Err(FrameError::Version(2))));
    }

    #[test]
    fn a_header_block_compressed_by_plain_zlib_with_the_dictionary_decodes() {
        // Independent of Encoder: zlib with the preset dictionary, as Go's
        // compress/zlib NewWriterLevelDict writes it.
        let mut plain = Vec::new();
        plain.put_u32(1);
        plain.put_u32(10);
        plain.extend_from_slice(b"streamtype");
        plain.put_u32(5);
        plain.extend_from_slice(b"stdin");
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(dictionary()).expect("valid in this test");
        let mut block = Vec::with_capacity(1024);
        z.compress_vec(&plain, &mut block, FlushCompress::Sync).expect("valid in this test");
        let mut wire = vec![0x80, 0x03, 0x00, 0x02];
        wire.put_u32(4 + block.len() as u32);
        wire.put_u32(9);
        wire.extend_from_slice(&block);
        let got = Decoder::new().decode(&mut BytesMut::from(&wire[..])).expect("valid in this test");
        assert_eq!(
            got,
            Some(Frame::SynReply { stream_id: 9, flags: 0, headers: vec![("streamtype".into(), "stdin".into())] })
        );
    }

    #[test]
    fn garbage_header_blocks_are_errors_not_panics() {
        let mut wire = vec![0x80, 0x03, 0x00, 0x02, 0, 0, 0, 8, 0, 0, 0, 1, 1, 2, 3, 4];
        assert!(Decoder::new().decode(&mut BytesMut::from(&wire[..])).is_err());
        wire[7] = 2;
        wire.truncate(10);
        assert!(matches!(Decoder::new().decode(&mut BytesMut::from(&wire[..])), Err(FrameError::Short { .. })));
    }
}
