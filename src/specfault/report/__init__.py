"""Outer room: human-facing reports (the demo tour, tables, plots)."""
