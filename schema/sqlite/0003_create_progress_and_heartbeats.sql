-- How far each stream of a (topic, tier) has got in event time, as last reported. `stream` is
-- `p:<partition>` for Kafka tiers (the row outlives the partition's owner) or `a:<agent_id>`.
-- `version` only grows per stream: an upsert with a lower version is ignored.
CREATE TABLE progress (
    topic          TEXT    NOT NULL,
    tier           TEXT    NOT NULL,
    stream         TEXT    NOT NULL,
    agent_id       TEXT    NOT NULL,
    watermark_ms   INTEGER NOT NULL,
    caught_up      INTEGER NOT NULL,
    reported_at_ms INTEGER NOT NULL,
    version        INTEGER NOT NULL,
    PRIMARY KEY (topic, tier, stream)
) WITHOUT ROWID;

-- Each agent instance's latest heartbeat per (topic, tier) it feeds; `stopped` marks a clean stop.
CREATE TABLE heartbeats (
    topic         TEXT    NOT NULL,
    tier          TEXT    NOT NULL,
    agent_id      TEXT    NOT NULL,
    started_at_ms INTEGER NOT NULL,
    heartbeat_ms  INTEGER NOT NULL,
    open_from_ms  INTEGER,
    stopped       INTEGER NOT NULL,
    resumes       INTEGER NOT NULL,
    version       INTEGER NOT NULL,
    PRIMARY KEY (topic, tier, agent_id)
) WITHOUT ROWID;

-- Why a verdict is pending, indeterminate or unreached (JSON of VerdictDetail), beside `verdicts`
-- (a new table, not a column: the CQL test server has no ALTER TABLE, and both stores stay alike).
CREATE TABLE verdict_details (
    topic           TEXT    NOT NULL,
    bucket_start_ms INTEGER NOT NULL,
    tier            TEXT    NOT NULL,
    detail          TEXT    NOT NULL,
    PRIMARY KEY (topic, bucket_start_ms, tier)
) WITHOUT ROWID;
