//! A small exact decimal (`mantissa × 10^-scale`) so that FHIRPath decimal arithmetic,
//! precision (`1.10` keeps two places) and equivalence (rounding to the least precise
//! operand) behave as the specification requires, which `f64` cannot do.

use std::cmp::Ordering;
use std::fmt;

/// Largest scale kept; results with more places are rounded.
const MAX_SCALE: u32 = 28;
/// Places kept by division and by functions computed through `f64`.
pub(crate) const DIVISION_SCALE: u32 = 8;

/// An exact decimal number.
#[derive(Debug, Clone, Copy)]
pub struct Decimal {
    mantissa: i128,
    scale: u32,
}

fn pow10(exp: u32) -> Option<i128> {
    10i128.checked_pow(exp)
}

impl Decimal {
    pub(crate) fn new(mantissa: i128, scale: u32) -> Decimal {
        Decimal { mantissa, scale }
    }

    pub(crate) fn from_int(value: i64) -> Decimal {
        Decimal::new(i128::from(value), 0)
    }

    /// Number of digits after the decimal point as written.
    pub fn scale(&self) -> u32 {
        self.scale
    }

    pub(crate) fn mantissa(&self) -> i128 {
        self.mantissa
    }

    /// Parses `-?digits(.digits)?`; nothing else (no exponent, no leading `+`).
    pub fn parse(text: &str) -> Option<Decimal> {
        let (negative, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int_part, frac_part) = match body.split_once('.') {
            Some((i, f)) => (i, f),
            None => (body, ""),
        };
        if int_part.is_empty()
            || !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
            || (body.contains('.') && frac_part.is_empty())
        {
            return None;
        }
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 36 {
            return None;
        }
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        let scale = u32::try_from(frac_part.len()).ok()?;
        let mut value = Decimal::new(if negative { -mantissa } else { mantissa }, scale);
        if scale > MAX_SCALE {
            value = value.round(MAX_SCALE)?;
        }
        Some(value)
    }

    pub(crate) fn from_f64(value: f64) -> Option<Decimal> {
        if !value.is_finite() {
            return None;
        }
        let rounded = format!("{value:.prec$}", prec = DIVISION_SCALE as usize);
        Decimal::parse(&rounded).map(Decimal::trimmed)
    }

    pub(crate) fn to_f64(self) -> f64 {
        // Precision loss is inherent to the functions computed through f64.
        (self.mantissa as f64) / 10f64.powi(self.scale as i32)
    }

    /// Removes trailing zeros after the decimal point (keeps at least one place).
    pub(crate) fn trimmed(self) -> Decimal {
        let mut value = self;
        while value.scale > 1 && value.mantissa % 10 == 0 {
            value.mantissa /= 10;
            value.scale -= 1;
        }
        value
    }

    fn rescale(self, scale: u32) -> Option<Decimal> {
        if scale >= self.scale {
            let factor = pow10(scale - self.scale)?;
            Some(Decimal::new(self.mantissa.checked_mul(factor)?, scale))
        } else {
            self.round(scale)
        }
    }

    fn aligned(a: Decimal, b: Decimal) -> Option<(i128, i128, u32)> {
        let scale = a.scale.max(b.scale);
        Some((
            a.rescale(scale)?.mantissa,
            b.rescale(scale)?.mantissa,
            scale,
        ))
    }

    pub(crate) fn checked_add(self, other: Decimal) -> Option<Decimal> {
        let (a, b, scale) = Decimal::aligned(self, other)?;
        Some(Decimal::new(a.checked_add(b)?, scale))
    }

    pub(crate) fn checked_sub(self, other: Decimal) -> Option<Decimal> {
        self.checked_add(other.neg())
    }

    pub(crate) fn checked_mul(self, other: Decimal) -> Option<Decimal> {
        let product = Decimal::new(
            self.mantissa.checked_mul(other.mantissa)?,
            self.scale + other.scale,
        );
        if product.scale > MAX_SCALE {
            product.round(MAX_SCALE)
        } else {
            Some(product)
        }
    }

