"""Shared infrastructure: errors, atomic writes, locks, fault injection, WAV I/O, plots."""
