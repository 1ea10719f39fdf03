//! Kubernetes resource quantities (`resource.ParseQuantity`), as far as admission needs them:
//! parsing, sign, exact comparison and the rounded-up integer value.
//!
//! Values are held exactly in nano-units (`i128`); anything finer than 1n is rounded up, as
//! Kubernetes does. Quantities too large for that representation (beyond ~10^29) are reported
//! as [`QuantityError::TooLarge`] rather than silently saturated.

use std::cmp::Ordering;

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string does not follow the quantity grammar.
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Format,
    /// The suffix is made of suffix characters but is not a known suffix (Go's `ErrSuffix`).
    #[error("unable to parse quantity's suffix")]
    Suffix,
    /// The number has no digits (Go's `ErrNumeric`).
    #[error("unable to parse numeric part of quantity")]
    Numeric,
    /// The string is a quantity but its value does not fit the representation.
    #[error("quantity is too large")]
    TooLarge,
}

/// Splits a quantity string the way Go's `parseQuantityString` does: sign, integer digits,
/// fraction digits, suffix (suffix characters, then an optional sign and digits).
fn split_go(s: &str) -> Result<(bool, &str, &str, &str), QuantityError> {
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let digits_end = |t: &str| t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let int_end = digits_end(rest);
    let (int_part, mut rest) = rest.split_at(int_end);
    let mut frac_part = "";
    if let Some(after_dot) = rest.strip_prefix('.') {
        let frac_end = digits_end(after_dot);
        frac_part = &after_dot[..frac_end];
        rest = &after_dot[frac_end..];
    }
    let suffix = rest;
    let letters_end = rest
        .find(|c: char| !"eEinumkKMGTP".contains(c))
        .unwrap_or(rest.len());
    let tail = &rest[letters_end..];
    let tail = tail.strip_prefix(['+', '-']).unwrap_or(tail);
    if !tail.chars().all(|c| c.is_ascii_digit()) {
        return Err(QuantityError::Format);
    }
    Ok((negative, int_part, frac_part, suffix))
}

/// How a quantity was written; decides its canonical rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `Ki`, `Mi`, ... suffixes.
    BinarySi,
    /// `m`, `k`, `M`, ... suffixes or none.
    DecimalSi,
    /// `e3`-style exponents.
    DecimalExponent,
}

/// A parsed quantity. Equality and ordering compare values only.
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

const NANO: i128 = 1_000_000_000;

impl std::fmt::Display for Quantity {
    /// The canonical form, as Go's `Quantity.String()` renders it: binary suffixes only for
    /// integral values of at least 1024 in magnitude, otherwise the largest decimal suffix
    /// (or `e<n>` exponent) that keeps the mantissa integral.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.nanos;
        if self.format == Format::BinarySi && n % NANO == 0 && (n / NANO).abs() >= 1024 {
            let mut v = n / NANO;
            let mut i = 0;
            while i < 6 && v % 1024 == 0 {
                v /= 1024;
                i += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][i];
            return write!(f, "{v}{suffix}");
        }
        if n == 0 {
            return f.write_str("0");
        }
        let mut mantissa = n;
        let mut exp: i32 = -9;
        while exp < 18 && mantissa % 1000 == 0 {
            mantissa /= 1000;
            exp += 3;
        }
        if self.format == Format::DecimalExponent {
            return if exp == 0 {
                write!(f, "{mantissa}")
            } else {
                write!(f, "{mantissa}e{exp}")
            };
        }
        let suffix = match exp {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            _ => "E",
        };
        write!(f, "{mantissa}{suffix}")
    }
}

impl Quantity {
    /// Decodes a JSON value as Go's `Quantity.UnmarshalJSON` does (how upstream reads role
    /// `resources` and kdapp `minResources`): `null` is zero, a string is trimmed of white space,
    /// any other value (a JSON number, say) is parsed from its text.
    pub fn parse_json(v: &serde_json::Value) -> Result<Self, QuantityError> {
        match v {
            serde_json::Value::Null => Self::parse("0"),
            serde_json::Value::String(s) => Self::parse(s.trim()),
            other => Self::parse(&other.to_string()),
        }
    }

