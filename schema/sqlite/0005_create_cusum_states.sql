-- Each CUSUM detector of the verifier per (topic, tier, signal): its state (`format` says how
-- `state` is encoded: 1 = the verifier's versioned binary), the last bucket it observed, the
-- buckets within the lateness horizon where it alarmed upward (JSON `[[bucket_start_ms, h], ...]`)
-- and when it was written, so a restarted verifier continues the baseline and the statistic.
-- An upsert for an older `last_bucket_ms` than the stored one is ignored.
CREATE TABLE cusum_states (
    topic          TEXT    NOT NULL,
    tier           TEXT    NOT NULL,
    signal         TEXT    NOT NULL,
    format         INTEGER NOT NULL,
    state          BLOB    NOT NULL,
    last_bucket_ms INTEGER NOT NULL,
    hits           TEXT    NOT NULL,
    updated_ms     INTEGER NOT NULL,
    PRIMARY KEY (topic, tier, signal)
) WITHOUT ROWID;
