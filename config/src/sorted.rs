//! One walk over two maps sorted by the same key: which keys are in the first only, the
//! second only, or both. The proxy's held resources and the control plane's deltas are all
//! differences between two such maps.

use std::cmp::Ordering;

/// Where a key of `join` was found.
pub enum Side<A, B> {
    Left(A),
    Right(B),
    Both(A, B),
}

/// Pairs up the entries of `left` and `right`, both sorted by key without repeats, in key
/// order.
pub fn join<'k, K: Ord + 'k, A, B>(
    left: impl IntoIterator<Item = (&'k K, A)>,
    right: impl IntoIterator<Item = (&'k K, B)>,
) -> impl Iterator<Item = (&'k K, Side<A, B>)> {
    let (mut a, mut b) = (left.into_iter().peekable(), right.into_iter().peekable());
    std::iter::from_fn(move || {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
        };
        Some(match order {
            Ordering::Less => a.next().map(|(k, x)| (k, Side::Left(x)))?,
            Ordering::Greater => b.next().map(|(k, y)| (k, Side::Right(y)))?,
            Ordering::Equal => {
                let (k, x) = a.next()?;
                let (_, y) = b.next()?;
                (k, Side::Both(x, y))
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn every_key_once_in_order() {
        let a = BTreeMap::from([(1, 'a'), (2, 'b'), (4, 'd')]);
        let b = BTreeMap::from([(2, 'B'), (3, 'C'), (5, 'E')]);
        let got: Vec<String> = join(&a, &b)
            .map(|(k, s)| match s {
                Side::Left(x) => format!("{k}<{x}"),
                Side::Right(y) => format!("{k}>{y}"),
                Side::Both(x, y) => format!("{k}={x}{y}"),
            })
            .collect();
        assert_eq!(got, ["1<a", "2=bB", "3>C", "4<d", "5>E"]);
    }
}
