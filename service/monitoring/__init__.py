"""Monitoring: connected accounts refreshed on a schedule, events only when the data changed.

- `rules`: pure rules (cadences, jitter, the status machine, per-platform allotment), no I/O.
- `changes`: what a refresh changed (new paystubs, allocations before/after), no I/O.
- `schedules`: the `refresh_schedules`, `monitoring_settings` and `platform_refresh_budget`
  tables, and the monitoring columns of `accounts` (switch, failure run).
- `scheduler`: the loop (in worker processes) that claims due refreshes and queues them.
"""
