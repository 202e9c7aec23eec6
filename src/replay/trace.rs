//! Nextflow trace import: one [`TraceRow`] per task attempt, columns found by name.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ReplayError;

/// One row of a Nextflow trace (one task attempt). `None` = missing (`-` or empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRow {
    /// 1-based line number in the file (the header is line 1).
    pub line: u64,
    pub process: String,
    pub status: Option<String>,
    pub cpus: Option<f64>,
    /// Requested memory in bytes.
    pub memory: Option<f64>,
    /// Requested time in ms.
    pub time: Option<f64>,
    /// Measured wall time in ms.
    pub realtime: Option<f64>,
    pub rss: Option<f64>,
    pub peak_rss: Option<f64>,
    /// Bytes read (`rchar`), the protocol's "input size".
    pub rchar: Option<f64>,
}

/// A parsed trace file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub path: PathBuf,
    pub rows: Vec<TraceRow>,
}

impl Trace {
    /// Workflow name: `trace_eager.csv` → `eager` (the part after the first `_`).
    pub fn workflow_name(&self) -> String {
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string());
        match stem.split_once('_') {
            Some((_, rest)) if !rest.is_empty() => rest.to_string(),
            _ => stem,
        }
    }
}

/// Read a Nextflow trace CSV (header row; columns by name; `-` = missing; RFC 4180 quoting).
///
/// Required columns: `process`, `realtime`, `rss`, `rchar`. Optional: `status`, `cpus`,
/// `memory`, `time`, `peak_rss`.
pub fn read_trace(path: &Path) -> Result<Trace, ReplayError> {
    let file = std::fs::File::open(path).map_err(|source| ReplayError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_trace_from(file, path)
}

/// [`read_trace`] from any reader; `path` only names the source in errors.
pub fn read_trace_from<R: std::io::Read>(reader: R, path: &Path) -> Result<Trace, ReplayError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(reader);
    let csv_err = |e: csv::Error| -> ReplayError {
        let line = e.position().map(|p| p.line()).unwrap_or(0);
        let reason = match e.kind() {
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => format!("expected {expected_len} fields like the header, found {len}"),
            csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_string(),
            csv::ErrorKind::Io(io) => io.to_string(),
            _ => e.to_string().replace('\n', " "),
        };
        ReplayError::Malformed {
            path: path.to_path_buf(),
            line,
            reason,
        }
    };
    let headers = rdr.headers().map_err(csv_err)?.clone();
    if headers.is_empty() || (headers.len() == 1 && headers[0].trim().is_empty()) {
        return Err(ReplayError::Empty {
            path: path.to_path_buf(),
        });
    }
    let find = |name: &str| headers.iter().position(|h| h.trim() == name);
    let require = |name: &'static str| {
        find(name).ok_or_else(|| ReplayError::MissingColumn {
            path: path.to_path_buf(),
            column: name,
        })
    };
    let c_process = require("process")?;
    let c_realtime = require("realtime")?;
    let c_rss = require("rss")?;
    let c_rchar = require("rchar")?;
    let c_status = find("status");
    let c_cpus = find("cpus");
    let c_memory = find("memory");
    let c_time = find("time");
    let c_peak = find("peak_rss");

    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_err(e)),
        }
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let text = |c: Option<usize>| -> Option<&str> {
            let v = record.get(c?)?.trim();
            if v.is_empty() || v == "-" {
                None
            } else {
                Some(v)
            }
        };
        let num = |c: Option<usize>, column: &'static str| -> Result<Option<f64>, ReplayError> {
            match text(c) {
                None => Ok(None),
                Some(v) => match v.parse::<f64>() {
                    Ok(x) if x.is_finite() => Ok(Some(x)),
                    _ => Err(ReplayError::NotNumeric {
                        path: path.to_path_buf(),
                        line,
                        column,
                        value: v.chars().take(40).collect(),
                    }),
                },
            }
        };
        let process = match text(Some(c_process)) {
            Some(p) => p.to_string(),
            None => {
                return Err(ReplayError::Malformed {
                    path: path.to_path_buf(),
                    line,
                    reason: "empty `process`".to_string(),
                })
            }
        };
        rows.push(TraceRow {
            line,
            process,
            status: text(c_status).map(str::to_string),
            cpus: num(c_cpus, "cpus")?,
            memory: num(c_memory, "memory")?,
            time: num(c_time, "time")?,
            realtime: num(Some(c_realtime), "realtime")?,
            rss: num(Some(c_rss), "rss")?,
            peak_rss: num(c_peak, "peak_rss")?,
            rchar: num(Some(c_rchar), "rchar")?,
        });
    }
    Ok(Trace {
        path: path.to_path_buf(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Trace, ReplayError> {
        read_trace_from(text.as_bytes(), Path::new("t.csv"))
    }
    #[test]
    fn reads_quoted_fields_missing_values_and_extra_columns() {
        let t = parse(
            "task_id,process,status,cpus,memory,realtime,rss,peak_rss,rchar,note\n\
             1,\"A:B (x, y)\",COMPLETED,2,4294967296,1000,100,200,5000,\"a,b;c\"\n\
             2,A,FAILED,-,-,2000,-,,12.5,-\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.rows.len(), 2);
        let r = &t.rows[0];
        assert_eq!(r.process, "A:B (x, y)");
        assert_eq!(r.line, 2);
        assert_eq!(r.cpus, Some(2.0));
        assert_eq!(r.memory, Some(4294967296.0));
        assert_eq!(r.rss, Some(100.0));
        assert_eq!(r.time, None);
        let r = &t.rows[1];
        assert_eq!(
            (r.cpus, r.memory, r.rss, r.peak_rss),
            (None, None, None, None)
        );
        assert_eq!(r.rchar, Some(12.5));
        assert_eq!(r.status.as_deref(), Some("FAILED"));
        assert_eq!(r.line, 3);
    }

    #[test]
    fn malformed_files_give_one_line_errors() {
        let empty = parse("").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            empty.contains("t.csv") && empty.contains("empty"),
            "{empty}"
        );

        let missing = parse("process,realtime,rss\nA,1,2\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(missing.contains("`rchar`"), "{missing}");

        let nan = parse("process,realtime,rss,rchar\nA,1,2,3\nA,1,lots,3\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            nan.contains("line 3") && nan.contains("`rss`") && nan.contains("lots"),
            "{nan}"
        );

        let short = parse("process,realtime,rss,rchar\nA,1,2,3\nA,1\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(short.contains("line 3"), "{short}");

        let noproc = parse("process,realtime,rss,rchar\n-,1,2,3\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(noproc.contains("line 2"), "{noproc}");

        let io = read_trace(Path::new("/nonexistent/trace.csv"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(io.contains("/nonexistent/trace.csv"), "{io}");

        for e in [empty, missing, nan, short, noproc, io] {
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
