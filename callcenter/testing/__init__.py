"""Helpers for tests, benchmarks and the demo: the real test PBX, SIPp and a throwaway PostgreSQL."""
