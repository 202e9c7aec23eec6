use super::*;

#[test]
fn literals() {
    let cases: &[(&[u8], f64)] = &[
        (b"1e6", 1e6),
        (b"1_000_000", 1e6),
        (b"10L", 10.0),
        (b"0x10", 16.0),
        (b"0b101", 5.0),
        (b"0o17", 15.0),
        (b"1.5", 1.5),
        (b".5", 0.5),
        (b"2j", 2.0),
        (b"1e-3", 1e-3),
        (b"1.", 1.0),
        (b"1.e3", 1e3),
        (b"3if", 0.0),
        (b"1e999", f64::MAX),
        (b"0xZZ", 0.0),
    ];
    for (lit, want) in cases {
        assert_eq!(
            literal_value(lit),
            *want,
            "{}",
            String::from_utf8_lossy(lit)
        );
    }
    let long = format!("1{}", "0".repeat(100));
    let v = literal_value(long.as_bytes());
    assert!((v.log10() - 100.0).abs() < 1e-9);
    let long = format!("1{}e5", "0".repeat(100));
    assert!((literal_value(long.as_bytes()).log10() - 105.0).abs() < 1e-9);
}

/// The fast decimal path gives exactly the f64 that `parse` gives.
#[test]
fn simple_decimal_matches_parse() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |m: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % m
    };
    const PARTS: &[&str] = &["", "0", "1", "7", "12", "999", "1_000", "5e", "e", "."];
    let mut checked = 0;
    for _ in 0..200_000 {
        let mut t = String::new();
        for _ in 0..1 + next(4) {
            match next(6) {
                0 => t.push_str(PARTS[next(PARTS.len() as u64) as usize]),
                1 => t.push('.'),
                2 => t.push_str(["e", "E", "e-", "e+", "E-"][next(5) as usize]),
                3 => t.push('_'),
                _ => t.push_str(&next(10_000_000_000).to_string()),
            }
        }
        let b = t.as_bytes();
        if let Some(v) = simple_decimal(b) {
            let want = t.replace('_', "").parse::<f64>().unwrap();
            assert_eq!(v.to_bits(), want.to_bits(), "{t}");
            checked += 1;
        }
    }
    assert!(checked > 10_000, "{checked}");
    for t in [
        "1.5e3",
        "0.1",
        "3.14159",
        "1e22",
        "123456789012345e-22",
        "1_0.0_1e1_0",
    ] {
        let want = t.replace('_', "").parse::<f64>().unwrap();
        assert_eq!(simple_decimal(t.as_bytes()), Some(want), "{t}");
    }
    for t in ["1e23", "1234567890123456", "1e", "e5", ".", "1e_5", "1x"] {
        assert_eq!(simple_decimal(t.as_bytes()), None, "{t}");
    }
}

#[test]
fn substrings() {
    assert!(contains_ci(b"use_GPU", b"gpu"));
    assert!(contains_ci(b"CUDA_VISIBLE_DEVICES", b"cuda"));
    assert!(!contains_ci(b"gp", b"gpu"));
    assert!(gpu_word(b"cuda:0"));
    assert!(!gpu_word(b"cpu"));
}
