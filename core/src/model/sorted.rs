//! Node lists are kept as sorted, deduplicated `Vec`s: every worker and
//! every Envoy then sees the same list for the same cluster state, and a
//! union of lists that are already sorted is a merge, not a sort.

/// The sorted union of sorted, deduplicated lists, in one pass over each.
pub fn union<'a, T, I>(lists: I) -> Vec<T>
where
    T: Ord + Copy + 'a,
    I: IntoIterator<Item = &'a [T]>,
{
    let mut out: Vec<T> = Vec::new();
    for list in lists {
        if out.is_empty() {
            out.extend_from_slice(list);
        } else if !list.is_empty() {
            out = merge(&out, list);
        }
    }
    out
}

/// Two sorted, deduplicated lists merged into one.
pub fn merge<T: Ord + Copy>(a: &[T], b: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x < y => a.next(),
            (Some(x), Some(y)) if y < x => b.next(),
            (Some(_), Some(_)) => {
                b.next();
                a.next()
            }
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        out.extend(next.copied());
    }
    out
}

/// Sorts and deduplicates a list that arrived in any order.
pub fn sort_dedup<T: Ord>(v: &mut Vec<T>) {
    v.sort_unstable();
    v.dedup();
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn union_merges_without_duplicates() {
        let lists: [&[u32]; 4] = [&[1, 4, 9], &[], &[2, 4, 10], &[0, 9]];
        assert_eq!(union(lists), [0, 1, 2, 4, 9, 10]);
        assert_eq!(union::<u32, _>([]), Vec::<u32>::new());
        assert_eq!(merge(&[1, 2, 3], &[1, 2, 3]), [1, 2, 3]);
    }

    #[test]
    fn union_equals_sorting_the_concatenation() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            (seed >> 33) as u16 % 500
        };
        for _ in 0..50 {
            let lists: Vec<Vec<u16>> = (0..4)
                .map(|_| {
                    let mut l: Vec<u16> = (0..next() % 40).map(|_| next()).collect();
                    sort_dedup(&mut l);
                    l
                })
                .collect();
            let mut all: Vec<u16> = lists.concat();
            sort_dedup(&mut all);
            assert_eq!(union(lists.iter().map(Vec::as_slice)), all);
        }
    }
}
