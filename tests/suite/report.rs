//! `presize report`: one mark per attempt in each scatter, escaped text, the numbers of
//! `stats`, clean errors, and a real render in headless Chromium checked pixel by pixel.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use presize::job::Outcome;
use presize::model::Source;
use presize::store::{ModelRecord, Store};
use serde_json::Value;

use crate::helper::history::{at, plus_h, Attempt};
use crate::helper::{assert_clean_error, repo, stdout, Env};

const EVIL_KEY: &str = "<script>alert(1)</script>";

/// Deterministic pseudo-random numbers (LCG + Box–Muller): a fixed, realistic history.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// Sixty-odd attempts over twelve days: a cold-start prior (static 8 GB caps), then a trained
/// model with tight caps, OOM kills retried at twice the cap, a timeout, a failure, a
/// rejection, and a job key that tries to inject markup.
fn history() -> Vec<Attempt> {
    // (job key, cpu s, peak MB, wall s)
    let profiles: [(&str, f64, f64, f64); 6] = [
        ("scanpy-qc", 95.0, 2300.0, 120.0),
        ("seurat-cluster", 600.0, 5200.0, 700.0),
        ("dge-deseq2", 40.0, 800.0, 55.0),
        ("plot-summary", 2.0, 140.0, 3.0),
        ("fastq-stats", 0.3, 12.0, 0.8),
        (EVIL_KEY, 1.0, 60.0, 1.5),
    ];
    let mut rng = Rng(42);
    let t0 = at("2026-11-18T06:00:00Z");
    let mut out = Vec::new();
    for i in 0..58usize {
        let (key, cpu, rss, wall) = profiles[(i * 7 + i / 3) % profiles.len()];
        let prior = i < 22;
        let var = |rng: &mut Rng, s: f64| (rng.normal() * s).exp();
        let actual = (
            cpu * var(&mut rng, 0.35),
            rss * var(&mut rng, 0.3),
            wall * var(&mut rng, 0.35),
        );
        let err = if prior { 0.5 } else { 0.18 };
        let pred = (
            actual.0 * var(&mut rng, err),
            actual.1 * var(&mut rng, err),
            actual.2 * var(&mut rng, err),
        );
        let settled = plus_h(t0, 4.8 * i as f64 + 2.0 * rng.uniform());
        let mut a = Attempt::new(&format!("job-{i}"), key, settled);
        a.predicted = pred;
        if prior {
            a.model_version = "prior-3f2a91c0".into();
            a.source = Source::Prior;
            a.confidence = 0.01;
            // Below the confidence threshold: the static defaults applied, not the prediction.
            a.enforced = false;
            a.upper = (pred.0 * 3.0, pred.1 * 3.0, pred.2 * 3.0);
            a.limit_mb = ((pred.1 * 1.5).ceil() as u64).max(8192);
            a.timeout_s = ((pred.2 * 1.3).ceil() as u64).max(3600);
        } else {
            a.model_version = "gbt-20261120T030000Z-a41c".into();
            a.confidence = 0.6;
            // An RSS upper bound too tight for the model's error: live coverage ≈ 70 % against
            // a nominal 95 %, which the page must flag.
            a.upper = (pred.0 * 1.4, pred.1 * 1.1, pred.2 * 1.4);
            a.limit_mb = ((pred.1 * 1.5).ceil() as u64).max(64);
            a.timeout_s = ((pred.2 * 1.3).ceil() as u64).max(60);
        }
        a.applied_mb = a.limit_mb;
        a.actual = Some(actual);
        if i == 30 {
            a.outcome = Outcome::Rejected;
            a.actual = None;
        } else if i == 41 {
            a.outcome = Outcome::Failed;
        } else if i == 47 {
            a.outcome = Outcome::TimedOut;
            a.actual = Some((actual.0, actual.1, a.timeout_s as f64));
        } else if actual.1 > a.applied_mb as f64 || i == 35 || i == 52 {
            // Killed at the cap; the retry runs at twice the cap and succeeds.
            a.applied_mb = ((actual.1 / 1.2) as u64).min(a.applied_mb).max(1);
            a.outcome = Outcome::OomKilled;
            a.actual = Some((actual.0 * 0.6, a.applied_mb as f64, actual.2 * 0.6));
            let mut r = a.clone();
            r.attempt = 2;
            r.applied_mb = a.applied_mb * 2;
            r.outcome = Outcome::Ok;
            r.actual = Some(actual);
            r.settled_at = plus_h(settled, actual.2 / 3600.0 + 0.01);
            out.push(a);
            out.push(r);
            continue;
        }
        out.push(a);
    }
    out
}

