//! Single-pass Python lexer + analyser over bytes.
//!
//! Layout for speed (the models issue asks for features + 3 models in
//! ≤ 50 µs on a 2,000-line script; BENCHMARKS.md has the numbers): the
//! position, the token history, the token count, the bracket depth and the
//! line start are locals of [`run`], so they stay in registers; the rest of
//! the state (import machine, bindings, line counters, last identifiers) is
//! in [`Py`] and its methods run on the rarer tokens. Identifier bytes are classified 64 at a
//! time into bit masks ([`IdBlocks`], SSE2 on x86_64), strings and comments
//! are skipped with `memchr`, keywords and short bound names compare as one
//! packed `u64`. The result is the old, straightforward lexer's on every case of
//! `features::tests::python_golden::python_lexer_golden` (golden digests the old lexer
//! made before it was removed).

use memchr::{memchr, memchr3};

use super::scan::{
    gpu_word, literal_value, Acc, WordFilter, CLASS, C_BSLASH, C_DIGIT, C_DOT, C_HASH, C_ID, C_NL,
    C_QUOTE, C_SPACE, IDCONT, T,
};

// Python's own byte classes: the shared ones plus the operators that need
// more than "count and remember" (so one dispatch settles them).
const C_PAREN: u8 = 10;
const C_OPEN: u8 = 11;
const C_CLOSE: u8 = 12;
const C_EQ: u8 = 13;
const C_SEMI: u8 = 14;

const fn build_pyclass() -> [u8; 256] {
    let mut t = CLASS;
    t[b'(' as usize] = C_PAREN;
    t[b'[' as usize] = C_OPEN;
    t[b'{' as usize] = C_OPEN;
    t[b')' as usize] = C_CLOSE;
    t[b']' as usize] = C_CLOSE;
    t[b'}' as usize] = C_CLOSE;
    t[b'=' as usize] = C_EQ;
    t[b';' as usize] = C_SEMI;
    t
}

static PYCLASS: [u8; 256] = build_pyclass();

/// Identifier bytes of one 64-byte block of the source, classified once:
/// bit `k` of `id` is set when byte `base + k` continues an identifier,
/// bit `k` of `u` when it is `u`/`U`. Bytes past the end read as NUL (no
/// identifier), so a scan never runs past the source.
struct IdBlocks {
    base: usize,
    id: u64,
    u: u64,
}

impl IdBlocks {
    fn new() -> IdBlocks {
        IdBlocks {
            base: usize::MAX,
            id: 0,
            u: 0,
        }
    }

    #[inline(never)]
    fn load(&mut self, src: &[u8], base: usize) {
        let whole = src
            .get(base..base + 64)
            .and_then(|b| <&[u8; 64]>::try_from(b).ok());
        let (id, u) = match whole {
            Some(block) => classify64(block),
            None => {
                let mut buf = [0u8; 64];
                if let Some(rest) = src.get(base..) {
                    buf[..rest.len()].copy_from_slice(rest);
                }
                classify64(&buf)
            }
        };
        self.base = base;
        self.id = id;
        self.u = u;
    }

    /// End of the identifier whose first byte is at `s`, and whether it
    /// holds a `u`/`U` (the letter `cuda` and `gpu` share: only those go
    /// through [`gpu_word`]).
    #[inline(always)]
    fn ident_end(&mut self, src: &[u8], s: usize) -> (usize, bool) {
        let mut i = s;
        let mut has_u = false;
        loop {
            let base = i & !63;
            if base != self.base {
                self.load(src, base);
            }
            let off = i - base;
            let stop = !self.id >> off;
            let u = self.u >> off;
            if stop != 0 {
                let k = stop.trailing_zeros();
                return (i + k as usize, has_u || u & ((1u64 << k) - 1) != 0);
            }
            has_u |= u != 0;
            i = base + 64;
        }
    }
}

