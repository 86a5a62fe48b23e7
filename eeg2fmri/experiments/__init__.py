"""Jobs that run the package end to end: the benchmark and the paper's tables and figures."""
