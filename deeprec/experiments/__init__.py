"""Reproductions of the papers' experiments, each one command (a Hydra app) over library functions.

    python -m deeprec.experiments.ratings_paper +experiment=ratings_paper_epm   # SPEC 1.11
"""