/// (identifier-continuation, `u`/`U`) bit masks of 64 bytes.
#[inline(always)]
fn classify64(block: &[u8; 64]) -> (u64, u64) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_cmplt_epi8,
            _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        };
        let mut id = 0u64;
        let mut u = 0u64;
        for k in 0..4 {
            // SAFETY: `block` holds 64 bytes, so the 16 bytes at
            // `16 * k` are inside it; `loadu` has no alignment requirement;
            // SSE2 is part of the x86_64 baseline.
            let (c, uu) = unsafe {
                let v = _mm_loadu_si128(block.as_ptr().add(16 * k).cast::<__m128i>());
                let lower = _mm_or_si128(v, _mm_set1_epi8(0x20));
                let alpha = _mm_and_si128(
                    _mm_cmpgt_epi8(lower, _mm_set1_epi8(0x60)),
                    _mm_cmplt_epi8(lower, _mm_set1_epi8(0x7b)),
                );
                let digit = _mm_and_si128(
                    _mm_cmpgt_epi8(v, _mm_set1_epi8(0x2f)),
                    _mm_cmplt_epi8(v, _mm_set1_epi8(0x3a)),
                );
                let under = _mm_cmpeq_epi8(v, _mm_set1_epi8(0x5f));
                let idm = _mm_or_si128(_mm_or_si128(alpha, digit), under);
                // Bytes >= 0x80 (their sign bit) continue identifiers too.
                let c = (_mm_movemask_epi8(idm) | _mm_movemask_epi8(v)) as u32 as u64;
                let uu =
                    _mm_movemask_epi8(_mm_cmpeq_epi8(lower, _mm_set1_epi8(0x75))) as u32 as u64;
                (c, uu)
            };
            id |= c << (16 * k);
            u |= uu << (16 * k);
        }
        (id, u)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut id = 0u64;
        let mut u = 0u64;
        for (k, &c) in block.iter().enumerate() {
            id |= u64::from(IDCONT[c as usize]) << k;
            u |= u64::from(c | 0x20 == b'u') << k;
        }
        (id, u)
    }
}

