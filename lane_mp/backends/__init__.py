"""Where a dispatched command runs, when not on the pool's own worker processes.

A backend is a picklable config object (it travels to the coordinator process) with
``make_supervisor(cfg, bell_w)``: the coordinator then talks to its slots exactly as to local
workers (``coordinator/supervisor.py`` ``WorkerSlot``). Everything above dispatch (lanes,
limits, retries, dead letters, journal, metrics) stays in the coordinator, unchanged.

- ``dask.py``: :class:`DaskBackend` (coordinator side: a ``distributed.Client``, one slot per
  Dask worker thread).
- ``dask_task.py``: the function a Dask worker runs (worker side: protocol/ and worker/ only).
"""
