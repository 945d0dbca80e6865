"""
Chat tasks: datasets (real and synthetic), their rendering into conversations, and their scoring.

    common.py     Task / TaskSequence / TaskMixture, render_mc (the one MC renderer), data-source choice
    verify.py     number normalization, `#### N` answers, <<a*b=c>> -> tool parts, equations, steps, thinking
    arc.py mmlu.py olmo_mc.py          categorical (letter) tasks
    gsm8k.py humaneval.py mbpp.py      generative, verifiable (answer match; sandboxed tests)
    smoltalk.py                        general chat (online only)
    synthmath.py synthif.py mcq.py spelling.py identity.py   seeded synthetic tasks, train/test splits

Splits: evaluation only = ARC test, MMLU test, GSM8K test, HumanEval, MBPP test, and the synthetic "test"
splits; everything else is train-usable (each loader's docstring says which splits exist online/offline).
"""
