//! FHIR date/dateTime/instant values as half-open ranges `[lo, hi)` of microseconds
//! since the Unix epoch, and the R4 date search prefixes over such ranges.
//!
//! A value's precision defines its range: `2024` covers the whole year, `2024-03-05`
//! the whole day, `2024-03-05T10:15:00Z` one second. Values without a time zone
//! (dates, and dateTimes a client sent without an offset) are treated as UTC; the spec
//! leaves this to the server. Open ends of a `Period` are infinite (`i64::MIN`/`MAX`).

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

/// A half-open instant range `[lo, hi)` in microseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct DateRange {
    pub(crate) lo: i64,
    pub(crate) hi: i64,
}

/// The R4 search comparison prefixes (dates, numbers, quantities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

impl Prefix {
    /// Parses a two-letter prefix code.
    pub(crate) fn from_code(code: &str) -> Option<Prefix> {
        Some(match code {
            "eq" => Prefix::Eq,
            "ne" => Prefix::Ne,
            "gt" => Prefix::Gt,
            "lt" => Prefix::Lt,
            "ge" => Prefix::Ge,
            "le" => Prefix::Le,
            "sa" => Prefix::Sa,
            "eb" => Prefix::Eb,
            "ap" => Prefix::Ap,
            _ => return None,
        })
    }

    /// The prefix's code.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Prefix::Eq => "eq",
            Prefix::Ne => "ne",
            Prefix::Gt => "gt",
            Prefix::Lt => "lt",
            Prefix::Ge => "ge",
            Prefix::Le => "le",
            Prefix::Sa => "sa",
            Prefix::Eb => "eb",
            Prefix::Ap => "ap",
        }
    }

    /// Whether `target` satisfies `prefix param` per the R4 search spec:
    /// - eq: the parameter range fully contains the target range;
    /// - gt/lt: the range above/below the parameter intersects the target;
    /// - ge/le: gt/lt or eq;
    /// - sa/eb: the target lies entirely after/before the parameter range;
    /// - ap: the target overlaps the parameter range widened on both sides by 10 % of
    ///   the gap between now (at evaluation) and the parameter's start, the spec's
    ///   recommendation ("10% of the gap between now and the date").
    ///
    /// `ne` is handled by the caller (it is "not eq" over all target values).
    pub(crate) fn test(self, param: DateRange, target: DateRange) -> bool {
        let eq = target.lo >= param.lo && target.hi <= param.hi;
        match self {
            Prefix::Eq => eq,
            Prefix::Ne => !eq,
            Prefix::Gt => target.hi > param.hi,
            Prefix::Lt => target.lo < param.lo,
            Prefix::Ge => eq || target.hi > param.hi,
            Prefix::Le => eq || target.lo < param.lo,
            Prefix::Sa => target.lo >= param.hi,
            Prefix::Eb => target.hi <= param.lo,
            Prefix::Ap => {
                let now = chrono::Utc::now().timestamp_micros();
                let margin = (now.saturating_sub(param.lo)).saturating_abs() / 10;
                let lo = param.lo.saturating_sub(margin);
                let hi = param.hi.saturating_add(margin);
                target.lo < hi && target.hi > lo
            }
        }
    }
}

/// Parses a FHIR date, dateTime or instant (or a search value of those shapes:
/// `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, `YYYY-MM-DDThh:mm[:ss[.fff…]][Z|±hh:mm]`) into the
/// range its precision covers. Returns `None` for anything malformed.
pub(crate) fn parse_range(s: &str) -> Option<DateRange> {
    let b = s.as_bytes();
    let year = digits(b, 0, 4)?;
    if b.len() == 4 {
        let lo = micros(date(year, 1, 1)?)?;
        let hi = micros(date(year + 1, 1, 1)?)?;
        return Some(DateRange { lo, hi });
    }
    if b.get(4) != Some(&b'-') {
        return None;
    }
    let month = digits(b, 5, 2)?;
    if b.len() == 7 {
        let lo = micros(date(year, month, 1)?)?;
        let (ny, nm) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        let hi = micros(date(ny, nm, 1)?)?;
        return Some(DateRange { lo, hi });
    }
    if b.get(7) != Some(&b'-') {
        return None;
    }
    let day_date = NaiveDate::from_ymd_opt(
        year,
        u32::try_from(month).ok()?,
        u32::try_from(digits(b, 8, 2)?).ok()?,
    )?;
    if b.len() == 10 {
        let lo = micros(day_date.and_time(NaiveTime::MIN))?;
        let hi = micros(day_date.succ_opt()?.and_time(NaiveTime::MIN))?;
        return Some(DateRange { lo, hi });
    }
    if b.get(10) != Some(&b'T') {
        return None;
    }
    parse_time(day_date, &s[11..])
}

