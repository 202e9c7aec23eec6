//! The protocol's split: numpy's legacy `RandomState(seed).permutation(n)` and
//! scikit-learn's `train_test_split`, bit for bit, on the `rand_mt` MT19937.

use rand_mt::Mt;

/// numpy `random_interval(max)`: uniform in `0..=max` by masked rejection sampling
/// (32-bit draws while `max` fits in 32 bits, 64-bit draws high word first otherwise).
fn interval(rng: &mut Mt, max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let mut mask = max;
    mask |= mask >> 1;
    mask |= mask >> 2;
    mask |= mask >> 4;
    mask |= mask >> 8;
    mask |= mask >> 16;
    mask |= mask >> 32;
    if max <= 0xffff_ffff {
        loop {
            let v = u64::from(rng.next_u32()) & mask;
            if v <= max {
                return v;
            }
        }
    } else {
        loop {
            let v = rng.next_u64() & mask;
            if v <= max {
                return v;
            }
        }
    }
}

/// numpy `np.random.RandomState(seed).permutation(n)` (legacy Fisher–Yates). `Mt::new`
/// seeds like numpy's `RandomState(int)` (`init_genrand`).
pub fn permutation(n: usize, seed: u32) -> Vec<usize> {
    let mut rng = Mt::new(seed);
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = interval(&mut rng, i as u64) as usize;
        v.swap(i, j);
    }
    v
}

/// scikit-learn `train_test_split(.., test_size, random_state=seed)` index sets:
/// `(train, test)`, test first in the permutation and in permutation order.
pub fn train_test_split(n: usize, test_size: f64, seed: u32) -> (Vec<usize>, Vec<usize>) {
    let n_test = ((test_size * n as f64).ceil() as usize).min(n);
    let perm = permutation(n, seed);
    let test = perm[..n_test].to_vec();
    let train = perm[n_test..].to_vec();
    (train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_matches_numpy_legacy_random_state() {
        // Values printed by numpy 2.4.6: np.random.RandomState(seed).permutation(n).
        assert_eq!(permutation(0, 1996), Vec::<usize>::new());
        assert_eq!(permutation(1, 1996), vec![0]);
        assert_eq!(permutation(2, 1996), vec![1, 0]);
        assert_eq!(permutation(5, 1996), vec![0, 3, 4, 1, 2]);
        assert_eq!(permutation(10, 1996), vec![0, 7, 8, 4, 6, 9, 3, 5, 2, 1]);
        assert_eq!(
            permutation(34, 1996),
            vec![
                28, 26, 18, 25, 23, 17, 13, 30, 19, 7, 24, 29, 0, 27, 31, 22, 8, 12, 33, 10, 5, 16,
                20, 2, 4, 11, 21, 14, 15, 32, 9, 6, 3, 1
            ]
        );
        assert_eq!(
            permutation(100, 1996)[..10],
            [35, 18, 40, 85, 63, 62, 77, 73, 12, 44]
        );
        assert_eq!(
            permutation(1000, 1996)[..10],
            [438, 831, 338, 46, 856, 850, 593, 53, 230, 71]
        );
        assert_eq!(
            permutation(70000, 1996)[..10],
            [57213, 31519, 25296, 12951, 13971, 58160, 66155, 2589, 25834, 59047]
        );
        assert_eq!(
            permutation(20, 7),
            vec![1, 17, 2, 5, 11, 0, 18, 6, 13, 19, 10, 14, 8, 16, 9, 12, 7, 3, 4, 15]
        );
    }

    #[test]
    fn split_matches_scikit_learn_train_test_split() {
        // sklearn 1.9.1: train_test_split(range(39), test_size=0.7, random_state=1996).
        let (train, test) = train_test_split(39, 0.7, 1996);
        assert_eq!(
            test,
            vec![
                33, 9, 29, 18, 22, 27, 32, 26, 35, 30, 23, 17, 37, 7, 24, 31, 21, 13, 0, 6, 8, 12,
                38, 19, 10, 25, 5, 16
            ]
        );
        assert_eq!(train, vec![20, 2, 28, 4, 11, 14, 15, 36, 3, 34, 1]);
        let (train, test) = train_test_split(137, 0.7, 1996);
        assert_eq!((test.len(), train.len()), (96, 41));
        assert_eq!(test[..5], [97, 40, 64, 82, 51]);
        assert_eq!(train[..5], [52, 70, 71, 80, 132]);
    }
}