/// Index of the first byte at or after `i` that is not a space (` `).
#[inline(always)]
fn skip_spaces(src: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = src.get(i..i + 8) {
        let mut b8 = [0u8; 8];
        b8.copy_from_slice(chunk);
        let x = u64::from_le_bytes(b8) ^ 0x2020_2020_2020_2020;
        if x != 0 {
            return i + (x.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < src.len() && src[i] == b' ' {
        i += 1;
    }
    i
}

// Token kinds in the history shift register (most recent in the low byte):
// operators are their byte (0x21..=0x7e), keywords are 0x80 | keyword code.
const K_NONE: u32 = 0;
const K_ID: u32 = 1;
const K_NUM: u32 = 2;
const K_STR: u32 = 3;
const K_NL: u32 = 4;
const K_KW: u32 = 0x80;

const KW_OTHER: u8 = 1;
const KW_FOR: u8 = 2;
const KW_WHILE: u8 = 3;
const KW_DEF: u8 = 4;
const KW_LAMBDA: u8 = 5;
const KW_IMPORT: u8 = 6;
const KW_FROM: u8 = 7;
const KW_AS: u8 = 8;
const KW_CLASS: u8 = 9;

const KEYWORDS: &[&[u8]] = &[
    b"for",
    b"while",
    b"def",
    b"lambda",
    b"import",
    b"from",
    b"as",
    b"class",
    b"if",
    b"elif",
    b"else",
    b"return",
    b"in",
    b"not",
    b"and",
    b"or",
    b"is",
    b"with",
    b"try",
    b"except",
    b"finally",
    b"raise",
    b"yield",
    b"pass",
    b"break",
    b"continue",
    b"global",
    b"nonlocal",
    b"assert",
    b"del",
    b"async",
    b"await",
    b"None",
    b"True",
    b"False",
];
/// `w` packed little-endian into a `u64`, zero-padded (`w.len() <= 8`).
/// Identifiers hold no NUL byte, so up to 8 bytes the packing is
/// one-to-one.
const fn pack(w: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < w.len() && i < 8 {
        v |= (w[i] as u64) << (8 * i);
        i += 1;
    }
    v
}

/// The identifier `src[s..e]` (`e - s <= 8`) packed as by [`pack`], with
/// one unaligned load when 8 bytes are available.
#[inline(always)]
fn pack_at(src: &[u8], s: usize, e: usize) -> u64 {
    let len = e - s;
    match src.get(s..s + 8) {
        Some(chunk) if len > 0 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            u64::from_le_bytes(b) & (u64::MAX >> (64 - 8 * len))
        }
        _ => pack(&src[s..e]),
    }
}

/// Keyword code of an identifier of at most 8 bytes packed by [`pack`]
/// (every keyword is at most 8 bytes long); 0 if it is not a keyword.
#[inline]
fn keyword_packed(w: u64) -> u8 {
    const W_FOR: u64 = pack(b"for");
    const W_WHILE: u64 = pack(b"while");
    const W_DEF: u64 = pack(b"def");
    const W_LAMBDA: u64 = pack(b"lambda");
    const W_IMPORT: u64 = pack(b"import");
    const W_FROM: u64 = pack(b"from");
    const W_AS: u64 = pack(b"as");
    const W_CLASS: u64 = pack(b"class");
    const W_IF: u64 = pack(b"if");
    const W_ELIF: u64 = pack(b"elif");
    const W_ELSE: u64 = pack(b"else");
    const W_RETURN: u64 = pack(b"return");
    const W_IN: u64 = pack(b"in");
    const W_NOT: u64 = pack(b"not");
    const W_AND: u64 = pack(b"and");
    const W_OR: u64 = pack(b"or");
    const W_IS: u64 = pack(b"is");
    const W_WITH: u64 = pack(b"with");
    const W_TRY: u64 = pack(b"try");
    const W_EXCEPT: u64 = pack(b"except");
    const W_FINALLY: u64 = pack(b"finally");
    const W_RAISE: u64 = pack(b"raise");
    const W_YIELD: u64 = pack(b"yield");
    const W_PASS: u64 = pack(b"pass");
    const W_BREAK: u64 = pack(b"break");
    const W_CONTINUE: u64 = pack(b"continue");
    const W_GLOBAL: u64 = pack(b"global");
    const W_NONLOCAL: u64 = pack(b"nonlocal");
    const W_ASSERT: u64 = pack(b"assert");
    const W_DEL: u64 = pack(b"del");
    const W_ASYNC: u64 = pack(b"async");
    const W_AWAIT: u64 = pack(b"await");
    const W_NONE: u64 = pack(b"None");
    const W_TRUE: u64 = pack(b"True");
    const W_FALSE: u64 = pack(b"False");
    match w {
        W_FOR => KW_FOR,
        W_WHILE => KW_WHILE,
        W_DEF => KW_DEF,
        W_LAMBDA => KW_LAMBDA,
        W_IMPORT => KW_IMPORT,
        W_FROM => KW_FROM,
        W_AS => KW_AS,
        W_CLASS => KW_CLASS,
        W_IF | W_ELIF | W_ELSE | W_RETURN | W_IN | W_NOT | W_AND | W_OR | W_IS | W_WITH | W_TRY
        | W_EXCEPT | W_FINALLY | W_RAISE | W_YIELD | W_PASS | W_BREAK | W_CONTINUE | W_GLOBAL
        | W_NONLOCAL | W_ASSERT | W_DEL | W_ASYNC | W_AWAIT | W_NONE | W_TRUE | W_FALSE => KW_OTHER,
        _ => 0,
    }
}

#[cfg(test)]
#[test]
fn packed_keywords_are_the_keywords() {
    for kw in KEYWORDS {
        assert!(kw.len() <= 8);
        assert_ne!(
            keyword_packed(pack(kw)),
            0,
            "{}",
            String::from_utf8_lossy(kw)
        );
    }
    for x in [&b"fo"[..], b"form", b"For", b"", b"elsewhere", b"Nonee"] {
        assert_eq!(keyword_packed(pack(x)), 0);
    }
    let src = b"while x";
    assert_eq!(keyword_packed(pack_at(src, 0, 5)), KW_WHILE);
    assert_eq!(pack_at(src, 6, 7), pack(b"x"));
}

/// Names that hint at process/thread parallelism.
const PARALLEL_NAMES: &[&[u8]] = &[
    b"n_jobs",
    b"Pool",
    b"ThreadPool",
    b"ThreadPoolExecutor",
    b"ProcessPoolExecutor",
    b"num_workers",
    b"n_workers",
    b"threads",
    b"n_threads",
    b"nthreads",
    b"nthread",
    b"num_threads",
    b"n_procs",
    b"nprocs",
    b"num_proc",
    b"cpu_count",
    b"Parallel",
    b"set_num_threads",
    b"multiprocessing",
    b"OMP_NUM_THREADS",
];
static PARALLEL_FILTER: WordFilter = WordFilter::new(PARALLEL_NAMES);

#[inline]
fn parallel_name(x: &[u8]) -> bool {
    PARALLEL_FILTER.maybe(x) && PARALLEL_NAMES.contains(&x)
}

/// Calls that read files (besides any `read_*`).
#[inline]
fn read_name(x: &[u8]) -> bool {
    x.starts_with(b"read_")
        || matches!(
            x,
            b"open"
                | b"load"
                | b"loadtxt"
                | b"genfromtxt"
                | b"fromfile"
                | b"memmap"
                | b"loadmat"
                | b"load_npz"
                | b"imread"
                | b"scan_csv"
                | b"scan_parquet"
                | b"scan_ipc"
                | b"open_dataset"
                | b"open_zarr"
        )
}

fn is_string_prefix(x: &[u8]) -> bool {
    !x.is_empty()
        && x.len() <= 2
        && x.iter().all(|c| {
            matches!(
                c,
                b'r' | b'R' | b'b' | b'B' | b'u' | b'U' | b'f' | b'F' | b't' | b'T'
            )
        })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Imp {
    Idle,
    Name,
    Dotted,
    AfterDot,
    Alias,
    AfterAlias,
    FromMod,
    FromDotted,
    FromAfterDot,
    FromNames,
    FromAfterName,
    FromAlias,
    FromAfterAlias,
}

/// Bit `min(len, 31)` of `t[first byte]` for every word.
const fn word_bits(mut t: [u32; 256], words: &[&[u8]]) -> [u32; 256] {
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        if !w.is_empty() {
            let len = if w.len() < 31 { w.len() } else { 31 };
            t[w[0] as usize] |= 1 << len;
        }
        i += 1;
    }
    t
}

/// The identifiers that need more than "count and remember" (whatever
/// the names bound to catalogue entries): keywords, parallelism names and
/// the `x.devices` / `tf.config` attributes.
static SPECIAL_IDS: [u32; 256] = word_bits(
    word_bits(word_bits([0; 256], KEYWORDS), PARALLEL_NAMES),
    &[b"devices", b"config"],
);

/// Names bound to catalogue entries are kept in a small vector; beyond this
/// many, new bindings are ignored (bounds the per-identifier lookup cost).
const MAX_BINDINGS: usize = 64;

/// The lexer's state outside registers: the import-statement machine, the
/// names bound to catalogue entries, the accumulator, the last identifiers
/// and the line counters. The per-token state is in [`run`]'s locals; the
/// token history is handed to these methods when they need it.
struct Py<'s, 'c, 'a> {
    src: &'s [u8],
    acc: &'a mut Acc<'c>,
    /// `name` of a statement starting `name = ...` (for `m = import_module(..)`).
    assign_target: Option<&'s [u8]>,
    imp: Imp,
    imp_top: &'s [u8],
    imp_entry: Option<usize>,
    from_relative: bool,
    from_pending: Option<&'s [u8]>,
    /// (name, catalogue entry, name packed by [`pack`] or 0 if longer than 8).
    binds: Vec<(&'s [u8], usize, u64)>,
    /// Bit `min(len, 31)` of `[first byte]` is set for every bound name
    /// (a cheap pre-filter for [`Py::bound`]).
    bind_filter: [u32; 256],
    /// [`SPECIAL_IDS`] | `bind_filter`: an identifier that misses it (and
    /// has no `u`, and is not inside an import statement) only counts.
    id_filter: [u32; 256],
    scanpy: Option<usize>,
    anndata: Option<usize>,
    tensorflow: Option<usize>,
    /// Byte ranges of the last identifier and the one before it.
    id1: (usize, usize),
    id2: (usize, usize),
    lines: u64,
    code_lines: u64,
    comment_lines: u64,
    /// The current line has a comment.
    line_comment: bool,
    /// The largest numeric literal so far.
    max_num: f64,
}

/// Kind of the `k`-th previous token (1 = the most recent) in `kinds`.
#[inline(always)]
fn k(kinds: u32, k: u32) -> u32 {
    (kinds >> (8 * (k - 1))) & 0xff
}

/// A string literal: content bounds, the index after it, and how many
/// physical newlines it spans (each one a line of code).
struct Str {
    start: usize,
    end: usize,
    next: usize,
    newlines: u64,
}

/// Lexes a string whose opening quote is at `q`.
#[inline]
fn lex_string(src: &[u8], q: usize) -> Str {
    let n = src.len();
    let quote = src[q];
    let mut newlines = 0;
    if q + 2 < n && src[q + 1] == quote && src[q + 2] == quote {
        let cs = q + 3;
        let mut j = cs;
        loop {
            let Some(p) = src
                .get(j..)
                .and_then(|rest| memchr3(quote, b'\\', b'\n', rest))
            else {
                return Str {
                    start: cs.min(n),
                    end: n,
                    next: n,
                    newlines,
                };
            };
            j += p;
            match src[j] {
                b'\\' => {
                    if src.get(j + 1) == Some(&b'\n') {
                        newlines += 1;
                    }
                    j += 2;
                }
                b'\n' => {
                    newlines += 1;
                    j += 1;
                }
                _ if j + 2 < n && src[j + 1] == quote && src[j + 2] == quote => {
                    return Str {
                        start: cs,
                        end: j,
                        next: j + 3,
                        newlines,
                    };
                }
                _ => j += 1,
            }
        }
    } else {
        let cs = q + 1;
        let mut j = cs;
        loop {
            let Some(p) = src
                .get(j..)
                .and_then(|rest| memchr3(quote, b'\\', b'\n', rest))
            else {
                return Str {
                    start: cs.min(n),
                    end: n,
                    next: n,
                    newlines,
                };
            };
            j += p;
            match src[j] {
                b'\\' => {
                    if src.get(j + 1) == Some(&b'\n') {
                        newlines += 1;
                    }
                    j += 2;
                }
                // Unterminated: stop at the end of the line.
                b'\n' => {
                    return Str {
                        start: cs,
                        end: j,
                        next: j,
                        newlines,
                    }
                }
                _ => {
                    return Str {
                        start: cs,
                        end: j,
                        next: j + 1,
                        newlines,
                    }
                }
            }
        }
    }
}

/// End of the numeric literal starting at `s` (a digit, or `.` + digit).
#[inline]
fn number_end(src: &[u8], s: usize) -> usize {
    let n = src.len();
    let hex = s + 1 < n && src[s] == b'0' && matches!(src[s + 1], b'x' | b'X');
    let mut i = s + 1;
    loop {
        while i < n && (IDCONT[src[i] as usize] || src[i] == b'.') {
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
    i
}

pub(crate) fn scan(src: &[u8], acc: &mut Acc<'_>) {
    let scanpy = acc.cat.lookup_bytes(b"scanpy", acc.lang);
    let anndata = acc.cat.lookup_bytes(b"anndata", acc.lang);
    let tensorflow = acc.cat.lookup_bytes(b"tensorflow", acc.lang);
    let mut p = Py {
        src,
        acc,
        assign_target: None,
        imp: Imp::Idle,
        imp_top: b"",
        imp_entry: None,
        from_relative: false,
        from_pending: None,
        binds: Vec::new(),
        bind_filter: [0; 256],
        id_filter: SPECIAL_IDS,
        scanpy,
        anndata,
        tensorflow,
        id1: (0, 0),
        id2: (0, 0),
        lines: 0,
        code_lines: 0,
        comment_lines: 0,
        line_comment: false,
        max_num: 0.0,
    };
    p.line_comment = p.acc.line_comment;
    run(&mut p);
}

/// The hot loop. Only the position, the token history, the bracket depth
/// and the token count live in registers; the rest of the state is in `p`
/// and touched on rare events (a newline, a number, a special identifier).
/// A line holds code when a token was counted on it (`tokens != line_tok`)
/// or when a string or a `\` continuation spans it (counted on the spot).
fn run(p: &mut Py<'_, '_, '_>) {
    let src = p.src;
    let n = src.len();
    // Kinds of the last four tokens, most recent in the low byte.
    let mut kinds: u32 = K_NONE;
    let mut depth: u32 = 0;
    let mut tokens: u64 = 0;
    // `tokens` when the current line began.
    let mut line_tok: u64 = 0;
    let mut blocks = IdBlocks::new();

    macro_rules! newline {
        ($code:expr) => {{
            let code = $code;
            p.lines += 1;
            p.code_lines += u64::from(code);
            p.comment_lines += u64::from(!code & p.line_comment);
            p.line_comment = false;
            line_tok = tokens;
        }};
    }
    macro_rules! push {
        ($k:expr) => {
            kinds = (kinds << 8) | ($k)
        };
    }
    macro_rules! string {
        ($q:expr) => {{
            let st = lex_string(src, $q);
            if st.newlines > 0 {
                // Every line a string spans holds code.
                p.lines += st.newlines;
                p.code_lines += st.newlines;
                p.line_comment = false;
                line_tok = tokens;
            }
            tokens += 1;
            p.string(st.start, st.end, kinds);
            push!(K_STR);
            st.next
        }};
    }

    let mut i = 0;
    while i < n {
        let b = src[i];
        match PYCLASS[b as usize] {
            C_SPACE => i = skip_spaces(src, i + 1),
            C_ID => {
                let s = i;
                let (end, has_u) = blocks.ident_end(src, i);
                let len = end - s;
                if len <= 2
                    && end < n
                    && CLASS[src[end] as usize] == C_QUOTE
                    && is_string_prefix(&src[s..end])
                {
                    // The prefix and the string are one token.
                    i = string!(end);
                    continue;
                }
                i = end;
                tokens += 1;
                if p.id_filter[b as usize] & (1u32 << len.min(31)) != 0 || p.imp != Imp::Idle {
                    kinds = p.ident(s, end, has_u, kinds);
                } else {
                    if has_u && gpu_word(&src[s..end]) {
                        p.acc.c.gpu_hints += 1;
                    }
                    push!(K_ID);
                }
                p.id2 = p.id1;
                p.id1 = (s, end);
            }
            C_NL => {
                newline!(tokens != line_tok);
                if depth == 0 {
                    if p.imp != Imp::Idle {
                        p.imp_step(T::Nl);
                    }
                    p.assign_target = None;
                    push!(K_NL);
                }
                i += 1;
            }
            C_PAREN => {
                depth = depth.saturating_add(1);
                tokens += 1;
                if p.imp != Imp::Idle && p.imp_step(T::Op(b'(')) {
                } else if kinds & 0xff == K_ID {
                    p.call(kinds);
                }
                push!(u32::from(b'('));
                i += 1;
            }
            C_EQ => {
                tokens += 1;
                if p.imp != Imp::Idle && p.imp_step(T::Op(b'=')) {
                } else if kinds & 0xff == K_ID && is_assign(src, i) {
                    p.assign(kinds);
                }
                push!(u32::from(b'='));
                i += 1;
            }
            C_SEMI => {
                tokens += 1;
                if p.imp != Imp::Idle && p.imp_step(T::Op(b';')) {
                } else {
                    p.assign_target = None;
                }
                push!(u32::from(b';'));
                i += 1;
            }
            C_HASH => {
                p.line_comment = true;
                i = memchr(b'\n', &src[i..]).map_or(n, |q| i + q);
            }
            C_DIGIT | C_DOT if b != b'.' || (i + 1 < n && src[i + 1].is_ascii_digit()) => {
                i = p.number(i);
                tokens += 1;
                if p.imp != Imp::Idle {
                    p.imp_step(T::Num);
                }
                push!(K_NUM);
            }
            C_QUOTE => i = string!(i),
            C_BSLASH if i + 1 < n && src[i + 1] == b'\n' => {
                // Line continuation: the line holds code.
                newline!(true);
                i += 2;
            }
            C_BSLASH if i + 2 < n && src[i + 1] == b'\r' && src[i + 2] == b'\n' => {
                newline!(true);
                i += 3;
            }
            class => {
                // Any other operator: one token.
                if class == C_OPEN {
                    depth = depth.saturating_add(1);
                } else if class == C_CLOSE {
                    depth = depth.saturating_sub(1);
                }
                tokens += 1;
                if p.imp != Imp::Idle {
                    p.imp_step(T::Op(b));
                }
                push!(u32::from(b));
                i += 1;
            }
        }
    }
    // An import statement on the last line without a trailing newline.
    if p.imp != Imp::Idle {
        p.imp_step(T::Nl);
    }
    let acc = &mut *p.acc;
    acc.c.tokens += tokens;
    acc.c.lines += p.lines;
    acc.c.code_lines += p.code_lines;
    acc.c.comment_lines += p.comment_lines;
    acc.line_code = tokens != line_tok;
    acc.line_comment = p.line_comment;
    acc.number_value(p.max_num);
}

/// `=` at `pos` is an assignment or keyword argument (not `==`, `<=`, ...).
#[inline]
fn is_assign(src: &[u8], pos: usize) -> bool {
    let next_eq = src.get(pos + 1) == Some(&b'=');
    let prev_op = pos > 0
        && matches!(
            src[pos - 1],
            b'=' | b'!'
                | b'<'
                | b'>'
                | b'+'
                | b'-'
                | b'*'
                | b'/'
                | b'%'
                | b'&'
                | b'|'
                | b'^'
                | b'@'
                | b':'
        );
    !next_eq && !prev_op
}

impl<'s> Py<'s, '_, '_> {
    /// The identifier at `r` (a byte range of the source).
    #[inline(always)]
    fn id(&self, r: (usize, usize)) -> &'s [u8] {
        let src: &'s [u8] = self.src;
        &src[r.0..r.1]
    }

    /// An identifier at `s..e` that may be special (keyword, parallelism
    /// name, bound name, GPU attribute) or is inside an import statement.
    /// Returns the token history with it pushed.
    #[inline]
    fn ident(&mut self, s: usize, e: usize, has_u: bool, kinds: u32) -> u32 {
        let x = self.id((s, e));
        let w = if e - s <= 8 {
            pack_at(self.src, s, e)
        } else {
            0
        };
        let kw = if w != 0 { keyword_packed(w) } else { 0 };
        if kw == 0 {
            if parallel_name(x) {
                self.acc.c.parallel_hints += 1;
            }
            if (has_u && gpu_word(x)) || (k(kinds, 1) == u32::from(b'.') && self.gpu_attr(x, kinds))
            {
                self.acc.c.gpu_hints += 1;
            }
            let consumed = self.imp != Imp::Idle && self.imp_step(T::Id(x, 0));
            if !consumed && k(kinds, 1) != u32::from(b'.') {
                if let Some(e) = self.bound_packed(x, w) {
                    self.acc.use_entry(e);
                }
            }
            (kinds << 8) | K_ID
        } else {
            let consumed = self.imp != Imp::Idle && self.imp_step(T::Id(x, kw));
            if !consumed {
                match kw {
                    KW_FOR | KW_WHILE => self.acc.c.loops += 1,
                    KW_DEF | KW_LAMBDA => self.acc.c.func_defs += 1,
                    KW_IMPORT => self.imp = Imp::Name,
                    KW_FROM => {
                        self.imp = Imp::FromMod;
                        self.from_relative = false;
                    }
                    _ => {}
                }
            }
            (kinds << 8) | K_KW | u32::from(kw)
        }
    }

    /// A string token with content `s..e` (`kinds` is the history before it).
    #[inline(never)]
    fn string(&mut self, s: usize, e: usize, kinds: u32) {
        let content = self.id((s, e));
        if self.imp != Imp::Idle && self.imp_step(T::Str(content)) {
            return;
        }
        if gpu_word(content) {
            self.acc.c.gpu_hints += 1;
        }
        if k(kinds, 1) == u32::from(b'(')
            && k(kinds, 2) == K_ID
            && matches!(self.id(self.id1), b"import_module" | b"__import__")
        {
            self.dynamic_import(content);
        }
    }

    /// `name =` (an assignment or keyword argument; `kinds` ends with the
    /// name, the last identifier).
    #[inline(never)]
    fn assign(&mut self, kinds: u32) {
        let x = self.id(self.id1);
        if x == b"device" {
            self.acc.c.gpu_hints += 1;
        }
        if matches!(k(kinds, 2), K_NONE | K_NL) || k(kinds, 2) == u32::from(b';') {
            self.assign_target = Some(x);
        }
    }

    /// A numeric literal starting at `s`; returns the index after it.
    #[inline(always)]
    fn number(&mut self, s: usize) -> usize {
        let src = self.src;
        let n = src.len();
        // Fast path: a plain decimal integer of at most 15 digits (the
        // value `literal_value` gives it, exactly).
        let mut v: u64 = 0;
        let mut j = s;
        while j < n && j - s < 16 && src[j].is_ascii_digit() {
            v = v * 10 + u64::from(src[j] - b'0');
            j += 1;
        }
        let (end, value) =
            if j > s && j - s <= 15 && (j == n || !(IDCONT[src[j] as usize] || src[j] == b'.')) {
                (j, v as f64)
            } else {
                let end = number_end(src, s);
                (end, literal_value(&src[s..end]))
            };
        if value > self.max_num {
            self.max_num = value;
        }
        end
    }

    #[inline]
    fn bound(&self, x: &[u8]) -> Option<usize> {
        let f = *x.first()?;
        if self.bind_filter[f as usize] & (1u32 << x.len().min(31)) == 0 {
            return None;
        }
        self.binds
            .iter()
            .find(|(n, _, _)| n.len() == x.len() && n[0] == f && *n == x)
            .map(|(_, e, _)| *e)
    }

    /// [`Py::bound`] for an identifier `x` packed as `w` (0 if longer than
    /// 8 bytes): short names compare as one `u64`.
    #[inline]
    fn bound_packed(&self, x: &[u8], w: u64) -> Option<usize> {
        if w == 0 {
            return self.bound(x);
        }
        let f = x[0];
        if self.bind_filter[f as usize] & (1u32 << x.len()) == 0 {
            return None;
        }
        self.binds
            .iter()
            .find(|(_, _, k)| *k == w)
            .map(|(_, e, _)| *e)
    }

    fn bind(&mut self, name: &'s [u8], entry: Option<usize>) {
        let pos = self.binds.iter().position(|(n, _, _)| *n == name);
        match (pos, entry) {
            (Some(p), Some(e)) => self.binds[p].1 = e,
            (Some(p), None) => {
                self.binds.swap_remove(p);
            }
            (None, Some(e)) if self.binds.len() < MAX_BINDINGS && !name.is_empty() => {
                let w = if name.len() <= 8 { pack(name) } else { 0 };
                self.binds.push((name, e, w))
            }
            _ => {}
        }
        self.bind_filter = [0; 256];
        for (n, _, _) in &self.binds {
            self.bind_filter[n[0] as usize] |= 1u32 << n.len().min(31);
        }
        for (f, (s, b)) in self
            .id_filter
            .iter_mut()
            .zip(SPECIAL_IDS.iter().zip(self.bind_filter.iter()))
        {
            *f = s | b;
        }
    }

    /// `importlib.import_module("a.b")` / `__import__("a")`.
    fn dynamic_import(&mut self, s: &'s [u8]) {
        let s = s.trim_ascii();
        if s.is_empty() || s[0] == b'.' {
            return;
        }
        let top = match s.iter().position(|&c| c == b'.') {
            Some(p) => &s[..p],
            None => s,
        };
        if top.is_empty() || !top.iter().all(|&c| IDCONT[c as usize]) || top[0].is_ascii_digit() {
            return;
        }
        let e = self.acc.import(top);
        if let Some(t) = self.assign_target {
            self.bind(t, e);
        }
    }

    /// Advances the import-statement machine; true if `t` belongs to the
    /// statement (and so is not a use of a bound name).
    fn imp_step(&mut self, t: T<'s>) -> bool {
        use Imp::*;
        match (self.imp, t) {
            (Name, T::Id(x, 0)) => {
                self.imp_top = x;
                self.imp = Dotted;
                true
            }
            (Dotted, T::Op(b'.')) => {
                self.imp = AfterDot;
                true
            }
            (AfterDot, T::Id(_, 0)) => {
                self.imp = Dotted;
                true
            }
            (Dotted, T::Id(_, KW_AS)) => {
                self.imp_entry = self.acc.import(self.imp_top);
                self.imp = Alias;
                true
            }
            (Dotted, _) => {
                let e = self.acc.import(self.imp_top);
                self.bind(self.imp_top, e);
                if matches!(t, T::Op(b',')) {
                    self.imp = Name;
                    true
                } else {
                    self.imp = Idle;
                    false
                }
            }
            (Alias, T::Id(x, 0)) => {
                self.bind(x, self.imp_entry);
                self.imp = AfterAlias;
                true
            }
            (AfterAlias, T::Op(b',')) => {
                self.imp = Name;
                true
            }
            (FromMod, T::Op(b'.')) => {
                self.from_relative = true;
                true
            }
            (FromMod, T::Id(x, 0)) => {
                self.imp_top = x;
                self.imp = FromDotted;
                true
            }
            (FromMod, T::Id(_, KW_IMPORT)) if self.from_relative => {
                self.imp_entry = None;
                self.imp = FromNames;
                true
            }
            (FromDotted, T::Op(b'.')) => {
                self.imp = FromAfterDot;
                true
            }
            (FromAfterDot, T::Id(_, 0)) => {
                self.imp = FromDotted;
                true
            }
            (FromDotted, T::Id(_, KW_IMPORT)) => {
                self.imp_entry = if self.from_relative || self.imp_top == b"__future__" {
                    None
                } else {
                    self.acc.import(self.imp_top)
                };
                self.imp = FromNames;
                true
            }
            (FromNames, T::Op(b'(')) => true,
            (FromNames, T::Op(b'*')) => {
                self.from_pending = None;
                self.imp = FromAfterName;
                true
            }
            (FromNames, T::Id(x, 0)) => {
                self.from_pending = Some(x);
                self.imp = FromAfterName;
                true
            }
            (FromAfterName, T::Id(_, KW_AS)) => {
                self.imp = FromAlias;
                true
            }
            (FromAfterName, _) => {
                if let Some(x) = self.from_pending.take() {
                    self.bind(x, self.imp_entry);
                }
                match t {
                    T::Op(b',') => {
                        self.imp = FromNames;
                        true
                    }
                    T::Op(b')') => {
                        self.imp = Idle;
                        true
                    }
                    _ => {
                        self.imp = Idle;
                        false
                    }
                }
            }
            (FromAlias, T::Id(x, 0)) => {
                self.from_pending = None;
                self.bind(x, self.imp_entry);
                self.imp = FromAfterAlias;
                true
            }
            (FromAfterAlias, T::Op(b',')) => {
                self.imp = FromNames;
                true
            }
            (FromAfterAlias, T::Op(b')')) | (FromNames, T::Op(b')')) => {
                self.imp = Idle;
                true
            }
            _ => {
                self.imp = Idle;
                false
            }
        }
    }

    /// `jax.devices`, `tf.config` (through any name bound to tensorflow).
    #[inline]
    fn gpu_attr(&self, x: &[u8], kinds: u32) -> bool {
        match x {
            b"devices" => true,
            b"config" => {
                k(kinds, 2) == K_ID
                    && self.tensorflow.is_some()
                    && self.bound(self.id(self.id1)) == self.tensorflow
            }
            _ => false,
        }
    }

    /// The last identifier followed by `(` (`kinds` ends with it).
    #[inline(never)]
    fn call(&mut self, kinds: u32) {
        let x = self.id(self.id1);
        let k2 = k(kinds, 2);
        if k2 == K_KW | u32::from(KW_DEF) || k2 == K_KW | u32::from(KW_CLASS) {
            return;
        }
        self.acc.c.calls += 1;
        let qualifier = if k2 == u32::from(b'.') && k(kinds, 3) == K_ID {
            Some(self.id(self.id2))
        } else {
            None
        };
        if read_name(x) {
            self.acc.c.read_calls += 1;
        } else if x == b"File" {
            if qualifier == Some(b"h5py".as_slice()) {
                self.acc.c.read_calls += 1;
            }
        } else if x == b"read" {
            if let Some(q) = qualifier {
                let owner = self.bound(q);
                if owner.is_some() && (owner == self.scanpy || owner == self.anndata) {
                    self.acc.c.read_calls += 1;
                }
            }
        }
    }
}
