//! A small JSON skimmer for the few fields the adapters need.
//!
//! Why not serde_json: on a 128-token reply, serde_json (string scanning,
//! UTF-8 validation of every key, visitor dispatch) was about 8 % of the
//! engine's CPU in `perf`, most of the difference to a bare request loop.
//! The adapters read five fields and skip the rest, so this scanner walks
//! the document once, finds string ends with `memchr2` (SIMD), skips values
//! structurally, and hands back only what is asked for, borrowed.
//!
//! It checks structure strictly (brackets, commas, colons, literals, escape
//! syntax, a nesting bound, nothing but whitespace after the value) and
//! reports `Bad` for anything malformed; it never panics. Two leniencies,
//! by decision: it does not validate UTF-8 (generated text is only counted
//! and echoed back) and accepts raw control characters inside strings.

use crate::limits;
use std::borrow::Cow;

/// Malformed JSON (or nested deeper than `limits::JSON_DEPTH_MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bad;

/// A string as it appears in the document, without the quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Str<'a> {
    /// The raw bytes between the quotes (escapes not decoded).
    pub raw: &'a [u8],
    /// Whether `raw` contains a backslash escape.
    pub escaped: bool,
}

impl<'a> Str<'a> {
    /// The decoded bytes; borrowed when there is no escape.
    pub fn decoded(&self) -> Cow<'a, [u8]> {
        if !self.escaped {
            return Cow::Borrowed(self.raw);
        }
        let mut out = Vec::with_capacity(self.raw.len());
        self.decode_into(&mut out);
        Cow::Owned(out)
    }

    /// Appends the decoded bytes to `out`. The escapes were validated when
    /// the string was scanned; unpaired surrogates become U+FFFD.
    pub fn decode_into(&self, out: &mut Vec<u8>) {
        let raw = self.raw;
        let mut i = 0;
        while i < raw.len() {
            let Some(at) = memchr::memchr(b'\\', &raw[i..]) else {
                out.extend_from_slice(&raw[i..]);
                return;
            };
            out.extend_from_slice(&raw[i..i + at]);
            i += at + 1;
            let Some(&kind) = raw.get(i) else { return };
            i += 1;
            let simple = match kind {
                b'n' => b'\n',
                b't' => b'\t',
                b'r' => b'\r',
                b'b' => 0x08,
                b'f' => 0x0c,
                b'u' => {
                    let first = hex4(raw.get(i..i + 4)).unwrap_or(0xFFFD);
                    i += 4;
                    let mut code = first;
                    if (0xD800..0xDC00).contains(&first) && raw.get(i..i + 2) == Some(b"\\u") {
                        if let Some(low) =
                            hex4(raw.get(i + 2..i + 6)).filter(|l| (0xDC00..0xE000).contains(l))
                        {
                            code = 0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00);
                            i += 6;
                        }
                    }
                    let c = char::from_u32(code).unwrap_or('\u{FFFD}');
                    let mut utf8 = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                    continue;
                }
                other => other, // \" \\ \/
            };
            out.push(simple);
        }
    }

    /// Length of the decoded bytes, without decoding into a buffer.
    pub fn decoded_len(&self) -> usize {
        if !self.escaped {
            return self.raw.len();
        }
        let mut scratch = Vec::new();
        self.decode_into(&mut scratch);
        scratch.len()
    }
}

/// Index of the first `"` or `\\` at or after `from`. Keys and most values
/// are short, where `memchr2`'s set-up costs more than the search (the SSE
/// parse bench spent half its time there), so the first `SHORT_SCAN_BYTES`
/// are tested 16 at a time: with one SSE2 compare on x86-64, else (and
/// within a buffer's last 15 bytes) eight at a time in a register. Longer
/// strings, such as generated text, go on to the SIMD search.
fn find_quote_or_backslash(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    #[cfg(target_arch = "x86_64")]
    {
        let mut at = 0;
        while let Some(chunk) = rest.get(at..).and_then(|r| r.first_chunk::<16>()) {
            let hits = quote_or_backslash_mask(chunk);
            if hits != 0 {
                return Some(from + at + hits.trailing_zeros() as usize);
            }
            at += 16;
            if at == SHORT_SCAN_BYTES {
                return memchr::memchr2(b'"', b'\\', &rest[at..]).map(|i| from + at + i);
            }
        }
        find_by_words(&rest[at..]).map(|i| from + at + i)
    }
    #[cfg(not(target_arch = "x86_64"))]
    find_by_words(rest).map(|i| from + i)
}

