//! `presize status`: the host now — running and waiting jobs with their reservations, the
//! budget in use, the burst in force, the model and any fallback, the last retrain and the
//! next timer runs.
//!
//! Reads only, and only by index: the reservation ledger by (host, state), each job's row
//! by its primary key, the burst in force by (host, until), the small model registry. Its
//! cost does not grow with the number of settled rows in the store.

use std::path::Path;
use std::time::SystemTime;

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::executor::burst::{self, BurstError, BurstRecord};
use crate::store::Store;
use crate::util::rfc3339;

/// Errors of `status`.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("database error while {what}: {source}")]
    Db {
        what: &'static str,
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Burst(#[from] BurstError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

fn db(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StatusError {
    move |source| StatusError::Db { what, source }
}

/// One job holding or waiting for a reservation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStatus {
    pub reservation_id: i64,
    /// `resource_prediction.id` of the attempt.
    pub row_id: Option<i64>,
    /// 1-based place in the queue (waiting jobs only).
    pub queue_position: Option<usize>,
    pub job_key: Option<String>,
    pub script: Option<String>,
    /// `high`, `normal` or `low`.
    pub priority: &'static str,
    /// The cap reserved (MB).
    pub cap_mb: u64,
    /// The predicted peak (MB), which the burst rule sums.
    pub predicted_mb: f64,
    pub queued_at: String,
    pub admitted_at: Option<String>,
    /// Seconds since admission (running) or since queueing (waiting).
    pub elapsed_s: f64,
    pub timeout_s: Option<i64>,
    /// The sizing engine's evidence: history, model or novel.
    pub evidence: Option<String>,
    /// Where the memory cap came from: predicted, static, override or dry-run.
    pub memory_source: Option<String>,
    pub backend: Option<String>,
    pub memory_enforced: Option<bool>,
    /// The presize process holding the reservation is alive (a dead one is reclaimed by
    /// the next job that looks).
    pub holder_alive: bool,
    /// Id of the burst in force when a running job was admitted (its cap may be part of
    /// the overcommit), if any.
    pub admitted_during_burst: Option<i64>,
}

/// The model in force.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelStatus {
    /// The model file named by `<model dir>/current`, if any.
    pub current_file: Option<String>,
    /// The newest promoted version in the registry.
    pub promoted_version: Option<String>,
    pub promoted_at: Option<String>,
    /// `model` when a promoted model file is present, else `prior`.
    pub predictions_from: &'static str,
}

/// The host now (`presize status --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub now: String,
    pub host: String,
    pub budget_mb: u64,
    /// Caps of running jobs.
    pub reserved_mb: u64,
    /// Predicted peaks of running jobs.
    pub running_predicted_mb: f64,
    /// Caps of waiting jobs.
    pub waiting_mb: u64,
    /// The factor in force: the larger of `[admission] burst_factor` and the burst in force.
    pub burst_factor: f64,
    /// Caps may sum to this (budget × factor) while predicted peaks fit the budget.
    pub cap_limit_mb: u64,
    pub burst: Option<BurstRecord>,
    pub auto_burst: bool,
    pub running: Vec<JobStatus>,
    /// In queue order.
    pub waiting: Vec<JobStatus>,
    pub model: ModelStatus,
    /// Fallbacks in force (dry run, prior instead of a model, static limits, no cgroup).
    pub fallbacks: Vec<String>,
    pub last_retrain: Option<String>,
    /// Next run of `presize-retrain.timer`, or `unknown`.
    pub next_retrain: String,
    /// Next run of `presize-forecast.timer`, or `unknown`.
    pub next_forecast: String,
}

/// What `status` needs besides the store.
#[derive(Debug, Clone)]
pub struct StatusOptions<'a> {
    pub host: &'a str,
    pub budget_mb: u64,
    pub static_burst_factor: f64,
    pub auto_burst: bool,
    pub dry_run: bool,
    pub model_dir: &'a Path,
    /// The policy (for the live-coverage fallback rule) and the model's nominal coverage.
    pub policy: &'a crate::policy::Policy,
    pub nominal_coverage: f64,
}

fn prio_name(p: i64) -> &'static str {
    match p {
        0 => "high",
        1 => "normal",
        _ => "low",
    }
}

