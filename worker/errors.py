"""The job error whose message is written for the user: the job's error, shown as is (worker/jobs.py)."""

from __future__ import annotations


class JobError(Exception):
    """A readable reason a job cannot run (shown as the job's error as is)."""
