//! The cost of path normalization, for callgrind: normalizes one kind of path N times.
//! Run: bench/normalize.sh (or `normalize_cost <normal|dots|encoded> <N>` under valgrind).

use trellis_config::model::PathNormalization;
use trellis_proxy::normalize_path;

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "normal".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    // Paths of the size real APIs send: the fast path (already normal), dot segments, and
    // percent-encoded characters.
    let path = match kind.as_str() {
        "normal" => "/api/v1/riders/8f14e45f/trips/latest",
        "dots" => "/api/v1/riders/./8f14e45f/../8f14e45f/trips/latest",
        "encoded" => "/api/v1/riders/%38f14e45f/trips/%6Catest",
        "none" => "",
        other => panic!("unknown kind {other:?}: normal, dots, encoded or none"),
    };
    let opts = PathNormalization::default();
    let mut changed = 0usize;
    for _ in 0..n {
        let p = std::hint::black_box(path);
        if !p.is_empty() && normalize_path(p, &opts).expect("a valid path").is_some() {
            changed += 1;
        }
    }
    println!("{kind}: {n} paths, {changed} rewritten");
}
