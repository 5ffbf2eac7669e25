//! FHIRPath `Date`, `DateTime` and `Time` values with their precision, partial-value
//! comparison (an uncertain comparison yields "empty") and calendar arithmetic.

use std::cmp::Ordering;
use std::fmt;

use chrono::{Datelike, Duration, Months, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

/// Which of the three temporal types a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemporalKind {
    Date,
    DateTime,
    Time,
}

/// Precision levels, from year to millisecond.
pub(crate) const YEAR: u8 = 1;
pub(crate) const MONTH: u8 = 2;
pub(crate) const DAY: u8 = 3;
pub(crate) const HOUR: u8 = 4;
pub(crate) const MINUTE: u8 = 5;
pub(crate) const SECOND: u8 = 6;
pub(crate) const MILLISECOND: u8 = 7;

/// A date, date-time or time of some precision, with an optional UTC offset in
/// minutes (date-times only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Temporal {
    pub kind: TemporalKind,
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    millis: u32,
    precision: u8,
    tz_minutes: Option<i32>,
}

/// A calendar unit usable in date arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CalendarUnit {
    Year,
    Month,
    Week,
    Day,
    Hour,
    Minute,
    Second,
    Millisecond,
}

fn digits(text: &str, count: usize) -> Option<(u32, &str)> {
    if text.len() < count || !text.as_bytes()[..count].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let (head, rest) = text.split_at(count);
    Some((head.parse().ok()?, rest))
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    NaiveDate::from_ymd_opt(next_year, next_month, 1)
        .and_then(|d| d.pred_opt())
        .map_or(28, |d| d.day())
}

impl Temporal {
    fn empty(kind: TemporalKind) -> Temporal {
        Temporal {
            kind,
            year: 0,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
            millis: 0,
            precision: YEAR,
            tz_minutes: None,
        }
    }

    pub fn precision(&self) -> u8 {
        self.precision
    }

