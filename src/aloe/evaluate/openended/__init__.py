"""Open-ended evaluation: free-text QA sets, LLM judge, reference metrics, specialties."""
