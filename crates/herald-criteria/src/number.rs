//! Number and quantity search values and their prefixes (R4 search, "number" and
//! "quantity").
//!
//! Numbers are held as fixed-point integers (`i128`, 18 decimal places), so decimal
//! values compare exactly: `0.1 + 0.2` issues of binary floats cannot change a match.
//! Magnitudes up to 10^20 are representable; anything larger or finer is rejected in
//! criteria and yields no value in a resource.
//!
//! A search value's precision implies a range: `100` means `[99.5, 100.5)`, `100.00`
//! means `[99.995, 100.005)`. Resource values are taken as the exact values written.
//! Prefixes, for a search value `v` with implied range `[lo, hi)` and a resource value
//! `x`:
//!
//! | prefix | matches when |
//! |---|---|
//! | `eq` (default) | `lo <= x < hi` |
//! | `ne` | not `eq` (over all of the element's values: none is `eq`) |
//! | `gt` / `lt` | `x > v` / `x < v` |
//! | `ge` / `le` | `x >= v` / `x <= v` |
//! | `sa` / `eb` | `x >= hi` / `x < lo`: beyond the whole implied range |
//! | `ap` | within 10 % of `v` (the spec's recommendation), or `eq` |
//!
//! Exponent notation (`1e2`) is rejected in criteria: the spec's own example for it
//! (`1e2` meaning `[95, 105)`) contradicts its precision rule, so Herald does not guess.
//!
//! Quantities: `[prefix]number|system|code` compares the value and requires
//! `Quantity.system` and `Quantity.code` to equal the given ones; `number||code`
//! requires the code *or* the unit to equal `code`; a plain number compares the value
//! in any unit. No unit conversion is made (`1 g` does not match `1000 mg`); a
//! resource Quantity with a `comparator` (`<5`) has no exact value and never matches.

use serde_json::Value;

use crate::date::Prefix;

/// 10^18: the fixed-point scale.
const SCALE: i128 = 1_000_000_000_000_000_000;
const MAX_DECIMALS: u32 = 18;

/// A search number: its value and implied range `[lo, hi)`, fixed-point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SearchNumber {
    pub(crate) value: i128,
    pub(crate) lo: i128,
    pub(crate) hi: i128,
}

/// Parses a search value `-?digits[.digits]` into its value and implied range.
pub(crate) fn parse_search_number(s: &str) -> Option<SearchNumber> {
    if s.contains(['e', 'E']) {
        return None;
    }
    let (value, decimals) = parse_fixed(s)?;
    // Half a unit of the last written digit (none at the finest representable one).
    let half = match MAX_DECIMALS.checked_sub(decimals + 1) {
        Some(exponent) => 5 * 10_i128.pow(exponent),
        None => 0,
    };
    Some(SearchNumber {
        value,
        lo: value.checked_sub(half)?,
        hi: value.checked_add(half.max(1))?,
    })
}

/// A resource's number (a JSON number, or a decimal in a string for robustness).
pub(crate) fn element_number(node: &Value) -> Option<i128> {
    match node {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                return i128::from(i).checked_mul(SCALE);
            }
            // Shortest text that reads back as the same f64: what the JSON said.
            parse_fixed(&n.to_string()).map(|(v, _)| v)
        }
        _ => None,
    }
}

/// `-?digits[.digits][e[+-]digits]` → (fixed-point value, decimals written).
fn parse_fixed(s: &str) -> Option<(i128, u32)> {
    let (mantissa, exponent) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (s, 0),
    };
    let (negative, digits) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa.strip_prefix('+').unwrap_or(mantissa)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.contains('.') && frac.is_empty() {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let decimals = i32::try_from(frac.len()).ok()?.checked_sub(exponent)?;
    let decimals = u32::try_from(decimals.max(0)).ok()?;
    if decimals > MAX_DECIMALS || int.len() + frac.len() > 38 {
        return None;
    }
    let all: i128 = format!("{int}{frac}").parse().ok()?;
    // all × 10^(exponent − frac.len()) × 10^18
    let shift = i32::try_from(MAX_DECIMALS)
        .ok()?
        .checked_add(exponent)?
        .checked_sub(i32::try_from(frac.len()).ok()?)?;
    let value = if shift >= 0 {
        all.checked_mul(10_i128.checked_pow(u32::try_from(shift).ok()?)?)?
    } else {
        all / 10_i128.checked_pow(u32::try_from(-shift).ok()?)?
    };
    Some((if negative { -value } else { value }, decimals))
}

