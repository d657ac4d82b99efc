//! Kubernetes resource quantities (`500m`, `64Mi`, `1e3`, `2`), as numbers.

/// The quantity as a number of its unit (`500m` → 0.5, `64Mi` → 67108864).
/// `None` when malformed.
pub fn parse(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let value: f64 = num.parse().ok()?;
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(value * multiplier)
}

/// The quantity in thousandths of its unit (`100m` → 100, `2` → 2000);
/// fractional milli-units round up, as upstream's `MilliValue`.
pub fn parse_milli(s: &str) -> Option<i64> {
    parse(s).map(|v| (v * 1000.0).ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_with_decimal_binary_milli_and_exponent_suffixes_parse() {
        assert_eq!(parse("500m"), Some(0.5));
        assert_eq!(parse("64Mi"), Some(67108864.0));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("1x"), None);
        assert_eq!(parse_milli("100m"), Some(100));
        assert_eq!(parse_milli("1Gi"), Some(1_073_741_824_000));
        assert_eq!(parse_milli("0.0001"), Some(1));
    }
}
