//! Single-pass R lexer + analyser over bytes.

use super::scan::{
    find_nl, gpu_word, Acc, WordFilter, CLASS, C_BACKTICK, C_DIGIT, C_DOT, C_HASH, C_ID, C_NL,
    C_QUOTE, C_SPACE, IDCONT, T,
};

const KW_OTHER: u8 = 1;
const KW_LOOP: u8 = 2;
const KW_FUNCTION: u8 = 3;

/// `::` and `:::` are lexed as this operator byte.
const OP_NS: u8 = 0x01;
/// `%op%` infix operators are lexed as `%`.
const OP_INFIX: u8 = b'%';

const KEYWORDS: &[&[u8]] = &[
    b"for",
    b"while",
    b"repeat",
    b"function",
    b"if",
    b"else",
    b"in",
    b"next",
    b"break",
    b"TRUE",
    b"FALSE",
    b"NULL",
    b"NA",
    b"Inf",
    b"NaN",
    b"NA_integer_",
    b"NA_real_",
    b"NA_character_",
];
static KEYWORD_FILTER: WordFilter = WordFilter::new(KEYWORDS);

#[inline]
fn keyword(x: &[u8]) -> u8 {
    if !KEYWORD_FILTER.maybe(x) {
        return 0;
    }
    match x {
        b"for" | b"while" | b"repeat" => KW_LOOP,
        b"function" => KW_FUNCTION,
        b"if" | b"else" | b"in" | b"next" | b"break" | b"TRUE" | b"FALSE" | b"NULL" | b"NA"
        | b"Inf" | b"NaN" | b"NA_integer_" | b"NA_real_" | b"NA_character_" => KW_OTHER,
        _ => 0,
    }
}

const PARALLEL_NAMES: &[&[u8]] = &[
    b"mclapply",
    b"mcmapply",
    b"pvec",
    b"parLapply",
    b"parSapply",
    b"parApply",
    b"clusterApply",
    b"clusterMap",
    b"makeCluster",
    b"makePSOCKcluster",
    b"makeForkCluster",
    b"registerDoParallel",
    b"registerDoMC",
    b"registerDoFuture",
    b"bplapply",
    b"bpmapply",
    b"MulticoreParam",
    b"SnowParam",
    b"BatchtoolsParam",
    b"future_lapply",
    b"future_sapply",
    b"future_map",
    b"multisession",
    b"multicore",
    b"multiprocess",
    b"setDTthreads",
    b"mc.cores",
    b"ncores",
    b"n.cores",
    b"nthreads",
    b"threads",
    b"num.threads",
    b"n_threads",
    b"num_threads",
    b"workers",
    b"detectCores",
];
static PARALLEL_FILTER: WordFilter = WordFilter::new(PARALLEL_NAMES);

#[inline]
fn parallel_name(x: &[u8]) -> bool {
    PARALLEL_FILTER.maybe(x) && PARALLEL_NAMES.contains(&x)
}

#[inline]
fn read_name(x: &[u8]) -> bool {
    x.starts_with(b"read.")
        || x.starts_with(b"read_")
        || x.starts_with(b"Read10X")
        || matches!(
            x,
            b"readRDS"
                | b"readLines"
                | b"readMM"
                | b"ReadMtx"
                | b"fread"
                | b"load"
                | b"scan"
                | b"LoadH5Seurat"
                | b"readH5AD"
                | b"read10xCounts"
                | b"readxl"
                | b"vroom"
                | b"h5read"
                | b"fromJSON"
        )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lib<'s> {
    Idle,
    /// Inside `library(`: expecting the package; `multi` for `p_load(a, b)`.
    Arg {
        multi: bool,
    },
    Pending {
        multi: bool,
        name: &'s [u8],
    },
    SkipValue {
        multi: bool,
    },
}

struct Rs<'s, 'c, 'a> {
    src: &'s [u8],
    acc: &'a mut Acc<'c>,
    /// Ring of the last tokens (indexing, not copying: copying a token that
    /// was just written costs a store-forwarding stall).
    hist: [T<'s>; 2],
    h: usize,
    lib: Lib<'s>,
}

pub(crate) fn scan(src: &[u8], acc: &mut Acc<'_>) {
    let mut r = Rs {
        src,
        acc,
        hist: [T::None; 2],
        h: 0,
        lib: Lib::Idle,
    };
    r.run();
}