/// Whether the resource value `x` satisfies `prefix param` (see the module docs);
/// `ne` is handled by the caller over all values.
pub(crate) fn number_test(prefix: Prefix, param: &SearchNumber, x: i128) -> bool {
    let eq = param.lo <= x && x < param.hi;
    match prefix {
        Prefix::Eq => eq,
        Prefix::Ne => !eq,
        Prefix::Gt => x > param.value,
        Prefix::Lt => x < param.value,
        Prefix::Ge => x >= param.value,
        Prefix::Le => x <= param.value,
        Prefix::Sa => x >= param.hi,
        Prefix::Eb => x < param.lo,
        Prefix::Ap => {
            let tenth = param.value.saturating_abs() / 10;
            eq || (param.value.saturating_sub(tenth) <= x && x <= param.value.saturating_add(tenth))
        }
    }
}

/// The units a quantity search value requires.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum QuantityUnit {
    /// A plain number: any unit.
    Any,
    /// `number|system|code`.
    SystemCode(String, String),
    /// `number||code`: the code or the unit.
    CodeOrUnit(String),
}

/// One compiled quantity value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct QuantityQuery {
    pub(crate) prefix: Prefix,
    pub(crate) number: SearchNumber,
    pub(crate) unit: QuantityUnit,
}

/// The exact value of a Quantity element whose unit satisfies `unit`, if it has one.
pub(crate) fn quantity_value(node: &Value, unit: &QuantityUnit) -> Option<i128> {
    let object = node.as_object()?;
    if object.contains_key("comparator") {
        return None;
    }
    let text = |key: &str| object.get(key).and_then(Value::as_str);
    let unit_ok = match unit {
        QuantityUnit::Any => true,
        QuantityUnit::SystemCode(system, code) => {
            text("system") == Some(system.as_str()) && text("code") == Some(code.as_str())
        }
        QuantityUnit::CodeOrUnit(code) => {
            text("code") == Some(code.as_str()) || text("unit") == Some(code.as_str())
        }
    };
    if !unit_ok {
        return None;
    }
    element_number(object.get("value")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> i128 {
        parse_fixed(s).unwrap_or_else(|| panic!("{s}")).0
    }

    #[test]
    fn implied_ranges() {
        let p = parse_search_number("100").expect("valid in this test");
        assert_eq!((p.lo, p.value, p.hi), (n("99.5"), n("100"), n("100.5")));
        let p = parse_search_number("100.00").expect("valid in this test");
        assert_eq!((p.lo, p.hi), (n("99.995"), n("100.005")));
        let p = parse_search_number("-0.5").expect("valid in this test");
        assert_eq!((p.lo, p.hi), (n("-0.55"), n("-0.45")));
        assert!(parse_search_number("1e2").is_none());
        for bad in ["", "-", "1.", ".5", "1.2.3", "x", "1,5", "0x10", "1e", "١"] {
            assert!(parse_search_number(bad).is_none(), "{bad}");
        }
        assert!(parse_search_number("1.0000000000000000001").is_none());
        assert!(parse_search_number(&"9".repeat(40)).is_none());
    }

    #[test]
    fn prefixes() {
        let p = parse_search_number("100").expect("valid in this test");
        let cases = [
            (Prefix::Eq, "100.4", true),
            (Prefix::Eq, "100.5", false),
            (Prefix::Eq, "99.5", true),
            (Prefix::Ne, "101", true),
            (Prefix::Gt, "100.1", true),
            (Prefix::Gt, "100", false),
            (Prefix::Ge, "100", true),
            (Prefix::Lt, "99.9", true),
            (Prefix::Le, "100.1", false),
            (Prefix::Sa, "100.4", false),
            (Prefix::Sa, "100.5", true),
            (Prefix::Eb, "99.4", true),
            (Prefix::Eb, "99.5", false),
            (Prefix::Ap, "110", true),
            (Prefix::Ap, "110.1", false),
            (Prefix::Ap, "90", true),
        ];
        for (prefix, x, want) in cases {
            assert_eq!(number_test(prefix, &p, n(x)), want, "{prefix:?} {x}");
        }
    }

    #[test]
    fn json_numbers() {
        assert_eq!(element_number(&serde_json::json!(185)), Some(n("185")));
        assert_eq!(element_number(&serde_json::json!(0.1)), Some(n("0.1")));
        assert_eq!(
            element_number(&serde_json::json!(1e-7)),
            Some(n("0.0000001"))
        );
        assert_eq!(element_number(&serde_json::json!(1e300)), None);
        assert_eq!(element_number(&serde_json::json!("5")), None);
        for hostile in ["1e2147483647", "1e-2147483648", "-1e38", "9e37", "1.5e-30"] {
            let _ = parse_fixed(hostile);
        }
        let huge = parse_search_number(&format!("-{}", "9".repeat(20))).expect("in range");
        // Extreme values only need to not overflow.
        let _ = number_test(Prefix::Ap, &huge, i128::MIN);
    }
}
