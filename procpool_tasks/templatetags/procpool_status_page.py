"""Filters of the status page's templates: ``{% load procpool_status_page %}``."""

from __future__ import annotations

from datetime import datetime

from django import template

from procpool_tasks.operations.status import age_text

register = template.Library()


@register.filter
def age(moment: datetime | None, now: datetime) -> str:
    """``{{ task.started_at|age:status.generated_at }}``: ``0.8s``, ``12m``, ``3.5h``, ``-``."""
    return age_text(moment, now)
