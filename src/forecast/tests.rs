use super::markdown::{md_cell, md_text};
use super::*;

#[test]
fn levels_follow_the_surge_factor() {
    assert_eq!(demand_level(3.01), "critical");
    assert_eq!(demand_level(3.0), "elevated");
    assert_eq!(demand_level(1.5), "normal");
    assert_eq!(demand_level(1.0), "low");
    assert_eq!(demand_level(0.0), "low");
}

#[test]
fn horizon_is_validated() {
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 9000.0] {
        assert!(horizon(bad).is_err(), "{bad}");
    }
    assert_eq!(horizon(1.5).unwrap(), Duration::from_secs(5400));
}

#[test]
fn markdown_cells_cannot_break_the_table() {
    assert_eq!(md_cell("a|b\n`c`"), "a\\|b \\`c\\`");
    assert_eq!(md_text("<script>"), "\\<script\\>");
}
