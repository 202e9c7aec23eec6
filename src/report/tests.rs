use super::charts::{decade_label, LogAxis};
use super::*;

#[test]
fn escape_neutralises_markup() {
    assert_eq!(
        escape("<script>alert('x') & \"y\"</script>"),
        "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
    );
}

#[test]
fn log_axis_spans_whole_decades() {
    let a = LogAxis::covering(3.0, 700.0, 0.0, 300.0);
    assert_eq!((a.lo, a.hi), (0, 3));
    assert!((a.at(10.0) - 100.0).abs() < 1e-9);
    let b = LogAxis::covering(5.0, 5.0, 0.0, 100.0);
    assert_eq!((b.lo, b.hi), (0, 1));
    assert_eq!(decade_label(-2), "0.01");
    assert_eq!(decade_label(4), "10k");
}
