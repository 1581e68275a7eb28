"""Dataset kinds: the generators of the reference notebooks' tasks (generators.py) and a user's CSV (user_data.py).
The generate stage is their only caller; a new kind is one registered spec and function in generators.py."""
