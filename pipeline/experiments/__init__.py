"""Tools that read experiments from outside dvc.yaml: `python -m pipeline diff` compares two revisions' metrics.
No stage depends on this folder: editing it reruns nothing."""
