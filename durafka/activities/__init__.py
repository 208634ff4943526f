"""Activity execution: running one activity, the threads it runs on, the worker, local runs.

- :mod:`durafka.activities.context`: :class:`ActivityContext`, what a running activity
  knows about itself, and its heartbeat;
- :mod:`durafka.activities.execute`: one activity task to its result event;
- :mod:`durafka.activities.pool`: the thread pool and the event-loop thread;
- :mod:`durafka.activities.worker`: :class:`ActivityWorker`, the ``H.workers`` member;
- :mod:`durafka.activities.deliveries`: the worker's offsets and delivery notes (how
  often a task was delivered without a result);
- :mod:`durafka.activities.local`: :class:`LocalActivities`, activities run inside the
  processor's batch when a worker shares its process.
"""
