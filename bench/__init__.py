"""NetTrust's benchmark harness: ``sudo bench/run [--quick]`` (see README, "Benchmarks")."""
