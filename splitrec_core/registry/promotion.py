"""Whether a newly trained version may replace the champion.

No task's test AUC may fall more than the configured margin below the champion's, and no attack of
the leakage audit may exceed the configured bound (so the default bound, 1.0, refuses nothing).
The verdict gives its reasons in words, for the run report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from splitrec_core.config import RegistryConfig


@dataclass(frozen=True)
class Verdict:
    """Whether `version` becomes `current`, and why (or why not)."""

    version: str
    champion: str | None
    promote: bool
    reasons: list[str]

    def as_json(self) -> dict[str, Any]:
        """The verdict as a JSON-ready dict."""
        return asdict(self)


class Versions(Protocol):
    """What the verdict reads: a registry's aliases and manifests.

    The registry is one party's, or every party's together.
    """

    def aliases(self) -> Any:
        """Which version each alias names (`current` is the champion)."""

    def manifest(self, version: str) -> dict[str, Any]:
        """The manifest of `version`, with its `metrics` and `leakage`."""


def judge_against_champion(versions: Versions, version: str, rules: RegistryConfig) -> Verdict:
    """The verdict on registered `version` against the current champion of `versions`."""
    champion = versions.aliases().current
    return judge(version, versions.manifest(version), champion,
                 versions.manifest(champion) if champion else None, rules)


def judge(version: str, candidate: dict[str, Any], champion_version: str | None,
          champion: dict[str, Any] | None, rules: RegistryConfig) -> Verdict:
    """The verdict on `candidate` against the `champion`'s manifest.

    `candidate` is a version manifest with `metrics` and `leakage`; `champion` is None when there
    is no champion yet.
    """
    if champion_version == version:
        return Verdict(version, champion_version, True, ["it is already the champion"])
    fell: list[str] = []
    leaks: list[str] = []
    held: list[str] = []
    if champion is not None:
        for task, metrics in candidate["metrics"].items():
            new, old = metrics["auc"], champion["metrics"][task]["auc"]
            line = f"{task} test AUC {new:.4f} against the champion's {old:.4f} ({new - old:+.4f})"
            (fell if new < old - rules.promotion_margin else held).append(line)
    for task, attacks in candidate["leakage"].items():
        worst_name, worst = max(attacks.items(), key=lambda item: item[1])
        if worst > rules.max_leakage_auc:
            leaks.append(f"{task} leaks: the {worst_name.removesuffix('_auc')} attack reaches "
                         f"AUC {worst:.3f}, above the bound {rules.max_leakage_auc}")
    if fell:
        fell.append(f"more than the promotion margin {rules.promotion_margin} below")
    if fell or leaks:
        return Verdict(version, champion_version, False, fell + leaks)
    if champion is None:
        return Verdict(version, None, True, ["no champion yet"])
    return Verdict(version, champion_version, True,
                   [*held, f"no task fell more than the margin {rules.promotion_margin}"])
