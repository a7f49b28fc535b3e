"""One message's scan job for both doors (job.py), and scanning while the engine runs: the worker
pool (pool.py) that runs the job off the event loop, in threads or processes (procs.py,
worker.py), and the watch on the signatures the scans use (detection.py)."""
