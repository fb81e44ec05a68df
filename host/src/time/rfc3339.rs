//! Event times written as RFC 3339 text: `2026-01-01T10:00:03Z`, `2026-01-01T10:00:03.25+02:00`,
//! with `T`, `t` or a space between date and time, any number of fraction digits (kept to the
//! millisecond, truncated) and `Z`, `z` or a `±HH:MM` offset. A time without a zone
//! (`2026-01-01T10:00:03`) is taken as UTC. Leap seconds (`:60`) count as the next second.

use crate::record::EventTime;

/// Milliseconds since the Unix epoch (negative before 1970).
pub fn parse_millis(text: &str) -> Result<EventTime, String> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>, what: &str| -> Result<i64, String> {
        let digits = b
            .get(range.clone())
            .filter(|d| d.iter().all(u8::is_ascii_digit))
            .ok_or_else(|| format!("expected the {what} at position {}", range.start + 1))?;
        Ok(digits
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, allowed: &[u8], what: &str| -> Result<(), String> {
        match b.get(at) {
            Some(c) if allowed.contains(c) => Ok(()),
            _ => Err(format!("expected {what} at position {}", at + 1)),
        }
    };
    let year = num(0..4, "year (4 digits)")?;
    sep(4, b"-", "`-`")?;
    let month = num(5..7, "month (2 digits)")?;
    sep(7, b"-", "`-`")?;
    let day = num(8..10, "day (2 digits)")?;
    sep(10, b"Tt ", "`T` between date and time")?;
    let hour = num(11..13, "hour (2 digits)")?;
    sep(13, b":", "`:`")?;
    let minute = num(14..16, "minutes (2 digits)")?;
    sep(16, b":", "`:`")?;
    let second = num(17..19, "seconds (2 digits)")?;
    if !(1..=12).contains(&month) {
        return Err(format!("month {month} is not 1 to 12"));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(format!("day {day} is not in {year:04}-{month:02}"));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(format!(
            "{hour:02}:{minute:02}:{second:02} is not a time of day"
        ));
    }
    let mut at = 19;
    let mut millis = 0i64;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 3 {
                millis = millis * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return Err(format!("expected digits after `.` at position {}", at + 1));
        }
        for _ in (at - start)..3 {
            millis *= 10;
        }
    }
    let offset_minutes = match b.get(at) {
        None => 0, // no zone: UTC
        Some(b'Z' | b'z') => {
            at += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let h = num(at + 1..at + 3, "offset hours (2 digits)")?;
            sep(at + 3, b":", "`:` in the offset")?;
            let m = num(at + 4..at + 6, "offset minutes (2 digits)")?;
            if h > 23 || m > 59 {
                return Err(format!("offset {h:02}:{m:02} is out of range"));
            }
            at += 6;
            let total = h * 60 + m;
            if sign == b'-' {
                -total
            } else {
                total
            }
        }
        Some(_) => {
            return Err(format!(
                "expected `Z`, `+HH:MM` or `-HH:MM` at position {}",
                at + 1
            ))
        }
    };
    if at != b.len() {
        return Err(format!(
            "unexpected text after the time at position {}",
            at + 1
        ));
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Ok(seconds * 1_000 + millis)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rfc_3339_form_reads_to_the_same_instant() {
        let utc = 1_767_261_603_000; // 2026-01-01T10:00:03Z
        for text in [
            "2026-01-01T10:00:03Z",
            "2026-01-01t10:00:03z",
            "2026-01-01 10:00:03Z",
            "2026-01-01T10:00:03+00:00",
            "2026-01-01T10:00:03-00:00",
            "2026-01-01T12:00:03+02:00",
            "2026-01-01T04:30:03-05:30",
            "2025-12-31T23:00:03-11:00",
            "2026-01-01T10:00:03",
        ] {
            assert_eq!(parse_millis(text), Ok(utc), "{text}");
        }
        assert_eq!(parse_millis("2026-01-01T10:00:03.25Z"), Ok(utc + 250));
        assert_eq!(
            parse_millis("2026-01-01T10:00:03.123456789Z"),
            Ok(utc + 123)
        );
        assert_eq!(parse_millis("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_millis("1969-12-31T23:59:59.5Z"), Ok(-500));
        assert_eq!(parse_millis("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        assert_eq!(parse_millis("2016-12-31T23:59:60Z"), Ok(1_483_228_800_000));
    }

    #[test]
    fn malformed_times_say_where() {
        for (text, expect) in [
            ("yesterday", "year"),
            ("2026-13-01T00:00:00Z", "month 13"),
            ("2025-02-29T00:00:00Z", "day 29"),
            ("2026-01-01T24:00:00Z", "not a time of day"),
            ("2026-01-01", "`T` between date and time"),
            ("2026-01-01T10:00:03.Z", "digits after `.`"),
            ("2026-01-01T10:00:03+0200", "`:` in the offset"),
            ("2026-01-01T10:00:03Zjunk", "after the time"),
            ("2026-01-01T10:00:03 UTC", "`Z`, `+HH:MM`"),
        ] {
            let e = parse_millis(text).expect_err(text);
            assert!(e.contains(expect), "{text}: {e}");
        }
    }
}
