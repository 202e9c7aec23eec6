use super::*;

use crate::store::Store;

fn bits(v: &[Num]) -> Vec<(u8, u64)> {
    v.iter()
        .map(|n| match *n {
            Num::Float(f) => (0, f.to_bits()),
            Num::Int(i) => (1, i as u64),
            Num::Null => (2, 0),
        })
        .collect()
}

fn every_kind() -> Vec<Num> {
    let mut v = vec![
        Num::Float(0.0),
        Num::Float(-0.0),
        Num::Float(1.0),
        Num::Float(-1.0),
        Num::Float(9_007_199_254_740_991.0),
        Num::Float(9_007_199_254_740_992.0),
        Num::Float(-9_007_199_254_740_992.0),
        Num::Float(1e300),
        Num::Float(-1e300),
        Num::Float(f64::MAX),
        Num::Float(f64::MIN_POSITIVE),
        Num::Float(5e-324),
        Num::Float(0.1),
        Num::Float(2.0444393157958984),
        Num::Float(f64::INFINITY),
        Num::Float(f64::NEG_INFINITY),
        Num::Float(f64::NAN),
        Num::Float(f64::from_bits(0x7ff8_dead_beef_0001)),
        Num::Int(0),
        Num::Int(3),
        Num::Int(-7),
        Num::Int(i64::MAX),
        Num::Int(i64::MIN),
        Num::Null,
    ];
    // A realistic row: mostly zeros and small counts.
    for i in 0..60 {
        v.push(Num::Float(if i % 3 == 0 { (i * 11) as f64 } else { 0.0 }));
    }
    v
}

#[test]
fn every_value_round_trips_bit_for_bit() {
    let v = every_kind();
    let blob = encode(42, &v);
    let (id, back) = decode(&blob).unwrap();
    assert_eq!(id, 42);
    assert_eq!(bits(&back), bits(&v));
    // Small: the 60 mostly-zero values cost their kinds and a byte or two each.
    let zeros = encode(1, &vec![Num::Float(0.0); 80]);
    assert_eq!(zeros.len(), 1 + 1 + 1 + 20);
    for n in [0usize, 1, 3, 4, 5, 200] {
        let v: Vec<Num> = (0..n).map(|i| Num::Float(i as f64 * 0.5)).collect();
        assert_eq!(bits(&decode(&encode(7, &v)).unwrap().1), bits(&v));
    }
}