    /// Parses `YYYY[-MM[-DD]]`, returning the rest of the text.
    fn date_part<'t>(text: &'t str, value: &mut Temporal) -> Option<&'t str> {
        let (year, mut rest) = digits(text, 4)?;
        value.year = i32::try_from(year).ok()?;
        value.precision = YEAR;
        if let Some(r) = rest.strip_prefix('-') {
            let (month, r) = digits(r, 2)?;
            if !(1..=12).contains(&month) {
                return None;
            }
            value.month = month;
            value.precision = MONTH;
            rest = r;
            if let Some(r) = rest.strip_prefix('-') {
                let (day, r) = digits(r, 2)?;
                if day < 1 || day > days_in_month(value.year, month) {
                    return None;
                }
                value.day = day;
                value.precision = DAY;
                rest = r;
            }
        }
        Some(rest)
    }

    fn time_part<'t>(text: &'t str, value: &mut Temporal) -> Option<&'t str> {
        let (hour, mut rest) = digits(text, 2)?;
        if hour > 23 {
            return None;
        }
        value.hour = hour;
        value.precision = HOUR;
        if let Some(r) = rest.strip_prefix(':') {
            let (minute, r) = digits(r, 2)?;
            if minute > 59 {
                return None;
            }
            value.minute = minute;
            value.precision = MINUTE;
            rest = r;
            if let Some(r) = rest.strip_prefix(':') {
                let (second, r) = digits(r, 2)?;
                if second > 59 {
                    return None;
                }
                value.second = second;
                value.precision = SECOND;
                rest = r;
                if let Some(r) = rest.strip_prefix('.') {
                    let count = r.bytes().take_while(u8::is_ascii_digit).count();
                    if count == 0 {
                        return None;
                    }
                    let fraction = &r[..count.min(3)];
                    let padded = format!("{fraction:0<3}");
                    value.millis = padded.parse().ok()?;
                    value.precision = MILLISECOND;
                    rest = &r[count..];
                }
            }
        }
        Some(rest)
    }

    fn timezone(text: &str) -> Option<(Option<i32>, &str)> {
        if let Some(rest) = text.strip_prefix('Z') {
            return Some((Some(0), rest));
        }
        let sign = match text.as_bytes().first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Some((None, text)),
        };
        let (hours, rest) = digits(&text[1..], 2)?;
        let rest = rest.strip_prefix(':')?;
        let (minutes, rest) = digits(rest, 2)?;
        if hours > 14 || minutes > 59 {
            return None;
        }
        let total = i32::try_from(hours * 60 + minutes).ok()?;
        Some((Some(sign * total), rest))
    }

    /// Parses a FHIR/FHIRPath date (`YYYY[-MM[-DD]]`).
    pub fn parse_date(text: &str) -> Option<Temporal> {
        let mut value = Temporal::empty(TemporalKind::Date);
        let rest = Temporal::date_part(text, &mut value)?;
        rest.is_empty().then_some(value)
    }

    /// Parses a date-time: a date, optionally `T` and a (partial) time, optionally a
    /// timezone. A trailing `T` with no time (`2015T`, FHIRPath literal form) is allowed.
    pub fn parse_datetime(text: &str) -> Option<Temporal> {
        let mut value = Temporal::empty(TemporalKind::DateTime);
        let rest = Temporal::date_part(text, &mut value)?;
        if rest.is_empty() {
            return Some(value);
        }
        let rest = rest.strip_prefix('T')?;
        if rest.is_empty() {
            return Some(value);
        }
        if value.precision != DAY {
            return None;
        }
        let rest = Temporal::time_part(rest, &mut value)?;
        let (tz, rest) = Temporal::timezone(rest)?;
        value.tz_minutes = tz;
        rest.is_empty().then_some(value)
    }

    /// Parses a time of day `hh[:mm[:ss[.fff]]]` (no timezone).
    pub fn parse_time(text: &str) -> Option<Temporal> {
        let mut value = Temporal::empty(TemporalKind::Time);
        let rest = Temporal::time_part(text, &mut value)?;
        rest.is_empty().then_some(value)
    }

    pub(crate) fn now() -> Temporal {
        let now = chrono::Utc::now().naive_utc();
        let mut value = Temporal::from_naive(TemporalKind::DateTime, now, MILLISECOND);
        value.tz_minutes = Some(0);
        value
    }

    fn from_naive(kind: TemporalKind, dt: NaiveDateTime, precision: u8) -> Temporal {
        Temporal {
            kind,
            year: dt.year(),
            month: dt.month(),
            day: dt.day(),
            hour: dt.hour(),
            minute: dt.minute(),
            second: dt.second(),
            millis: dt.nanosecond() / 1_000_000 % 1000,
            precision,
            tz_minutes: None,
        }
    }

    pub(crate) fn today() -> Temporal {
        let mut value = Temporal::now();
        value.kind = TemporalKind::Date;
        value.precision = DAY;
        value.tz_minutes = None;
        value
    }

    pub(crate) fn time_of_day() -> Temporal {
        let mut value = Temporal::now();
        value.kind = TemporalKind::Time;
        value.tz_minutes = None;
        value
    }

    /// This value as a date-time (dates convert without time).
    pub(crate) fn to_datetime(self) -> Option<Temporal> {
        match self.kind {
            TemporalKind::Time => None,
            _ => Some(Temporal {
                kind: TemporalKind::DateTime,
                ..self
            }),
        }
    }

    /// This value as a date (date-times are truncated to day precision).
    pub(crate) fn to_date(self) -> Option<Temporal> {
        match self.kind {
            TemporalKind::Time => None,
            _ => Some(Temporal {
                kind: TemporalKind::Date,
                precision: self.precision.min(DAY),
                hour: 0,
                minute: 0,
                second: 0,
                millis: 0,
                tz_minutes: None,
                ..self
            }),
        }
    }

    fn naive(&self) -> Option<NaiveDateTime> {
        NaiveDate::from_ymd_opt(self.year, self.month, self.day)?.and_hms_milli_opt(
            self.hour,
            self.minute,
            self.second,
            self.millis,
        )
    }

    /// Shifted by `offset` minutes to UTC (only meaningful with a time part).
    fn shifted_to_utc(&self, offset: i32) -> Option<Temporal> {
        let shifted = self.naive()? - Duration::minutes(i64::from(offset));
        let mut value = Temporal::from_naive(self.kind, shifted, self.precision);
        value.tz_minutes = Some(0);
        Some(value)
    }

    /// Field values for comparison; seconds and milliseconds form one level.
    fn fields(&self) -> [i64; 6] {
        [
            i64::from(self.year),
            i64::from(self.month),
            i64::from(self.day),
            i64::from(self.hour),
            i64::from(self.minute),
            i64::from(self.second) * 1000 + i64::from(self.millis),
        ]
    }

    fn merged_precision(&self) -> u8 {
        self.precision.min(SECOND)
    }

    fn compare_fields(&self, other: &Temporal) -> Option<Ordering> {
        let (start, a_prec, b_prec) = if self.kind == TemporalKind::Time {
            (HOUR, self.merged_precision(), other.merged_precision())
        } else {
            (YEAR, self.merged_precision(), other.merged_precision())
        };
        let a = self.fields();
        let b = other.fields();
        let common = a_prec.min(b_prec);
        for level in start..=common {
            let i = usize::from(level - 1);
            match a[i].cmp(&b[i]) {
                Ordering::Equal => {}
                unequal => return Some(unequal),
            }
        }
        (a_prec == b_prec).then_some(Ordering::Equal)
    }

    /// Compares two temporal values; `None` when the kinds are not comparable or when
    /// the answer depends on unknown precision or timezone (FHIRPath "empty").
    pub(crate) fn partial_compare(&self, other: &Temporal) -> Option<Ordering> {
        let self_time = self.kind == TemporalKind::Time;
        let other_time = other.kind == TemporalKind::Time;
        if self_time != other_time {
            return None;
        }
        if self_time {
            return self.compare_fields(other);
        }
        let both_timed = self.precision >= HOUR && other.precision >= HOUR;
        if !both_timed {
            return self.compare_fields(other);
        }
        match (self.tz_minutes, other.tz_minutes) {
            (None, None) => self.compare_fields(other),
            (Some(a), Some(b)) => self
                .shifted_to_utc(a)?
                .compare_fields(&other.shifted_to_utc(b)?),
            (Some(a), None) => {
                let left = self.shifted_to_utc(a)?;
                // The timezone-less value could be anywhere from UTC-12 to UTC+14.
                let early = left.compare_fields(&other.shifted_to_utc(14 * 60)?);
                let late = left.compare_fields(&other.shifted_to_utc(-12 * 60)?);
                if early == late {
                    early
                } else {
                    None
                }
            }
            (None, Some(_)) => other.partial_compare(self).map(Ordering::reverse),
        }
    }

    /// Same kind family, same precision and equal value (for `~`): precision
    /// mismatch is "not equivalent" rather than unknown.
    pub(crate) fn equivalent(&self, other: &Temporal) -> bool {
        self.merged_precision() == other.merged_precision()
            && self.partial_compare(other) == Some(Ordering::Equal)
    }

    /// Adds `amount` of `unit` (negative to subtract), keeping the precision.
    pub(crate) fn add(&self, amount: i64, unit: CalendarUnit) -> Option<Temporal> {
        if self.kind == TemporalKind::Time {
            let millis = match unit {
                CalendarUnit::Hour => amount.checked_mul(3_600_000)?,
                CalendarUnit::Minute => amount.checked_mul(60_000)?,
                CalendarUnit::Second => amount.checked_mul(1000)?,
                CalendarUnit::Millisecond => amount,
                _ => return None,
            };
            let base =
                NaiveTime::from_hms_milli_opt(self.hour, self.minute, self.second, self.millis)?;
            let (time, _) = base.overflowing_add_signed(Duration::try_milliseconds(millis)?);
            let mut value = *self;
            value.hour = time.hour();
            value.minute = time.minute();
            value.second = time.second();
            value.millis = time.nanosecond() / 1_000_000 % 1000;
            return Some(value);
        }
        let base = self.naive()?;
        let shifted = match unit {
            CalendarUnit::Year | CalendarUnit::Month => {
                let months = if unit == CalendarUnit::Year {
                    amount.checked_mul(12)?
                } else {
                    amount
                };
                let count = Months::new(u32::try_from(months.unsigned_abs()).ok()?);
                if months >= 0 {
                    base.checked_add_months(count)?
                } else {
                    base.checked_sub_months(count)?
                }
            }
            CalendarUnit::Week => {
                base.checked_add_signed(Duration::try_days(amount.checked_mul(7)?)?)?
            }
            CalendarUnit::Day => base.checked_add_signed(Duration::try_days(amount)?)?,
            CalendarUnit::Hour => base.checked_add_signed(Duration::try_hours(amount)?)?,
            CalendarUnit::Minute => base.checked_add_signed(Duration::try_minutes(amount)?)?,
            CalendarUnit::Second => base.checked_add_signed(Duration::try_seconds(amount)?)?,
            CalendarUnit::Millisecond => {
                base.checked_add_signed(Duration::try_milliseconds(amount)?)?
            }
        };
        if !(1..=9999).contains(&shifted.year()) {
            return None;
        }
        let mut value = Temporal::from_naive(self.kind, shifted, self.precision);
        value.tz_minutes = self.tz_minutes;
        Some(value)
    }

    /// Lowest (or highest) value this partial value could stand for, at `precision`
    /// (FHIRPath `lowBoundary`/`highBoundary`).
    pub(crate) fn boundary(&self, precision: u8, high: bool) -> Option<Temporal> {
        let mut value = *self;
        // `T08` is not a legal FHIR time: like the HL7 suite, read it as `T08:00`.
        if value.kind == TemporalKind::DateTime && value.precision == HOUR {
            value.precision = MINUTE;
        }
        let source = value;
        let (min_precision, max_precision) = match self.kind {
            TemporalKind::Date => (YEAR, DAY),
            TemporalKind::DateTime => (YEAR, MILLISECOND),
            TemporalKind::Time => (HOUR, MILLISECOND),
        };
        if !(min_precision..=max_precision).contains(&precision) {
            return None;
        }
        if source.precision < MONTH && self.kind != TemporalKind::Time {
            value.month = if high { 12 } else { 1 };
        }
        if source.precision < DAY && self.kind != TemporalKind::Time {
            value.day = if high {
                days_in_month(value.year, value.month)
            } else {
                1
            };
        }
        if source.precision < HOUR {
            value.hour = if high { 23 } else { 0 };
        }
        if source.precision < MINUTE {
            value.minute = if high { 59 } else { 0 };
        }
        if source.precision < SECOND {
            value.second = if high { 59 } else { 0 };
        }
        if source.precision < MILLISECOND {
            value.millis = if high { 999 } else { 0 };
        }
        if self.kind == TemporalKind::DateTime && precision >= HOUR && value.tz_minutes.is_none() {
            value.tz_minutes = Some(if high { -12 * 60 } else { 14 * 60 });
        }
        value.precision = precision;
        Some(value)
    }

    /// Number of digits of the precision (FHIRPath `precision()`).
    pub(crate) fn precision_digits(&self) -> i64 {
        match self.kind {
            TemporalKind::Time => match self.precision {
                HOUR => 2,
                MINUTE => 4,
                SECOND => 6,
                _ => 9,
            },
            _ => match self.precision {
                YEAR => 4,
                MONTH => 6,
                DAY => 8,
                HOUR => 10,
                MINUTE => 12,
                SECOND => 14,
                _ => 17,
            },
        }
    }

    /// The precision level for a digit count (inverse of [`precision_digits`]).
    pub(crate) fn precision_for_digits(kind: TemporalKind, digits: i64) -> Option<u8> {
        match kind {
            TemporalKind::Time => match digits {
                2 => Some(HOUR),
                4 => Some(MINUTE),
                6 => Some(SECOND),
                9 => Some(MILLISECOND),
                _ => None,
            },
            _ => match digits {
                4 => Some(YEAR),
                6 => Some(MONTH),
                8 => Some(DAY),
                10 => Some(HOUR),
                12 => Some(MINUTE),
                14 => Some(SECOND),
                17 => Some(MILLISECOND),
                _ => None,
            },
        }
    }
}

