-- Which verifier instance (`owner`) wrote verdicts of which bucket of a topic in which tenure
-- (`epoch`) of the topic's shard, and when it last did (sharded verifiers only), so a check can
-- prove that no bucket's verdicts were written by two instances in one epoch. Writing a row again
-- keeps the later `written_ms`.
CREATE TABLE verdict_owners (
    topic           TEXT    NOT NULL,
    bucket_start_ms INTEGER NOT NULL,
    epoch           INTEGER NOT NULL,
    owner           TEXT    NOT NULL,
    written_ms      INTEGER NOT NULL,
    PRIMARY KEY (topic, bucket_start_ms, epoch, owner)
) WITHOUT ROWID;