#[test]
fn corrupt_blobs_are_errors_never_panics() {
    let blob = encode(3, &every_kind());
    // Every truncation.
    for n in 0..blob.len() {
        assert!(decode(&blob[..n]).is_err(), "prefix of {n} bytes decoded");
    }
    // A trailing byte, another format, an extended kind that does not exist.
    let mut b = blob.clone();
    b.push(0);
    assert_eq!(decode(&b), Err(FeaturesError::Corrupt("trailing bytes")));
    let mut b = blob.clone();
    b[0] = 2;
    assert_eq!(decode(&b), Err(FeaturesError::Corrupt("unknown format")));
    assert_eq!(
        decode(&[1, 1, 1, 3, 9]),
        Err(FeaturesError::Corrupt("unknown value kind"))
    );
    // A count the blob cannot hold, a varint past 64 bits.
    assert!(decode(&[1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    assert!(decode(&[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0]).is_err());
    // Every single-byte change either decodes or is an error (no panic, no huge allocation).
    for i in 0..blob.len() {
        for x in [0x00u8, 0x01, 0x7f, 0x80, 0xff] {
            let mut b = blob.clone();
            b[i] = x;
            let _ = decode(&b);
        }
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("presize.db")).unwrap();
    (dir, s)
}

#[test]
fn json_objects_of_numbers_are_stored_compactly_and_read_back_as_before() {
    let (_d, s) = store();
    let c = s.conn();
    let mut enc = Encoder::default();
    let text = r#"{"b": 2.5, "a": 1.0, "z_old": -0.0, "n": null, "i": 3, "c": 1e300, "a": 4.0}"#;
    let SqlValue::Blob(blob) = enc.stored(c, text).unwrap() else {
        panic!("not compact")
    };
    // The same names in another order reuse the list; a new set of names adds one.
    let SqlValue::Blob(again) = enc
        .stored(
            c,
            r#"{"z_old": 1.0, "n": 0.0, "i": 0.0, "c": 0.0, "b": 0.0, "a": 0.0}"#,
        )
        .unwrap()
    else {
        panic!("not compact")
    };
    assert_eq!(decode(&blob).unwrap().0, decode(&again).unwrap().0);
    assert!(matches!(
        Encoder::default().stored(c, r#"{"x": 1.0}"#).unwrap(),
        SqlValue::Blob(_)
    ));
    let lists: i64 = c
        .query_row("SELECT count(*) FROM feature_names", [], |r| r.get(0))
        .unwrap();
    assert_eq!(lists, 2);
    // Read back: the JSON object as serde_json parsed the text (a repeated name keeps its
    // last value), names sorted.
    let names: Vec<String> = ["a", "b", "c", "i", "n", "z_old", "absent"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let dec = Decoder::new(c, &names).unwrap();
    let want: serde_json::Value = serde_json::from_str(text).unwrap();
    let got = dec.to_json(ValueRef::Blob(&blob)).unwrap();
    assert_eq!(got, want);
    assert_eq!(got.to_string(), want.to_string());
    assert_eq!(
        got["z_old"].as_f64().unwrap().to_bits(),
        (-0.0f64).to_bits()
    );
    // Dense, as training and the CSV read it: the same from the blob and from the text.
    let mut from_blob = vec![0.0; names.len()];
    dec.dense(ValueRef::Blob(&blob), &mut from_blob).unwrap();
    let mut from_text = vec![0.0; names.len()];
    dec.dense(ValueRef::Text(text.as_bytes()), &mut from_text)
        .unwrap();
    assert_eq!(from_blob, vec![4.0, 2.5, 1e300, 3.0, 0.0, -0.0, 0.0]);
    assert_eq!(
        from_blob.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        from_text.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn what_is_not_an_object_of_numbers_stays_text_and_unreadable_is_an_error() {
    let (_d, s) = store();
    let c = s.conn();
    let mut enc = Encoder::default();
    for text in [
        r#"{"a": "x"}"#,
        r#"{"a": [1]}"#,
        r#"{"a": true}"#,
        r#"{"a": 18446744073709551615}"#,
        "[1, 2]",
        r#"{"a": 1, "b": "#,
        "",
    ] {
        assert_eq!(
            enc.stored(c, text).unwrap(),
            SqlValue::Text(text.to_string()),
            "{text}"
        );
    }
    // Another list already holding this list's hash (a 64-bit collision, made by hand):
    // the row stays JSON rather than decoding under the other list's names.
    let names = vec!["q".to_string()];
    let hash = Schema::compute_hash(SCHEMA_NAME, SCHEMA_VERSION, &names);
    c.execute(
        "INSERT INTO feature_names (hash, names) VALUES (?1, '[\"other\"]')",
        [&hash],
    )
    .unwrap();
    let text = r#"{"q": 1.0}"#;
    assert_eq!(
        Encoder::default().stored(c, text).unwrap(),
        SqlValue::Text(text.to_string())
    );
    let dec = Decoder::new(c, &["a".to_string()]).unwrap();
    let mut out = [0.0];
    // Valid JSON with a non-number: read as before (absent), not an error.
    dec.dense(ValueRef::Text(br#"{"a": "x"}"#), &mut out)
        .unwrap();
    assert_eq!(out, [0.0]);
    for bad in [&b"[1, 2]"[..], br#"{"a": 1, "b": "#, b""] {
        assert!(matches!(
            dec.dense(ValueRef::Text(bad), &mut out),
            Err(FeaturesError::Json(_))
        ));
    }
    assert!(matches!(
        dec.to_json(ValueRef::Blob(&encode(99, &[Num::Float(1.0)]))),
        Err(FeaturesError::UnknownNames(99))
    ));
    assert!(matches!(
        dec.dense(ValueRef::Null, &mut out),
        Err(FeaturesError::WrongType("NULL"))
    ));
    // A blob whose count differs from its name list.
    let SqlValue::Blob(b) = enc.stored(c, r#"{"a": 1.0, "b": 2.0}"#).unwrap() else {
        panic!()
    };
    let (id, _) = decode(&b).unwrap();
    let dec = Decoder::new(c, &["a".to_string()]).unwrap();
    assert!(dec
        .dense(ValueRef::Blob(&encode(id, &[Num::Float(1.0)])), &mut out)
        .is_err());
}

fn insert_text(s: &Store, features: &str) -> i64 {
    s.conn()
        .execute(
            "INSERT INTO resource_prediction (job_id, job_key, runtime, command, features,
                schema_hash, model_version, host, predicted_at, settled_at, outcome,
                actual_rss_mb)
             VALUES ('j', 'k', 'python', '[]', ?1, 'h', 'm', 'h', 't', 't', 'ok', 1)",
            [features],
        )
        .unwrap();
    s.conn().last_insert_rowid()
}

#[test]
fn the_conversion_compacts_in_batches_keeps_the_rest_and_resumes() {
    let (_d, mut s) = store();
    let n = BATCH as usize + 500;
    let mut texts = Vec::new();
    for i in 0..n {
        let t = match i % 500 {
            7 => r#"{"a": "not a number"}"#.to_string(),
            8 => "{broken".to_string(),
            _ => format!(r#"{{"a": {}.5, "b": {i}, "old_name": {}}}"#, i, -(i as f64)),
        };
        insert_text(&s, &t);
        texts.push(t);
    }
    s.conn()
        .execute(
            "INSERT INTO pending_conversion (what) VALUES ('features')",
            [],
        )
        .unwrap();
    let done = convert_pending(s.conn_mut()).unwrap();
    let kept = 2 * n.div_ceil(500) as u64;
    assert_eq!(
        done,
        Converted {
            compacted: n as u64 - kept,
            kept
        }
    );
    // Nothing left to do: the marker is gone.
    assert_eq!(convert_pending(s.conn_mut()).unwrap(), Converted::default());
    let dec = Decoder::new(s.conn(), &[]).unwrap();
    let mut stmt = s
        .conn()
        .prepare("SELECT features FROM resource_prediction ORDER BY id")
        .unwrap();
    let mut rows = stmt.query([]).unwrap();
    let mut i = 0;
    while let Some(r) = rows.next().unwrap() {
        let v = r.get_ref(0).unwrap();
        let t = &texts[i];
        match i % 500 {
            7 | 8 => assert_eq!(v, ValueRef::Text(t.as_bytes())),
            _ => {
                assert!(matches!(v, ValueRef::Blob(_)));
                let want: serde_json::Value = serde_json::from_str(t).unwrap();
                assert_eq!(dec.to_json(v).unwrap(), want);
            }
        }
        i += 1;
    }
    assert_eq!(i, n);
}
