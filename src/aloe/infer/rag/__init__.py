"""Retrieval-augmented answering: a chunked passage corpus, BM25 and dense indexes, RRF fusion."""
