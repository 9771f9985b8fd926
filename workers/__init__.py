"""Celery workers: async-job tasks, batch partitions, the streaming consumer (issues 4-6)."""
