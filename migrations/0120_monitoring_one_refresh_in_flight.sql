-- Monitoring (issue 12), second part: at most one refresh in flight (queued, running or pending) per
-- account and job type. Two workers can then never run the same refresh, and a refresh asked for
-- while one is in flight (CreateJob, or the schedule) is that one. (Numbered 01<issue><part>.)
CREATE UNIQUE INDEX jobs_one_refresh_in_flight ON jobs (account_id, name)
    WHERE origin = 2 AND status IN ('queued', 'running', 'pending');
