"""Gradient training of the learned models, in torch: the models (models.py), their replicas side by side
(replicas.py) in forked processes (processes.py), the training loop (fitting.py) with its learning-rate schedules
(schedules.py), what it records (history.py), where torch runs (runtime.py) and in which numerical mode
(numerics.py).

Only the train stage of a learned variant imports it (training.py does, lazily); like `pipeline.files`, it is
one package so that dvc.yaml lists it as one dependency of the train stage. Importing it pins MKL's numerical
mode first, before any of its modules imports torch (numerics.py says why).
"""

from pipeline.learning import numerics

numerics.pin()
