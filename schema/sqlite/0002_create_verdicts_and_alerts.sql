-- The verifier's verdicts per (topic, bucket, tier), revised while late tallies arrive.
CREATE TABLE verdicts (
    topic            TEXT    NOT NULL,
    bucket_start_ms  INTEGER NOT NULL,
    tier             TEXT    NOT NULL,
    upstream_tier    TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    upstream_count   INTEGER NOT NULL,
    count            INTEGER NOT NULL,
    lost_fingerprint INTEGER,
    p99_ms           INTEGER,
    evaluated_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (topic, bucket_start_ms, tier)
) WITHOUT ROWID;

-- Alert state by dedup key, so a restarted verifier neither repeats nor forgets an alert.
CREATE TABLE alerts (
    dedup_key     TEXT PRIMARY KEY,
    state         TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- Notifications waiting for each sink, in order; removed once the receiver acknowledged them.
CREATE TABLE alert_outbox (
    sink      TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    dedup_key TEXT    NOT NULL,
    payload   TEXT    NOT NULL,
    attempts  INTEGER NOT NULL,
    PRIMARY KEY (sink, seq)
) WITHOUT ROWID;
