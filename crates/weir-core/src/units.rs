//! Durations and sizes as people type them on a command line or in a file: `500ms`, `30s`,
//! `15m`, `24h`, `7d`; `500MiB`, `2GiB`, `2GB`, `10kB`. Shared by the `weir` and `mille`
//! command lines.

/// `500ms`, `30s`, `15m`, `24h`, `7d`, or plain ms.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    const UNITS: &[(&str, u64)] = &[
        ("ms", 1),
        ("s", 1000),
        ("m", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
    ];
    with_unit(s, UNITS, "a duration (500ms, 30s, 15m, 24h, 7d, or ms)")
}

/// `500MiB`, `2GiB`, `10KiB` (powers of 1,024), `2GB`, `500MB`, `10kB` (powers of 1,000),
/// or bytes; units in any case.
pub fn parse_size(s: &str) -> Result<u64, String> {
    const UNITS: &[(&str, u64)] = &[
        ("kib", 1 << 10),
        ("mib", 1 << 20),
        ("gib", 1 << 30),
        ("tib", 1 << 40),
        ("kb", 1_000),
        ("mb", 1_000_000),
        ("gb", 1_000_000_000),
        ("tb", 1_000_000_000_000),
        ("b", 1),
    ];
    with_unit(s, UNITS, "a size (500MiB, 2GiB, 2GB, or bytes)")
}

/// A whole number with an optional unit suffix (the first in `units` that matches, compared
/// in lower case).
fn with_unit(s: &str, units: &[(&str, u64)], what: &str) -> Result<u64, String> {
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    let (num, mult) = units
        .iter()
        .find_map(|(suf, m)| lower.strip_suffix(suf).map(|n| (n, *m)))
        .unwrap_or((lower.as_str(), 1));
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse_or_refuse() {
        assert_eq!(parse_duration_ms("15m").ok(), Some(900_000));
        assert_eq!(parse_duration_ms("500ms").ok(), Some(500));
        assert_eq!(parse_duration_ms("7d").ok(), Some(604_800_000));
        assert_eq!(parse_duration_ms("5M").ok(), Some(300_000));
        assert_eq!(parse_duration_ms("250").ok(), Some(250));
        assert!(parse_duration_ms("soon").is_err());
        assert!(parse_duration_ms("-5s").is_err());
        assert_eq!(parse_size("2GiB").ok(), Some(2 << 30));
        assert_eq!(parse_size("2GB").ok(), Some(2_000_000_000));
        assert_eq!(parse_size("500mb").ok(), Some(500_000_000));
        assert_eq!(parse_size("10KiB").ok(), Some(10 << 10));
        assert_eq!(parse_size("1000").ok(), Some(1000));
        assert_eq!(parse_size("64 MiB").ok(), Some(64 << 20));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999TiB").is_err());
    }
}