    /// Parses a quantity string such as `4Gi`, `500m`, `1.5`, `2e3`, exactly as Go's
    /// `resource.ParseQuantity` (no white space allowed).
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        if s.is_empty() {
            return Err(QuantityError::Format);
        }
        let (negative, int_part, frac_part, suffix) = split_go(s)?;
        let (exp10, exp2) = parse_suffix(suffix)?;
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(QuantityError::Numeric);
        }
        let mut mantissa: u128 = 0;
        for c in int_part.chars().chain(frac_part.chars()) {
            let digit = u128::from(c.to_digit(10).ok_or(QuantityError::Format)?);
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(digit))
                .ok_or(QuantityError::TooLarge)?;
        }
        let frac_len = i64::try_from(frac_part.len()).map_err(|_| QuantityError::TooLarge)?;
        let format = if exp2 > 0 {
            Format::BinarySi
        } else if suffix.starts_with(['e', 'E']) {
            Format::DecimalExponent
        } else {
            Format::DecimalSi
        };
        let dec = 9 - frac_len + exp10;
        let mut value = mantissa;
        value = value.checked_mul(pow(2, exp2)?).ok_or(QuantityError::TooLarge)?;
        if dec >= 0 {
            value = value.checked_mul(pow(10, dec)?).ok_or(QuantityError::TooLarge)?;
        } else if -dec > 38 {
            value = u128::from(value != 0);
        } else {
            let div = pow(10, -dec)?;
            value = value / div + u128::from(!value.is_multiple_of(div));
        }
        let nanos = i128::try_from(value).map_err(|_| QuantityError::TooLarge)?;
        Ok(Self {
            nanos: if negative { -nanos } else { nanos },
            format,
        })
    }

    /// The exact value in nano-units (what Go's `Quantity.Cmp` compares).
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// -1, 0 or 1.
    pub fn sign(&self) -> i32 {
        match self.nanos.cmp(&0) {
            Ordering::Less => -1,
            Ordering::Equal => 0,
            Ordering::Greater => 1,
        }
    }

    /// True for a zero quantity.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// The integer value rounded up (Go's `Quantity.Value()`).
    pub fn value(&self) -> i128 {
        let whole = self.nanos.div_euclid(1_000_000_000);
        if self.nanos.rem_euclid(1_000_000_000) != 0 {
            whole + 1
        } else {
            whole
        }
    }
}

fn pow(base: u128, exp: i64) -> Result<u128, QuantityError> {
    let exp = u32::try_from(exp).map_err(|_| QuantityError::TooLarge)?;
    base.checked_pow(exp).ok_or(QuantityError::TooLarge)
}

/// Returns (decimal exponent, binary exponent).
fn parse_suffix(suffix: &str) -> Result<(i64, i64), QuantityError> {
    Ok(match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        s if s.len() > 1 && s.starts_with(['e', 'E']) => {
            let exp = &s[1..];
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                return Err(QuantityError::Suffix);
            }
            let e: i64 = exp.parse().map_err(|_| QuantityError::TooLarge)?;
            if e.abs() > 60 {
                return Err(QuantityError::TooLarge);
            }
            (e, 0)
        }
        _ => return Err(QuantityError::Suffix),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn parses_suffixes_exactly() {
        assert_eq!(q("1Gi"), q("1024Mi"));
        assert_eq!(q("1k"), q("1000"));
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(q("500m").value(), 1);
        assert_eq!(q("4Gi").value(), 4 * 1024 * 1024 * 1024);
        assert_eq!(q("1.5").value(), 2);
        assert!(q("1.5Gi") < q("2Gi"));
        assert_eq!(q("0").sign(), 0);
        assert_eq!(q("-1").sign(), -1);
        assert!(q("0Gi").is_zero());
        assert_eq!(q(".5").value(), 1);
    }

    #[test]
    fn renders_canonically_like_go() {
        for (input, canonical) in [
            ("4096Mi", "4Gi"),
            ("1024", "1024"),
            ("512Mi", "512Mi"),
            ("1000Ki", "1000Ki"),
            ("0.5Ki", "512"),
            ("1000Mi", "1000Mi"),
            ("2000m", "2"),
            ("0.5", "500m"),
            ("1500", "1500"),
            ("3000", "3k"),
            ("1e3", "1e3"),
            ("1000e3", "1e6"),
            ("0", "0"),
            ("100m", "100m"),
        ] {
            assert_eq!(q(input).to_string(), canonical, "{input}");
        }
    }

    #[test]
    fn json_values_decode_like_go_unmarshal_json() {
        use serde_json::json;
        assert_eq!(Quantity::parse_json(&json!(2)).unwrap(), q("2"));
        assert_eq!(Quantity::parse_json(&json!(1.5)).unwrap(), q("1500m"));
        assert_eq!(Quantity::parse_json(&json!(" 1Gi ")).unwrap(), q("1Gi"));
        assert!(Quantity::parse_json(&json!(null)).unwrap().is_zero());
        assert!(Quantity::parse_json(&json!(true)).is_err());
        // ParseQuantity itself (storage size, shared memory, minStorage) does not trim
        assert!(Quantity::parse(" 1Gi").is_err());
    }

    #[test]
    fn errors_are_classified_like_go() {
        use QuantityError::{Format, Numeric, Suffix};
        for (input, err) in [
            ("", Format),
            ("1Gb", Format),
            ("1 Gi", Format),
            ("1.2.3", Format),
            ("abc", Format),
            ("1K", Suffix),
            ("1iG", Suffix),
            ("1e", Suffix),
            ("1Ki3", Suffix),
            ("Gi", Numeric),
            (".", Numeric),
        ] {
            assert_eq!(Quantity::parse(input).err(), Some(err), "{input:?}");
        }
        assert_eq!(q("5."), q("5"));
        assert_eq!(q("1e-3"), q("1m"));
        assert_eq!(q("+2"), q("2"));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "abc", "1.2.3", "1Gb", "1e", "Gi", "1 Gi", "."] {
            assert!(Quantity::parse(bad).is_err(), "{bad} should fail");
        }
    }
}
