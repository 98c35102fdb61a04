//! Health applied to a key's order (the libraries' `AFF-REQ-006` and
//! node-health.md "Health-aware routing"): the first active node in the
//! order, else the first quarantined one, never a down one. A key whose
//! node is down thus goes to the next node of its own order, not to the next
//! node of the ring, exactly as a client library would send it.

/// A ring node's health, as the caller's health state says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeHealth {
    Active,
    /// Newly listed or recovering: used only when no active node is left.
    Quarantined,
    /// Never chosen.
    Down,
}

/// The node to send to: the first of `order` whose `health` is
/// [`NodeHealth::Active`], else the first [`NodeHealth::Quarantined`] one;
/// `None` when every node is down (the caller then routes normally).
pub fn choose(order: &[usize], health: impl Fn(usize) -> NodeHealth) -> Option<usize> {
    let mut quarantined = None;
    for &node in order {
        match health(node) {
            NodeHealth::Active => return Some(node),
            NodeHealth::Quarantined if quarantined.is_none() => quarantined = Some(node),
            NodeHealth::Quarantined | NodeHealth::Down => {}
        }
    }
    quarantined
}

#[cfg(test)]
mod tests {
    use super::NodeHealth::{Active as A, Down as D, Quarantined as Q};
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// `health[i]` is ring node i's health.
    fn pick(order: &[usize], health: &[NodeHealth]) -> Option<usize> {
        choose(order, |i| health[i])
    }

    /// issue6.md 2.8.
    #[test]
    fn active_first_then_quarantined_never_down() {
        let order = [1, 3, 0, 2];
        assert_eq!(pick(&order, &[A, A, A, A]), Some(1), "the key's node");
        // A down preferred node: the next in the key's order (3), not the
        // next in the ring (2).
        assert_eq!(pick(&order, &[A, D, A, A]), Some(3));
        assert_eq!(pick(&order, &[A, D, A, D]), Some(0));
        // Any active node beats a quarantined one earlier in the order.
        assert_eq!(pick(&order, &[Q, Q, A, Q]), Some(2));
        // No active node: the first quarantined one in the order.
        assert_eq!(pick(&order, &[Q, D, Q, Q]), Some(3));
        assert_eq!(pick(&order, &[Q, D, Q, D]), Some(0));
        // Only down nodes: none.
        assert_eq!(pick(&order, &[D, D, D, D]), None);
        assert_eq!(pick(&[], &[]), None);
    }

    #[test]
    fn health_does_not_change_the_order() {
        // Same order and health twice, same answer; and the chosen node is
        // always an element of the order.
        let order = [5, 8, 4, 1, 6, 0, 9, 2, 7, 3];
        let mut health = [A; 10];
        for down in order {
            let got = pick(&order, &health);
            assert_eq!(got, pick(&order, &health));
            if let Some(n) = got {
                assert!(order.contains(&n));
            }
            health[down] = D;
        }
        assert_eq!(pick(&order, &health), None);
    }
}
