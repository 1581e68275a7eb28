"""The DVC stage commands, one module each (`python -m pipeline <stage>`): read the inputs the stage names in
dvc.yaml, call the domain code, write the outputs. Nothing here is imported by domain code."""
