"""A reusable experiment pipeline for recurrent neural networks, orchestrated with DVC.

Importing the package has no side effects; every stage is `python -m pipeline <command>`.
"""

__version__ = "0.1.0"
