-- Cumulative tallies, one row per (topic, bucket, tier, agent). u64 values are stored as their
-- two's-complement i64 bit pattern. `version` only grows per agent: an upsert with a lower version
-- is ignored, so replays and retries can never lower a row.
CREATE TABLE tallies (
    topic           TEXT    NOT NULL,
    bucket_start_ms INTEGER NOT NULL,
    tier            TEXT    NOT NULL,
    agent_id        TEXT    NOT NULL,
    bucket_width_ms INTEGER NOT NULL,
    version         INTEGER NOT NULL,
    count           INTEGER NOT NULL,
    bytes           INTEGER NOT NULL,
    fp_xor          INTEGER NOT NULL,
    fp_sum          INTEGER NOT NULL,
    no_time         INTEGER NOT NULL,
    malformed       INTEGER NOT NULL,
    latency         BLOB    NOT NULL,
    PRIMARY KEY (topic, bucket_start_ms, tier, agent_id)
) WITHOUT ROWID;

-- The topic registry the verifier lists.
CREATE TABLE topics (
    topic TEXT PRIMARY KEY
) WITHOUT ROWID;

-- Tap agents' next offsets, written in the same transaction as their tallies.
CREATE TABLE tap_offsets (
    agent_id    TEXT    NOT NULL,
    topic       TEXT    NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    PRIMARY KEY (agent_id, topic, partition)
) WITHOUT ROWID;
