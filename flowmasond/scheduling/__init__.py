"""Cron schedules: fire times (``cron``), the scheduler (``scheduler``), clocks, misfire and overlap rules."""
