"""The files every stage reads or writes: dataset files (datasets.py), checkpoints (checkpoints.py), and where
each output goes, written atomically (artifacts.py).

A package of its own so that dvc.yaml can list it as one dependency: DVC rewrites the whole dvc.lock after every
stage, and each listed file costs every stage's entry four lines of it (about 0.5 s per stage on our lock).
"""
