"""Operator tools over the database: timelines, lookups, the audit trail (read and archive)."""
