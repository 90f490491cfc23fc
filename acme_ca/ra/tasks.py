"""Moved to :mod:`acme_ca.tasks`; this name stays only until ``app.py`` (being rewritten
by another change of issue 18) imports it from there, then it goes."""

from acme_ca.tasks import BackgroundTasks

__all__ = ["BackgroundTasks"]
