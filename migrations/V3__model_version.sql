-- Registry of trained models: every candidate retrain produced, and which were promoted.
CREATE TABLE model_version (
    version      TEXT    PRIMARY KEY,
    path         TEXT    NOT NULL,
    trained_at   TEXT    NOT NULL,
    rows         INTEGER NOT NULL,
    schema_hash  TEXT    NOT NULL,
    metrics      TEXT    NOT NULL,          -- JSON: holdout metrics of this and the current model
    promoted     INTEGER NOT NULL DEFAULT 0,
    promoted_at  TEXT
);
