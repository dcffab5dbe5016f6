"""Blind pairwise human evaluation: a small web app, a SQLite vote store, win rates and Bradley-Terry."""
