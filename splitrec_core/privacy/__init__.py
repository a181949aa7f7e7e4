"""Privacy: a party's private randomness, and the audit of what its gradients tell.

`entropy` draws what must not come from the shared seed (PSI scalars, shuffles, noise);
`leakage` scores what the gradients the label party returns tell a feature party about the
labels. The noise itself is added where embeddings and gradients are made (`training.steps`).
"""
