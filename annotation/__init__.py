"""Aggregation of annotators' answers and the paper's statistics (pure functions)."""
