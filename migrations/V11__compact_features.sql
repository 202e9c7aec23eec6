-- presize at a million rows: a row's `features` is stored compactly. New rows hold a BLOB
-- (format 1, `src/store/features.rs`): the values only, with the id of their name list here;
-- each distinct name list (the names of one feature schema, sorted) is stored once.
CREATE TABLE feature_names (
    id      INTEGER PRIMARY KEY,
    hash    TEXT    NOT NULL UNIQUE,   -- the schema hash rule over the names
    names   TEXT    NOT NULL           -- JSON array of the names, in the order values are stored
);

-- Existing rows hold the JSON object name -> number as TEXT. SQL cannot write the binary
-- form, so the store converts them right after this migration, in batches of 2,000 rows,
-- and deletes this marker with the last batch (an interrupted conversion resumes on the
-- next open). A JSON value that is not an object of numbers (or not JSON at all) stays TEXT
-- unchanged; readers accept both forms.
CREATE TABLE pending_conversion (what TEXT PRIMARY KEY);
INSERT INTO pending_conversion (what) VALUES ('features');

-- (job_key, settled_at) from V1: no query reads it since V7 (a key's earlier runs come from
-- idx_resource_prediction_prior, its window from key_history); ~49 bytes per row.
DROP INDEX IF EXISTS idx_resource_prediction_job_key;
