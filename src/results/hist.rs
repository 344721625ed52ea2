//! One bounded HDR histogram in microseconds, and how it is written into
//! a summary and read back.
//!
//! In a summary a histogram is an object: the percentiles a reader wants
//! (`count`, `min`, `mean`, `p50` … `p99_9`, `max`, in milliseconds), the
//! number of `clamped` samples, and `hdr`, the histogram itself in
//! HdrHistogram's V2 compressed encoding, base64. Only `hdr` and `clamped`
//! are read back: the percentiles are derived from them, so a summary that
//! is read, merged and written again cannot carry stale figures.

use crate::limits;
use hdrhistogram::serialization::Serializer as _;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One bounded histogram in microseconds, allocated on first use (an
/// unused one, such as TTFT of a non-streamed scenario, costs nothing).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(into = "HistWire", try_from = "HistWire")]
pub struct Hist {
    /// The histogram (1 µs .. `limits::HISTOGRAM_US_MAX`, no auto-resize),
    /// once anything was recorded or merged in.
    inner: Option<Box<Histogram<u64>>>,
    /// Values above the bound, recorded as the bound.
    pub clamped: u64,
}

impl PartialEq for Hist {
    /// Equal when they hold the same counts in the same buckets.
    fn eq(&self, other: &Hist) -> bool {
        self.clamped == other.clamped
            && match (self.get(), other.get()) {
                (None, None) => true,
                (Some(a), Some(b)) => a == b,
                _ => false,
            }
    }
}

impl Hist {
    /// An empty histogram.
    pub fn new() -> Self {
        Hist {
            inner: None,
            clamped: 0,
        }
    }

    fn histogram(&mut self) -> &mut Histogram<u64> {
        self.inner.get_or_insert_with(|| {
            // The bounds are constants that satisfy hdrhistogram's rules
            // (low ≥ 1, high ≥ 2 × low, sigfig ≤ 5), so this cannot fail.
            Box::new(
                Histogram::new_with_bounds(1, limits::HISTOGRAM_US_MAX, limits::HISTOGRAM_SIGFIG)
                    .expect("histogram bounds are valid constants"),
            )
        })
    }

    /// The underlying histogram, if anything was recorded.
    pub fn get(&self) -> Option<&Histogram<u64>> {
        self.inner.as_deref().filter(|h| !h.is_empty())
    }

    /// Records a duration.
    #[inline]
    pub fn record(&mut self, duration: Duration) {
        self.record_us(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records microseconds, clamping (and counting) values above the bound.
    #[inline]
    pub fn record_us(&mut self, us: u64) {
        let value = if us > limits::HISTOGRAM_US_MAX {
            self.clamped += 1;
            limits::HISTOGRAM_US_MAX
        } else {
            us
        };
        // In range by construction, so recording cannot fail.
        let _ = self.histogram().record(value);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Hist) {
        if let Some(theirs) = other.get() {
            // Same bounds on both sides, so `add` cannot fail.
            let _ = self.histogram().add(theirs);
        }
        self.clamped += other.clamped;
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.get().map_or(0, |h| h.len())
    }

    /// The value at a percentile (0–100), in milliseconds, or `None` when empty.
    pub fn percentile_ms(&self, percentile: f64) -> Option<f64> {
        self.get()
            .map(|h| h.value_at_percentile(percentile) as f64 / 1000.0)
    }

    /// Mean in milliseconds.
    pub fn mean_ms(&self) -> Option<f64> {
        self.get().map(|h| h.mean() / 1000.0)
    }

    /// Max in milliseconds.
    pub fn max_ms(&self) -> Option<f64> {
        self.get().map(|h| h.max() as f64 / 1000.0)
    }

    /// Min in milliseconds.
    pub fn min_ms(&self) -> Option<f64> {
        self.get().map(|h| h.min() as f64 / 1000.0)
    }

    /// The histogram as HdrHistogram's V2 compressed encoding in base64
    /// (what other HdrHistogram libraries read), or `None` when empty.
    pub fn to_base64(&self) -> Option<String> {
        let h = self.get()?;
        let mut bytes = Vec::new();
        hdrhistogram::serialization::V2DeflateSerializer::new()
            .serialize(h, &mut bytes)
            .ok()?;
        Some(b64::encode(&bytes))
    }

    /// Reads `to_base64`'s output back (into this crate's bounds).
    pub fn from_base64(text: &str, clamped: u64) -> Result<Hist, String> {
        let bytes = b64::decode(text)?;
        let read: Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
            .deserialize(&mut &bytes[..])
            .map_err(|e| format!("not an HdrHistogram: {e:?}"))?;
        let mut hist = Hist::new();
        if !read.is_empty() {
            hist.histogram()
                .add(&read)
                .map_err(|e| format!("histogram out of range: {e:?}"))?;
        }
        hist.clamped = clamped;
        Ok(hist)
    }
}

/// A histogram kept packed (HdrHistogram's V2 encoding, a few hundred bytes
/// for a second's samples instead of the ~190 KiB of counts a `Hist`
/// holds), for the per-second series: a stage of an hour keeps 7,200 of
/// them. Written and read in a summary exactly as a `Hist`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(into = "Hist", try_from = "Hist")]
pub struct PackedHist {
    /// The encoded histogram, `None` when empty.
    bytes: Option<Vec<u8>>,
    /// Values above the bound, recorded as the bound.
    clamped: u64,
}

impl PackedHist {
    /// Packs `hist`.
    pub fn pack(hist: &Hist) -> PackedHist {
        let bytes = hist.get().and_then(|h| {
            let mut bytes = Vec::new();
            hdrhistogram::serialization::V2Serializer::new()
                .serialize(h, &mut bytes)
                .ok()
                .map(|_| bytes)
        });
        PackedHist {
            bytes,
            clamped: hist.clamped,
        }
    }

    /// The histogram again (packed from one of ours, so it decodes).
    pub fn unpack(&self) -> Hist {
        let mut hist = Hist::new();
        hist.clamped = self.clamped;
        if let Some(bytes) = &self.bytes {
            let read: Result<Histogram<u64>, _> =
                hdrhistogram::serialization::Deserializer::new().deserialize(&mut &bytes[..]);
            if let Ok(read) = read {
                if !read.is_empty() {
                    let _ = hist.histogram().add(&read);
                }
            }
        }
        hist
    }

    /// Adds another packed histogram's counts.
    pub fn merge(&mut self, other: &PackedHist) {
        let mut hist = self.unpack();
        hist.merge(&other.unpack());
        *self = PackedHist::pack(&hist);
    }
}

impl From<PackedHist> for Hist {
    fn from(packed: PackedHist) -> Hist {
        packed.unpack()
    }
}

impl TryFrom<Hist> for PackedHist {
    type Error = String;

    fn try_from(hist: Hist) -> Result<PackedHist, String> {
        Ok(PackedHist::pack(&hist))
    }
}

/// A histogram as a summary holds it: derived figures for readers (never
/// read back), the clamped count and the encoded histogram.
#[derive(Serialize, Deserialize)]
struct HistWire {
    #[serde(default, skip_deserializing)]
    count: u64,
    #[serde(default, skip_deserializing)]
    min: Option<f64>,
    #[serde(default, skip_deserializing)]
    mean: Option<f64>,
    #[serde(default, skip_deserializing)]
    p50: Option<f64>,
    #[serde(default, skip_deserializing)]
    p90: Option<f64>,
    #[serde(default, skip_deserializing)]
    p95: Option<f64>,
    #[serde(default, skip_deserializing)]
    p99: Option<f64>,
    #[serde(default, skip_deserializing)]
    p99_9: Option<f64>,
    #[serde(default, skip_deserializing)]
    max: Option<f64>,
    clamped: u64,
    hdr: Option<String>,
}

impl From<Hist> for HistWire {
    fn from(h: Hist) -> HistWire {
        HistWire {
            count: h.count(),
            min: h.min_ms(),
            mean: h.mean_ms(),
            p50: h.percentile_ms(50.0),
            p90: h.percentile_ms(90.0),
            p95: h.percentile_ms(95.0),
            p99: h.percentile_ms(99.0),
            p99_9: h.percentile_ms(99.9),
            max: h.max_ms(),
            clamped: h.clamped,
            hdr: h.to_base64(),
        }
    }
}

impl TryFrom<HistWire> for Hist {
    type Error = String;

    fn try_from(wire: HistWire) -> Result<Hist, String> {
        match wire.hdr {
            Some(text) => Hist::from_base64(&text, wire.clamped),
            None => Ok(Hist {
                inner: None,
                clamped: wire.clamped,
            }),
        }
    }
}

/// Standard base64 (RFC 4648, with padding), for histograms in JSON.
mod b64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    pub fn decode(text: &str) -> Result<Vec<u8>, String> {
        let text = text.trim_end_matches('=');
        let mut out = Vec::with_capacity(text.len() * 3 / 4);
        let mut acc = 0u32;
        let mut bits = 0;
        for c in text.bytes() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return Err(format!("`{}` is not base64", c as char)),
            };
            acc = (acc << 6) | u32::from(v);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_clamps_and_counts() {
        let mut h = Hist::new();
        h.record_us(0);
        h.record_us(1500);
        h.record_us(limits::HISTOGRAM_US_MAX + 5);
        h.record(Duration::from_secs(100_000));
        assert_eq!(h.count(), 4);
        assert_eq!(h.clamped, 2);
        assert!(h.percentile_ms(100.0).unwrap() >= 3_599_000.0);
    }

    #[test]
    fn histograms_survive_base64_and_json() {
        for len in 0..7 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 5) as u8).collect();
            assert_eq!(b64::decode(&b64::encode(&bytes)).unwrap(), bytes);
        }
        assert_eq!(b64::encode(b"hdr"), "aGRy");
        assert_eq!(b64::encode(b"hd"), "aGQ=");
        assert!(b64::decode("a$").is_err());
        let mut h = Hist::new();
        assert!(h.to_base64().is_none());
        let empty: Hist = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(empty, h);
        for v in [1u64, 10, 100, 1_000, 12_345, 3_000_000] {
            h.record_us(v);
        }
        h.clamped = 3;
        let text = serde_json::to_string(&h).unwrap();
        let back: Hist = serde_json::from_str(&text).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.count(), 6);
        for p in [0.0, 50.0, 99.0, 100.0] {
            assert_eq!(back.percentile_ms(p), h.percentile_ms(p));
        }
        // The derived figures are written for readers, never read back.
        let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["count"], 6);
        value["p99"] = serde_json::json!(0.0);
        let back: Hist = serde_json::from_value(value).unwrap();
        assert_eq!(back.percentile_ms(99.0), h.percentile_ms(99.0));
        let bad = serde_json::json!({"clamped": 0, "hdr": "not base64!"});
        assert!(serde_json::from_value::<Hist>(bad).is_err());
    }

    #[test]
    fn packed_histograms_are_small_and_exact() {
        let mut h = Hist::new();
        for v in 0..1_000u64 {
            h.record_us(100 + v * 37 % 20_000);
        }
        h.clamped = 2;
        let packed = PackedHist::pack(&h);
        assert!(packed.bytes.as_ref().unwrap().len() < 4_096);
        assert_eq!(packed.unpack(), h);
        let mut sum = packed.clone();
        sum.merge(&packed);
        let mut twice = h.clone();
        twice.merge(&h);
        assert_eq!(sum.unpack(), twice);
        // In a summary it is written and read as the histogram itself.
        let text = serde_json::to_string(&packed).unwrap();
        assert_eq!(text, serde_json::to_string(&h).unwrap());
        assert_eq!(serde_json::from_str::<PackedHist>(&text).unwrap(), packed);
        assert_eq!(PackedHist::pack(&Hist::new()).unpack(), Hist::new());
    }
}
