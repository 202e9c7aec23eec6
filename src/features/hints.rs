//! Command-line resource hints: what a job's command lines say its tools will use.
//!
//! Bioinformatics and data tools are told their memory and threads on the command line
//! (`java -Xmx12g`, `samtools sort -m 4G -@ 4`, `STAR --limitBAMsortRAM 3000000000
//! --runThreadN 8`, `bwa mem -t 8`, `gatk --java-options "-Xmx8g"`, `--threads 8`).
//! [`from_argv`] reads the job's own argv (looking into `sh -c '…'`), [`from_shell`] every
//! command line of a shell script. A pipeline's stages run at once, so their memory and
//! threads add up; separate commands (`;`, `&&`, `||`, new lines) run one after another, so
//! the job's hint is the largest of them.
//!
//! A hint is what the tool is allowed (a heap limit, a sort buffer), so it is evidence
//! about the peak, not a floor: the prior (`model::prior`) adds it to the
//! interpreter's base and raises the upper bound to cover it, and leaves the lower bound
//! alone.
//!
//! Hand-written word splitting (quotes, backslashes, comments, continuation lines) is
//! enough here: sizes are a number and one suffix letter, flags are exact words.

use std::ffi::OsString;
use std::path::Path;

/// What the command lines state.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResourceHints {
    /// Memory the tools are told they may use (MiB), summed over a pipeline's stages,
    /// the largest over commands; 0 when nothing was stated.
    pub memory_mb: f64,
    /// Threads the tools are told to use, likewise; 0 when nothing was stated.
    pub threads: f64,
    /// Which flags were read, e.g. `java -Xmx`, `samtools sort -m`; for messages.
    pub sources: Vec<String>,
}

/// How a memory flag's value is written.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Unit {
    /// A size with an optional K/M/G/T suffix; bare numbers are bytes.
    Bytes,
    /// A size with an optional suffix; bare numbers are KiB (GNU `sort -S`).
    Kib,
    /// A bare number of GiB (SPAdes `-m`).
    Gib,
}

/// One tool's flags. `mem_per_thread`: the memory flag applies to each thread
/// (`samtools sort -m`).
struct Tool {
    names: &'static [&'static str],
    /// Only when this subcommand is present (`samtools sort`), or any.
    sub: Option<&'static str>,
    threads: &'static [&'static str],
    memory: &'static [(&'static str, Unit)],
    mem_per_thread: bool,
}

/// The catalogue. Flags not listed here are not read; `--threads` / `--cpus` /
/// `--num-threads` are read for any program (see [`GENERIC_THREADS`]).
const TOOLS: &[Tool] = &[
    Tool {
        names: &["samtools"],
        sub: Some("sort"),
        threads: &["-@", "--threads"],
        memory: &[("-m", Unit::Bytes)],
        mem_per_thread: true,
    },
    Tool {
        names: &["samtools", "bcftools"],
        sub: None,
        threads: &["-@", "--threads"],
        memory: &[],
        mem_per_thread: false,
    },
    Tool {
        names: &["bcftools"],
        sub: Some("sort"),
        threads: &[],
        memory: &[("-m", Unit::Bytes), ("--max-mem", Unit::Bytes)],
        mem_per_thread: false,
    },
    Tool {
        names: &["sambamba"],
        sub: None,
        threads: &["-t", "--nthreads"],
        memory: &[("-m", Unit::Bytes), ("--memory-limit", Unit::Bytes)],
        mem_per_thread: false,
    },
    Tool {
        names: &["star", "starlong"],
        sub: None,
        threads: &["--runthreadn"],
        memory: &[
            ("--limitbamsortram", Unit::Bytes),
            ("--limitgenomegenerateram", Unit::Bytes),
        ],
        mem_per_thread: false,
    },
    Tool {
        names: &[
            "bwa",
            "bwa-mem2",
            "minimap2",
            "kallisto",
            "sambamba",
            "spades.py",
        ],
        sub: None,
        threads: &["-t"],
        memory: &[],
        mem_per_thread: false,
    },
    Tool {
        names: &["spades.py", "metaspades.py", "rnaspades.py"],
        sub: None,
        threads: &[],
        memory: &[("-m", Unit::Gib), ("--memory", Unit::Gib)],
        mem_per_thread: false,
    },
    Tool {
        names: &["bowtie2", "bowtie", "hisat2", "salmon", "pigz", "tophat2"],
        sub: None,
        threads: &["-p"],
        memory: &[],
        mem_per_thread: false,
    },
    Tool {
        names: &["trinity"],
        sub: None,
        threads: &["--cpu"],
        memory: &[("--max_memory", Unit::Bytes)],
        mem_per_thread: false,
    },
    Tool {
        names: &["featurecounts"],
        sub: None,
        threads: &["-t"],
        memory: &[],
        mem_per_thread: false,
    },
    Tool {
        names: &["fastp"],
        sub: None,
        threads: &["-w", "--thread"],
        memory: &[],
        mem_per_thread: false,
    },
    Tool {
        names: &[
            "blastn", "blastp", "blastx", "tblastn", "tblastx", "diamond",
        ],
        sub: None,
        threads: &["-num_threads"],
        memory: &[],
        mem_per_thread: false,
    },
    Tool {
        names: &["sort"],
        sub: None,
        threads: &["--parallel"],
        memory: &[("-S", Unit::Kib), ("--buffer-size", Unit::Kib)],
        mem_per_thread: false,
    },
];

