//! The message fingerprint: `xxh64(payload, seed 0) XOR (u64(crc32c(business_id)) << 16)`.
//!
//! Fixed by DESIGN.md and pinned by `shared/vectors/fingerprint.tsv`. The business-id term makes
//! two identical payloads under different ids distinct, so a replaced message is a content
//! mismatch even when its body is a byte-for-byte copy.

/// Fingerprint of one message.
#[inline]
pub fn fingerprint(business_id: &[u8], payload: &[u8]) -> u64 {
    xxhash_rust::xxh64::xxh64(payload, 0) ^ (u64::from(crc32c::crc32c(business_id)) << 16)
}

/// Fingerprint from a payload hash computed elsewhere (apps in other languages send `xxh64`).
#[inline]
pub fn fingerprint_from_xxh64(business_id: &[u8], payload_xxh64: u64) -> u64 {
    payload_xxh64 ^ (u64::from(crc32c::crc32c(business_id)) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn vectors_path() -> PathBuf {
        std::env::var_os("KAUDIT_VECTORS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/fingerprint.tsv"))
    }

    /// Decodes the vectors' cell notation: `(empty)` and `N bytes of 'c' (0xHH)`.
    fn cell(text: &str) -> Vec<u8> {
        if text == "(empty)" {
            return Vec::new();
        }
        if let Some((n, rest)) = text.split_once(" bytes of '") {
            let n: usize = n.parse().expect("byte count");
            let byte = rest.chars().next().expect("byte char") as u8;
            return vec![byte; n];
        }
        text.as_bytes().to_vec()
    }

    #[test]
    fn reproduces_every_shared_vector() {
        let path = vectors_path();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let mut checked = 0;
        for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), 5, "malformed vector line {line:?}");
            let (id, payload) = (cell(cols[0]), cell(cols[1]));
            let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
            assert_eq!(xxhash_rust::xxh64::xxh64(&payload, 0), hex(cols[2]), "xxh64 of {line:?}");
            assert_eq!(u64::from(crc32c::crc32c(&id)), hex(cols[3]), "crc32c of {line:?}");
            assert_eq!(fingerprint(&id, &payload), hex(cols[4]), "fingerprint of {line:?}");
            assert_eq!(fingerprint_from_xxh64(&id, hex(cols[2])), hex(cols[4]));
            checked += 1;
        }
        assert_eq!(checked, 5, "expected every row of {}", path.display());
    }

    #[test]
    fn business_id_separates_identical_payloads() {
        assert_ne!(fingerprint(b"order-42", b"{}"), fingerprint(b"order-43", b"{}"));
        assert_eq!(fingerprint(b"", b"x"), xxhash_rust::xxh64::xxh64(b"x", 0));
    }
}