fn since(t: &str, now: SystemTime) -> f64 {
    humantime::parse_rfc3339_weak(t)
        .ok()
        .and_then(|t| now.duration_since(t).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The ledger of one host and state, by the (host, state) index.
const LEDGER_SQL: &str = "SELECT id, row_id, pid, pid_start, memory_mb, predicted_mb, priority,
        created_at, admitted_at
    FROM reservation WHERE host = ?1 AND state = ?2 ORDER BY priority, id";
/// One job's row, by primary key.
const ROW_SQL: &str = "SELECT job_key, script_path, applied_timeout_s, evidence, memory_source,
        backend, memory_enforced
    FROM resource_prediction WHERE id = ?1";

/// The burst in force on a host at a time, by the (host, until) index.
const BURST_AT_SQL: &str =
    "SELECT id FROM burst WHERE host = ?1 AND until > ?2 AND started_at <= ?2
        AND (ended_at IS NULL OR ended_at > ?2)
    ORDER BY id DESC LIMIT 1";

/// Read the status of `opts.host` at `now`.
pub fn read(
    store: &Store,
    now: SystemTime,
    opts: &StatusOptions<'_>,
) -> Result<Status, StatusError> {
    let conn = store.conn();
    let now_s = rfc3339(now);
    let mut res_st = conn
        .prepare_cached(LEDGER_SQL)
        .map_err(db("reading the reservation ledger"))?;
    let mut row_st = conn
        .prepare_cached(ROW_SQL)
        .map_err(db("reading a job row"))?;
    let mut burst_st = conn
        .prepare_cached(BURST_AT_SQL)
        .map_err(db("reading bursts"))?;
    let mut read_state = |state: &str| -> Result<Vec<JobStatus>, StatusError> {
        type Res = (
            i64,
            Option<i64>,
            i64,
            Option<i64>,
            i64,
            f64,
            i64,
            String,
            Option<String>,
        );
        let held: Vec<Res> = res_st
            .query_map(params![opts.host, state], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            })
            .map_err(db("reading the reservation ledger"))?
            .collect::<Result<_, _>>()
            .map_err(db("reading the reservation ledger"))?;
        let mut out = Vec::with_capacity(held.len());
        for (i, (id, row_id, pid, pid_start, mem, pred, prio, created, admitted)) in
            held.into_iter().enumerate()
        {
            type Row = (
                String,
                Option<String>,
                Option<i64>,
                Option<String>,
                Option<String>,
                Option<String>,
                i64,
            );
            let row: Option<Row> = match row_id {
                Some(rid) => row_st
                    .query_row([rid], |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                        ))
                    })
                    .optional()
                    .map_err(db("reading a job row"))?,
                None => None,
            };
            let running = state == "running";
            let admitted_during_burst = match (&admitted, running) {
                (Some(a), true) => burst_st
                    .query_row(params![opts.host, a], |r| r.get(0))
                    .optional()
                    .map_err(db("reading bursts"))?,
                _ => None,
            };
            let elapsed = since(
                if running {
                    admitted.as_deref().unwrap_or(&created)
                } else {
                    &created
                },
                now,
            );
            out.push(JobStatus {
                reservation_id: id,
                row_id,
                queue_position: (!running).then_some(i + 1),
                job_key: row.as_ref().map(|r| r.0.clone()),
                script: row.as_ref().and_then(|r| r.1.clone()),
                priority: prio_name(prio),
                cap_mb: mem.max(0) as u64,
                predicted_mb: pred,
                queued_at: created,
                admitted_at: admitted,
                elapsed_s: (elapsed * 10.0).round() / 10.0,
                timeout_s: row.as_ref().and_then(|r| r.2),
                evidence: row.as_ref().and_then(|r| r.3.clone()),
                memory_source: row.as_ref().and_then(|r| r.4.clone()),
                backend: row.as_ref().and_then(|r| r.5.clone()),
                memory_enforced: row.as_ref().map(|r| r.6 != 0),
                holder_alive: crate::executor::process_alive(pid, pid_start),
                admitted_during_burst,
            });
        }
        Ok(out)
    };
    let running = read_state("running")?;
    let waiting = read_state("waiting")?;

    let burst_now = burst::active(conn, opts.host, &now_s)?;
    let factor = opts
        .static_burst_factor
        .max(burst_now.as_ref().map_or(1.0, |b| b.factor));

    let (promoted_version, promoted_at): (Option<String>, Option<String>) = conn
        .query_row(
            "SELECT version, promoted_at FROM model_version WHERE promoted = 1
             ORDER BY promoted_at DESC, trained_at DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db("reading the model registry"))?
        .unwrap_or((None, None));
    let last_retrain: Option<String> = conn
        .query_row("SELECT max(trained_at) FROM model_version", [], |r| {
            r.get(0)
        })
        .map_err(db("reading the model registry"))?;
    let current = crate::model::current_model_path(opts.model_dir);
    let current_file = current
        .as_ref()
        .ok()
        .and_then(|p| p.as_ref())
        .map(|p| p.display().to_string());
    let model_present = current
        .as_ref()
        .ok()
        .and_then(|p| p.as_ref())
        .is_some_and(|p| p.is_file());

    let mut fallbacks = Vec::new();
    if opts.dry_run {
        fallbacks.push("dry run: jobs run under the static defaults (PRESIZE_DRY_RUN)".into());
    }
    match &current {
        Err(e) => fallbacks.push(format!("{e}; predictions come from the prior")),
        Ok(None) => fallbacks.push(
            "no promoted model in the model directory; predictions come from the prior".into(),
        ),
        Ok(Some(p)) if !model_present => fallbacks.push(format!(
            "model file {} is missing; predictions come from the prior",
            p.display()
        )),
        Ok(Some(_)) => {}
    }
    if let (Some(v), true) = (&promoted_version, model_present) {
        let (jobs, covered) = store.live_coverage(v, crate::runner::LIVE_COVERAGE_JOBS)?;
        if let Some(f) = crate::policy::engine::coverage_fallback(
            v,
            jobs,
            covered,
            opts.nominal_coverage,
            opts.policy,
        ) {
            fallbacks.push(f);
        }
    }
    for j in &running {
        if j.memory_source.as_deref() == Some("static") {
            fallbacks.push(format!(
                "{} runs under the static default limits",
                j.job_key.as_deref().unwrap_or("a job")
            ));
        }
        if j.memory_enforced == Some(false) {
            fallbacks.push(format!(
                "{}: memory cap not enforced (backend {})",
                j.job_key.as_deref().unwrap_or("a job"),
                j.backend.as_deref().unwrap_or("unknown")
            ));
        }
    }

    Ok(Status {
        now: now_s,
        host: opts.host.to_string(),
        budget_mb: opts.budget_mb,
        reserved_mb: running.iter().fold(0u64, |a, j| a.saturating_add(j.cap_mb)),
        running_predicted_mb: running.iter().map(|j| j.predicted_mb).sum::<f64>() + 0.0,
        waiting_mb: waiting.iter().fold(0u64, |a, j| a.saturating_add(j.cap_mb)),
        burst_factor: factor,
        cap_limit_mb: (opts.budget_mb as f64 * factor) as u64,
        burst: burst_now,
        auto_burst: opts.auto_burst,
        running,
        waiting,
        model: ModelStatus {
            current_file,
            promoted_version,
            promoted_at,
            predictions_from: if model_present { "model" } else { "prior" },
        },
        fallbacks,
        last_retrain,
        next_retrain: next_timer_run("presize-retrain.timer"),
        next_forecast: next_timer_run("presize-forecast.timer"),
    })
}