/// Parses `hh:mm[:ss[.f]][tz]` on `day`.
fn parse_time(day: NaiveDate, s: &str) -> Option<DateRange> {
    let b = s.as_bytes();
    let hour = digits(b, 0, 2)?;
    if b.get(2) != Some(&b':') {
        return None;
    }
    let minute = digits(b, 3, 2)?;
    let mut pos = 5;
    let mut second = 0;
    let mut frac_micros: i64 = 0;
    // The width of the range in microseconds, set by the precision given.
    let mut width: i64 = 60_000_000;
    if b.get(pos) == Some(&b':') {
        second = digits(b, pos + 1, 2)?;
        pos += 3;
        width = 1_000_000;
        if b.get(pos) == Some(&b'.') {
            pos += 1;
            let start = pos;
            while b.get(pos).is_some_and(u8::is_ascii_digit) {
                pos += 1;
            }
            let frac = &s[start..pos];
            if frac.is_empty() {
                return None;
            }
            let used = &frac[..frac.len().min(6)];
            let scale = 10_i64.pow(u32::try_from(6 - used.len()).ok()?);
            frac_micros = used.parse::<i64>().ok()? * scale;
            width = scale;
        }
    }
    let offset_secs: i64 = match &s[pos..] {
        "" | "Z" => 0,
        tz => {
            let tb = tz.as_bytes();
            let sign = match tb.first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            if tb.len() != 6 || tb.get(3) != Some(&b':') {
                return None;
            }
            let oh = digits(tb, 1, 2)?;
            let om = digits(tb, 4, 2)?;
            if oh > 14 || om > 59 {
                return None;
            }
            sign * i64::from(oh * 3600 + om * 60)
        }
    };
    let time = NaiveTime::from_hms_opt(
        u32::try_from(hour).ok()?,
        u32::try_from(minute).ok()?,
        u32::try_from(second).ok()?,
    )?;
    let lo = micros(day.and_time(time))?
        .checked_add(frac_micros)?
        .checked_sub(offset_secs.checked_mul(1_000_000)?)?;
    Some(DateRange {
        lo,
        hi: lo.checked_add(width)?,
    })
}

/// Exactly `n` ASCII digits at `b[at..at + n]`.
fn digits(b: &[u8], at: usize, n: usize) -> Option<i32> {
    let slice = b.get(at..at + n)?;
    slice.iter().try_fold(0_i32, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + i32::from(c - b'0'))
    })
}

fn date(year: i32, month: i32, day: u32) -> Option<NaiveDateTime> {
    Some(NaiveDate::from_ymd_opt(year, u32::try_from(month).ok()?, day)?.and_time(NaiveTime::MIN))
}

fn micros(dt: NaiveDateTime) -> Option<i64> {
    let utc = dt.and_utc();
    utc.timestamp()
        .checked_mul(1_000_000)?
        .checked_add(i64::from(utc.timestamp_subsec_micros()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> DateRange {
        parse_range(s).unwrap_or_else(|| panic!("should parse: {s}"))
    }

    #[test]
    fn precisions() {
        let day = r("2024-03-05");
        assert_eq!(day.hi - day.lo, 86_400_000_000);
        assert_eq!(r("2024").lo, r("2024-01-01").lo);
        assert_eq!(r("2024").hi, r("2025").lo);
        assert_eq!(r("2024-12").hi, r("2025-01").lo);
        assert_eq!(r("2024-02").hi, r("2024-03-01").lo);
        let min = r("2024-03-05T10:15");
        assert_eq!(min.hi - min.lo, 60_000_000);
        let sec = r("2024-03-05T10:15:00Z");
        assert_eq!(sec.hi - sec.lo, 1_000_000);
        let ms = r("2024-03-05T10:15:00.123Z");
        assert_eq!(ms.hi - ms.lo, 1_000);
        assert_eq!(ms.lo - sec.lo, 123_000);
        assert_eq!(r("2024-03-05T11:15:00+01:00"), sec);
        assert_eq!(r("2024-03-05T05:15:00-05:00"), sec);
        assert_eq!(r("2024-03-05T10:15:00"), sec);
        let ns = r("2024-03-05T10:15:00.123456789Z");
        assert_eq!(ns.hi - ns.lo, 1);
    }

    #[test]
    fn malformed() {
        for s in [
            "",
            "20",
            "2024-",
            "2024-13",
            "2024-02-30",
            "2024-03-05T",
            "2024-03-05T25:00",
            "2024-03-05T10:15:00.Z",
            "2024-03-05T10:15:00+1:00",
            "2024-03-05 10:15",
            "abcd",
            "2024/03/05",
            "2024-03-05T10:15:00ZZ",
            "١٢٣٤",
        ] {
            assert!(parse_range(s).is_none(), "{s}");
        }
    }
}