    /// Division to [`DIVISION_SCALE`] places; `None` when dividing by zero.
    pub(crate) fn checked_div(self, other: Decimal) -> Option<Decimal> {
        if other.mantissa == 0 {
            return None;
        }
        // self / other = (m1 / 10^s1) / (m2 / 10^s2); compute with 1 guard digit.
        let target = DIVISION_SCALE + 1;
        let numerator = self.mantissa.checked_mul(pow10(target + other.scale)?)?;
        let denominator = other.mantissa.checked_mul(pow10(self.scale)?)?;
        let quotient = Decimal::new(numerator / denominator, target).round(DIVISION_SCALE)?;
        // `2 / 2` is `1`, not `1.00000000`.
        let mut value = quotient;
        while value.scale > 0 && value.mantissa % 10 == 0 {
            value.mantissa /= 10;
            value.scale -= 1;
        }
        Some(value)
    }

    /// Truncating integer division (`div`).
    pub(crate) fn checked_div_int(self, other: Decimal) -> Option<Decimal> {
        let (a, b, _) = Decimal::aligned(self, other)?;
        if b == 0 {
            return None;
        }
        Some(Decimal::new(a / b, 0))
    }

    pub(crate) fn checked_rem(self, other: Decimal) -> Option<Decimal> {
        let (a, b, scale) = Decimal::aligned(self, other)?;
        if b == 0 {
            return None;
        }
        Some(Decimal::new(a % b, scale))
    }

    pub(crate) fn neg(self) -> Decimal {
        Decimal::new(-self.mantissa, self.scale)
    }

    pub(crate) fn abs(self) -> Decimal {
        Decimal::new(self.mantissa.abs(), self.scale)
    }

    /// Rounds half away from zero to `places`.
    pub(crate) fn round(self, places: u32) -> Option<Decimal> {
        if places >= self.scale {
            return self.rescale(places);
        }
        let factor = pow10(self.scale - places)?;
        let quotient = self.mantissa / factor;
        let remainder = self.mantissa % factor;
        let adjust = if remainder.abs() * 2 >= factor {
            self.mantissa.signum()
        } else {
            0
        };
        Some(Decimal::new(quotient + adjust, places))
    }

    pub(crate) fn truncate(self) -> Option<i128> {
        Some(self.mantissa / pow10(self.scale)?)
    }

    pub(crate) fn floor(self) -> Option<i128> {
        let factor = pow10(self.scale)?;
        Some(self.mantissa.div_euclid(factor))
    }

    pub(crate) fn ceiling(self) -> Option<i128> {
        let factor = pow10(self.scale)?;
        let floor = self.mantissa.div_euclid(factor);
        Some(if self.mantissa.rem_euclid(factor) == 0 {
            floor
        } else {
            floor + 1
        })
    }
}

impl PartialEq for Decimal {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Decimal {}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        match Decimal::aligned(*self, *other) {
            Some((a, b, _)) => a.cmp(&b),
            // Alignment overflowed: compare through f64, good enough at that magnitude.
            None => self
                .to_f64()
                .partial_cmp(&other.to_f64())
                .unwrap_or(Ordering::Equal),
        }
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mantissa.unsigned_abs().to_string();
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let scale = self.scale as usize;
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int_part, frac_part) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{int_part}.{frac_part}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).unwrap()
    }

    #[test]
    fn arithmetic_keeps_precision() {
        assert_eq!(d("1.2").checked_add(d("1.8")).unwrap().to_string(), "3.0");
        assert_eq!(d("1.2").checked_mul(d("1.8")).unwrap().to_string(), "2.16");
        assert_eq!(
            d("1.2").checked_div(d("1.8")).unwrap().to_string(),
            "0.66666667"
        );
        assert_eq!(d("-0.0034").round(1).unwrap().to_string(), "0.0");
        assert_eq!(d("2.2").checked_rem(d("1.8")).unwrap().to_string(), "0.4");
        assert_eq!(d("-1.1").ceiling(), Some(-1));
        assert_eq!(d("-2.1").floor(), Some(-3));
        assert_eq!(d("1.10"), d("1.1"));
        assert!(Decimal::parse("1.").is_none());
        assert!(Decimal::parse("1.a").is_none());
        assert_eq!(Decimal::from_f64(9.0).unwrap().to_string(), "9.0");
    }
}
