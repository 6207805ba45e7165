"""Helpers for the browser end-to-end test: the demo server and Playwright utilities."""
