"""meshload's benchmarks: each figure a ratio or a delay measured in one run (`make bench`)."""