/// Thread flags read for any program.
const GENERIC_THREADS: &[&str] = &[
    "--threads",
    "--cpus",
    "--num-threads",
    "--nthreads",
    "--cores",
];

/// Programs that run the next word as the command (their own options skipped).
const WRAPPERS: &[&str] = &[
    "env", "time", "nice", "nohup", "exec", "command", "srun", "xargs", "stdbuf", "ionice",
    "taskset", "timeout", "sudo",
];

/// JVM overhead on top of a stated heap (`-Xmx`): metaspace, threads, code cache, GC.
/// The prior adds `max(JVM_OVERHEAD_MB, 10 %)` of the heap.
pub const JVM_OVERHEAD_MB: f64 = 256.0;

/// A size such as `12g`, `4G`, `500M`, `2.5G`, `3000000000` in MiB; bare numbers in
/// `bare` units. `None` for anything else (`$MEM`, `80%`).
fn size_mb(s: &str, bare: Unit) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let v: f64 = num
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)?;
    const MIB: f64 = 1024.0 * 1024.0;
    let mult_mb = match suffix
        .trim_end_matches(['b', 'B'])
        .to_ascii_lowercase()
        .as_str()
    {
        "" => match bare {
            Unit::Bytes => 1.0 / MIB,
            Unit::Kib => 1.0 / 1024.0,
            Unit::Gib => 1024.0,
        },
        "k" => 1.0 / 1024.0,
        "m" => 1.0,
        "g" => 1024.0,
        "t" => 1024.0 * 1024.0,
        _ => return None,
    };
    Some(v * mult_mb)
}

fn count(s: &str) -> Option<f64> {
    s.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0 && *n <= 4096)
        .map(f64::from)
}

/// The value of `flag` at `words[i]`: `--flag=V`, `-fV` (single-dash short flags), or the
/// next word. `--long` flags match in any case (`--runThreadN`), others exactly.
fn flag_value<'w>(words: &'w [String], i: usize, flag: &str) -> Option<&'w str> {
    let w = words[i].as_str();
    let long = flag.starts_with("--");
    let same = |a: &str| {
        if long {
            a.eq_ignore_ascii_case(flag)
        } else {
            a == flag
        }
    };
    if w.len() == flag.len() {
        return if same(w) {
            words.get(i + 1).map(String::as_str)
        } else {
            None
        };
    }
    let head = w.get(..flag.len()).filter(|h| same(h))?;
    let rest = &w[head.len()..];
    if let Some(v) = rest.strip_prefix('=') {
        return Some(v);
    }
    // `-@4`, `-m4G`, `-t8`: short flags glued to their value.
    (flag.len() == 2 && flag.starts_with('-')).then_some(rest)
}

/// `-Xmx12g` anywhere in `s` (a word, or a `--java-options` / `JAVA_OPTS` string): MiB.
fn xmx_in(s: &str) -> Option<f64> {
    let mut best: Option<f64> = None;
    for part in s.split_whitespace() {
        let part = part.trim_matches(|c| c == '"' || c == '\'');
        if let Some(v) = part
            .strip_prefix("-Xmx")
            .and_then(|v| size_mb(v, Unit::Bytes))
        {
            best = Some(best.map_or(v, |b: f64| b.max(v)));
        }
    }
    best
}

