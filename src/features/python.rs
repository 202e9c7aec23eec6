//! Single-pass Python lexer + analyser over bytes.

use super::scan::{
    find_nl, gpu_word, Acc, WordFilter, CLASS, C_BSLASH, C_DIGIT, C_DOT, C_HASH, C_ID, C_NL,
    C_QUOTE, C_SPACE, IDCONT, T,
};

/// Identifier-continuation flags: bit 0 = continues an identifier, bit 1 =
/// `u`/`U` (the letter `cuda` and `gpu` share: only identifiers holding one
/// go through [`gpu_word`]).
const ID_CONT: u8 = 1;
const ID_U: u8 = 2;

const fn build_idflags() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        if b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80 {
            t[i] = ID_CONT;
            if b == b'u' || b == b'U' {
                t[i] |= ID_U;
            }
        }
        i += 1;
    }
    t
}

static IDFLAGS: [u8; 256] = build_idflags();

// Python's own byte classes: the shared ones plus brackets (so the dispatch
// also settles the bracket depth).
const C_OPEN: u8 = 10;
const C_CLOSE: u8 = 11;

const fn build_pyclass() -> [u8; 256] {
    let mut t = CLASS;
    t[b'(' as usize] = C_OPEN;
    t[b'[' as usize] = C_OPEN;
    t[b'{' as usize] = C_OPEN;
    t[b')' as usize] = C_CLOSE;
    t[b']' as usize] = C_CLOSE;
    t[b'}' as usize] = C_CLOSE;
    t
}

static PYCLASS: [u8; 256] = build_pyclass();

