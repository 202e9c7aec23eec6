//! Code extraction from Jupyter notebooks (`.ipynb`) and R Markdown (`.Rmd`).

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// Code cells of a notebook, concatenated (one `\n` between cells), with
/// IPython magics and shell escapes blanked out.
#[derive(Debug, Default)]
pub(crate) struct NotebookCode {
    pub code: Vec<u8>,
    pub code_cells: usize,
    /// The kernel language from the notebook metadata, if it names one.
    pub kernel_language: Option<String>,
}

/// Extracts the code cells. `truncated` means the bytes are a prefix of the
/// file: a JSON document cut short is then accepted with the cells read so
/// far. Any other malformation is an error (the reason is one line).
pub(crate) fn extract_notebook(bytes: &[u8], truncated: bool) -> Result<NotebookCode, String> {
    let mut sink = NotebookCode::default();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(sink);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let res = Top(&mut sink).deserialize(&mut de).and_then(|()| de.end());
    match res {
        Ok(()) => Ok(sink),
        Err(e) if truncated && e.is_eof() => Ok(sink),
        Err(e) => Err(e.to_string().replace(['\n', '\r'], " ")),
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum TopKey {
    Cells,
    Worksheets,
    Metadata,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum CellKey {
    CellType,
    Source,
    /// nbformat 3 code cells keep their code in `input`.
    Input,
    #[serde(other)]
    Other,
}

struct Top<'a>(&'a mut NotebookCode);

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Jupyter notebook object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<TopKey>()? {
            match key {
                TopKey::Cells => map.next_value_seed(Cells(&mut *self.0))?,
                TopKey::Worksheets => map.next_value_seed(Worksheets(&mut *self.0))?,
                TopKey::Metadata => {
                    let meta: serde_json::Value = map.next_value()?;
                    let lang = meta
                        .pointer("/kernelspec/language")
                        .or_else(|| meta.pointer("/language_info/name"))
                        .and_then(|v| v.as_str());
                    if let Some(l) = lang {
                        self.0.kernel_language = Some(l.chars().take(64).collect());
                    }
                }
                TopKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// nbformat 3: `worksheets: [{cells: [...]}, ...]`.
struct Worksheets<'a>(&'a mut NotebookCode);

impl<'de> DeserializeSeed<'de> for Worksheets<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Worksheets<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of worksheets")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Worksheet(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

struct Worksheet<'a>(&'a mut NotebookCode);

impl<'de> DeserializeSeed<'de> for Worksheet<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Worksheet<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a worksheet object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<TopKey>()? {
            match key {
                TopKey::Cells => map.next_value_seed(Cells(&mut *self.0))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct Cells<'a>(&'a mut NotebookCode);

impl<'de> DeserializeSeed<'de> for Cells<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Cells<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of cells")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Cell(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

struct Cell<'a>(&'a mut NotebookCode);

impl<'de> DeserializeSeed<'de> for Cell<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Cell<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a cell object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut is_code = false;
        let mut source: Option<String> = None;
        while let Some(key) = map.next_key::<CellKey>()? {
            match key {
                CellKey::CellType => {
                    let t: String = map.next_value()?;
                    is_code = t == "code";
                }
                CellKey::Source | CellKey::Input => {
                    let s: SourceText = map.next_value()?;
                    source = Some(s.0);
                }
                CellKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if is_code {
            self.0.code_cells += 1;
            if let Some(src) = source {
                push_cell(&mut self.0.code, &src);
            }
        }
        Ok(())
    }
}

/// A cell source: a string, a list of strings (concatenated) or null.
struct SourceText(String);

impl<'de> Deserialize<'de> for SourceText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SourceText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SourceText, E> {
                Ok(SourceText(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<SourceText, E> {
                Ok(SourceText(v))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<SourceText, E> {
                Ok(SourceText(String::new()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SourceText, A::Error> {
                let mut s = String::new();
                while let Some(part) = seq.next_element::<std::borrow::Cow<'de, str>>()? {
                    s.push_str(&part);
                }
                Ok(SourceText(s))
            }
        }
        d.deserialize_any(V)
    }
}

/// Cell magics that keep the rest of the cell in the kernel's language.
fn transparent_cell_magic(name: &str) -> bool {
    matches!(
        name,
        "time" | "timeit" | "capture" | "prun" | "memit" | "mprun" | "debug"
    )
}

/// Appends one code cell: `%%bash`-style cells (other languages) are dropped,
/// `%line` magics, `!shell` escapes and `?help` lines become blank lines.
fn push_cell(out: &mut Vec<u8>, src: &str) {
    let mut lines = src.split_inclusive('\n').peekable();
    // Find the first non-blank line for a cell magic.
    let first = src.trim_start();
    if let Some(rest) = first.strip_prefix("%%") {
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !transparent_cell_magic(&name) {
            out.push(b'\n');
            return;
        }
    }
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with('%') || t.starts_with('!') || t.starts_with('?') {
            out.push(b'\n');
        } else {
            out.extend_from_slice(line.as_bytes());
            if lines.peek().is_none() && !line.ends_with('\n') {
                out.push(b'\n');
            }
        }
    }
    // Keep cells apart even when the source is empty.
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
}

/// The R code chunks of an R Markdown document: lines between a fence such as
/// ```` ```{r} ```` / ```` ```{r setup, include=FALSE} ```` and a closing
/// ```` ``` ````. Other engines' chunks and prose are dropped; an unterminated
/// chunk runs to the end of the file.
pub(crate) fn extract_rmd(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() / 2);
    let mut in_chunk = false;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let t = line.trim_ascii();
        if in_chunk {
            if t.len() >= 3 && t.iter().all(|&b| b == b'`') {
                in_chunk = false;
                continue;
            }
            out.extend_from_slice(line);
            if !line.ends_with(b"\n") {
                out.push(b'\n');
            }
        } else if let Some(rest) = t.strip_prefix(b"```") {
            let rest = skip_backticks(rest);
            if let Some(spec) = rest.strip_prefix(b"{") {
                let spec = spec.trim_ascii_start();
                let engine_end = spec
                    .iter()
                    .position(|&b| matches!(b, b' ' | b',' | b'}' | b'\t'))
                    .unwrap_or(spec.len());
                if spec[..engine_end].eq_ignore_ascii_case(b"r") {
                    in_chunk = true;
                }
            }
        }
    }
    out
}

/// Drops the extra backticks of a longer fence and following blanks.
fn skip_backticks(mut s: &[u8]) -> &[u8] {
    while let Some((&b'`', rest)) = s.split_first() {
        s = rest;
    }
    s.trim_ascii_start()
}
