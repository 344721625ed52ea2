//! Server-sent events, parsed incrementally as body bytes arrive.
//!
//! Follows the WHATWG event-stream rules that matter for LLM APIs: lines end
//! in LF, CRLF or a bare CR (a CRLF split across two reads counts once);
//! lines starting with `:` are comments; `data:` lines of one event are
//! joined with LF; a blank line dispatches the event; `event:` names it.
//! `id:` and `retry:` are ignored, as is any other field.
//!
//! Zero-copy where possible: when an event's only `data:` line and its
//! closing blank line both sit in the bytes of one `feed` call, the handler
//! gets a slice of that input. Otherwise the bytes are copied into a carry
//! buffer bounded by `limits::SSE_EVENT_BYTES_MAX`.

use crate::limits;

/// One dispatched event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event:` field, empty when absent.
    pub name: &'a [u8],
    /// The joined `data:` lines.
    pub data: &'a [u8],
}

/// The stream broke a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseError {
    /// A line or an event's data exceeded `limits::SSE_EVENT_BYTES_MAX`.
    EventTooLarge,
}

/// Where the current event's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Data {
    /// No `data:` line yet.
    None,
    /// In the current input, at this range.
    Borrowed(usize, usize),
    /// In `SseParser::data`.
    Owned,
}

/// Incremental parser. Reuse one per connection; `reset` between responses.
#[derive(Debug, Default)]
pub struct SseParser {
    /// A line whose end has not arrived yet.
    line: Vec<u8>,
    /// The current event's data when it could not be borrowed.
    data: Vec<u8>,
    /// The current event's name.
    name: Vec<u8>,
    /// Where the current event's data is.
    data_at: Option<Data>,
    /// The previous input ended in CR: a leading LF belongs to that line end.
    skip_lf: bool,
}

impl SseParser {
    /// A new parser.
    pub fn new() -> Self {
        SseParser::default()
    }

    /// Forgets any partial line or event, keeping the buffers' capacity.
    pub fn reset(&mut self) {
        self.line.clear();
        self.data.clear();
        self.name.clear();
        self.data_at = None;
        self.skip_lf = false;
    }

