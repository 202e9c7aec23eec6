//! Single-pass POSIX/bash shell lexer + analyser over bytes.
//!
//! "Imports" of a shell script are the programs it runs: the first word of
//! each simple command (after `|`, `||`, `&&`, `;`, `&`, newlines, `(`, `$(`,
//! backticks, `then`, `do`, ...), skipping variable assignments, keywords and
//! builtins, and looking through wrappers such as `env`, `nohup`, `time`,
//! `timeout`, `xargs`, `parallel`, `srun`. Program names are basenames
//! (`/usr/bin/samtools` → `samtools`).

use super::scan::{contains_ci, find_nl, gpu_word, Acc};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    /// Expecting a command word.
    Cmd,
    /// Inside a command's arguments.
    Args,
    /// The next word is a redirection target.
    Redir,
    /// After `for`/`select`, until the `do`.
    ForHead,
    /// After `case`, until `in`.
    CaseHead,
    /// Case patterns, until `)`.
    CasePat,
    /// After `function`: the name.
    FuncName,
    /// After a function name: `()` then the body.
    FuncParen,
    /// After a wrapper program (env, xargs, ...): options, then a command.
    Wrapper,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Wrap {
    Plain,
    Command,
    Env,
    Nice,
    Sudo,
    Timeout,
    Xargs,
    Parallel,
    Mpi,
    Taskset,
    Ionice,
}

#[derive(Clone, Copy, Debug)]
struct Frame {
    backtick: bool,
    resume_dq: bool,
    st: St,
    after_redir: St,
    depth: u32,
    in_dbracket: bool,
    wrap: Wrap,
    skip_next: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Pipe,
    And,
    Or,
    Semi,
    DSemi,
    Amp,
    LParen,
    RParen,
    /// A redirection; `input` for `<`, `heredoc` for `<<`/`<<-` (with tab strip).
    Redir {
        input: bool,
        heredoc: Option<bool>,
    },
}

const MAX_FRAMES: usize = 64;
const MAX_HEREDOCS: usize = 16;
const MAX_DELIM: usize = 128;

struct Sh<'s, 'c, 'a> {
    src: &'s [u8],
    acc: &'a mut Acc<'c>,
    frames: Vec<Frame>,
    depth: u32,
    st: St,
    after_redir: St,
    pending: Option<&'s [u8]>,
    in_dbracket: bool,
    wrap: Wrap,
    skip_next: bool,
    just_assigned: bool,
    resume_dq: bool,
    heredoc_next: Option<bool>,
    heredocs: Vec<(Vec<u8>, bool)>,
    /// Names of functions the script defines: calls to them are not programs it runs.
    funcs: Vec<&'s [u8]>,
}

pub(crate) fn scan(src: &[u8], acc: &mut Acc<'_>) {
    let mut s = Sh {
        src,
        acc,
        frames: Vec::new(),
        depth: 0,
        st: St::Cmd,
        after_redir: St::Args,
        pending: None,
        in_dbracket: false,
        wrap: Wrap::Plain,
        skip_next: false,
        just_assigned: false,
        resume_dq: false,
        heredoc_next: None,
        heredocs: Vec::new(),
        funcs: Vec::new(),
    };
    s.run();
    for f in std::mem::take(&mut s.funcs) {
        if let Ok(name) = std::str::from_utf8(f) {
            s.acc.imports.remove(name);
        }
    }
}

/// Copies `w` without quotes and backslashes into `buf` (truncated).
fn unquote<'b>(w: &[u8], buf: &'b mut [u8; 256]) -> &'b [u8] {
    let mut k = 0;
    let mut i = 0;
    while i < w.len() && k < buf.len() {
        let c = w[i];
        match c {
            b'\'' | b'"' => {}
            b'\\' => {
                if i + 1 < w.len() {
                    buf[k] = w[i + 1];
                    k += 1;
                }
                i += 1;
            }
            _ => {
                buf[k] = c;
                k += 1;
            }
        }
        i += 1;
    }
    &buf[..k]
}

