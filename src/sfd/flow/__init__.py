"""Asynchronous flow matching: time convention, staged schedule, solvers, guidance."""
