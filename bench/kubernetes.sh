#!/usr/bin/env bash
# bench/kubernetes.sh — what the Kubernetes side of trellis-control costs at cluster scale:
# translating and loading 100 and 1,000 Services (10 ready pods each, half of them injected)
# from scratch and after one EndpointSlice change, and one AdmissionReview through the
# injector. Runs control-plane/examples/k8s_scale.rs; prints figures, asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p trellis-control --example k8s_scale
for n in 100 1000; do
  ./target/release/examples/k8s_scale --services "$n" --pods 10 --rounds "${ROUNDS:-9}"
done
