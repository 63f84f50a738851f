-- The change index: one row per tally row written, stamped with the store's time of the write, so
-- the verifier re-reads only the buckets whose tallies changed since its last pass. Written in the
-- transaction of the tallies; rows older than a day are deleted as writes go on.
CREATE TABLE changes (
    written_ms      INTEGER NOT NULL,
    topic           TEXT    NOT NULL,
    bucket_start_ms INTEGER NOT NULL,
    tier            TEXT    NOT NULL,
    agent_id        TEXT    NOT NULL,
    PRIMARY KEY (written_ms, topic, bucket_start_ms, tier, agent_id)
) WITHOUT ROWID;