/// `NAME=...`, `NAME+=...`, `NAME[...]=...`.
fn is_assignment(w: &[u8]) -> bool {
    let Some(&first) = w.first() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return false;
    }
    let mut i = 1;
    while i < w.len() && (w[i].is_ascii_alphanumeric() || w[i] == b'_') {
        i += 1;
    }
    match w.get(i) {
        Some(b'=') => true,
        Some(b'+') => w.get(i + 1) == Some(&b'='),
        Some(b'[') => w[i..].windows(2).any(|p| p == b"]="),
        _ => false,
    }
}

/// Numbers and durations such as `10`, `1.5`, `30s`, `2h`, `0x3`.
fn is_numberish(w: &[u8]) -> bool {
    match w.first() {
        Some(c) if c.is_ascii_digit() => w
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b',' || *c == b'-'),
        _ => false,
    }
}

fn is_builtin(u: &[u8]) -> bool {
    matches!(
        u,
        b"echo"
            | b"printf"
            | b"cd"
            | b"export"
            | b"local"
            | b"set"
            | b"unset"
            | b"shift"
            | b"read"
            | b"readonly"
            | b"declare"
            | b"typeset"
            | b"source"
            | b"."
            | b"eval"
            | b"exit"
            | b"return"
            | b"true"
            | b"false"
            | b"test"
            | b"["
            | b"trap"
            | b"wait"
            | b"shopt"
            | b"alias"
            | b"unalias"
            | b"pushd"
            | b"popd"
            | b"dirs"
            | b"let"
            | b":"
            | b"break"
            | b"continue"
            | b"getopts"
            | b"umask"
            | b"ulimit"
            | b"hash"
            | b"type"
            | b"enable"
            | b"help"
            | b"history"
            | b"jobs"
            | b"fg"
            | b"bg"
            | b"disown"
            | b"kill"
            | b"logout"
            | b"mapfile"
            | b"readarray"
            | b"suspend"
            | b"times"
            | b"caller"
            | b"complete"
            | b"compgen"
    )
}

fn wrapper_of(u: &[u8]) -> Option<(Wrap, bool)> {
    // (kind, record the wrapper itself as a program)
    Some(match u {
        b"exec" | b"nohup" | b"stdbuf" | b"builtin" => (Wrap::Plain, false),
        b"command" => (Wrap::Command, false),
        b"env" => (Wrap::Env, false),
        b"nice" => (Wrap::Nice, false),
        b"sudo" => (Wrap::Sudo, false),
        b"timeout" => (Wrap::Timeout, false),
        b"taskset" => (Wrap::Taskset, false),
        b"ionice" => (Wrap::Ionice, false),
        b"xargs" => (Wrap::Xargs, true),
        b"parallel" => (Wrap::Parallel, true),
        b"srun" | b"mpirun" | b"mpiexec" => (Wrap::Mpi, true),
        _ => return None,
    })
}

/// Options of a wrapper that take the next word as their value.
fn takes_value(w: Wrap, opt: &[u8]) -> bool {
    match w {
        Wrap::Xargs => matches!(
            opt,
            b"-n" | b"-P" | b"-I" | b"-L" | b"-d" | b"-s" | b"-a" | b"-E" | b"--max-procs"
        ),
        Wrap::Parallel => matches!(opt, b"-j" | b"-S" | b"--jobs" | b"-a" | b"--joblog"),
        Wrap::Env => matches!(opt, b"-u" | b"-C" | b"-S"),
        Wrap::Nice => matches!(opt, b"-n"),
        Wrap::Sudo => matches!(opt, b"-u" | b"-g" | b"-C" | b"-p" | b"-h" | b"-U"),
        Wrap::Timeout => matches!(opt, b"-s" | b"-k" | b"--signal" | b"--kill-after"),
        Wrap::Mpi => matches!(
            opt,
            b"-n"
                | b"-N"
                | b"-c"
                | b"-p"
                | b"-t"
                | b"-J"
                | b"-A"
                | b"-w"
                | b"-o"
                | b"-e"
                | b"-np"
                | b"-x"
                | b"-H"
                | b"--host"
                | b"--hostfile"
        ),
        Wrap::Taskset => matches!(opt, b"-c" | b"-p"),
        Wrap::Ionice => matches!(opt, b"-c" | b"-n" | b"-p"),
        Wrap::Plain | Wrap::Command => false,
    }
}

