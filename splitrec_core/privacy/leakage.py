"""The leakage audit: how well a feature party could guess the labels from the gradients it gets.

Li et al. 2022, "Label Leakage and Protection in Two-party Split Learning": in binary tasks the
gradient of the loss with respect to h_p has a larger norm for the rarer class (norm attack), and
gradients of same-class examples point the same way (cosine attack: similarity to the gradient of
one example the attacker knows is positive). The label party, which knows both what it sent and
the labels, scores both attacks on the gradients of the last epoch run. Each is reported as
max(AUC, 1 - AUC), since an attacker can flip the sign: 0.5 means nothing leaks.

With events at the label party a person's gradient is the sum over its events, so its norm also
tells how active the person is: the activity attack guesses from the norm whether a person has
more events than the median person.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from sklearn.metrics import roc_auc_score


def attack_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """max(AUC, 1 - AUC) of `scores` as a guess of `labels`; 0.5 when a class is missing."""
    if len(np.unique(labels)) < 2:
        return 0.5
    auc = float(roc_auc_score(labels, scores))
    return max(auc, 1.0 - auc)


class LeakageAudit:
    """Collects the gradients sent to each feature party with the batch's labels.

    When asked, it scores both attacks on them, per task. Observing is a list append: it runs on
    every batch.
    """

    def __init__(self, tasks: list[str], seed: int = 0) -> None:
        self.tasks = tasks
        self.seed = seed
        self._sent: list[tuple[list[np.ndarray], np.ndarray, np.ndarray | None]] = []

    def observe(self, gradients: list[np.ndarray], labels: np.ndarray,
                events: np.ndarray | None = None) -> None:
        """Keep one batch.

        `gradients[f]` is [batch, d] as sent to follower f; `labels` is [batch, tasks];
        `events`, with events at the label party, is each person's number of events.
        """
        self._sent.append((gradients, labels, events))

    def activity_auc(self) -> float | None:
        """The activity attack's AUC, worst case over feature parties; None without events."""
        batches = [(gradients, events) for gradients, _, events in self._sent
                   if events is not None]
        if not batches:
            return None
        counts = np.concatenate([events for _, events in batches])
        active = counts > np.median(counts)
        aucs = [attack_auc(np.concatenate([np.linalg.norm(g[f], axis=1) for g, _ in batches]),
                           active)
                for f in range(len(batches[0][0]))]
        return round(max(aucs, default=0.5), 4)

    def report(self) -> dict[str, dict[str, float]]:
        """Per task, the worst case over feature parties of each attack's AUC."""
        rng = np.random.default_rng(self.seed)
        norm: dict[tuple[int, str], list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        cosine: dict[tuple[int, str], list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        for gradients, labels, _ in self._sent:
            for f, grad in enumerate(gradients):
                norms = np.linalg.norm(grad, axis=1)
                unit = grad / np.maximum(norms, 1e-12)[:, None]
                for t, task in enumerate(self.tasks):
                    y = labels[:, t]
                    norm[(f, task)].append((norms, y))
                    positives = np.flatnonzero(y == 1)
                    if len(positives) == 0:
                        continue
                    known = rng.choice(positives)  # the one positive the attacker knows
                    others = np.arange(len(y)) != known
                    cosine[(f, task)].append((unit[others] @ unit[known], y[others]))

        def worst(store: dict, task: str) -> float:
            aucs = [attack_auc(np.concatenate([s for s, _ in parts]),
                               np.concatenate([y for _, y in parts]))
                    for (f, t), parts in store.items() if t == task]
            return round(max(aucs, default=0.5), 4)

        return {task: {"norm_auc": worst(norm, task), "cosine_auc": worst(cosine, task)}
                for task in self.tasks}
