//! Tier comparison, CUSUM detection and the query API (built in a later issue).
