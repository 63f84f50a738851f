-- Each tally row's difference sketch (`kaudit_schema::difference`, its own format version in its
-- first byte): what names the messages one tier has and another has not. NULL: the agent kept none.
-- Written and replaced with the row, under the same version rule.
ALTER TABLE tallies ADD COLUMN sketch BLOB;
