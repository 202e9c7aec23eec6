//! `presize export --csv|--jsonl [--out F]`: every row of `resource_prediction` with its
//! features in the wide form, streamed.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Settings;
use crate::error::Error;
use crate::features::Schema;
use crate::store::JobRecord;

/// Arguments of `export`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("format").required(true).args(["csv", "jsonl"]))]
pub struct Args {
    /// One CSV line per row: the record columns, `schema_hash`, then one `f_<name>` column
    /// per feature of the current schema (0 where a row lacks it).
    #[arg(long)]
    pub csv: bool,
    /// One JSON object per line: the record fields, `schema_hash`, and `features` as stored
    /// (every name the row was recorded with).
    #[arg(long)]
    pub jsonl: bool,
    /// Write to this file (created 0600, replaced) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

fn io_err(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io(format!("cannot write {what}: {e}"))
}

fn num(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

fn int(v: Option<i64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

const CSV_COLUMNS: [&str; 33] = [
    "id",
    "job_id",
    "analysis_id",
    "job_key",
    "runtime",
    "script_sha256",
    "predicted_cpu_s",
    "predicted_rss_mb",
    "predicted_wall_s",
    "upper_cpu_s",
    "upper_rss_mb",
    "upper_wall_s",
    "confidence",
    "source",
    "memory_limit_mb",
    "timeout_s",
    "applied_memory_mb",
    "applied_timeout_s",
    "enforced",
    "memory_enforced",
    "dry_run",
    "backend",
    "attempt",
    "actual_cpu_s",
    "actual_rss_mb",
    "actual_wall_s",
    "exit_code",
    "outcome",
    "model_version",
    "predicted_at",
    "started_at",
    "settled_at",
    "schema_hash",
];

fn csv_record(r: &JobRecord, hash: &str) -> Vec<String> {
    vec![
        r.id.to_string(),
        r.job_id.clone(),
        opt(&r.analysis_id),
        r.job_key.clone(),
        r.runtime.clone(),
        opt(&r.script_sha256),
        num(r.predicted_cpu_s),
        num(r.predicted_rss_mb),
        num(r.predicted_wall_s),
        num(r.upper_cpu_s),
        num(r.upper_rss_mb),
        num(r.upper_wall_s),
        num(r.confidence),
        opt(&r.source),
        int(r.memory_limit_mb),
        int(r.timeout_s),
        int(r.applied_memory_mb),
        int(r.applied_timeout_s),
        u8::from(r.enforced).to_string(),
        u8::from(r.memory_enforced).to_string(),
        u8::from(r.dry_run).to_string(),
        opt(&r.backend),
        r.attempt.to_string(),
        num(r.actual_cpu_s),
        num(r.actual_rss_mb),
        num(r.actual_wall_s),
        int(r.exit_code),
        opt(&r.outcome),
        r.model_version.clone(),
        r.predicted_at.clone(),
        opt(&r.started_at),
        opt(&r.settled_at),
        hash.to_string(),
    ]
}

/// Run `export`.
pub fn execute(args: Args) -> Result<i32, Error> {
    let settings = Settings::from_env()?;
    let store = settings.open_store()?;
    let (sink, what): (Box<dyn Write>, String) = match &args.out {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(p)
                .map_err(|e| Error::Usage(format!("cannot create {}: {e}", p.display())))?;
            (Box::new(f), p.display().to_string())
        }
        None => (Box::new(std::io::stdout().lock()), "to stdout".into()),
    };
    let mut w = std::io::BufWriter::new(sink);
    // A closed pipe (`presize export --csv | head`) ends the export quietly.
    let broken = |e: &std::io::Error| e.kind() == std::io::ErrorKind::BrokenPipe;
    let mut unreadable = crate::store::Unreadable::default();
    if args.csv {
        let (catalog, _) = crate::runner::catalog_and_options(&settings);
        let schema = Arc::new(Schema::for_catalog(&catalog));
        let mut cw = csv::Writer::from_writer(&mut w);
        let header: Vec<String> = CSV_COLUMNS
            .iter()
            .map(|c| c.to_string())
            .chain(schema.names.iter().map(|n| format!("f_{n}")))
            .collect();
        let csv_err = |e: csv::Error| match e.into_kind() {
            csv::ErrorKind::Io(e) => e,
            k => std::io::Error::other(format!("{k:?}")),
        };
        let mut values = vec![0.0; schema.names.len()];
        let mut io: Option<std::io::Error> = cw.write_record(&header).map_err(csv_err).err();
        if io.is_none() {
            store.for_each_row_with_features::<Error>(
                &schema.names,
                &mut |r, hash, features| {
                    values.fill(0.0);
                    let mut rec = csv_record(r, hash);
                    match features.dense(&mut values) {
                        Ok(()) => rec.extend(values.iter().map(|v| v.to_string())),
                        // Empty cells, not zeros a reader would take for values.
                        Err(e) => {
                            unreadable.note(r.id, e);
                            rec.extend(values.iter().map(|_| String::new()));
                        }
                    }
                    match cw.write_record(&rec).map_err(csv_err) {
                        Ok(()) => Ok(true),
                        Err(e) => {
                            io = Some(e);
                            Ok(false)
                        }
                    }
                },
            )?;
        }
        let res = io.map_or_else(|| cw.flush(), Err);
        drop(cw);
        match res.and_then(|_| w.flush()) {
            Err(e) if broken(&e) => return Ok(0),
            r => r.map_err(io_err(&what))?,
        }
    } else {
        let mut io: Option<std::io::Error> = None;
        store.for_each_row_with_features::<Error>(&[], &mut |r, hash, features| {
            let mut v = serde_json::to_value(r).unwrap_or(serde_json::Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.insert("schema_hash".into(), hash.into());
                // Unreadable: the stored text as a string (nothing is lost), or null.
                let f = features.to_json().unwrap_or_else(|e| {
                    unreadable.note(r.id, e);
                    features
                        .text()
                        .map_or(serde_json::Value::Null, |t| t.to_string().into())
                });
                o.insert("features".into(), f);
            }
            let line = v.to_string();
            match writeln!(w, "{line}") {
                Ok(()) => Ok(true),
                Err(e) => {
                    io = Some(e);
                    Ok(false)
                }
            }
        })?;
        match io.map_or_else(|| w.flush(), Err) {
            Err(e) if broken(&e) => return Ok(0),
            r => r.map_err(io_err(&what))?,
        }
    }
    let done = if args.csv {
        "exported with empty feature cells"
    } else {
        "exported with `features` as the stored text, or null"
    };
    if let Some(m) = unreadable.message(done) {
        super::say(&format!("presize: warning: {m}"));
    }
    Ok(0)
}
