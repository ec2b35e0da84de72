"""Pieter CI: a lightweight private CI server — Sanic API, Redis database, jobs as processes or systemd units."""

__version__ = "0.1.0"
