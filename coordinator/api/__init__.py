"""The admin REST API (FastAPI): organizations, experts, releases, jobs and audit, behind bearer tokens with roles.

Every route calls the same functions as `barfed coordinator …`, so no rule is written twice.
"""
