"""Which versions of a model to load: version_policy latest{num_versions} / all / specific."""

from __future__ import annotations

from tritium.server.backend import ModelConfig


def select_versions(config: ModelConfig, available: list[int]) -> list[int]:
    """The versions the policy asks for, among those present on disk, ascending."""
    policy = config.version_policy
    present = sorted(set(available))
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return present
    if which == "specific":
        wanted = set(policy.specific.versions)
        return [v for v in present if v in wanted]
    num = policy.latest.num_versions if which == "latest" else 1
    return present[-max(num, 1) :] if present else []