fn is_read_program(u: &[u8]) -> bool {
    matches!(
        u,
        b"cat"
            | b"zcat"
            | b"gzcat"
            | b"bzcat"
            | b"xzcat"
            | b"zstdcat"
            | b"lz4cat"
            | b"head"
            | b"tail"
    )
}

/// A plausible program name: `[A-Za-z0-9._+-]`, not starting with `-`, with
/// at least one letter, at most 64 bytes.
fn valid_program(u: &[u8]) -> bool {
    !u.is_empty()
        && u.len() <= 64
        && u[0] != b'-'
        && u.iter().any(|c| c.is_ascii_alphabetic())
        && u.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'+' | b'-'))
}

impl<'s> Sh<'s, '_, '_> {
    fn run(&mut self) {
        let src = self.src;
        let n = src.len();
        let mut i = 0;
        while i < n {
            if self.resume_dq {
                self.resume_dq = false;
                i = self.word(i, true);
                continue;
            }
            let b = src[i];
            let next = src.get(i + 1).copied().unwrap_or(0);
            match b {
                b' ' | b'\t' | b'\r' | 0x0b | 0x0c | 0 => i += 1,
                b'\n' => {
                    self.acc.newline();
                    self.ev_newline();
                    i = self.heredoc_bodies(i + 1);
                }
                b'#' => {
                    self.acc.comment();
                    i = find_nl(src, i);
                }
                b'\\' if next == b'\n' => {
                    self.acc.mark_code();
                    self.acc.newline();
                    i += 2;
                }
                b';' => {
                    if next == b';' {
                        self.ev_op(Op::DSemi);
                        i += 2;
                    } else {
                        self.ev_op(Op::Semi);
                        i += if next == b'&' { 2 } else { 1 };
                    }
                }
                b'&' => {
                    if next == b'&' {
                        self.ev_op(Op::And);
                        i += 2;
                    } else if next == b'>' {
                        self.ev_op(Op::Redir {
                            input: false,
                            heredoc: None,
                        });
                        i += if src.get(i + 2) == Some(&b'>') { 3 } else { 2 };
                    } else {
                        self.ev_op(Op::Amp);
                        i += 1;
                    }
                }
                b'|' => {
                    if next == b'|' {
                        self.ev_op(Op::Or);
                    } else {
                        self.ev_op(Op::Pipe);
                    }
                    i += if next == b'|' || next == b'&' { 2 } else { 1 };
                }
                b'(' => {
                    if next == b'('
                        && self.pending.is_none()
                        && matches!(self.st, St::Cmd | St::ForHead)
                    {
                        // Arithmetic command `(( ... ))`.
                        self.acc.token();
                        if self.st == St::Cmd {
                            self.st = St::Args;
                        }
                        i = self.skip_balanced(i, b'(', b')');
                    } else {
                        self.ev_op(Op::LParen);
                        i += 1;
                    }
                }
                b')' => {
                    self.ev_op(Op::RParen);
                    i += 1;
                }
                b'<' | b'>' => {
                    if next == b'(' {
                        // Process substitution <(cmd) / >(cmd).
                        self.push_frame(false, false);
                        i += 2;
                    } else if b == b'<' {
                        let (op, len) = match (next, src.get(i + 2).copied()) {
                            (b'<', Some(b'<')) => (
                                Op::Redir {
                                    input: false,
                                    heredoc: None,
                                },
                                3,
                            ),
                            (b'<', Some(b'-')) => (
                                Op::Redir {
                                    input: false,
                                    heredoc: Some(true),
                                },
                                3,
                            ),
                            (b'<', _) => (
                                Op::Redir {
                                    input: false,
                                    heredoc: Some(false),
                                },
                                2,
                            ),
                            (b'&' | b'>', _) => (
                                Op::Redir {
                                    input: false,
                                    heredoc: None,
                                },
                                2,
                            ),
                            _ => (
                                Op::Redir {
                                    input: true,
                                    heredoc: None,
                                },
                                1,
                            ),
                        };
                        self.ev_op(op);
                        i += len;
                    } else {
                        let len = if matches!(next, b'>' | b'&' | b'|') {
                            2
                        } else {
                            1
                        };
                        self.ev_op(Op::Redir {
                            input: false,
                            heredoc: None,
                        });
                        i += len;
                    }
                }
                b'`' => {
                    if self.frames.last().is_some_and(|f| f.backtick) {
                        self.pop_frame();
                    } else {
                        self.push_frame(true, false);
                    }
                    i += 1;
                }
                _ => i = self.word(i, false),
            }
        }
        self.flush();
    }

