"""Recipe schema and reading: validated before anything heavy happens."""