impl<'s> Rs<'s, '_, '_> {
    fn run(&mut self) {
        let src = self.src;
        let n = src.len();
        let mut i = 0;
        while i < n {
            let b = src[i];
            match CLASS[b as usize] {
                C_SPACE => i += 1,
                C_NL => {
                    self.acc.newline();
                    i += 1;
                }
                C_HASH => {
                    self.acc.comment();
                    i = find_nl(src, i);
                }
                C_DIGIT => i = self.number(i),
                C_DOT if i + 1 < n && src[i + 1].is_ascii_digit() => i = self.number(i),
                C_ID | C_DOT => {
                    let s = i;
                    i += 1;
                    while i < n && (IDCONT[src[i] as usize] || src[i] == b'.') {
                        i += 1;
                    }
                    let x = &src[s..i];
                    if (x == b"r" || x == b"R") && i < n && (src[i] == b'"' || src[i] == b'\'') {
                        if let Some(end) = self.raw_string(i) {
                            i = end;
                            continue;
                        }
                    }
                    self.tok(T::Id(x, keyword(x)));
                }
                C_QUOTE => i = self.string(i),
                C_BACKTICK => {
                    let (content, end) = self.quoted(i);
                    self.tok(T::Id(content, 0));
                    i = end;
                }
                _ => {
                    if b == b':' && i + 1 < n && src[i + 1] == b':' {
                        i += if i + 2 < n && src[i + 2] == b':' {
                            3
                        } else {
                            2
                        };
                        self.tok(T::Op(OP_NS));
                    } else if b == b'%' {
                        let e = find_nl(src, i + 1);
                        match src[i + 1..e].iter().position(|&c| c == b'%') {
                            Some(p) => {
                                let op = &src[i..i + p + 2];
                                if op == b"%dopar%" || op == b"%dorng%" {
                                    self.acc.c.parallel_hints += 1;
                                }
                                i += p + 2;
                            }
                            None => i += 1,
                        }
                        self.tok(T::Op(OP_INFIX));
                    } else {
                        if b == b'\\' && i + 1 < n && src[i + 1] == b'(' {
                            // R 4.1 lambda: \(x) x + 1
                            self.acc.c.func_defs += 1;
                        }
                        self.tok(T::Op(b));
                        i += 1;
                    }
                }
            }
        }
    }

    fn number(&mut self, s: usize) -> usize {
        let src = self.src;
        let n = src.len();
        let hex = s + 1 < n && src[s] == b'0' && matches!(src[s + 1], b'x' | b'X');
        let mut i = s + 1;
        loop {
            while i < n && (src[i].is_ascii_alphanumeric() || src[i] == b'.' || src[i] == b'_') {
                i += 1;
            }
            if !hex
                && i + 1 < n
                && (src[i] == b'+' || src[i] == b'-')
                && matches!(src[i - 1], b'e' | b'E')
                && src[i + 1].is_ascii_digit()
            {
                i += 1;
                continue;
            }
            break;
        }
        self.acc.number(&src[s..i]);
        self.tok(T::Num);
        i
    }

    /// A quoted run starting at `q` (string or backtick name) with backslash
    /// escapes; newlines inside are counted. Returns (content, index after).
    fn quoted(&mut self, q: usize) -> (&'s [u8], usize) {
        let src = self.src;
        let n = src.len();
        let quote = src[q];
        let cs = q + 1;
        let mut j = cs;
        loop {
            if j >= n {
                return (&src[cs.min(n)..], n);
            }
            let c = src[j];
            if c == b'\\' {
                if j + 1 < n && src[j + 1] == b'\n' {
                    self.acc.mark_code();
                    self.acc.newline();
                }
                j += 2;
            } else if c == b'\n' {
                self.acc.mark_code();
                self.acc.newline();
                j += 1;
            } else if c == quote {
                return (&src[cs..j], j + 1);
            } else {
                j += 1;
            }
        }
    }

    fn string(&mut self, q: usize) -> usize {
        let (content, end) = self.quoted(q);
        self.tok(T::Str(content));
        end
    }

