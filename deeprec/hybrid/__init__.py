"""The ranking stage of seed 000 section 5.3: several recommenders combined into one list.

candidates (members.py) -> blend (blend.py, combiner.py) -> re-ranking (rerank.py: a LinUCB head
on the members' item embeddings, rule terms, MMR diversity) behind one Recommender (recommender.py).
"""
