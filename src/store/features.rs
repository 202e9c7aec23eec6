//! Decoding a stored `features` JSON object straight into a dense vector (training reads
//! every row: no per-row map, no key allocation unless a key has escapes).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

struct Dense<'a, 'b> {
    index: &'a HashMap<&'a str, usize>,
    out: &'b mut [f64],
}

impl<'de> Visitor<'de> for Dense<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of feature name to number")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match self.index.get(key.as_ref()) {
                Some(&i) => {
                    // A null or non-numeric value counts as absent (0).
                    let v: Option<f64> = map.next_value::<serde_json::Value>()?.as_f64();
                    if let (Some(v), Some(slot)) = (v, self.out.get_mut(i)) {
                        *slot = if v.is_finite() { v } else { 0.0 };
                    }
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Write the values of `json` (an object name → number) into `out` at the positions `index`
/// gives; names not in `index` are skipped. Malformed text leaves what was decoded so far
/// and the rest 0 (a row with unreadable features trains as all-zero features, as the old
/// map decoder's `unwrap_or_default` did).
pub fn decode_into(json: &[u8], index: &HashMap<&str, usize>, out: &mut [f64]) {
    let mut de = serde_json::Deserializer::from_slice(json);
    if de
        .deserialize_map(Dense {
            index,
            out: &mut *out,
        })
        .is_err()
    {
        out.fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_by_name_skips_unknown_and_zeroes_bad_rows() {
        let names = ["a", "b", "c"];
        let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let mut out = [0.0; 3];
        decode_into(
            br#"{"c": 2.5, "zz": [1, {"x": 2}], "a": -1, "b": null}"#,
            &index,
            &mut out,
        );
        assert_eq!(out, [-1.0, 0.0, 2.5]);
        let mut out = [0.0; 3];
        decode_into(br#"{"\u0062": 7}"#, &index, &mut out);
        assert_eq!(out, [0.0, 7.0, 0.0]);
        let mut out = [0.0; 3];
        decode_into(br#"{"a": 1, "b": "#, &index, &mut out);
        assert_eq!(out, [0.0; 3]);
        let mut out = [0.0; 3];
        decode_into(b"[1, 2]", &index, &mut out);
        assert_eq!(out, [0.0; 3]);
    }
}