fn build_store(env: &Env, attempts: &[Attempt]) {
    let mut store = Store::open(&env.db).unwrap();
    for a in attempts {
        a.import(&mut store);
    }
    for (version, trained, promoted, mape, cov) in [
        (
            "gbt-20261120T030000Z-a41c",
            "2026-11-20T03:00:00.000Z",
            true,
            0.21,
            0.94,
        ),
        (
            "gbt-20261127T030000Z-77e0",
            "2026-11-27T03:00:00.000Z",
            false,
            0.26,
            0.91,
        ),
    ] {
        let metrics = serde_json::json!({
            "holdout_rows": 12,
            "candidate": {"version": version, "targets": [
                {"target": "peak_rss_mb", "n": 12, "mape": mape, "coverage": cov}
            ]}
        });
        store
            .register_model(&ModelRecord {
                version,
                path: Path::new("/var/lib/presize/models/x.json"),
                trained_at: trained,
                rows: 40,
                schema_hash: "x",
                metrics_json: &metrics.to_string(),
                promoted,
            })
            .unwrap();
    }
}

/// The `<svg id="...">…</svg>` element with this id.
fn svg<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("<svg id=\"{id}\""))
        .unwrap_or_else(|| panic!("no svg {id}"));
    let len = html[start..].find("</svg>").expect("closed svg");
    &html[start..start + len]
}