/// How far `find_quote_or_backslash` looks by itself before it hands the
/// rest to `memchr2` (a multiple of 16).
const SHORT_SCAN_BYTES: usize = 64;

/// `find_quote_or_backslash` within `rest` without SIMD: its first 16
/// bytes eight at a time in a register, then `memchr2`.
fn find_by_words(rest: &[u8]) -> Option<usize> {
    let mut at = 0;
    while at < 16 {
        let Some(chunk) = rest.get(at..).and_then(|r| r.first_chunk::<8>()) else {
            break;
        };
        let word = u64::from_le_bytes(*chunk);
        let hits = bytes_equal(word, b'"') | bytes_equal(word, b'\\');
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    memchr::memchr2(b'"', b'\\', &rest[at..]).map(|i| at + i)
}

/// One bit per byte of `chunk` (bit i for byte i) that is `"` or `\\`.
#[cfg(target_arch = "x86_64")]
fn quote_or_backslash_mask(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of x86-64; the load reads exactly the 16 bytes
    // of `chunk` and allows any alignment.
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        _mm_movemask_epi8(_mm_or_si128(quote, backslash)) as u32
    }
}

/// The high bit of each byte of `word` that equals `byte`. A byte above a
/// match may be flagged too (the subtraction's borrow), never one below, so
/// the lowest flag is always the first match.
fn bytes_equal(word: u64, byte: u8) -> u64 {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let x = word ^ (LOW * u64::from(byte));
    x.wrapping_sub(LOW) & !x & HIGH
}

/// The end of the run of digits starting at `from`; `Bad` when it is empty.
fn digits_after(buf: &[u8], from: usize) -> Result<usize, Bad> {
    let mut i = from;
    while matches!(buf.get(i), Some(b'0'..=b'9')) {
        i += 1;
    }
    if i == from {
        Err(Bad)
    } else {
        Ok(i)
    }
}

fn hex4(bytes: Option<&[u8]>) -> Option<u32> {
    let bytes = bytes?;
    let mut value = 0u32;
    for &b in bytes {
        value = value * 16 + (b as char).to_digit(16)?;
    }
    Some(value)
}

/// A value's kind, as seen from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `{`
    Object,
    /// `[`
    Array,
    /// `"`
    String,
    /// A number.
    Number,
    /// `true` or `false`.
    Bool,
    /// `null`.
    Null,
}

/// A cursor over one JSON document.
#[derive(Debug)]
pub struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: u32,
}

