"""The dashboard: its page and data route, and the charts' readings (Prometheus or serving's own samples)."""
