//! What a topic or tier name may be, checked alike wherever one enters: the ingest API, the
//! tap's and the verifier's configuration.

/// Longest topic name Kafka allows.
pub const MAX_TOPIC_LEN: usize = 249;
/// Longest tier name.
pub const MAX_TIER_LEN: usize = 128;
/// At most this many characters of a rejected name are echoed back.
const SHOWN_CHARS: usize = 64;

/// Check a topic name: Kafka's rule, 1–249 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn check_topic(name: &str) -> Result<(), String> {
    let ok = (1..=MAX_TOPIC_LEN).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not a Kafka topic name: 1 to {MAX_TOPIC_LEN} characters of letters, digits, '.', '_' and '-'",
            shown(name)
        ))
    }
}

/// Check a tier name: 1–128 characters of `[A-Za-z0-9._/-]`.
pub fn check_tier(name: &str) -> Result<(), String> {
    let ok = (1..=MAX_TIER_LEN).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not a tier name: 1 to {MAX_TIER_LEN} characters of letters, digits, '.', '_', '/' and '-'",
            shown(name)
        ))
    }
}

/// `s` quoted, cut to [`SHOWN_CHARS`] characters.
fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_names_are_the_ingest_apis() {
        for good in ["producer", "broker", "consumer/billing", "mirror.eu-west_1", &"t".repeat(MAX_TIER_LEN)] {
            assert_eq!(check_tier(good), Ok(()), "{good}");
        }
        for bad in ["", "p q", "ü", "a\"b", &"t".repeat(MAX_TIER_LEN + 1)] {
            let err = check_tier(bad).unwrap_err();
            assert!(err.contains("is not a tier name"), "{bad}: {err}");
        }
        assert!(check_tier(&"x".repeat(500)).unwrap_err().contains("(500 bytes)"), "a long name is cut");
    }

    #[test]
    fn topic_names_follow_kafkas_rule() {
        for good in ["orders", "a.b_c-d", &"t".repeat(MAX_TOPIC_LEN)] {
            assert_eq!(check_topic(good), Ok(()), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", &"t".repeat(MAX_TOPIC_LEN + 1)] {
            assert!(check_topic(bad).unwrap_err().contains("is not a Kafka topic name"), "{bad}");
        }
    }
}