/// Identifier-continuation bytes from `i`: the end, and whether any of them
/// is `u`/`U`.
#[inline(always)]
fn ident_end(src: &[u8], mut i: usize) -> (usize, bool) {
    let mut flags = 0u8;
    while let Some(&c) = src.get(i) {
        let f = IDFLAGS[c as usize];
        if f == 0 {
            break;
        }
        flags |= f;
        i += 1;
    }
    (i, flags & ID_U != 0)
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
static KEYWORD_FILTER: WordFilter = WordFilter::new(KEYWORDS);

#[inline]
fn keyword(x: &[u8]) -> u8 {
    if !KEYWORD_FILTER.maybe(x) {
        return 0;
    }
    match x {
        b"for" => KW_FOR,
        b"while" => KW_WHILE,
        b"def" => KW_DEF,
        b"lambda" => KW_LAMBDA,
        b"import" => KW_IMPORT,
        b"from" => KW_FROM,
        b"as" => KW_AS,
        b"class" => KW_CLASS,
        b"if" | b"elif" | b"else" | b"return" | b"in" | b"not" | b"and" | b"or" | b"is"
        | b"with" | b"try" | b"except" | b"finally" | b"raise" | b"yield" | b"pass" | b"break"
        | b"continue" | b"global" | b"nonlocal" | b"assert" | b"del" | b"async" | b"await"
        | b"None" | b"True" | b"False" => KW_OTHER,
        _ => 0,
    }
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

/// Names bound to catalogue entries are kept in a small vector; beyond this
/// many, new bindings are ignored (bounds the per-identifier lookup cost).
const MAX_BINDINGS: usize = 64;

struct Py<'s, 'c, 'a> {
    src: &'s [u8],
    acc: &'a mut Acc<'c>,
    /// Kinds of the last four tokens, most recent in the low byte. Kept in a
    /// register-sized value: copying whole tokens around costs a
    /// store-forwarding stall per token (measured).
    kinds: u32,
    /// The last identifier and the one before it.
    id1: &'s [u8],
    id2: &'s [u8],
    depth: u32,
    /// `name` of a statement starting `name = ...` (for `m = import_module(..)`).
    assign_target: Option<&'s [u8]>,
    imp: Imp,
    imp_top: &'s [u8],
    imp_entry: Option<usize>,
    from_relative: bool,
    from_pending: Option<&'s [u8]>,
    binds: Vec<(&'s [u8], usize)>,
    /// Bit `len` (< 32; 31 for longer) of `[first byte]` is set for every
    /// bound name (a cheap pre-filter).
    bind_filter: [u32; 256],
    scanpy: Option<usize>,
    anndata: Option<usize>,
    tensorflow: Option<usize>,
}

pub(crate) fn scan(src: &[u8], acc: &mut Acc<'_>) {
    let scanpy = acc.cat.lookup_bytes(b"scanpy", acc.lang);
    let anndata = acc.cat.lookup_bytes(b"anndata", acc.lang);
    let tensorflow = acc.cat.lookup_bytes(b"tensorflow", acc.lang);
    let mut p = Py {
        src,
        acc,
        kinds: K_NONE,
        id1: b"",
        id2: b"",
        depth: 0,
        assign_target: None,
        imp: Imp::Idle,
        imp_top: b"",
        imp_entry: None,
        from_relative: false,
        from_pending: None,
        binds: Vec::new(),
        bind_filter: [0; 256],
        scanpy,
        anndata,
        tensorflow,
    };
    p.run();
}

impl<'s> Py<'s, '_, '_> {
    fn run(&mut self) {
        let src = self.src;
        let n = src.len();
        let mut i = 0;
        while i < n {
            let b = src[i];
            match PYCLASS[b as usize] {
                C_SPACE => i = skip_spaces(src, i + 1),
                C_NL => {
                    self.acc.newline();
                    if self.depth == 0 {
                        self.on_nl();
                    }
                    i += 1;
                }
                C_HASH => {
                    self.acc.comment();
                    i = find_nl(src, i);
                }
                C_ID => {
                    let s = i;
                    let (end, has_u) = ident_end(src, i + 1);
                    i = end;
                    let x = &src[s..i];
                    if i - s <= 2
                        && i < n
                        && CLASS[src[i] as usize] == C_QUOTE
                        && is_string_prefix(x)
                    {
                        i = self.string(i);
                    } else {
                        self.on_ident(x, keyword(x), has_u);
                    }
                }
                C_DIGIT => i = self.number(i),
                C_DOT if i + 1 < n && src[i + 1].is_ascii_digit() => i = self.number(i),
                C_QUOTE => i = self.string(i),
                C_BSLASH if i + 1 < n && src[i + 1] == b'\n' => {
                    // Line continuation.
                    self.acc.mark_code();
                    self.acc.newline();
                    i += 2;
                }
                C_BSLASH if i + 2 < n && src[i + 1] == b'\r' && src[i + 2] == b'\n' => {
                    self.acc.mark_code();
                    self.acc.newline();
                    i += 3;
                }
                C_OPEN => {
                    self.depth = self.depth.saturating_add(1);
                    self.on_op(b, i);
                    i += 1;
                }
                C_CLOSE => {
                    self.depth = self.depth.saturating_sub(1);
                    self.on_op(b, i);
                    i += 1;
                }
                _ => {
                    self.on_op(b, i);
                    i += 1;
                }
            }
        }
        // An import statement on the last line without a trailing newline.
        if self.imp != Imp::Idle {
            self.imp_step(T::Nl);
        }
    }

    fn number(&mut self, s: usize) -> usize {
        let src = self.src;
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
        self.acc.number(&src[s..i]);
        self.on_num();
        i
    }

    /// Lexes a string whose opening quote is at `q`; returns the index after it.
    fn string(&mut self, q: usize) -> usize {
        let src = self.src;
        let n = src.len();
        let quote = src[q];
        let triple = q + 2 < n && src[q + 1] == quote && src[q + 2] == quote;
        let (content, end) = if triple {
            let cs = q + 3;
            let mut j = cs;
            loop {
                if j >= n {
                    break (&src[cs.min(n)..], n);
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
                } else if c == quote && j + 2 < n && src[j + 1] == quote && src[j + 2] == quote {
                    break (&src[cs..j], j + 3);
                } else {
                    j += 1;
                }
            }
        } else {
            let cs = q + 1;
            let mut j = cs;
            loop {
                if j >= n {
                    break (&src[cs.min(n)..], n);
                }
                let c = src[j];
                if c == b'\\' {
                    if j + 1 < n && src[j + 1] == b'\n' {
                        self.acc.mark_code();
                        self.acc.newline();
                    }
                    j += 2;
                } else if c == b'\n' {
                    // Unterminated: stop at the end of the line.
                    break (&src[cs..j], j);
                } else if c == quote {
                    break (&src[cs..j], j + 1);
                } else {
                    j += 1;
                }
            }
        };
        self.on_str(content);
        end
    }

    /// Kind of the `k`-th previous token (1 = the one before the current).
    #[inline(always)]
    fn k(&self, k: u32) -> u32 {
        (self.kinds >> (8 * (k - 1))) & 0xff
    }

    #[inline(always)]
    fn push(&mut self, kind: u32) {
        self.kinds = (self.kinds << 8) | kind;
    }

    /// The most recent identifier (before the current token).
    #[inline(always)]
    fn last_id(&self) -> &'s [u8] {
        self.id1
    }

    /// The identifier before [`Self::last_id`].
    #[inline(always)]
    fn prev_id(&self) -> &'s [u8] {
        self.id2
    }

    #[inline(always)]
    fn on_ident(&mut self, x: &'s [u8], kw: u8, has_u: bool) {
        self.acc.token();
        if kw == 0 {
            self.hints(x, has_u);
            let consumed = self.imp != Imp::Idle && self.imp_step(T::Id(x, 0));
            if !consumed && self.k(1) != u32::from(b'.') {
                if let Some(e) = self.bound(x) {
                    self.acc.use_entry(e);
                }
            }
            self.push(K_ID);
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
            self.push(K_KW | u32::from(kw));
        }
        self.id2 = self.id1;
        self.id1 = x;
    }

    #[inline(always)]
    fn on_op(&mut self, c: u8, pos: usize) {
        self.acc.token();
        let consumed = self.imp != Imp::Idle && self.imp_step(T::Op(c));
        if !consumed {
            match c {
                b'(' if self.k(1) == K_ID => self.call(),
                b'=' if self.k(1) == K_ID && self.is_assign(pos) => {
                    let x = self.last_id();
                    if x == b"device" {
                        self.acc.c.gpu_hints += 1;
                    }
                    if matches!(self.k(2), K_NONE | K_NL) || self.k(2) == u32::from(b';') {
                        self.assign_target = Some(x);
                    }
                }
                b';' => self.assign_target = None,
                _ => {}
            }
        }
        self.push(u32::from(c));
    }

    #[inline(always)]
    fn on_num(&mut self) {
        self.acc.token();
        if self.imp != Imp::Idle {
            self.imp_step(T::Num);
        }
        self.push(K_NUM);
    }

    #[inline(always)]
    fn on_str(&mut self, s: &'s [u8]) {
        self.acc.token();
        let consumed = self.imp != Imp::Idle && self.imp_step(T::Str(s));
        if !consumed {
            if gpu_word(s) {
                self.acc.c.gpu_hints += 1;
            }
            if self.k(1) == u32::from(b'(')
                && self.k(2) == K_ID
                && matches!(self.last_id(), b"import_module" | b"__import__")
            {
                self.dynamic_import(s);
            }
        }
        self.push(K_STR);
    }

    #[inline(always)]
    fn on_nl(&mut self) {
        if self.imp != Imp::Idle {
            self.imp_step(T::Nl);
        }
        self.assign_target = None;
        self.push(K_NL);
    }

    /// `=` at `pos` is an assignment or keyword argument (not `==`, `<=`, ...).
    fn is_assign(&self, pos: usize) -> bool {
        let src = self.src;
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

    #[inline]
    fn bound(&self, x: &[u8]) -> Option<usize> {
        let f = *x.first()?;
        if self.bind_filter[f as usize] & (1u32 << x.len().min(31)) == 0 {
            return None;
        }
        self.binds
            .iter()
            .find(|(n, _)| n.len() == x.len() && n[0] == f && *n == x)
            .map(|(_, e)| *e)
    }

    fn bind(&mut self, name: &'s [u8], entry: Option<usize>) {
        let pos = self.binds.iter().position(|(n, _)| *n == name);
        match (pos, entry) {
            (Some(p), Some(e)) => self.binds[p].1 = e,
            (Some(p), None) => {
                self.binds.swap_remove(p);
            }
            (None, Some(e)) if self.binds.len() < MAX_BINDINGS && !name.is_empty() => {
                self.binds.push((name, e))
            }
            _ => {}
        }
        self.bind_filter = [0; 256];
        for (n, _) in &self.binds {
            self.bind_filter[n[0] as usize] |= 1u32 << n.len().min(31);
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

    /// Parallelism and GPU hints of an identifier (also inside imports).
    #[inline(always)]
    fn hints(&mut self, x: &[u8], has_u: bool) {
        if parallel_name(x) {
            self.acc.c.parallel_hints += 1;
        }
        if (has_u && gpu_word(x)) || (self.k(1) == u32::from(b'.') && self.gpu_attr(x)) {
            self.acc.c.gpu_hints += 1;
        }
    }

    /// `jax.devices`, `tf.config` (through any name bound to tensorflow).
    #[inline]
    fn gpu_attr(&self, x: &[u8]) -> bool {
        match x {
            b"devices" => true,
            b"config" => {
                self.k(2) == K_ID
                    && self.tensorflow.is_some()
                    && self.bound(self.last_id()) == self.tensorflow
            }
            _ => false,
        }
    }

    /// An identifier (`last_id`) followed by `(`.
    fn call(&mut self) {
        let x = self.last_id();
        let k2 = self.k(2);
        if k2 == K_KW | u32::from(KW_DEF) || k2 == K_KW | u32::from(KW_CLASS) {
            return;
        }
        self.acc.c.calls += 1;
        let qualifier = if k2 == u32::from(b'.') && self.k(3) == K_ID {
            Some(self.prev_id())
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
