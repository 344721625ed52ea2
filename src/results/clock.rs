//! Wall-clock times as summaries and file names write them: milliseconds
//! since the Unix epoch in the model, RFC 3339 and `YYYYMMDDTHHMMSSZ` for
//! people, all in UTC, without a calendar dependency.

use std::time::{Duration, SystemTime};

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The instant `unix_ms` milliseconds after the epoch.
pub fn from_unix_ms(unix_ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(unix_ms)
}

/// `YYYYMMDDTHHMMSSZ` in UTC (file names).
pub fn timestamp(at: SystemTime) -> String {
    let [y, mo, d, h, mi, se] = utc_fields(at);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{se:02}Z")
}

/// RFC 3339 in UTC.
pub fn rfc3339(at: SystemTime) -> String {
    let [y, mo, d, h, mi, se] = utc_fields(at);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}Z")
}

/// Year, month, day, hour, minute, second in UTC.
fn utc_fields(at: SystemTime) -> [i64; 6] {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = (secs % 86_400) as i64;
    [
        y,
        i64::from(mo),
        i64::from(d),
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
    ]
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_305_600 + 3661);
        assert_eq!(timestamp(t), "20261122T010101Z");
        assert_eq!(rfc3339(t), "2026-11-22T01:01:01Z");
        assert_eq!(timestamp(SystemTime::UNIX_EPOCH), "19700101T000000Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
        assert_eq!(unix_ms(from_unix_ms(1_234_567)), 1_234_567);
    }
}
