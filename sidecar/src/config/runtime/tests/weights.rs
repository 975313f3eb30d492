//! Weighted backends: how often a rule picks each backend, against the weights.

use super::*;
use proptest::prelude::*;

/// A rule of `web` that splits over one backend Service per weight, `b0`, `b1`, ...
fn split(weights: &[u32]) -> String {
    let mut y = String::new();
    for i in 0..weights.len() {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: b{i}, namespace: shop}}\n\
             spec: {{selector: {{app: b{i}}}, ports: [{{port: 80}}]}}\n"
        ));
    }
    let refs: Vec<_> = (weights.iter().enumerate())
        .map(|(i, w)| format!("{{name: b{i}, port: 80, weight: {w}}}"))
        .collect();
    y + &route(
        "split",
        &[format!("  - backendRefs: [{}]\n", refs.join(", "))],
    )
}

const PICKS: u32 = 20_000;

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Over many requests, each backend of a rule takes its weight's share of them, and a
    /// backend of weight 0 takes none.
    ///
    /// Each backend's count is Binomial(N, p = weight/sum). It may stray from N·p by 6 standard
    /// deviations, sqrt(N·p·(1-p)), plus one pick: by the exact binomial tail, a correct split
    /// falls outside that less than once in 10^7 comparisons even at the smallest share here
    /// (1/401), so the property does not flake. The tolerance is at most 425 picks (at p = 1/2),
    /// 2.1% of N: a share off by more than that fails.
    #[test]
    fn a_rule_splits_requests_by_weight(
        weights in prop::collection::vec(0u32..=100, 1..=5)
            .prop_filter("some weight is not 0", |w| w.iter().any(|&w| w > 0)),
    ) {
        let rt = runtime(&split(&weights));
        let rule = &web(&rt).rules[0];
        prop_assert_eq!(rule.backends.len(), weights.len());
        let mut counts = vec![0u32; weights.len()];
        for _ in 0..PICKS {
            let b = rule.pick_backend().expect("a weight is not 0");
            let i = rule.backends.iter().position(|x| std::ptr::eq(x, b)).unwrap();
            counts[i] += 1;
        }
        let sum: u32 = weights.iter().sum();
        let n = f64::from(PICKS);
        for (i, (&w, &c)) in weights.iter().zip(&counts).enumerate() {
            if w == 0 {
                prop_assert_eq!(c, 0, "backend {} has weight 0", i);
                continue;
            }
            let p = f64::from(w) / f64::from(sum);
            let tolerance = 6.0 * (n * p * (1.0 - p)).sqrt() + 1.0;
            prop_assert!(
                (f64::from(c) - n * p).abs() <= tolerance,
                "backend {} (weight {} of {}) took {} of {} picks, not {:.0} ± {:.0}; all: {:?}",
                i, w, sum, c, PICKS, n * p, tolerance, counts
            );
        }
    }
}