    /// Whether a partial line or event is pending (a stream that ends here
    /// was cut mid-event).
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || !matches!(self.data_at, None | Some(Data::None))
    }

    /// Feeds body bytes; calls `on_event` for each complete event. Stops at
    /// and returns the first error from the handler.
    pub fn feed<E: From<SseError>>(
        &mut self,
        input: &[u8],
        mut on_event: impl FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut pos = 0;
        let result = self.feed_lines(input, &mut pos, &mut on_event);
        // Data borrowed from this input must be copied before it goes away.
        if let Some(Data::Borrowed(start, end)) = self.data_at {
            self.data.clear();
            self.data.extend_from_slice(&input[start..end]);
            self.data_at = Some(Data::Owned);
        }
        result
    }

    fn feed_lines<E: From<SseError>>(
        &mut self,
        input: &[u8],
        pos: &mut usize,
        on_event: &mut impl FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        while *pos < input.len() {
            if self.skip_lf {
                self.skip_lf = false;
                if input[*pos] == b'\n' {
                    *pos += 1;
                    continue;
                }
            }
            let rest = &input[*pos..];
            let Some(end) = memchr::memchr2(b'\n', b'\r', rest) else {
                if self.line.len() + rest.len() > limits::SSE_EVENT_BYTES_MAX {
                    return Err(SseError::EventTooLarge.into());
                }
                self.line.extend_from_slice(rest);
                *pos = input.len();
                break;
            };
            self.skip_lf = rest[end] == b'\r';
            let line_start = *pos;
            *pos += end + 1;
            if self.line.is_empty() {
                self.process_line(input, Some(line_start), &rest[..end], on_event)?;
            } else {
                if self.line.len() + end > limits::SSE_EVENT_BYTES_MAX {
                    return Err(SseError::EventTooLarge.into());
                }
                self.line.extend_from_slice(&rest[..end]);
                let line = std::mem::take(&mut self.line);
                let result = self.process_line(input, None, &line, on_event);
                self.line = line;
                self.line.clear();
                result?;
            }
        }
        Ok(())
    }

    /// Handles one complete line. `at` is its offset in `input` when the
    /// line lies there (so its data may be borrowed), `None` when carried.
    fn process_line<E: From<SseError>>(
        &mut self,
        input: &[u8],
        at: Option<usize>,
        line: &[u8],
        on_event: &mut impl FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if line.is_empty() {
            return self.dispatch(input, on_event);
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value, value_offset) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let skip = usize::from(line.get(colon + 1) == Some(&b' '));
                (&line[..colon], &line[colon + 1 + skip..], colon + 1 + skip)
            }
            None => (line, &line[line.len()..], line.len()),
        };
        match field {
            b"data" => self.push_data(input, at.map(|a| a + value_offset), value)?,
            b"event" => {
                if value.len() > limits::EVENT_NAME_BYTES_MAX {
                    return Err(SseError::EventTooLarge.into());
                }
                self.name.clear();
                self.name.extend_from_slice(value);
            }
            _ => {}
        }
        Ok(())
    }

    fn push_data(&mut self, input: &[u8], at: Option<usize>, value: &[u8]) -> Result<(), SseError> {
        match (self.data_at.unwrap_or(Data::None), at) {
            (Data::None, Some(start)) => {
                self.data_at = Some(Data::Borrowed(start, start + value.len()));
                return Ok(());
            }
            (Data::None, None) => self.data.clear(),
            (Data::Borrowed(start, end), _) => {
                self.data.clear();
                self.data.extend_from_slice(&input[start..end]);
                self.data.push(b'\n');
            }
            (Data::Owned, _) => self.data.push(b'\n'),
        }
        if self.data.len() + value.len() > limits::SSE_EVENT_BYTES_MAX {
            return Err(SseError::EventTooLarge);
        }
        self.data.extend_from_slice(value);
        self.data_at = Some(Data::Owned);
        Ok(())
    }

    fn dispatch<E>(
        &mut self,
        input: &[u8],
        on_event: &mut impl FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let data_at = self.data_at.take().unwrap_or(Data::None);
        let data: &[u8] = match data_at {
            // An event with no data field is not dispatched (WHATWG).
            Data::None => {
                self.name.clear();
                return Ok(());
            }
            Data::Borrowed(start, end) => &input[start..end],
            Data::Owned => &self.data,
        };
        let result = on_event(Event {
            name: &self.name,
            data,
        });
        self.name.clear();
        self.data.clear();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct TestError;
    impl From<SseError> for TestError {
        fn from(_: SseError) -> Self {
            TestError
        }
    }

    fn parse_in_pieces(input: &[u8], cuts: &[usize]) -> Vec<(String, String)> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(input.len());
        for w in bounds.windows(2) {
            parser
                .feed::<TestError>(&input[w[0]..w[1]], |e| {
                    events.push((
                        String::from_utf8_lossy(e.name).into_owned(),
                        String::from_utf8_lossy(e.data).into_owned(),
                    ));
                    Ok(())
                })
                .unwrap();
        }
        events
    }

    const STREAM: &[u8] = b": keep-alive comment\n\ndata: {\"a\":1}\n\nevent: message_delta\ndata: {\"b\":2}\n\ndata: line1\ndata: line2\n\ndata:nospace\n\ndata: [DONE]\n\n";

    fn expected() -> Vec<(String, String)> {
        vec![
            ("".into(), "{\"a\":1}".into()),
            ("message_delta".into(), "{\"b\":2}".into()),
            ("".into(), "line1\nline2".into()),
            ("".into(), "nospace".into()),
            ("".into(), "[DONE]".into()),
        ]
    }

    #[test]
    fn several_events_in_one_read() {
        assert_eq!(parse_in_pieces(STREAM, &[]), expected());
    }

    #[test]
    fn split_at_every_byte_boundary() {
        for cut in 0..=STREAM.len() {
            assert_eq!(parse_in_pieces(STREAM, &[cut]), expected(), "cut at {cut}");
        }
        let all: Vec<usize> = (1..STREAM.len()).collect();
        assert_eq!(parse_in_pieces(STREAM, &all), expected());
    }

    #[test]
    fn crlf_and_bare_cr_line_ends_split_everywhere() {
        let crlf = b"data: x\r\n\r\n: c\r\ndata: y\r\ndata: z\r\n\r\n";
        let cr = b"data: x\r\rdata: y\rdata: z\r\r";
        let want = vec![
            ("".to_string(), "x".to_string()),
            ("".into(), "y\nz".into()),
        ];
        for input in [&crlf[..], &cr[..]] {
            for cut in 0..=input.len() {
                assert_eq!(parse_in_pieces(input, &[cut]), want, "cut at {cut}");
            }
        }
    }

    #[test]
    fn event_without_data_is_not_dispatched() {
        assert!(parse_in_pieces(b"event: ping\n\n", &[]).is_empty());
        assert!(parse_in_pieces(b"id: 5\nretry: 10\n\n", &[]).is_empty());
    }

    #[test]
    fn borrows_when_whole_event_is_in_one_read() {
        let input = b"data: hello\n\n";
        let mut parser = SseParser::new();
        let base = input.as_ptr() as usize;
        parser
            .feed::<TestError>(input, |e| {
                let at = e.data.as_ptr() as usize;
                assert!(at >= base && at < base + input.len(), "data was copied");
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn oversized_line_is_an_error_not_growth() {
        let mut parser = SseParser::new();
        let chunk = vec![b'a'; 64 * 1024];
        let mut result = Ok(());
        for _ in 0..8 {
            result = parser.feed::<TestError>(&chunk, |_| Ok(()));
            if result.is_err() {
                break;
            }
        }
        assert!(result.is_err());
        assert!(parser.line.capacity() <= 2 * limits::SSE_EVENT_BYTES_MAX);
    }

    #[test]
    fn partial_event_is_reported() {
        let mut parser = SseParser::new();
        parser.feed::<TestError>(b"data: half", |_| Ok(())).unwrap();
        assert!(parser.has_partial());
        parser.reset();
        assert!(!parser.has_partial());
        parser.feed::<TestError>(b"data: x\n", |_| Ok(())).unwrap();
        assert!(parser.has_partial());
    }

    #[test]
    fn handler_error_stops_feeding() {
        let mut parser = SseParser::new();
        let mut seen = 0;
        let result = parser.feed::<TestError>(b"data: a\n\ndata: b\n\n", |_| {
            seen += 1;
            Err(TestError)
        });
        assert!(result.is_err());
        assert_eq!(seen, 1);
    }
}
