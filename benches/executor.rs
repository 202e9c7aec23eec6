//! Executor overhead per job: `runner::run` of `/bin/true` (features, predict, store open,
//! admission, cgroup setup/teardown, row insert + settle) against a bare spawn of `/bin/true`.

use std::collections::HashMap;

use criterion::{criterion_group, criterion_main, Criterion};
use presize::config::Settings;
use presize::job::JobSpec;
use presize::runner::{self, RunOptions};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").expect("config");
    let vars: HashMap<&str, String> = [
        ("PRESIZE_DB", dir.path().join("p.db").display().to_string()),
        (
            "PRESIZE_MODEL_DIR",
            dir.path().join("models").display().to_string(),
        ),
        ("PRESIZE_CONFIG", config.display().to_string()),
        ("HOME", dir.path().display().to_string()),
    ]
    .into_iter()
    .collect();
    let settings = Settings::from_lookup(|k| vars.get(k).cloned()).expect("settings");
    let spec = JobSpec {
        command: vec!["/bin/true".into()],
        job_key: Some("bench".into()),
        ..JobSpec::default()
    };
    let opts = RunOptions::default();

    let mut g = c.benchmark_group("executor");
    g.sample_size(50);
    g.bench_function("bare_spawn_true", |b| {
        b.iter(|| {
            std::process::Command::new("/bin/true")
                .status()
                .expect("spawn")
        })
    });
    g.bench_function("presize_run_true", |b| {
        b.iter(|| {
            let r = runner::run(&spec, &settings, &opts, |_| {}).expect("run");
            assert_eq!(r.exit_code, 0);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
