//! Golden snapshots of the Python lexer.
//!
//! `tests/golden/python_lexer.txt` holds, for each input of a fixed corpus (the fixtures and
//! example jobs, whatever their language, the bench script and two hand-written edge
//! cases), a digest of what `scan_source(…, Python, builtin catalogue)` returns for the
//! whole input, for every prefix of the small inputs (states cut at any byte) and for 200
//! random mutations of each biased to the lexer's special characters. The file was made
//! by the old, straightforward lexer (`src/features/python_ref.rs`, removed in the commit
//! that introduced this test; `git log -- src/features/python_ref.rs` finds it), and the
//! fast lexer matched it on every case, so the snapshot pins the old lexer's behaviour.
//!
//! A mismatch names the input and the kind of case. If the change is intended, rewrite
//! the file with `PRESIZE_BLESS_PYTHON_GOLDEN=1 cargo test --lib python_lexer_golden`
//! and say why in the commit; to find the first differing prefix or mutation, restore
//! the old lexer from git and compare.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::super::{scan_source, Catalog, Language, TokenCounts};

type ScanResult = (BTreeSet<String>, TokenCounts, Vec<(String, bool, u32)>);

const GOLDEN: &str = "tests/golden/python_lexer.txt";
/// Inputs up to this size also have every prefix checked.
const PREFIX_MAX: usize = 4096;
/// Inputs up to this size also have mutations checked.
const MUTATE_MAX: usize = 16_384;
const MUTATIONS: usize = 200;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dir` (not recursive), named by its path inside the repository.
fn files_in(dir: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.strip_prefix(root()).unwrap().display().to_string();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// The corpus: (name, bytes).
fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut corpus = files_in("tests/fixtures");
    corpus.extend(files_in("examples/jobs"));
    corpus.push((
        "bench".into(),
        super::bench_common::python_script(2000).into_bytes(),
    ));
    corpus.push((
        "edge".into(),
        b"from . import x\nfrom .a import (b as c,\n d)\nimport a.b as c, d\n\
          m = importlib.import_module('torch')\nm.cuda()\nimport tensorflow as tf\n\
          tf.config.x(device='cuda:0')\nr'''x\n''' b\"\\\n\" f'{x}' 0x1F 1_0e+3 .5j\n\
          x = y == z; k <= 3\nh5py.File('a')\nimport scanpy as sc\nsc.read('x')\n\
          def f(): pass\nlambda: 0\nclass A(B): pass\nwhile 1: n_jobs = Pool(4)\n\\\n"
            .to_vec(),
    ));
    // Identifiers across the SIMD blocks: `u` before, at and after a block edge,
    // non-ASCII bytes, long bound names, keywords and names of exactly 8 bytes (the
    // packed compare), an identifier that ends the source.
    let mut long = Vec::new();
    for k in 0..40 {
        let mut name = vec![b'a'; k];
        if k > 0 {
            name[k - 1] = b'u';
        }
        long.extend_from_slice(b"x = ");
        long.extend_from_slice(&name);
        long.extend_from_slice(b"_cuda(1)\n");
    }
    long.extend_from_slice(
        "import verylongmodulename_gpu as averylongaliasname\naverylongaliasname.f()\n\
         import numpy as abcdefgh\nabcdefgh.x()\nabcdefghi = 1\ncontinue nonlocal\n\
         caf\u{e9} = '\u{fc}ber'\n\u{e9}t\u{e9}_cuda = 1\nend_of_source"
            .as_bytes(),
    );
    corpus.push(("identifiers".into(), long));
    corpus
}

/// `MUTATIONS` mutations of `src` (1–8 byte edits each), seeded by the input's name so
/// that each input's cases do not depend on the rest of the corpus.
fn mutations(name: &str, src: &[u8]) -> Vec<Vec<u8>> {
    const ALPHABET: &[u8] = b"\n\r\t \\'\"#()[]{}=.,;:*+-<>!0123456789eExXjLu_aAzZ\x80\xff`";
    // FNV-1a of the name, then xorshift64.
    let mut state = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::with_capacity(MUTATIONS);
    for _ in 0..MUTATIONS {
        let mut m = src.to_vec();
        let edits = 1 + next() % 8;
        for _ in 0..edits {
            if m.is_empty() {
                break;
            }
            let at = (next() % m.len() as u64) as usize;
            let c = ALPHABET[(next() % ALPHABET.len() as u64) as usize];
            match next() % 3 {
                0 => m[at] = c,
                1 => m.insert(at, c),
                _ => {
                    m.remove(at);
                }
            }
        }
        out.push(m);
    }
    out
}

fn hex16(h: Sha256) -> String {
    hex::encode(&h.finalize()[..8])
}

/// Feeds one scan result into `h` (its full Debug form, unambiguous and stable).
fn feed(h: &mut Sha256, r: &ScanResult) {
    h.update(format!("{r:?}\n").as_bytes());
}

/// The golden lines of one input: `<name> input <sha>`, `<name> full <digest>`, and
/// `prefixes` / `mutations` digests where they apply.
fn golden_lines(name: &str, src: &[u8], scan: &dyn Fn(&[u8]) -> ScanResult) -> Vec<String> {
    let mut lines = vec![format!("{name} input {}", hex::encode(Sha256::digest(src)))];
    let mut h = Sha256::new();
    feed(&mut h, &scan(src));
    lines.push(format!("{name} full {}", hex16(h)));
    if src.len() <= PREFIX_MAX {
        let mut h = Sha256::new();
        for n in 0..src.len() {
            feed(&mut h, &scan(&src[..n]));
        }
        lines.push(format!("{name} prefixes {}", hex16(h)));
    }
    if src.len() <= MUTATE_MAX {
        let mut h = Sha256::new();
        for m in mutations(name, src) {
            feed(&mut h, &scan(&m));
        }
        lines.push(format!("{name} mutations {}", hex16(h)));
    }
    lines
}

/// The Python lexer gives, on every golden case, what the old lexer gave.
#[test]
fn python_lexer_golden() {
    let catalog = Catalog::builtin();
    let scan = |src: &[u8]| scan_source(src, Language::Python, &catalog);
    let path = root().join(GOLDEN);
    if std::env::var_os("PRESIZE_BLESS_PYTHON_GOLDEN").is_some() {
        let mut text = String::from(
            "# Golden digests of the Python lexer (src/features/tests/python_golden.rs).\n",
        );
        for (name, src) in corpus() {
            for l in golden_lines(&name, &src, &scan) {
                let _ = writeln!(text, "{l}");
            }
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap();
    let want: Vec<&str> = golden.lines().filter(|l| !l.starts_with('#')).collect();
    let mut got = Vec::new();
    for (name, src) in corpus() {
        got.extend(golden_lines(&name, &src, &scan));
    }
    // Inputs added to the corpus since the snapshot are not covered; every input the
    // snapshot names must still be there with the same bytes and the same results.
    let mut checked = 0;
    for w in &want {
        let (key, _) = w.rsplit_once(' ').unwrap();
        let g = got.iter().find(|g| g.rsplit_once(' ').unwrap().0 == key);
        match g {
            None => panic!("golden case `{key}` is no longer in the corpus"),
            Some(g) if key.ends_with(" input") => {
                assert_eq!(g, w, "input bytes changed since the snapshot: re-bless");
            }
            Some(g) => assert_eq!(g, w, "Python lexer output changed: {key}"),
        }
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} golden lines");
}
