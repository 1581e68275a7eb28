"""The Dask tools: `python -m pipeline sweep` (experiments as jobs, sweep.py), `python -m pipeline repro --workers`
(the stages of one pipeline as jobs, repro.py), the job that runs one stage in a clone (stage_job.py) and what the
three share (jobs.py). No stage depends on this folder: editing it reruns nothing."""
