-- Admission: memory reservations of concurrently running (or waiting) presize jobs.
CREATE TABLE reservation (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,  -- also the FIFO order
    row_id          INTEGER,                            -- resource_prediction.id of the attempt
    host            TEXT    NOT NULL,
    pid             INTEGER NOT NULL,                   -- the presize process holding it
    pid_start       INTEGER,                            -- its /proc start time (pid reuse guard)
    memory_mb       INTEGER NOT NULL,                   -- the cap it will run under
    predicted_mb    REAL    NOT NULL,                   -- predicted peak (for the burst rule)
    priority        INTEGER NOT NULL,                   -- 0 high, 1 normal, 2 low
    state           TEXT    NOT NULL CHECK (state IN ('waiting', 'running')),
    created_at      TEXT    NOT NULL,
    admitted_at     TEXT
);
CREATE INDEX idx_reservation_host_state ON reservation (host, state);
