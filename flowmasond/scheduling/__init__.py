"""Scheduling parts used by ``flowmasond.scheduler``: cron math, clocks, misfire and overlap rules."""
