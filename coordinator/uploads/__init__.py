"""Resumable uploads of expert packages; `sessions.Uploads` is the entry point."""
