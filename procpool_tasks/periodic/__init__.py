"""Periodic tasks: ``cron`` (the arithmetic of schedules) and ``scheduler`` (firing them)."""
