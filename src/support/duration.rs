//! Durations on the command line: `90s`, `30m`, `1h30m`, `2d`, and back (parsed as config keys are).

use std::time::Duration;

/// The longest duration a flag takes: 30 days.
const MAX_MS: i64 = 30 * 86_400_000;

/// `90s`, `30m`, `1h30m`, `2d` (or `250ms`) to milliseconds, as config keys take them (humantime):
/// positive and at most 30 days.
pub fn parse_ms(s: &str) -> Result<i64, String> {
    let ms = crate::config::parse_duration_ms(s)?;
    if ms <= 0 || ms > MAX_MS {
        return Err(format!("{s:?} must be positive and at most 30 days"));
    }
    Ok(ms)
}

/// As [`parse_ms`], but `0s` and `0m` are allowed and mean zero.
pub fn parse_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim_end_matches(['s', 'm']) == "0" {
        return Ok(Duration::ZERO);
    }
    parse_ms(s).map(|ms| Duration::from_millis(ms as u64))
}

/// `3600000` → `1h`: the largest unit that divides it.
pub fn human_ms(ms: i64) -> String {
    for (unit, n) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms % n == 0 {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_ms("90s"), Ok(90_000));
        assert_eq!(parse_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_ms("2d"), Ok(172_800_000));
        assert_eq!(parse_ms("250ms"), Ok(250));
        assert_eq!(parse_ms("1m30s"), Ok(90_000), "as in config files");
        assert!(parse_ms("1y").unwrap_err().contains("at most 30 days"));
        assert!(parse_ms("3 fortnights").unwrap_err().contains("not a duration"));
        assert!(parse_ms("h").unwrap_err().contains("not a duration"));
        assert!(parse_ms("0m").is_err());
        assert!(parse_ms("31d").unwrap_err().contains("at most 30 days"));
        assert_eq!(parse_or_zero("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_or_zero("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(human_ms(3_600_000), "1h");
        assert_eq!(human_ms(90_000), "90s");
        assert_eq!(human_ms(1_500), "1500ms");
    }
}