    /// R 4.0 raw string `r"(...)"`, `R'[...]'`, `r"--{...}--"` with the quote
    /// at `q`. None if it is not a well-formed opener.
    fn raw_string(&mut self, q: usize) -> Option<usize> {
        let src = self.src;
        let n = src.len();
        let quote = src[q];
        let mut k = q + 1;
        while k < n && src[k] == b'-' {
            k += 1;
        }
        let dashes = k - q - 1;
        let close = match src.get(k)? {
            b'(' => b')',
            b'[' => b']',
            b'{' => b'}',
            _ => return None,
        };
        let cs = k + 1;
        let mut j = cs;
        let (content, end) = loop {
            if j >= n {
                break (&src[cs.min(n)..], n);
            }
            let c = src[j];
            if c == b'\n' {
                self.acc.mark_code();
                self.acc.newline();
            } else if c == close {
                let d_end = j + 1 + dashes;
                if d_end < n && src[j + 1..d_end].iter().all(|&d| d == b'-') && src[d_end] == quote
                {
                    break (&src[cs..j], d_end + 1);
                }
            }
            j += 1;
        };
        self.tok(T::Str(content));
        Some(end)
    }

    fn lib_step(&mut self, t: T<'s>) -> bool {
        match (self.lib, t) {
            (Lib::Arg { multi }, T::Id(x, _) | T::Str(x)) => {
                self.lib = Lib::Pending { multi, name: x };
                true
            }
            (Lib::Pending { multi, name }, T::Op(b'=')) => {
                self.lib = if name == b"package" {
                    Lib::Arg { multi }
                } else {
                    Lib::SkipValue { multi }
                };
                true
            }
            (Lib::Pending { multi, name }, T::Op(c @ (b')' | b','))) => {
                self.acc.import(name);
                self.lib = if c == b',' && multi {
                    Lib::Arg { multi }
                } else {
                    Lib::Idle
                };
                c == b','
            }
            (Lib::SkipValue { multi }, T::Op(b',')) => {
                self.lib = Lib::Arg { multi };
                true
            }
            (Lib::SkipValue { .. }, T::Op(b'(' | b')')) => {
                self.lib = Lib::Idle;
                false
            }
            (Lib::SkipValue { .. }, _) => true,
            _ => {
                self.lib = Lib::Idle;
                false
            }
        }
    }

    #[inline(always)]
    fn tok(&mut self, t: T<'s>) {
        self.acc.token();
        let consumed = self.lib != Lib::Idle && self.lib_step(t);
        if !consumed {
            match t {
                T::Id(x, kw) => match kw {
                    0 => {
                        if parallel_name(x)
                            || (x == b"plan"
                                && matches!(self.p1(), T::Op(OP_NS))
                                && matches!(self.p2(), T::Id(b"future", 0)))
                        {
                            self.acc.c.parallel_hints += 1;
                        }
                        if gpu_word(x) {
                            self.acc.c.gpu_hints += 1;
                        }
                    }
                    KW_LOOP => self.acc.c.loops += 1,
                    KW_FUNCTION => self.acc.c.func_defs += 1,
                    _ => {}
                },
                T::Str(s) if gpu_word(s) => self.acc.c.gpu_hints += 1,
                T::Op(OP_NS) => {
                    if let T::Id(pkg, 0) = self.p1() {
                        if let Some(e) = self.acc.import(pkg) {
                            self.acc.use_entry(e);
                        }
                    }
                }
                T::Op(b'(') => self.open_paren(),
                _ => {}
            }
        }
        self.h ^= 1;
        self.hist[self.h] = t;
    }

    #[inline(always)]
    fn p1(&self) -> T<'s> {
        self.hist[self.h]
    }

    #[inline(always)]
    fn p2(&self) -> T<'s> {
        self.hist[self.h ^ 1]
    }

    fn open_paren(&mut self) {
        let T::Id(x, 0) = self.p1() else {
            return;
        };
        self.acc.c.calls += 1;
        if read_name(x) {
            self.acc.c.read_calls += 1;
        }
        let qualified = matches!(self.p2(), T::Op(OP_NS));
        if matches!(
            x,
            b"library" | b"require" | b"requireNamespace" | b"loadNamespace" | b"attachNamespace"
        ) {
            self.lib = Lib::Arg { multi: false };
        } else if x == b"p_load" {
            self.lib = Lib::Arg { multi: true };
        } else if !qualified {
            if let Some(e) = self.acc.cat.export_owner(x) {
                if self.acc.imported.get(e).copied().unwrap_or(false) {
                    self.acc.use_entry(e);
                }
            }
        }
    }
}