#[test]
fn report_has_one_mark_per_attempt_escapes_text_and_matches_stats() {
    let env = Env::new();
    let attempts = history();
    build_store(&env, &attempts);
    let out = env.path("out/report.html");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let o = env.run(&["report", "--out", out.to_str().unwrap(), "--last", "500"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(stdout(&o), format!("{}\n", out.display()));
    let html = std::fs::read_to_string(&out).unwrap();

    let measured = attempts.iter().filter(|a| a.actual.is_some()).count();
    assert!(measured >= 55, "fixture too small: {measured}");
    for id in ["cpu_seconds", "peak_rss_mb", "wall_seconds"] {
        let s = svg(&html, &format!("scatter-{id}"));
        assert_eq!(s.matches("<circle class=\"pt ").count(), measured, "{id}");
        assert!(s.contains("class=\"diag\""), "{id}: no y = x line");
    }
    // One applied-cap mark per measured attempt, in the RSS scatter only.
    let rss = svg(&html, "scatter-peak_rss_mb");
    assert_eq!(rss.matches("<line class=\"cap\"").count(), measured);
    assert_eq!(
        svg(&html, "scatter-cpu_seconds")
            .matches("class=\"cap\"")
            .count(),
        0
    );
    // Outcomes are told apart.
    assert!(rss.contains("pt oom_killed") && rss.contains("pt timed_out"));

    // Text is escaped; nothing is loaded from anywhere.
    assert!(!html.to_lowercase().contains("<script"), "markup injected");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    for bad in ["src=", "href=", "url(", "@import", "http"] {
        assert!(
            !html.contains(bad),
            "page refers to something outside: {bad}"
        );
    }

    // The numbers are those of `presize stats`.
    let s = env.run(&["stats", "--json", "--last", "500"]);
    let v: Value = serde_json::from_str(&stdout(&s)).unwrap();
    let im = &v["impact"];
    for k in ["slack_gbh", "static_slack_gbh", "saved_gbh"] {
        let n = format!("<td>{:.3}</td>", im[k].as_f64().unwrap());
        assert!(html.contains(&n), "{k} {n} missing from the impact table");
    }
    let r2 = format!("{:.3}", v["targets"][0]["r2"].as_f64().unwrap());
    assert!(html.contains(&r2), "R² {r2} missing");
    assert!(svg(&html, "slack").contains(&format!("{:.3} GB·h", im["slack_gbh"].as_f64().unwrap())));
    // Calibration per model version, and the registry.
    let cal = svg(&html, "calibration");
    assert!(cal.contains("prior-3f2a91c0") && cal.contains("gbt-20261120T030000Z-a41c"));
    assert!(cal.contains("class=\"nominal\""));
    let models = &html[html.find("<table id=\"models\"").unwrap()..];
    assert!(models.contains("gbt-20261127T030000Z-77e0") && models.contains("21.0%"));

    // Caps are labelled by source: the prior's static 8 GB defaults, the model's predicted caps.
    assert!(rss.contains("data-source=\"static\"") && rss.contains("data-source=\"predicted\""));
    assert!(rss.contains(">cap: static<") && rss.contains(">cap: predicted<"));
    let slack_sub = &html[html.find("<svg id=\"slack\"").unwrap() - 300..];
    assert!(
        slack_sub.contains("came from the prediction"),
        "slack chart not labelled by source"
    );
    // The coverage warning, from the same check as `stats`.
    let gbt = v["by_model_version"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == "gbt-20261120T030000Z-a41c")
        .unwrap();
    let rss_cov = gbt["targets"][0]["calibration"].as_f64().unwrap();
    assert!(rss_cov < 0.8, "fixture should under-cover: {rss_cov}");
    assert!(
        html.contains("id=\"coverage-warning\">⚠ model gbt-20261120T030000Z-a41c: live coverage of peak_rss_mb"),
        "no coverage warning for the under-covering model"
    );
    assert!(models.contains("(below nominal)"));
    let human = stdout(&env.run(&["stats", "--last", "500"]));
    assert!(
        human.contains("warning: live coverage of peak_rss_mb"),
        "{human}"
    );
    // Failures: one table row per failed, OOM-killed, timed-out attempt, with key, script,
    // attempt, cap and peak.
    let failures = &html[html.find("<table id=\"failures\"").expect("failures table")..];
    let failures = &failures[..failures.find("</table>").unwrap()];
    let failed = attempts
        .iter()
        .filter(|a| {
            matches!(
                a.outcome,
                Outcome::Failed | Outcome::OomKilled | Outcome::TimedOut
            )
        })
        .count();
    assert!(failed >= 4, "fixture has {failed} failures");
    assert_eq!(failures.matches("<tr class=").count(), failed);
    assert!(
        failures.contains("<tr class=\"oom_killed\">")
            && failures.contains("<tr class=\"timed_out\">")
    );
    assert!(failures.contains("cap source") && failures.contains("peak MB"));
    // Per key: every job key once, escaped.
    let keys = &html[html.find("<table id=\"keys\"").expect("keys table")..];
    let keys = &keys[..keys.find("</table>").unwrap()];
    for k in [
        "scanpy-qc",
        "seurat-cluster",
        "dge-deseq2",
        "&lt;script&gt;",
    ] {
        assert_eq!(
            keys.matches(&format!("<td class=\"k\">{k}")).count(),
            1,
            "{k}"
        );
    }

    screenshot_is_not_blank(&out, &env.path("report.png"));
}

#[test]
fn empty_store_gives_a_clean_page() {
    let env = Env::new();
    let out = env.path("r.html");
    let o = env.run(&["report", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.contains("Nothing to report yet"), "{html}");
    assert!(!html.contains("<svg"));
}

#[test]
fn bad_out_is_one_line_exit_2() {
    let env = Env::new();
    let missing = env.path("no/such/dir/r.html");
    let o = env.run(&["report", "--out", missing.to_str().unwrap()]);
    assert_clean_error(&o, 2, "does not exist");
    let o = env.run(&["report", "--out", env.dir.path().to_str().unwrap()]);
    assert_clean_error(&o, 2, "is a directory");
    let o = env.run(&[
        "report",
        "--out",
        env.path("r.html").to_str().unwrap(),
        "--last",
        "0",
    ]);
    assert_clean_error(&o, 2, "--last");
}

/// Chromium, or `None` with the reason printed; in CI (`CI` set) a missing browser fails.
fn chromium() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/chromium");
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!("/usr/bin/chromium is missing but CI is set: .ci/run installs it (apt-get install chromium)");
    }
    eprintln!("skipped: /usr/bin/chromium is missing (apt-get install chromium); the page was not rendered");
    None
}

/// Render the page in headless Chromium and check, pixel by pixel, that the charts drew:
/// each of the three scatter columns has point-blue pixels, the cap marks are there in
/// green, the coverage warning's yellow box and the failures table's OOM-killed rows
/// show, and the page has many colours. With `PRESIZE_UPDATE_SCREENSHOT=1` the PNG
/// replaces docs/report.png.
fn screenshot_is_not_blank(html: &Path, png_path: &Path) {
    let Some(browser) = chromium() else { return };
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png_path.display()))
        .arg("--window-size=1200,1600")
        .arg(format!("file://{}", html.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "chromium: {status}");

    let file = std::io::BufReader::new(std::fs::File::open(png_path).expect("screenshot"));
    let mut reader = png::Decoder::new(file).read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    assert_eq!((info.width, info.height), (1200, 1600));
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let ch = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected colour type {other:?}"),
    };
    let px = |x: usize, y: usize| {
        let i = y * info.line_size + x * ch;
        (buf[i], buf[i + 1], buf[i + 2])
    };
    let near = |(r, g, b): (u8, u8, u8), (r0, g0, b0): (u8, u8, u8)| {
        r.abs_diff(r0) <= 24 && g.abs_diff(g0) <= 24 && b.abs_diff(b0) <= 24
    };
    let (w, h) = (info.width as usize, info.height as usize);
    let mut colours = std::collections::HashSet::new();
    let mut non_white = 0usize;
    let mut blue_in_column = [0usize; 3];
    let mut green = 0usize;
    // The coverage warning's yellow box and the OOM-killed rows of the failures table.
    let (mut warn_yellow, mut oom_rows) = (0usize, 0usize);
    for y in 0..h {
        for x in 0..w {
            let c = px(x, y);
            if c == (255, 243, 205) {
                warn_yellow += 1;
            }
            if c == (251, 224, 224) {
                oom_rows += 1;
            }
            colours.insert(c);
            if c != (255, 255, 255) {
                non_white += 1;
            }
            // The scatters are the first row of charts, three across.
            if y < 600 && near(c, (31, 119, 180)) {
                blue_in_column[(x * 3 / w).min(2)] += 1;
            }
            if y < 600 && near(c, (44, 160, 44)) {
                green += 1;
            }
        }
    }
    assert!(
        colours.len() > 100,
        "only {} distinct colours",
        colours.len()
    );
    assert!(
        non_white > w * h / 50,
        "almost blank: {non_white} non-white pixels"
    );
    for (i, n) in blue_in_column.iter().enumerate() {
        assert!(*n > 150, "scatter {i} has {n} point pixels: not drawn?");
    }
    assert!(
        green > 100,
        "applied-cap marks missing: {green} green pixels"
    );
    assert!(
        warn_yellow > 5000,
        "coverage warning not rendered: {warn_yellow} pixels"
    );
    assert!(
        oom_rows > 2000,
        "failures table (OOM-killed rows) not rendered: {oom_rows} pixels"
    );
    if std::env::var_os("PRESIZE_UPDATE_SCREENSHOT").is_some() {
        std::fs::copy(png_path, repo("docs/report.png")).expect("update docs/report.png");
    }
}
