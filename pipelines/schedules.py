"""Scheduled retraining: weekly, off until someone turns it on in the UI (or the daemon config)."""

import dagster as dg

from pipelines.jobs import kws_pipeline

weekly_retrain = dg.ScheduleDefinition(
    name="weekly_retrain",
    job=kws_pipeline,
    cron_schedule="0 3 * * 1",  # Mondays 03:00
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Retrain, export and evaluate every week (off by default).",
)
