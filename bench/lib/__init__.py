# Used by bench/run (run: bench/run [--quick] [--arms ...]); the harness of the Trellis vs Envoy bench.
