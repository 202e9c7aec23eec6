-- Operator tools: burst periods and recorded demand forecasts.

-- A period in which the host's admission may overcommit caps (sum of caps up to factor ×
-- budget) while the sum of predicted peaks still fits the budget. Manual ones come from
-- `presize burst`, automatic ones from the `[admission] auto_burst` rule.
CREATE TABLE burst (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    host        TEXT    NOT NULL,
    factor      REAL    NOT NULL CHECK (factor >= 1.0),
    source      TEXT    NOT NULL CHECK (source IN ('manual', 'auto')),
    who         TEXT    NOT NULL,           -- user name, or 'auto'
    why         TEXT    NOT NULL,
    started_at  TEXT    NOT NULL,           -- RFC 3339 UTC, milliseconds
    until       TEXT    NOT NULL,           -- expires by itself at this time
    ended_at    TEXT,                       -- set when ended before `until` (--off, demand gone)
    end_reason  TEXT
);
CREATE INDEX idx_burst_host_until ON burst (host, until);

-- Every `presize forecast` figure, one row per horizon, scored once its horizon has passed.
CREATE TABLE forecast_record (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    made_at             TEXT    NOT NULL,   -- the forecast's "now"
    recorded_at         TEXT    NOT NULL,   -- wall-clock time it was written
    trigger             TEXT    NOT NULL,   -- cli | timer
    horizon_hours       REAL    NOT NULL,
    target_end          TEXT    NOT NULL,   -- made_at + horizon
    method              TEXT    NOT NULL,   -- which figure was given: damped-trend | weekly-profile
    trend_jobs          REAL    NOT NULL,   -- jobs over the horizon, damped trend
    profile_jobs        REAL,               -- jobs over the horizon, weekly profile (NULL: < 2 weeks)
    event_factor        REAL    NOT NULL DEFAULT 1.0, -- known events' multiplier on the jobs
    predicted_jobs      REAL    NOT NULL,   -- the figure given (method figure × event_factor)
    jobs_lo             REAL    NOT NULL,   -- its interval
    jobs_hi             REAL    NOT NULL,
    interval_nominal    REAL    NOT NULL,   -- nominal coverage of [lo, hi]
    interval_source     TEXT    NOT NULL,   -- scored (past errors) | model (count variance)
    predicted_gbh       REAL    NOT NULL,   -- memory demand over the horizon
    gbh_lo              REAL    NOT NULL,
    gbh_hi              REAL    NOT NULL,
    peak_concurrent_mb  REAL    NOT NULL,
    budget_mb           INTEGER NOT NULL,
    actual_jobs         REAL,               -- filled in by scoring
    actual_gbh          REAL,
    scored_at           TEXT
);
CREATE INDEX idx_forecast_record_pending ON forecast_record (scored_at, target_end);
CREATE INDEX idx_forecast_record_horizon ON forecast_record (horizon_hours, made_at);
-- The newest forecast in force (the automatic burst rule asks on each admission check).
CREATE INDEX idx_forecast_record_made ON forecast_record (made_at);