impl fmt::Display for Temporal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = |f: &mut fmt::Formatter<'_>| -> fmt::Result {
            write!(f, "{:02}", self.hour)?;
            if self.precision >= MINUTE {
                write!(f, ":{:02}", self.minute)?;
            }
            if self.precision >= SECOND {
                write!(f, ":{:02}", self.second)?;
            }
            if self.precision >= MILLISECOND {
                write!(f, ".{:03}", self.millis)?;
            }
            Ok(())
        };
        if self.kind == TemporalKind::Time {
            return time(f);
        }
        write!(f, "{:04}", self.year)?;
        if self.precision >= MONTH {
            write!(f, "-{:02}", self.month)?;
        }
        if self.precision >= DAY {
            write!(f, "-{:02}", self.day)?;
        }
        if self.kind == TemporalKind::DateTime && self.precision >= HOUR {
            write!(f, "T")?;
            time(f)?;
            match self.tz_minutes {
                None => {}
                Some(0) => write!(f, "Z")?,
                Some(offset) => {
                    let sign = if offset < 0 { '-' } else { '+' };
                    let offset = offset.abs();
                    write!(f, "{sign}{:02}:{:02}", offset / 60, offset % 60)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn compares_with_precision_and_timezones() {
        let dt = |s| Temporal::parse_datetime(s).unwrap();
        assert_eq!(
            dt("2017-11-05T01:30:00.0-04:00").partial_compare(&dt("2017-11-05T00:30:00.0-05:00")),
            Some(Ordering::Equal)
        );
        assert_eq!(
            dt("2012-04-15").partial_compare(&dt("2012-04-15T10:00:00")),
            None
        );
        assert_eq!(
            dt("2012-04-15T15:00:00Z").partial_compare(&dt("2012-04-15T10:00:00")),
            None
        );
        assert_eq!(
            dt("2012-04-15T15:30:31").partial_compare(&dt("2012-04-15T15:30:31.0")),
            Some(Ordering::Equal)
        );
        assert!(Temporal::parse_datetime("2015-02-30").is_none());
        assert_eq!(
            dt("1973-12-25T00:00:00.000+10:00")
                .add(7, CalendarUnit::Day)
                .unwrap()
                .to_string(),
            "1974-01-01T00:00:00.000+10:00"
        );
    }
}
