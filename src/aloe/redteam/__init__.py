"""Red teaming: harmful-prompt sets (prompts), attack styles (styles), judges (judges), ASR tables
(asr), runs (run) and stage-2 DPO pairs (pairs). CLI: `aloe redteam styles|run|compare|pairs`."""
