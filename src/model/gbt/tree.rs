//! One regression tree: the layout prediction walks, built from the grower's nodes, and
//! its serialised form (checked on load).

use serde::{Deserialize, Serialize};

use super::{GbtError, LEAF, MAX_LEAVES};

/// A split while growing (or loading): children with the `LEAF` bit set are leaf indices.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct RawNode {
    pub(super) threshold: f64,
    pub(super) feature: u32,
    pub(super) left: u32,
    pub(super) right: u32,
}

/// A node of the prediction layout: go to `left` if `!(value > threshold)` (NaN goes left),
/// else to `left + 1`. Leaves have threshold `+inf` and `left` = themselves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Node {
    pub(super) threshold: f64,
    pub(super) feature: u32,
    pub(super) left: u32,
}

/// One regression tree in a flat breadth-first layout with sibling pairs adjacent. Because
/// leaves loop to themselves, a walk of exactly `depth` steps from node 0 ends on the leaf
/// with no leaf test in the loop. Built only by `assemble` from a checked tree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TreeRepr", into = "TreeRepr")]
pub(super) struct Tree {
    pub(super) nodes: Vec<Node>,
    /// Leaf value per node (0 for internal nodes).
    pub(super) value: Vec<f64>,
    pub(super) depth: u32,
}

/// Serialised tree: parallel arrays over internal nodes; a child `c >= 0` is internal node
/// `c`, `c < 0` is leaf `-c - 1`.
#[derive(Serialize, Deserialize)]
struct TreeRepr {
    feature: Vec<u32>,
    threshold: Vec<f64>,
    left: Vec<i64>,
    right: Vec<i64>,
    leaf_value: Vec<f64>,
}

impl Tree {
    /// Lays out a tree given as internal nodes (root 0) with each internal node except the
    /// root and each leaf referenced exactly once and children pointing forward.
    pub(super) fn assemble(raw: &[RawNode], leaves: &[f64]) -> Tree {
        let mut refs = vec![if raw.is_empty() { LEAF } else { 0 }];
        let mut depth = vec![0u32];
        let (mut nodes, mut value) = (Vec::new(), Vec::new());
        let mut i = 0;
        while let Some(&r) = refs.get(i) {
            if let Some(rn) = raw.get(r as usize) {
                nodes.push(Node {
                    threshold: rn.threshold,
                    feature: rn.feature,
                    left: refs.len() as u32,
                });
                value.push(0.0);
                refs.extend([rn.left, rn.right]);
                depth.extend([depth[i] + 1; 2]);
            } else {
                nodes.push(Node {
                    threshold: f64::INFINITY,
                    feature: 0,
                    left: i as u32,
                });
                value.push(leaves.get((r & !LEAF) as usize).copied().unwrap_or(0.0));
            }
            i += 1;
        }
        let depth = depth.into_iter().max().unwrap_or(0);
        Tree {
            nodes,
            value,
            depth,
        }
    }

    pub(super) fn is_leaf(&self, i: usize) -> bool {
        self.nodes[i].left as usize == i
    }

    #[inline]
    pub(super) fn predict(&self, row: &[f64]) -> f64 {
        let mut c = 0;
        for _ in 0..self.depth {
            let n = &self.nodes[c];
            c = n.left as usize + usize::from(row[n.feature as usize] > n.threshold);
        }
        self.value[c]
    }
}

impl From<Tree> for TreeRepr {
    fn from(t: Tree) -> Self {
        // Ordinal of each layout node among internal nodes or among leaves.
        let (mut ord, mut ni, mut nl) = (Vec::with_capacity(t.nodes.len()), 0i64, 0i64);
        for i in 0..t.nodes.len() {
            ord.push(if t.is_leaf(i) {
                nl -= 1;
                nl
            } else {
                ni += 1;
                ni - 1
            });
        }
        let mut r = TreeRepr {
            feature: vec![],
            threshold: vec![],
            left: vec![],
            right: vec![],
            leaf_value: vec![],
        };
        for (i, n) in t.nodes.iter().enumerate() {
            if t.is_leaf(i) {
                r.leaf_value.push(t.value[i]);
            } else {
                r.feature.push(n.feature);
                r.threshold.push(n.threshold);
                r.left.push(ord[n.left as usize]);
                r.right.push(ord[n.left as usize + 1]);
            }
        }
        r
    }
}

impl TryFrom<TreeRepr> for Tree {
    type Error = GbtError;
    fn try_from(r: TreeRepr) -> Result<Self, GbtError> {
        let invalid = |s: String| Err(GbtError::InvalidModel(s));
        let n = r.feature.len();
        let nl = r.leaf_value.len();
        let lens = [r.threshold.len(), r.left.len(), r.right.len()];
        if lens.iter().any(|&l| l != n) || n >= MAX_LEAVES || nl != n + 1 {
            return invalid("tree arrays have inconsistent lengths".into());
        }
        if r.threshold
            .iter()
            .chain(&r.leaf_value)
            .any(|v| !v.is_finite())
        {
            return invalid("non-finite value in a tree".into());
        }
        let mut seen = vec![false; n + nl]; // internal nodes, then leaves
        seen[0] = true;
        let mut raw = Vec::with_capacity(n);
        for i in 0..n {
            let mut kids = [0u32; 2];
            for (k, c) in kids.iter_mut().zip([r.left[i], r.right[i]]) {
                let slot = match c {
                    c if c < 0 && ((-c - 1) as usize) < nl => n + (-c - 1) as usize,
                    c if c > i as i64 && (c as usize) < n => c as usize,
                    _ => return invalid(format!("bad child {c} at node {i}")),
                };
                if std::mem::replace(&mut seen[slot], true) {
                    return invalid(format!("node {c} has two parents"));
                }
                *k = if slot >= n {
                    (slot - n) as u32 | LEAF
                } else {
                    slot as u32
                };
            }
            let [left, right] = kids;
            raw.push(RawNode {
                threshold: r.threshold[i],
                feature: r.feature[i],
                left,
                right,
            });
        }
        Ok(Tree::assemble(&raw, &r.leaf_value))
    }
}
