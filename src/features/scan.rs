//! Shared scanner state: token counts, imports, catalogue hits, line
//! accounting, numeric literals and byte classes. The per-language lexers in
//! `python.rs`, `rlang.rs` and `shell.rs` drive an [`Acc`].

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::catalog::Catalog;
use super::lang::Language;

/// Counts a scanner takes from a script's code. What each counts is documented
/// on [`crate::features::scan_source`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenCounts {
    /// Physical lines scanned (a last line without `\n` counts).
    pub lines: u64,
    pub tokens: u64,
    pub code_lines: u64,
    pub comment_lines: u64,
    pub loops: u64,
    pub func_defs: u64,
    pub calls: u64,
    pub read_calls: u64,
    /// log10 of the largest numeric literal (0 if none or all below 1).
    pub max_numeric_log10: f64,
    pub parallel_hints: u64,
    pub gpu_hints: u64,
}

/// Cap on distinct import names kept per script (adversarial input bound).
const MAX_IMPORTS: usize = 4096;
/// Import names longer than this are ignored.
const MAX_IMPORT_LEN: usize = 128;

pub(crate) struct Acc<'c> {
    pub c: TokenCounts,
    pub imports: BTreeSet<String>,
    pub imported: Vec<bool>,
    pub usage: Vec<u32>,
    pub cat: &'c Catalog,
    pub lang: Language,
    /// The current line holds code / a comment (lexers that keep line
    /// state in registers write it back here before [`Acc::finish`]).
    pub(crate) line_code: bool,
    pub(crate) line_comment: bool,
    max_num: f64,
}

