"""The task layer: verification and release builds run as Celery tasks keyed by their job rows.

One way down: `celery_app` (the app and its one task) → `runner` (claim, lease, finish; no Celery) → `handlers`
(what each kind does, around verification/ and release/, which know nothing of Celery). `dispatch` sends "run job
N" and sweeps what is due; `worker` runs a worker in this process or supervises a ``celery worker`` child.
"""
