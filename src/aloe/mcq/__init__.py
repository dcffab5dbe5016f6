"""What every stage knows about multiple-choice questions: the benchmark registry and loaders,
the prompts that pose a question, and the extraction of the answer letter. It sits below the
stages (curate decontaminates against these benchmarks, train builds pairs from them, evaluate
scores them, infer answers them) so that none of them imports another."""