    /// Skips a balanced `open ... close` group starting at `i` (which holds
    /// `open`); newlines inside are counted. Returns the index after it.
    fn skip_balanced(&mut self, i: usize, open: u8, close: u8) -> usize {
        let src = self.src;
        let mut depth = 0u32;
        let mut j = i;
        while j < src.len() {
            let c = src[j];
            if c == open {
                depth = depth.saturating_add(1);
            } else if c == close {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return j + 1;
                }
            } else if c == b'\n' {
                self.acc.mark_code();
                self.acc.newline();
            }
            j += 1;
        }
        src.len()
    }

    /// Scans one word from `i` (inside double quotes if `in_dq`); emits it and
    /// any command substitution it opens. Returns the next index.
    fn word(&mut self, i: usize, in_dq: bool) -> usize {
        let src = self.src;
        let n = src.len();
        let s = i;
        let mut j = i;
        let mut dq = in_dq;
        while j < n {
            let c = src[j];
            let next = src.get(j + 1).copied().unwrap_or(0);
            if dq {
                match c {
                    b'"' => {
                        dq = false;
                        j += 1;
                    }
                    b'\\' => {
                        if next == b'\n' {
                            self.acc.mark_code();
                            self.acc.newline();
                        }
                        j += 2;
                    }
                    b'\n' => {
                        self.acc.mark_code();
                        self.acc.newline();
                        j += 1;
                    }
                    b'$' if next == b'(' && src.get(j + 2) != Some(&b'(') => {
                        if self.frames.len() < MAX_FRAMES {
                            self.emit_word(s, j);
                            self.push_frame(false, true);
                            return j + 2;
                        }
                        j += 2;
                    }
                    b'$' if next == b'{' => j = self.skip_balanced(j + 1, b'{', b'}'),
                    b'`' => {
                        if self.frames.last().is_some_and(|f| f.backtick) {
                            // Closes the enclosing backtick substitution.
                            break;
                        }
                        if self.frames.len() < MAX_FRAMES {
                            self.emit_word(s, j);
                            self.push_frame(true, true);
                            return j + 1;
                        }
                        j += 1;
                    }
                    _ => j += 1,
                }
                continue;
            }
            match c {
                b' ' | b'\t' | b'\r' | b'\n' | b';' | b'&' | b'|' | b'<' | b'>' | b')' | 0 => break,
                b'(' => {
                    if j > s && matches!(src[j - 1], b'=' | b'@' | b'?' | b'*' | b'+' | b'!') {
                        // Array assignment a=(x y) or an extglob @(a|b).
                        j = self.skip_balanced(j, b'(', b')');
                    } else {
                        break;
                    }
                }
                b'\'' => {
                    let mut k = j + 1;
                    while k < n && src[k] != b'\'' {
                        if src[k] == b'\n' {
                            self.acc.mark_code();
                            self.acc.newline();
                        }
                        k += 1;
                    }
                    j = k + 1;
                }
                b'"' => {
                    dq = true;
                    j += 1;
                }
                b'\\' => {
                    if next == b'\n' {
                        self.acc.mark_code();
                        self.acc.newline();
                    }
                    j += 2;
                }
                // Ends the word; run() opens or closes the substitution.
                b'`' => break,
                b'$' => match next {
                    b'(' if src.get(j + 2) == Some(&b'(') => {
                        j = self.skip_balanced(j + 1, b'(', b')');
                    }
                    b'(' => {
                        if self.frames.len() < MAX_FRAMES {
                            self.emit_word(s, j);
                            self.push_frame(false, false);
                            return j + 2;
                        }
                        j += 2;
                    }
                    b'{' => j = self.skip_balanced(j + 1, b'{', b'}'),
                    b'\'' => {
                        // ANSI-C quoting $'...' with escapes.
                        let mut k = j + 2;
                        while k < n && src[k] != b'\'' {
                            if src[k] == b'\\' {
                                if src.get(k + 1) == Some(&b'\n') {
                                    self.acc.mark_code();
                                    self.acc.newline();
                                }
                                k += 1;
                            } else if src[k] == b'\n' {
                                self.acc.mark_code();
                                self.acc.newline();
                            }
                            k += 1;
                        }
                        j = k + 1;
                    }
                    _ => j += 1,
                },
                _ => j += 1,
            }
        }
        let j = j.min(n);
        if j == s {
            // Nothing consumed (e.g. a lone backtick that closes a frame):
            // let run() handle the byte.
            if src.get(j) == Some(&b'`') {
                if self.frames.last().is_some_and(|f| f.backtick) {
                    self.pop_frame();
                } else if self.frames.len() < MAX_FRAMES {
                    self.push_frame(true, false);
                }
            }
            return j + 1;
        }
        // File-descriptor prefix of a redirection: `2>file`, `3<&0`.
        if j < n && matches!(src[j], b'<' | b'>') && src[s..j].iter().all(u8::is_ascii_digit) {
            return j;
        }
        self.emit_word(s, j);
        j
    }

    fn emit_word(&mut self, s: usize, e: usize) {
        if e > s {
            let w = &self.src[s..e];
            self.ev_word(w);
        }
    }

    fn push_frame(&mut self, backtick: bool, resume_dq: bool) {
        self.flush();
        if self.frames.len() >= MAX_FRAMES {
            return;
        }
        // The substitution occupies the command word unless it is the value
        // of an assignment.
        let saved = if self.st == St::Cmd && !self.just_assigned {
            St::Args
        } else {
            self.st
        };
        self.frames.push(Frame {
            backtick,
            resume_dq,
            st: saved,
            after_redir: self.after_redir,
            depth: self.depth,
            in_dbracket: self.in_dbracket,
            wrap: self.wrap,
            skip_next: self.skip_next,
        });
        self.acc.token();
        self.just_assigned = false;
        self.st = St::Cmd;
        self.depth = 0;
        self.in_dbracket = false;
        self.skip_next = false;
    }

    fn pop_frame(&mut self) {
        self.flush();
        if let Some(f) = self.frames.pop() {
            self.st = f.st;
            self.after_redir = f.after_redir;
            self.depth = f.depth;
            self.in_dbracket = f.in_dbracket;
            self.wrap = f.wrap;
            self.skip_next = f.skip_next;
            self.resume_dq = f.resume_dq;
        }
        self.acc.token();
        self.just_assigned = false;
    }

    /// Commits a pending command word as a program run.
    fn flush(&mut self) {
        if let Some(w) = self.pending.take() {
            self.record_program(w);
        }
    }

    fn record_program(&mut self, w: &[u8]) {
        self.acc.c.calls += 1;
        let mut buf = [0u8; 256];
        let u = unquote(w, &mut buf);
        let u = match u.iter().position(|c| c.is_ascii_whitespace()) {
            Some(p) => &u[..p],
            None => u,
        };
        let u = match u.iter().rposition(|&c| c == b'/') {
            Some(p) => &u[p + 1..],
            None => u,
        };
        if !valid_program(u) {
            return;
        }
        self.acc.import(u);
        if is_read_program(u) {
            self.acc.c.read_calls += 1;
        }
        match u {
            b"parallel" | b"nproc" | b"srun" | b"mpirun" | b"mpiexec" => {
                self.acc.c.parallel_hints += 1
            }
            b"nvidia-smi" => self.acc.c.gpu_hints += 1,
            _ => {}
        }
    }

    fn ev_newline(&mut self) {
        self.flush();
        self.just_assigned = false;
        self.in_dbracket = false;
        self.skip_next = false;
        self.heredoc_next = None;
        if !matches!(self.st, St::CaseHead | St::CasePat) {
            self.st = St::Cmd;
        }
    }

    fn ev_op(&mut self, op: Op) {
        if op != Op::LParen {
            self.flush();
        }
        self.acc.token();
        self.just_assigned = false;
        match op {
            Op::Pipe | Op::Semi | Op::Amp | Op::And | Op::Or => {
                if self.in_dbracket && matches!(op, Op::And | Op::Or) {
                    return;
                }
                if op == Op::Pipe && self.st == St::CasePat {
                    // `a|b)` alternatives in a case pattern.
                    return;
                }
                if op == Op::Amp {
                    self.acc.c.parallel_hints += 1;
                }
                if op == Op::Semi && self.st == St::CaseHead {
                    return;
                }
                self.st = St::Cmd;
                self.skip_next = false;
                self.in_dbracket = false;
            }
            Op::DSemi => self.st = St::CasePat,
            Op::LParen => {
                if let Some(name) = self.pending.take() {
                    // name() { ... }
                    self.funcs.push(name);
                    self.acc.c.func_defs += 1;
                    self.st = St::FuncParen;
                    return;
                }
                match self.st {
                    St::CasePat | St::FuncParen => {}
                    _ => {
                        self.depth = self.depth.saturating_add(1);
                        self.st = St::Cmd;
                    }
                }
            }
            Op::RParen => {
                if matches!(self.st, St::CasePat | St::FuncParen) {
                    if self.st == St::CasePat {
                        self.st = St::Cmd;
                    }
                } else if self.depth > 0 {
                    self.depth -= 1;
                    self.st = St::Args;
                } else if self.frames.last().is_some_and(|f| !f.backtick) {
                    self.pop_frame();
                } else {
                    self.st = St::Args;
                }
            }
            Op::Redir { input, heredoc } => {
                if input {
                    self.acc.c.read_calls += 1;
                }
                if self.st != St::Redir {
                    self.after_redir = self.st;
                }
                self.st = St::Redir;
                self.heredoc_next = heredoc;
            }
        }
    }

    fn ev_word(&mut self, w: &'s [u8]) {
        self.flush();
        self.acc.token();
        self.just_assigned = false;
        if gpu_word(w) {
            self.acc.c.gpu_hints += 1;
        }
        if contains_ci(w, b"thread")
            || w.starts_with(b"--cores")
            || w.starts_with(b"--cpus")
            || w.starts_with(b"--jobs")
            || w.starts_with(b"--ntasks")
            || w == b"-@"
        {
            self.acc.c.parallel_hints += 1;
        }
        if w[0].is_ascii_digit() && w.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'.') {
            self.acc.number(w);
        }
        match self.st {
            St::Redir => {
                if let Some(strip) = self.heredoc_next.take() {
                    if self.heredocs.len() < MAX_HEREDOCS {
                        let mut buf = [0u8; 256];
                        let d = unquote(w, &mut buf);
                        if !d.is_empty() && d.len() <= MAX_DELIM {
                            self.heredocs.push((d.to_vec(), strip));
                        }
                    }
                }
                self.st = self.after_redir;
            }
            St::Cmd | St::FuncParen => self.command_word(w),
            St::Args => {
                if self.in_dbracket && w == b"]]" {
                    self.in_dbracket = false;
                }
            }
            St::ForHead => {
                if w == b"do" {
                    self.st = St::Cmd;
                }
            }
            St::CaseHead => {
                if w == b"in" {
                    self.st = St::CasePat;
                }
            }
            St::CasePat => {
                if w == b"esac" {
                    self.st = St::Args;
                }
            }
            St::FuncName => {
                self.funcs.push(w);
                self.st = St::FuncParen;
            }
            St::Wrapper => self.wrapper_word(w),
        }
    }

    fn command_word(&mut self, w: &'s [u8]) {
        if is_assignment(w) {
            self.just_assigned = true;
            self.st = St::Cmd;
            return;
        }
        let mut buf = [0u8; 256];
        let u = unquote(w, &mut buf);
        match u {
            b"for" | b"select" => {
                self.acc.c.loops += 1;
                self.st = St::ForHead;
            }
            b"while" | b"until" => {
                self.acc.c.loops += 1;
                self.st = St::Cmd;
            }
            b"if" | b"then" | b"else" | b"elif" | b"do" | b"!" | b"{" | b"time" | b"coproc" => {
                self.st = St::Cmd
            }
            b"fi" | b"done" | b"esac" | b"}" => self.st = St::Args,
            b"case" => self.st = St::CaseHead,
            b"function" => {
                self.acc.c.func_defs += 1;
                self.st = St::FuncName;
            }
            b"[[" => {
                self.in_dbracket = true;
                self.st = St::Args;
            }
            _ if is_builtin(u) => {
                self.acc.c.calls += 1;
                self.st = St::Args;
            }
            _ => {
                let base = match u.iter().rposition(|&c| c == b'/') {
                    Some(p) => &u[p + 1..],
                    None => u,
                };
                if let Some((wrap, record)) = wrapper_of(base) {
                    if record {
                        self.record_program(w);
                    } else {
                        self.acc.c.calls += 1;
                    }
                    self.wrap = wrap;
                    self.skip_next = false;
                    self.st = St::Wrapper;
                } else {
                    self.pending = Some(w);
                    self.st = St::Args;
                }
            }
        }
    }

    fn wrapper_word(&mut self, w: &'s [u8]) {
        if self.skip_next {
            self.skip_next = false;
            return;
        }
        let mut buf = [0u8; 256];
        let u = unquote(w, &mut buf);
        if u.first() == Some(&b'-') {
            if self.wrap == Wrap::Xargs && (u.starts_with(b"-P") || u.starts_with(b"--max-procs")) {
                self.acc.c.parallel_hints += 1;
            }
            if self.wrap == Wrap::Command && (u == b"-v" || u == b"-V") {
                self.st = St::Args;
                return;
            }
            if takes_value(self.wrap, u) {
                self.skip_next = true;
            }
            return;
        }
        if u == b":::" || u == b"::::" {
            self.st = St::Args;
            return;
        }
        if is_assignment(u) || is_numberish(u) {
            return;
        }
        self.st = St::Cmd;
        self.command_word(w);
    }

    /// After a newline: skips the bodies of pending here-documents.
    fn heredoc_bodies(&mut self, mut i: usize) -> usize {
        if self.heredocs.is_empty() {
            return i;
        }
        let src = self.src;
        let n = src.len();
        let docs = std::mem::take(&mut self.heredocs);
        for (delim, strip) in &docs {
            loop {
                if i >= n {
                    return n;
                }
                let e = find_nl(src, i);
                let mut line = &src[i..e];
                if *strip {
                    while let Some((&b'\t', rest)) = line.split_first() {
                        line = rest;
                    }
                }
                if let Some((&b'\r', rest)) = line.split_last() {
                    line = rest;
                }
                self.acc.mark_code();
                if e < n {
                    self.acc.newline();
                }
                i = e + 1;
                if line == delim.as_slice() {
                    break;
                }
            }
        }
        i.min(n)
    }
}
