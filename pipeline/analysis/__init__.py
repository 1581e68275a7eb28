"""Numbers about results: statistics over replicas (stats.py) and the metrics and rollouts that score a model
(scoring.py). Pure numpy; the evaluate and report stages and `python -m pipeline diff` use them."""