/// The next elapse of a systemd timer, from `systemctl show` when systemd runs this host;
/// `unknown` otherwise (no systemd, timer not loaded, or no next run).
pub fn next_timer_run(unit: &str) -> String {
    if !Path::new("/run/systemd/system").is_dir() {
        return "unknown (systemd is not running here)".into();
    }
    let out = std::process::Command::new("systemctl")
        .args(["show", unit, "--property=NextElapseUSecRealtime", "--value"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if v.is_empty() || v == "n/a" || v == "0" {
                format!("unknown ({unit} has no next run)")
            } else {
                v
            }
        }
        _ => format!("unknown ({unit} is not loaded)"),
    }
}

fn fmt_secs(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{s:.1} s")
    }
}

/// The status as text for a terminal.
pub fn text(s: &Status) -> String {
    let mut t = format!("presize status — {} at {}\n", s.host, s.now);
    t += &format!(
        "budget: {} of {} MB reserved by {} running job(s) (predicted peaks {:.0} MB); {} MB waiting in {} job(s)\n",
        s.reserved_mb,
        s.budget_mb,
        s.running.len(),
        s.running_predicted_mb,
        s.waiting_mb,
        s.waiting.len()
    );
    match &s.burst {
        Some(b) => {
            t += &format!(
                "burst: ×{:.2} until {} ({}, by {}: {}); caps may reach {} MB while predicted peaks fit {} MB\n",
                b.factor, b.until, b.source, b.who, b.why, s.cap_limit_mb, s.budget_mb
            )
        }
        None if s.burst_factor > 1.0 => {
            t += &format!(
                "burst: ×{:.2} from [admission] burst_factor; caps may reach {} MB\n",
                s.burst_factor, s.cap_limit_mb
            )
        }
        None => {
            t += &format!(
                "burst: off{}\n",
                if s.auto_burst {
                    " (automatic rule armed)"
                } else {
                    ""
                }
            )
        }
    }
    let line = |j: &JobStatus| {
        format!(
            "  {:>4} {:<24} {:<6} cap {:>6} MB  pred {:>7.0} MB  {:>9} / {:<9} {:<8} {}{}{}\n",
            j.queue_position.map_or("-".into(), |p| format!("#{p}")),
            j.job_key.as_deref().unwrap_or("?"),
            j.priority,
            j.cap_mb,
            j.predicted_mb,
            fmt_secs(j.elapsed_s),
            j.timeout_s.map_or("-".into(), |x| fmt_secs(x as f64)),
            j.evidence.as_deref().unwrap_or("-"),
            j.script.as_deref().unwrap_or(""),
            if j.holder_alive { "" } else { " (holder gone)" },
            if j.admitted_during_burst.is_some() {
                " (admitted in burst)"
            } else {
                ""
            }
        )
    };
    t += "  queue job key                  prio   cap            predicted peak  elapsed / timeout   evidence script\n";
    t += &format!("running ({}):\n", s.running.len());
    for j in &s.running {
        t += &line(j);
    }
    t += &format!("waiting ({}), in queue order:\n", s.waiting.len());
    for j in &s.waiting {
        t += &line(j);
    }
    t += &format!(
        "model: {} (promoted {}; file {})\n",
        s.model.predictions_from,
        s.model.promoted_version.as_deref().unwrap_or("none"),
        s.model.current_file.as_deref().unwrap_or("none")
    );
    for f in &s.fallbacks {
        t += &format!("fallback: {f}\n");
    }
    t += &format!(
        "last retrain: {}; next retrain: {}; next forecast: {}\n",
        s.last_retrain.as_deref().unwrap_or("never"),
        s.next_retrain,
        s.next_forecast
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Status must not read the store's history: every query on a table that grows with
    /// jobs, bursts or forecasts goes through an index or the primary key.
    #[test]
    fn status_queries_use_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let plan = |sql: &str| -> String {
            let mut st = store
                .conn()
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let rows: Vec<String> = st
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            rows.join("; ")
        };
        let ledger = plan(&LEDGER_SQL.replace("?1", "'h'").replace("?2", "'running'"));
        assert!(
            ledger.contains("USING INDEX idx_reservation_host_state"),
            "{ledger}"
        );
        let row = plan(&ROW_SQL.replace("?1", "1"));
        assert!(row.contains("USING INTEGER PRIMARY KEY"), "{row}");
        let burst = plan(
            &burst::ACTIVE_SQL
                .replace("?1", "'h'")
                .replace("?2", "'2026-01-01'"),
        );
        assert!(
            burst.contains("USING INDEX idx_burst_host_until"),
            "{burst}"
        );
        for p in [&ledger, &row, &burst] {
            assert!(!p.contains("SCAN"), "{p}");
        }
    }
}
