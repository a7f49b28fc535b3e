"""Scanning while the engine runs: the worker pool (pool.py) that scans each message off the
event loop, in threads or processes (procs.py, worker.py), one message's job (job.py), and the
watch on the signatures the scans use (detection.py)."""