/// The hints of one simple command (program and arguments).
fn command_hints(words: &[String], out: &mut ResourceHints) -> (f64, f64) {
    // Skip assignments and wrappers (with their options) to the program.
    let mut i = 0;
    let mut java_opts: Option<f64> = None;
    while i < words.len() {
        let w = &words[i];
        if let Some((name, value)) = w.split_once('=') {
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                if name.ends_with("JAVA_OPTS") || name.ends_with("JAVA_OPTIONS") {
                    java_opts = xmx_in(value);
                }
                i += 1;
                continue;
            }
        }
        let base = Path::new(w)
            .file_name()
            .map(|b| b.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if WRAPPERS.contains(&base.as_str()) {
            i += 1;
            // Options and their numeric values (`nice -n 10`, `timeout 10m`, `taskset -c 0-3`).
            while i < words.len()
                && (words[i].starts_with('-')
                    || words[i]
                        .chars()
                        .all(|c| c.is_ascii_digit() || ".smhdx,-".contains(c)))
            {
                i += 1;
            }
            continue;
        }
        break;
    }
    let Some(prog) = words.get(i) else {
        return (0.0, 0.0);
    };
    let args = &words[i..];
    let base = Path::new(prog)
        .file_name()
        .map(|b| b.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let mut mem = 0.0f64;
    let mut threads = 0.0f64;
    // JVM heaps: java -Xmx…, gatk --java-options "-Xmx…", picard/… via JAVA_OPTS.
    let mut heap = java_opts;
    for (k, w) in args.iter().enumerate().skip(1) {
        if let Some(v) = xmx_in(w) {
            heap = Some(heap.map_or(v, |h| h.max(v)));
        }
        if w == "--java-options" {
            if let Some(v) = args.get(k + 1).and_then(|s| xmx_in(s)) {
                heap = Some(heap.map_or(v, |h| h.max(v)));
            }
        }
    }
    if let Some(h) = heap {
        mem += h + (0.1 * h).max(JVM_OVERHEAD_MB);
        out.sources.push(format!("{base} -Xmx"));
    }
    let sub = args.get(1).map(|s| s.to_ascii_lowercase());
    let (mut tool_mem, mut per_thread) = (0.0f64, false);
    for tool in TOOLS {
        if !tool.names.contains(&base.as_str()) {
            continue;
        }
        if let Some(need) = tool.sub {
            if sub.as_deref() != Some(need) {
                continue;
            }
        }
        for k in 1..args.len() {
            for f in tool.threads {
                if let Some(n) = flag_value(args, k, f).and_then(count) {
                    threads = threads.max(n);
                    out.sources.push(format!("{base} {f}"));
                }
            }
            for (f, unit) in tool.memory {
                if let Some(v) = flag_value(args, k, f).and_then(|v| size_mb(v, *unit)) {
                    tool_mem = tool_mem.max(v);
                    per_thread |= tool.mem_per_thread;
                    out.sources.push(format!(
                        "{base}{} {f}",
                        tool.sub.map(|s| format!(" {s}")).unwrap_or_default()
                    ));
                }
            }
        }
    }
    for k in 1..args.len() {
        for f in GENERIC_THREADS {
            if let Some(n) = flag_value(args, k, f).and_then(count) {
                if n > threads {
                    threads = n;
                    out.sources.push(format!("{base} {f}"));
                }
            }
        }
    }
    if per_thread {
        tool_mem *= threads.max(1.0);
    }
    mem += tool_mem;
    (mem, threads)
}

/// Split one logical line into words and operators: quotes and backslashes honoured,
/// `#` comments dropped. Operators come back as words `|`, `;`, `&&`, `||`, `&`.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut has = false;
    let mut chars = line.chars().peekable();
    let push = |words: &mut Vec<String>, cur: &mut String, has: &mut bool| {
        if *has {
            words.push(std::mem::take(cur));
            *has = false;
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                has = true;
                for d in chars.by_ref() {
                    if d == '\'' {
                        break;
                    }
                    cur.push(d);
                }
            }
            '"' => {
                has = true;
                while let Some(d) = chars.next() {
                    match d {
                        '"' => break,
                        '\\' => {
                            if let Some(e) = chars.next() {
                                cur.push(e);
                            }
                        }
                        _ => cur.push(d),
                    }
                }
            }
            '\\' => {
                has = true;
                if let Some(e) = chars.next() {
                    cur.push(e);
                }
            }
            '#' if !has => break,
            ' ' | '\t' | '(' | ')' | '{' | '}' | '`' => push(&mut words, &mut cur, &mut has),
            '|' | ';' | '&' => {
                push(&mut words, &mut cur, &mut has);
                let mut op = c.to_string();
                if chars.peek() == Some(&c) {
                    chars.next();
                    op.push(c);
                }
                words.push(op);
            }
            _ => {
                has = true;
                cur.push(c);
            }
        }
    }
    push(&mut words, &mut cur, &mut has);
    words
}