impl<'c> Acc<'c> {
    pub fn new(cat: &'c Catalog, lang: Language) -> Acc<'c> {
        Acc {
            c: TokenCounts::default(),
            imports: BTreeSet::new(),
            imported: vec![false; cat.len()],
            usage: vec![0; cat.len()],
            cat,
            lang,
            line_code: false,
            line_comment: false,
            max_num: 0.0,
        }
    }

    /// A code token on the current line.
    #[inline(always)]
    pub fn token(&mut self) {
        self.c.tokens += 1;
        self.line_code = true;
    }

    /// The current line holds code (e.g. the inside of a multi-line string).
    #[inline(always)]
    pub fn mark_code(&mut self) {
        self.line_code = true;
    }

    #[inline(always)]
    pub fn comment(&mut self) {
        self.line_comment = true;
    }

    /// End of a physical line.
    #[inline(always)]
    pub fn newline(&mut self) {
        self.c.lines += 1;
        if self.line_code {
            self.c.code_lines += 1;
        } else if self.line_comment {
            self.c.comment_lines += 1;
        }
        self.line_code = false;
        self.line_comment = false;
    }

    /// A numeric literal as written in the source.
    #[inline]
    pub fn number(&mut self, lit: &[u8]) {
        let v = literal_value(lit);
        if v > self.max_num {
            self.max_num = v;
        }
    }

    /// A numeric literal's value, already computed by the lexer.
    #[inline]
    pub fn number_value(&mut self, v: f64) {
        if v > self.max_num {
            self.max_num = v;
        }
    }

    /// Records an import of top-level name `name`; returns its catalogue entry.
    pub fn import(&mut self, name: &[u8]) -> Option<usize> {
        if name.is_empty() || name.len() > MAX_IMPORT_LEN {
            return None;
        }
        match std::str::from_utf8(name) {
            Ok(s) => {
                if !self.imports.contains(s) && self.imports.len() < MAX_IMPORTS {
                    self.imports.insert(s.to_owned());
                }
            }
            Err(_) => {
                if self.imports.len() < MAX_IMPORTS {
                    self.imports
                        .insert(String::from_utf8_lossy(name).into_owned());
                }
            }
        }
        let e = self.cat.lookup_bytes(name, self.lang)?;
        if let Some(f) = self.imported.get_mut(e) {
            *f = true;
        }
        Some(e)
    }

    /// One reference to catalogue entry `e`.
    #[inline]
    pub fn use_entry(&mut self, e: usize) {
        if let Some(u) = self.usage.get_mut(e) {
            *u = u.saturating_add(1);
        }
    }

    /// Final counts. `partial_last_line`: the source has bytes after its last
    /// `\n` (that line is counted too).
    pub fn finish(
        mut self,
        partial_last_line: bool,
    ) -> (BTreeSet<String>, TokenCounts, Vec<(String, bool, u32)>) {
        if partial_last_line {
            self.newline();
        }
        let m = self.max_num.min(f64::MAX);
        self.c.max_numeric_log10 = if m >= 1.0 { m.log10() } else { 0.0 };
        if !self.c.max_numeric_log10.is_finite() {
            self.c.max_numeric_log10 = 0.0;
        }
        let heavy = self
            .cat
            .entries()
            .iter()
            .zip(self.imported.iter().zip(self.usage.iter()))
            .map(|(e, (i, u))| (e.name.clone(), *i, *u))
            .collect();
        (self.imports, self.c, heavy)
    }
}

/// Value of a numeric literal (Python, R or a shell word). Handles `_`
/// separators, `0x`/`0o`/`0b`, exponents and the `L`, `i`, `j` suffixes.
/// Anything unparsable is 0; the result is never NaN.
pub(crate) fn literal_value(lit: &[u8]) -> f64 {
    // Fast path: short plain decimal integers (most literals).
    if lit.len() <= 15 && lit.iter().all(u8::is_ascii_digit) {
        return lit.iter().fold(0u64, |v, &d| v * 10 + u64::from(d - b'0')) as f64;
    }
    let mut s = lit;
    while let Some((&last, rest)) = s.split_last() {
        if matches!(last, b'L' | b'l' | b'i' | b'j' | b'J') && !rest.is_empty() {
            s = rest;
        } else {
            break;
        }
    }
    if s.len() > 2 && s[0] == b'0' {
        let radix = match s[1] {
            b'x' | b'X' => 16,
            b'o' | b'O' => 8,
            b'b' | b'B' => 2,
            _ => 0,
        };
        if radix != 0 {
            let mut v = 0f64;
            for &c in &s[2..] {
                if c == b'_' {
                    continue;
                }
                match (c as char).to_digit(radix) {
                    Some(d) => v = v * f64::from(radix) + f64::from(d),
                    None => break,
                }
            }
            return if v.is_finite() { v } else { f64::MAX };
        }
    }
    if let Some(v) = simple_decimal(s) {
        return v;
    }
    let mut buf = [0u8; 64];
    let mut k = 0;
    for &c in s {
        if c == b'_' {
            continue;
        }
        if k == buf.len() {
            return estimate_long(s);
        }
        buf[k] = c;
        k += 1;
    }
    let v = std::str::from_utf8(&buf[..k])
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or(0.0);
    if v.is_nan() {
        0.0
    } else if v.is_infinite() {
        f64::MAX
    } else {
        v.abs()
    }
}

/// Exact powers of ten representable in an f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Value of `digits[.digits][(e|E)[+-]digits]` (`_` separators allowed) with
/// at most 15 significant digits and a net decimal exponent within ±22, else
/// `None`. The mantissa and the power of ten are both exact in an f64, so one
/// multiplication or division gives the correctly rounded value: the same f64
/// that `str::parse::<f64>` returns (Clinger's fast path).
#[inline]
fn simple_decimal(s: &[u8]) -> Option<f64> {
    let mut m: u64 = 0;
    let mut digits = 0u32;
    let mut frac = 0i32;
    let mut i = 0;
    while i < s.len() && (s[i].is_ascii_digit() || s[i] == b'_') {
        if s[i] != b'_' {
            m = m * 10 + u64::from(s[i] - b'0');
            digits += 1;
            if digits > 15 {
                return None;
            }
        }
        i += 1;
    }
    if i < s.len() && s[i] == b'.' {
        i += 1;
        while i < s.len() && (s[i].is_ascii_digit() || s[i] == b'_') {
            if s[i] != b'_' {
                m = m * 10 + u64::from(s[i] - b'0');
                digits += 1;
                frac += 1;
                if digits > 15 {
                    return None;
                }
            }
            i += 1;
        }
    }
    if digits == 0 {
        return None;
    }
    let mut exp = 0i32;
    if i < s.len() && (s[i] == b'e' || s[i] == b'E') {
        i += 1;
        let neg = i < s.len() && s[i] == b'-';
        if i < s.len() && (s[i] == b'-' || s[i] == b'+') {
            i += 1;
        }
        let start = i;
        while i < s.len() && (s[i].is_ascii_digit() || s[i] == b'_') {
            if s[i] != b'_' {
                exp = exp * 10 + i32::from(s[i] - b'0');
                if exp > 1000 {
                    return None;
                }
            }
            i += 1;
        }
        if i == start || s[start] == b'_' {
            return None;
        }
        if neg {
            exp = -exp;
        }
    }
    if i != s.len() {
        return None;
    }
    let e = exp - frac;
    let v = m as f64;
    match e {
        0..=22 => Some(v * POW10[e as usize]),
        -22..=-1 => Some(v / POW10[(-e) as usize]),
        _ => None,
    }
}

/// Order-of-magnitude value of a literal too long to parse exactly.
fn estimate_long(s: &[u8]) -> f64 {
    let mut digits: i64 = 0;
    let mut seen_nonzero = false;
    let mut i = 0;
    while i < s.len() && (s[i].is_ascii_digit() || s[i] == b'_') {
        if s[i] != b'_' {
            if s[i] != b'0' {
                seen_nonzero = true;
            }
            if seen_nonzero {
                digits += 1;
            }
        }
        i += 1;
    }
    // Skip a fraction.
    if i < s.len() && s[i] == b'.' {
        i += 1;
        while i < s.len() && (s[i].is_ascii_digit() || s[i] == b'_') {
            i += 1;
        }
    }
    let mut exp: i64 = 0;
    if i < s.len() && (s[i] == b'e' || s[i] == b'E') {
        i += 1;
        let neg = i < s.len() && s[i] == b'-';
        if i < s.len() && (s[i] == b'-' || s[i] == b'+') {
            i += 1;
        }
        while i < s.len() && s[i].is_ascii_digit() {
            exp = (exp * 10 + i64::from(s[i] - b'0')).min(100_000);
            i += 1;
        }
        if neg {
            exp = -exp;
        }
    }
    if digits == 0 {
        return 0.0;
    }
    let p = (digits - 1 + exp).clamp(-400, 400) as i32;
    let v = 10f64.powi(p);
    if v.is_finite() {
        v
    } else {
        f64::MAX
    }
}

/// Case-insensitive (ASCII) substring test; `needle` must be lowercase.
#[inline]
pub(crate) fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    if hay.len() < needle.len() {
        return false;
    }
    let first = needle[0];
    let last_start = hay.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        if hay[i].to_ascii_lowercase() == first
            && hay[i + 1..i + needle.len()]
                .iter()
                .zip(&needle[1..])
                .all(|(a, b)| a.to_ascii_lowercase() == *b)
        {
            return true;
        }
        i += 1;
    }
    false
}

