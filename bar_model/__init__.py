"""The machine-learning core of BAR: domains, tokenizer, tiny base, branch, training stages, evaluation.

No networking; usable as a library without the rest of the federation.
"""
