"""Outer room: human-facing reports — the demo tour (demo, tour, demo_cli,
demo_html), traces for Perfetto / chrome://tracing (perfetto), HTML
reports (html)."""
