"""The models in numpy, without torch: the closed-form baselines (baselines.py) and the forward passes of the
learned kinds (inference.py), so that evaluation and the baselines' train stages never import torch.
Their torch twins, which train, live in pipeline/learning/."""
