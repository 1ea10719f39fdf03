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
    /// The string is a quantity but its value does not fit the representation.
    #[error("quantity is too large")]
    TooLarge,
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
    /// Parses a quantity string such as `4Gi`, `500m`, `1.5`, `2e3`.
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let s = s.trim();
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(QuantityError::Format);
        }
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        let mut mantissa: u128 = 0;
        for c in int_part.chars().chain(frac_part.chars()) {
            let digit = u128::from(c.to_digit(10).ok_or(QuantityError::Format)?);
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(digit))
                .ok_or(QuantityError::TooLarge)?;
        }
        let frac_len = i64::try_from(frac_part.len()).map_err(|_| QuantityError::TooLarge)?;
        let (exp10, exp2) = parse_suffix(suffix)?;
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
        s if s.starts_with(['e', 'E']) => {
            let exp = &s[1..];
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                return Err(QuantityError::Format);
            }
            let e: i64 = exp.parse().map_err(|_| QuantityError::TooLarge)?;
            if e.abs() > 60 {
                return Err(QuantityError::TooLarge);
            }
            (e, 0)
        }
        _ => return Err(QuantityError::Format),
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
    fn rejects_garbage() {
        for bad in ["", "abc", "1.2.3", "1Gb", "1e", "Gi", "1 Gi", "."] {
            assert!(Quantity::parse(bad).is_err(), "{bad} should fail");
        }
    }
}
