"""pb_utils.ModelConfig: what `auto_complete_config(auto_complete_model_config)` receives.

It wraps the model configuration as Triton's JSON (snake_case names, defaults filled)
and lets the model add inputs and outputs, set max_batch_size, dynamic batching and the
transaction policy; the backend turns `as_dict()` back into the ModelConfig protobuf.
"""

from __future__ import annotations

import json
from typing import Any


class ModelConfig:
    """The model configuration during auto-complete."""

    def __init__(self, model_config: str | dict[str, Any]) -> None:
        self._model_config: dict[str, Any] = (
            json.loads(model_config) if isinstance(model_config, str) else model_config
        )
        self._model_config.setdefault("input", [])
        self._model_config.setdefault("output", [])
        self._model_config.setdefault("max_batch_size", 0)

    @property
    def _name(self) -> str:
        return str(self._model_config.get("name", ""))

    def as_dict(self) -> dict[str, Any]:
        return self._model_config

    def set_max_batch_size(self, max_batch_size: int) -> None:
        current = int(self._model_config.get("max_batch_size", 0))
        if current > max_batch_size:
            raise ValueError(
                f"configuration specified max_batch_size {current}, but in auto-complete-config "
                f"function for model '{self._name}' specified max_batch_size {max_batch_size}"
            )
        self._model_config["max_batch_size"] = int(max_batch_size)

    def set_dynamic_batching(self) -> None:
        for other in ("sequence_batching", "ensemble_scheduling"):
            if self._model_config.get(other):
                raise ValueError(
                    f"Configuration specified scheduling_choice as '{other}', but "
                    f"auto-complete-config function for model '{self._name}' tries to set "
                    "scheduling_choice as 'dynamic_batching'"
                )
        if not self._model_config.get("dynamic_batching"):
            self._model_config["dynamic_batching"] = {}

    def set_model_transaction_policy(self, transaction_policy_dict: dict[str, Any]) -> None:
        for key in transaction_policy_dict:
            if key != "decoupled":
                raise ValueError(
                    f"model transaction property in auto-complete-config function for model "
                    f"'{self._name}' contains property other than 'decoupled'."
                )
        policy = self._model_config.setdefault("model_transaction_policy", {})
        policy["decoupled"] = bool(transaction_policy_dict.get("decoupled", False))

    def add_input(self, input: dict[str, Any]) -> None:
        self._add_tensor("input", input)

    def add_output(self, output: dict[str, Any]) -> None:
        self._add_tensor("output", output)

    def _add_tensor(self, kind: str, tensor: dict[str, Any]) -> None:
        valid = {
            "name",
            "data_type",
            "dims",
            "optional",
            "reshape",
            "is_shape_tensor",
            "label_filename",
        }
        name = tensor.get("name")
        for key in tensor:
            if key not in valid:
                raise ValueError(
                    f"{kind} '{name}' in auto-complete-config function for model "
                    f"'{self._name}' contains property other than 'name', 'data_type', 'dims' "
                    "and 'optional'."
                )
        for required in ("name", "data_type", "dims"):
            if required not in tensor:
                prefix = f"{kind} '{name}'" if name else kind
                raise ValueError(
                    f"{prefix} in auto-complete-config function for model '{self._name}' is "
                    f"missing '{required}' property."
                )
        for current in self._model_config[kind]:
            if current.get("name") != name:
                continue
            dtype = current.get("data_type", "TYPE_INVALID")
            if dtype != "TYPE_INVALID" and dtype != tensor["data_type"]:
                raise ValueError(
                    f"unable to load model '{self._name}', configuration expects datatype "
                    f"{dtype} for {kind} '{name}', model provides {tensor['data_type']}"
                )
            dims = [int(d) for d in current.get("dims", [])]
            if dims and dims != [int(d) for d in tensor["dims"]]:
                raise ValueError(
                    f"model '{self._name}', tensor '{name}': the model expects dims "
                    f"{list(tensor['dims'])} but the model configuration specifies dims {dims}"
                )
            current.update(tensor)
            return
        self._model_config[kind].append(dict(tensor))