/// Fold one line: pipeline stages add up, separate commands take the largest.
fn line_hints(line: &str, out: &mut ResourceHints, depth: u32) -> (f64, f64) {
    let words = split_words(line);
    let (mut best_mem, mut best_thr) = (0.0f64, 0.0f64);
    let (mut pipe_mem, mut pipe_thr) = (0.0f64, 0.0f64);
    let mut start = 0;
    for k in 0..=words.len() {
        let op = words.get(k).map(String::as_str);
        if !matches!(op, None | Some("|" | ";" | "&&" | "||" | "&")) {
            continue;
        }
        let cmd = &words[start..k];
        start = k + 1;
        let (m, t) = match inline_shell(cmd) {
            Some(code) if depth < 4 => script_hints(&code, out, depth + 1),
            _ => command_hints(cmd, out),
        };
        pipe_mem += m;
        pipe_thr += t;
        // `&` backgrounds a command that keeps running beside the next: it adds up too.
        if !matches!(op, Some("|" | "&")) {
            best_mem = best_mem.max(pipe_mem);
            best_thr = best_thr.max(pipe_thr);
            pipe_mem = 0.0;
            pipe_thr = 0.0;
        }
    }
    (best_mem.max(pipe_mem), best_thr.max(pipe_thr))
}

/// `sh -c CODE` / `bash -c CODE`: the code.
fn inline_shell(words: &[String]) -> Option<String> {
    let prog = Path::new(words.first()?)
        .file_name()?
        .to_string_lossy()
        .to_string();
    if !matches!(prog.as_str(), "sh" | "bash" | "dash" | "zsh" | "ksh") {
        return None;
    }
    let k = words.iter().position(|w| w == "-c")?;
    words.get(k + 1).cloned()
}

fn script_hints(src: &str, out: &mut ResourceHints, depth: u32) -> (f64, f64) {
    let (mut mem, mut thr) = (0.0f64, 0.0f64);
    let mut logical = String::new();
    for raw in src.lines() {
        if let Some(cont) = raw.strip_suffix('\\') {
            logical.push_str(cont);
            logical.push(' ');
            continue;
        }
        logical.push_str(raw);
        let (m, t) = line_hints(&logical, out, depth);
        mem = mem.max(m);
        thr = thr.max(t);
        logical.clear();
    }
    if !logical.is_empty() {
        let (m, t) = line_hints(&logical, out, depth);
        mem = mem.max(m);
        thr = thr.max(t);
    }
    (mem, thr)
}

fn finish(mut out: ResourceHints, (mem, thr): (f64, f64)) -> ResourceHints {
    out.memory_mb = if mem.is_finite() { mem } else { 0.0 };
    out.threads = if thr.is_finite() { thr } else { 0.0 };
    out.sources.sort();
    out.sources.dedup();
    out
}

/// Hints from a shell script's text (every command line).
pub fn from_shell(src: &[u8]) -> ResourceHints {
    let mut out = ResourceHints::default();
    let r = script_hints(&String::from_utf8_lossy(src), &mut out, 0);
    finish(out, r)
}

/// Hints from the job's own argv (`sh -c '…'` is read as a script).
pub fn from_argv(command: &[OsString]) -> ResourceHints {
    let words: Vec<String> = command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut out = ResourceHints::default();
    let r = match inline_shell(&words) {
        Some(code) => script_hints(&code, &mut out, 1),
        None => command_hints(&words, &mut out),
    };
    finish(out, r)
}

/// The larger of two hints (argv and script describe the same job).
pub fn merge(a: ResourceHints, b: ResourceHints) -> ResourceHints {
    let mut sources = a.sources;
    sources.extend(b.sources);
    sources.sort();
    sources.dedup();
    ResourceHints {
        memory_mb: a.memory_mb.max(b.memory_mb),
        threads: a.threads.max(b.threads),
        sources,
    }
}

#[cfg(test)]
mod tests;
