//! `presize report --out FILE.html`: write the HTML report and print its path.

use std::path::{Path, PathBuf};

use super::out;
use crate::config::Settings;
use crate::error::Error;
use crate::report::{self, ReportInput};
use crate::stats::StatsOptions;

/// Arguments of `report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The HTML file to write (replaced if it exists).
    #[arg(long, value_name = "FILE.html")]
    pub out: PathBuf,
    /// Consider the last N settled jobs.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub last: usize,
}

/// Refuse an `--out` that cannot be written before any work is done.
fn check_out(path: &Path) -> Result<(), Error> {
    if path.as_os_str().is_empty() {
        return Err(Error::Usage("--out must name a file".into()));
    }
    if path.is_dir() {
        return Err(Error::Usage(format!(
            "--out {} is a directory; name a file, e.g. {}",
            path.display(),
            path.join("report.html").display()
        )));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(Error::Usage(format!(
                "--out {}: directory {} does not exist; create it first",
                path.display(),
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Write through a temporary file in the same directory, so a reader never sees half a page.
fn write_page(path: &Path, html: &str) -> Result<(), Error> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report.html".into());
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let res = std::fs::write(&tmp, html).and_then(|_| std::fs::rename(&tmp, path));
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::Io(format!(
            "cannot write the report to {}: {e}",
            path.display()
        ))
    })
}

/// Run `report`.
pub fn execute(args: Args) -> Result<i32, Error> {
    if args.last == 0 {
        return Err(Error::Usage("--last must be at least 1".into()));
    }
    check_out(&args.out)?;
    let settings = Settings::from_env()?;
    let store = settings.open_store()?;
    let rows = store.recent_settled(args.last)?;
    let models = store.model_versions()?;
    let bursts = crate::executor::burst::all_recent(store.conn(), 50)
        .map_err(|e| Error::Io(e.to_string()))?;
    let html = report::render(&ReportInput {
        rows: &rows,
        models: &models,
        window: args.last,
        opts: StatsOptions::from_policy(settings.policy(), settings.file.model.coverage),
        generated_at: crate::util::now_rfc3339(),
        source: settings.db_path.display().to_string(),
        bursts: &bursts,
    });
    write_page(&args.out, &html)?;
    out(&format!("{}\n", args.out.display()))?;
    Ok(0)
}
