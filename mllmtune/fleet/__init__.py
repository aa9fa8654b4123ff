"""Many runs: suites of recipes x models x seeds, skipping what the table holds."""