/// A name or string that hints at GPU use (`cuda`, `gpu`, any case). One
/// pass keyed on the `u` both words share.
#[inline]
pub(crate) fn gpu_word(s: &[u8]) -> bool {
    let n = s.len();
    if n < 3 {
        return false;
    }
    let mut i = 1;
    while i < n {
        if s[i] | 0x20 == b'u' {
            if i + 2 < n
                && s[i - 1] | 0x20 == b'c'
                && s[i + 1] | 0x20 == b'd'
                && s[i + 2] | 0x20 == b'a'
            {
                return true;
            }
            if i >= 2 && s[i - 2] | 0x20 == b'g' && s[i - 1] | 0x20 == b'p' {
                return true;
            }
        }
        i += 1;
    }
    false
}

/// A cheap pre-filter for a fixed word set: bit `len` of `t[first byte]` is
/// set when some word of that length starts with that byte.
pub(crate) struct WordFilter([u32; 256]);

impl WordFilter {
    pub(crate) const fn new(words: &[&[u8]]) -> WordFilter {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < words.len() {
            let w = words[i];
            if !w.is_empty() && w.len() < 32 {
                t[w[0] as usize] |= 1 << w.len();
            }
            i += 1;
        }
        WordFilter(t)
    }

    /// False means `x` is certainly not in the set.
    #[inline(always)]
    pub(crate) fn maybe(&self, x: &[u8]) -> bool {
        match x.first() {
            Some(&f) if x.len() < 32 => self.0[f as usize] & (1 << x.len()) != 0,
            _ => false,
        }
    }
}

/// Position of the next `\n` at or after `i`, or `src.len()`.
#[inline]
pub(crate) fn find_nl(src: &[u8], i: usize) -> usize {
    match src.get(i..) {
        Some(rest) => rest
            .iter()
            .position(|&c| c == b'\n')
            .map_or(src.len(), |p| i + p),
        None => src.len(),
    }
}

// Byte classes shared by the Python and R lexers.
pub(crate) const C_OTHER: u8 = 0;
pub(crate) const C_SPACE: u8 = 1;
pub(crate) const C_NL: u8 = 2;
pub(crate) const C_ID: u8 = 3;
pub(crate) const C_DIGIT: u8 = 4;
pub(crate) const C_QUOTE: u8 = 5;
pub(crate) const C_HASH: u8 = 6;
pub(crate) const C_BSLASH: u8 = 7;
pub(crate) const C_DOT: u8 = 8;
pub(crate) const C_BACKTICK: u8 = 9;

const fn build_class() -> [u8; 256] {
    let mut t = [C_OTHER; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = if b == b'\n' {
            C_NL
        } else if b <= 0x20 || b == 0x7f {
            C_SPACE
        } else if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 {
            C_ID
        } else if b.is_ascii_digit() {
            C_DIGIT
        } else if b == b'\'' || b == b'"' {
            C_QUOTE
        } else if b == b'#' {
            C_HASH
        } else if b == b'\\' {
            C_BSLASH
        } else if b == b'.' {
            C_DOT
        } else if b == b'`' {
            C_BACKTICK
        } else {
            C_OTHER
        };
        i += 1;
    }
    t
}

pub(crate) static CLASS: [u8; 256] = build_class();

const fn build_idcont() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80;
        i += 1;
    }
    t
}

/// Identifier-continuation bytes (ASCII alphanumerics, `_`, any non-ASCII byte).
pub(crate) static IDCONT: [bool; 256] = build_idcont();

/// Token history entry shared by the Python and R analysers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum T<'s> {
    None,
    /// Identifier with its keyword code (0 = not a keyword).
    Id(&'s [u8], u8),
    Num,
    Str(&'s [u8]),
    Op(u8),
    /// Logical end of line (Python only).
    Nl,
}

#[cfg(test)]
mod tests;