impl<'a> Scanner<'a> {
    /// A scanner at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Scanner {
            buf,
            pos: 0,
            depth: 0,
        }
    }

    fn skip_ws(&mut self) {
        while let Some(&b) = self.buf.get(self.pos) {
            if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    /// The kind of the next value.
    pub fn peek(&mut self) -> Result<Kind, Bad> {
        self.skip_ws();
        Ok(match self.buf.get(self.pos).ok_or(Bad)? {
            b'{' => Kind::Object,
            b'[' => Kind::Array,
            b'"' => Kind::String,
            b'-' | b'0'..=b'9' => Kind::Number,
            b't' | b'f' => Kind::Bool,
            b'n' => Kind::Null,
            _ => return Err(Bad),
        })
    }

    /// After the top-level value: only whitespace may follow.
    pub fn finish(mut self) -> Result<(), Bad> {
        self.skip_ws();
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(Bad)
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Bad> {
        if self.buf.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Bad)
        }
    }

    /// The string whose opening quote is at `quote` in `buf`, and the
    /// offset just past its closing quote.
    pub fn string_at(buf: &'a [u8], quote: usize) -> Result<(Str<'a>, usize), Bad> {
        let mut s = Scanner {
            buf,
            pos: quote,
            depth: 0,
        };
        let text = s.string()?;
        Ok((text, s.pos))
    }

    /// Reads a string.
    pub fn string(&mut self) -> Result<Str<'a>, Bad> {
        self.skip_ws();
        if self.buf.get(self.pos) != Some(&b'"') {
            return Err(Bad);
        }
        let start = self.pos + 1;
        let mut i = start;
        let mut escaped = false;
        loop {
            i = find_quote_or_backslash(self.buf, i).ok_or(Bad)?;
            if self.buf[i] == b'"' {
                self.pos = i + 1;
                return Ok(Str {
                    raw: &self.buf[start..i],
                    escaped,
                });
            }
            escaped = true;
            match self.buf.get(i + 1).ok_or(Bad)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' => {
                    hex4(self.buf.get(i + 2..i + 6)).ok_or(Bad)?;
                    i += 6;
                }
                _ => return Err(Bad),
            }
        }
    }

    /// Reads `null` (→ `None`) or a string.
    pub fn string_or_null(&mut self) -> Result<Option<Str<'a>>, Bad> {
        if self.peek()? == Kind::Null {
            self.literal(b"null")?;
            return Ok(None);
        }
        self.string().map(Some)
    }

    /// Reads a boolean.
    pub fn bool(&mut self) -> Result<bool, Bad> {
        self.skip_ws();
        match self.buf.get(self.pos) {
            Some(b't') => self.literal(b"true").map(|_| true),
            Some(b'f') => self.literal(b"false").map(|_| false),
            _ => Err(Bad),
        }
    }

    /// Reads a number; returns it when it is a non-negative integer that
    /// fits `u64`, `None` for any other valid number. One pass: the digits
    /// are converted as they are checked.
    pub fn number(&mut self) -> Result<Option<u64>, Bad> {
        self.skip_ws();
        let buf = self.buf;
        let start = self.pos;
        let mut i = start;
        if buf.get(i) == Some(&b'-') {
            i += 1;
        }
        let int_start = i;
        let mut value: u64 = 0;
        let mut fits = true;
        while let Some(&b) = buf.get(i) {
            let digit = b.wrapping_sub(b'0');
            if digit > 9 {
                break;
            }
            // Nineteen digits always fit a u64; past that, check.
            if i - int_start < 19 {
                value = value * 10 + u64::from(digit);
            } else if let Some(v) = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(digit)))
            {
                value = v;
            } else {
                fits = false;
            }
            i += 1;
        }
        let int_digits = i - int_start;
        if int_digits == 0 || (int_digits > 1 && buf[int_start] == b'0') {
            return Err(Bad);
        }
        let mut integer = start == int_start;
        if buf.get(i) == Some(&b'.') {
            integer = false;
            i = digits_after(buf, i + 1)?;
        }
        if matches!(buf.get(i), Some(b'e' | b'E')) {
            integer = false;
            i += 1;
            if matches!(buf.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            i = digits_after(buf, i)?;
        }
        self.pos = i;
        Ok((integer && fits).then_some(value))
    }

    /// Reads an integer field leniently: `Some` for a non-negative integer,
    /// `None` for `null` or any other number.
    pub fn u64_or_null(&mut self) -> Result<Option<u64>, Bad> {
        match self.peek()? {
            Kind::Null => self.literal(b"null").map(|_| None),
            Kind::Number => self.number(),
            _ => Err(Bad),
        }
    }

    /// Skips one value of any kind.
    pub fn skip(&mut self) -> Result<(), Bad> {
        match self.peek()? {
            Kind::Object => self.object(|s, _| s.skip()),
            Kind::Array => self.array(|s, _| s.skip()),
            Kind::String => self.string().map(|_| ()),
            Kind::Number => self.number().map(|_| ()),
            Kind::Bool => self.bool().map(|_| ()),
            Kind::Null => self.literal(b"null"),
        }
    }

    fn enter(&mut self, open: u8) -> Result<(), Bad> {
        self.skip_ws();
        if self.buf.get(self.pos) != Some(&open) {
            return Err(Bad);
        }
        self.depth += 1;
        if self.depth > limits::JSON_DEPTH_MAX {
            return Err(Bad);
        }
        self.pos += 1;
        Ok(())
    }

    /// Walks an object; `on_field` must consume the value of each key.
    pub fn object(
        &mut self,
        mut on_field: impl FnMut(&mut Self, Str<'a>) -> Result<(), Bad>,
    ) -> Result<(), Bad> {
        if self.open(b'{', b'}')? {
            return Ok(());
        }
        loop {
            let key = self.string()?;
            self.skip_ws();
            if self.buf.get(self.pos) != Some(&b':') {
                return Err(Bad);
            }
            self.pos += 1;
            on_field(self, key)?;
            if self.separator_or_close(b'}')? {
                return Ok(());
            }
        }
    }

    /// Enters a container; true when it is empty (and already closed).
    fn open(&mut self, open: u8, close: u8) -> Result<bool, Bad> {
        self.enter(open)?;
        self.skip_ws();
        if self.buf.get(self.pos) == Some(&close) {
            self.pos += 1;
            self.depth -= 1;
            return Ok(true);
        }
        Ok(false)
    }

    /// After an element: a comma (false, more follow) or the closing
    /// bracket (true, container done).
    fn separator_or_close(&mut self, close: u8) -> Result<bool, Bad> {
        self.skip_ws();
        match self.buf.get(self.pos) {
            Some(b',') => {
                self.pos += 1;
                Ok(false)
            }
            Some(&b) if b == close => {
                self.pos += 1;
                self.depth -= 1;
                Ok(true)
            }
            _ => Err(Bad),
        }
    }

    /// Walks an array; `on_item` must consume each element.
    pub fn array(
        &mut self,
        mut on_item: impl FnMut(&mut Self, usize) -> Result<(), Bad>,
    ) -> Result<(), Bad> {
        if self.open(b'[', b']')? {
            return Ok(());
        }
        let mut index = 0;
        loop {
            on_item(self, index)?;
            index += 1;
            if self.separator_or_close(b']')? {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn valid(text: &str) -> bool {
        let mut s = Scanner::new(text.as_bytes());
        s.skip().is_ok() && s.finish().is_ok()
    }

    /// `len` random bytes drawn from quotes, backslashes and bytes one off
    /// from them (0x21, 0x23, 0x5b, 0x5d, and high bytes that make the word
    /// trick borrow).
    fn awkward_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
        let alphabet = [
            b'a', b'"', b'\\', 0x21, 0x23, 0x5b, 0x5d, 0x00, 0x80, 0xff, 0xdc,
        ];
        (0..len)
            .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
            .collect()
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_sixteen_byte_mask_flags_exactly_the_quotes_and_backslashes() {
        let mut rng = Rng::new(11);
        for _ in 0..2_000 {
            let bytes = awkward_bytes(&mut rng, 16);
            let chunk = bytes.first_chunk::<16>().expect("16 bytes");
            let plain = (0..16)
                .filter(|&i| chunk[i] == b'"' || chunk[i] == b'\\')
                .fold(0u32, |mask, i| mask | 1 << i);
            assert_eq!(quote_or_backslash_mask(chunk), plain, "{chunk:?}");
        }
    }

    #[test]
    fn the_quote_search_finds_the_first_quote_or_backslash_anywhere() {
        // Buffers of every length up to 40 full of awkward bytes, and up to
        // 160 with a few of them in plain text (so hits also lie past the
        // 16-byte compares, in `memchr2`'s share): the search and the word
        // search alone (other architectures) must agree with a plain scan
        // from every start.
        let mut rng = Rng::new(7);
        for round in 0..4_000 {
            let buf = if round % 2 == 0 {
                let len = rng.below(41) as usize;
                awkward_bytes(&mut rng, len)
            } else {
                let len = rng.below(161) as usize;
                let mut buf = vec![b'a'; len];
                for _ in 0..rng.below(3) {
                    if len > 0 {
                        let at = rng.below(len as u64) as usize;
                        buf[at] = awkward_bytes(&mut rng, 1)[0];
                    }
                }
                buf
            };
            let len = buf.len();
            for from in 0..=len + 1 {
                let plain = buf
                    .get(from..)
                    .and_then(|rest| rest.iter().position(|&b| b == b'"' || b == b'\\'))
                    .map(|i| from + i);
                assert_eq!(
                    find_quote_or_backslash(&buf, from),
                    plain,
                    "{buf:?} from {from}"
                );
                let words = buf.get(from..).and_then(find_by_words).map(|i| from + i);
                assert_eq!(words, plain, "{buf:?} from {from}, by words");
            }
        }
    }

    #[test]
    fn accepts_and_rejects_like_a_parser() {
        for ok in [
            "{}",
            "[]",
            "0",
            "-0.5e+3",
            "\"a\\u00e9\\n\"",
            "{\"a\":[1,{\"b\":null}],\"c\":true}",
            " [ 1 , 2 ] ",
            "1E5",
            "\"\\ud83d\\ude00\"",
        ] {
            assert!(valid(ok), "{ok}");
            assert!(
                serde_json::from_str::<serde_json::Value>(ok).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\"}",
            "{\"a\":}",
            "{,}",
            "01",
            "1.",
            "-",
            "1e",
            "\"\\x\"",
            "\"\\u12\"",
            "tru",
            "nul",
            "{\"a\":1}x",
            "[1 2]",
            "{\"a\" 1}",
            "\"open",
        ] {
            assert!(!valid(bad), "{bad}");
            assert!(
                serde_json::from_str::<serde_json::Value>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(!valid(&deep));
        let fine = "[".repeat(60) + &"]".repeat(60);
        assert!(valid(&fine));
    }

    #[test]
    fn strings_decode_like_serde() {
        for text in [
            r#""plain""#,
            r#""quote \" back \\ slash \/ nl \n tab \t""#,
            r#""\u00e9\u4e2d\ud83d\ude00""#,
            r#""lone \ud800 surrogate""#,
        ] {
            let mut s = Scanner::new(text.as_bytes());
            let got = s.string().unwrap();
            let want: String = serde_json::from_str(text).unwrap_or_else(|_| "\u{FFFD}".into());
            if !text.contains("ud800 ") {
                assert_eq!(got.decoded().as_ref(), want.as_bytes(), "{text}");
                assert_eq!(got.decoded_len(), want.len());
            } else {
                assert!(String::from_utf8(got.decoded().into_owned())
                    .unwrap()
                    .contains('\u{FFFD}'));
            }
        }
    }

    #[test]
    fn numbers() {
        let mut s =
            Scanner::new(b"[12, 0, 9999999999999999999, 18446744073709551615, 18446744073709551616, \
                           99999999999999999999, 123456789012345678901, -0, -3, 1.5, 2e3, 1E+2, 5e-1, null]");
        let mut got = Vec::new();
        s.array(|s, _| {
            got.push(s.u64_or_null()?);
            Ok(())
        })
        .unwrap();
        assert_eq!(
            got,
            vec![
                Some(12),
                Some(0),
                Some(9_999_999_999_999_999_999),
                Some(u64::MAX),
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None
            ]
        );
    }

    /// Random documents: the skimmer agrees with serde_json on validity,
    /// and on validity after one byte is corrupted.
    #[test]
    fn agrees_with_serde_on_generated_documents() {
        let mut rng = Rng::new(7);
        for round in 0..3000 {
            let doc = random_value(&mut rng, 0).to_string();
            assert!(valid(&doc), "round {round}: {doc}");
            let mut bytes = doc.into_bytes();
            let at = rng.below(bytes.len() as u64) as usize;
            let alphabet = b"{}[]\",:0a\\ -.";
            bytes[at] = alphabet[rng.below(alphabet.len() as u64) as usize];
            if std::str::from_utf8(&bytes).is_err() {
                continue; // UTF-8 is deliberately not validated
            }
            let ours = {
                let mut s = Scanner::new(&bytes);
                s.skip().is_ok() && s.finish().is_ok()
            };
            let theirs = serde_json::from_slice::<serde_json::Value>(&bytes).is_ok();
            assert_eq!(
                ours,
                theirs,
                "disagree on {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    fn random_value(rng: &mut Rng, depth: u32) -> serde_json::Value {
        use serde_json::Value;
        let kind = if depth > 4 {
            rng.below(4)
        } else {
            rng.below(6)
        };
        match kind {
            0 => Value::Null,
            1 => Value::Bool(rng.below(2) == 1),
            2 => match rng.below(3) {
                0 => Value::from(rng.next_u64() >> rng.below(64)),
                1 => Value::from(-(rng.below(1000) as i64)),
                _ => Value::from(rng.below(10_000) as f64 / 7.0),
            },
            3 => {
                let pool = [
                    "",
                    "a",
                    "é",
                    "\"q\"",
                    "line\nbreak",
                    "tab\t",
                    "\\",
                    "中文",
                    "😀",
                    "/",
                ];
                let n = rng.below(4);
                Value::String(
                    (0..n)
                        .map(|_| pool[rng.below(pool.len() as u64) as usize])
                        .collect(),
                )
            }
            4 => Value::Array(
                (0..rng.below(4))
                    .map(|_| random_value(rng, depth + 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.below(4))
                    .map(|i| (format!("k{i}"), random_value(rng, depth + 1)))
                    .collect(),
            ),
        }
    }
}
