"""How an answer of Tritium is held against Triton's recorded answer.

Exact by default: status (or gRPC code) and body must be equal. What legitimately differs
between two runs or two servers is normalized first, and only that:
- scratch paths of the model repository in Python tracebacks (each run copies the
  repository into a fresh temporary folder);
- for `COUNTS` cases (statistics), durations (`ns`) and timestamps (`last_inference`):
  wall-clock numbers; every count must match;
- for `SHAPE` cases, every leaf value: the server version (Triton's release number),
  its extension list and log/trace settings that mirror each server's own flags.
HTTP content types are not compared for error bodies: Triton answers some errors with
`text/plain` and others with `application/json`, always with a JSON body.

    python tests/conformance/triton_compare.py [DIR]   # Tritium's answers (record_fixtures.py
                                                       # --tritium) against the fixtures
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from triton_cases import COUNTS, SHAPE, STATUS

_TMP_REPO = re.compile(r"/[^\s'\"]*?/python_models/")


def normalize_paths(value: Any) -> Any:
    if isinstance(value, str):
        return _TMP_REPO.sub("<repo>/", value)
    if isinstance(value, list):
        return [normalize_paths(v) for v in value]
    if isinstance(value, dict):
        return {k: normalize_paths(v) for k, v in value.items()}
    return value


def normalize_stats(value: Any) -> Any:
    """Statistics: keep counts, drop durations and timestamps."""
    if isinstance(value, list):
        return [normalize_stats(v) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in ("ns", "last_inference"):
                out[k] = "<n>"
            else:
                out[k] = normalize_stats(v)
        return out
    return value


def shape_of(value: Any) -> Any:
    """Keys and value types, recursively; lists by the shape of their first element."""
    if isinstance(value, dict):
        return {k: shape_of(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape_of(value[0])] if value else []
    return type(value).__name__


def http_view(answer: dict[str, Any], compare: str) -> dict[str, Any]:
    """What of an HTTP answer is compared."""
    body = normalize_paths(answer["body"])
    view: dict[str, Any] = {"status": answer["status"]}
    ctype = (answer.get("content_type") or "").split(";")[0]
    if answer["status"] == 200 and ctype in ("application/octet-stream", "text/event-stream"):
        view["content_type"] = ctype
    if compare == SHAPE:
        body = shape_of(body)
    elif compare == STATUS:
        body = None
    elif compare == COUNTS:
        body = normalize_stats(body)
    view["body"] = body
    return view


def grpc_view(answer: dict[str, Any], compare: str) -> dict[str, Any]:
    view = normalize_paths(dict(answer))
    if "stream" in view:
        # Responses of different requests on one stream may interleave in any order;
        # those of one request keep theirs (a stable sort by request id).
        view["stream"] = sorted(view["stream"], key=lambda r: r["infer_response"].get("id", ""))
    if compare == COUNTS and "response" in view:
        view["response"] = normalize_stats(view["response"])
    if compare == SHAPE and "response" in view:
        view["response"] = shape_of(view["response"])
    if compare == STATUS:
        view.pop("details", None)
    return view


def metrics_view(families: dict[str, Any]) -> dict[str, Any]:
    return {name: {k: v for k, v in fam.items() if k != "help"} for name, fam in families.items()}


FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture(group: str) -> dict[str, Any]:
    """Triton's recorded answers of one group (http, grpc, http_explicit, metrics ...)."""
    return json.loads((FIXTURES / f"{group}.json").read_text())


def _diff(name: str, want: Any, got: Any) -> str:
    return (
        f"--- {name}\n  triton: {json.dumps(want, sort_keys=True, ensure_ascii=False)}\n"
        f"  ours:   {json.dumps(got, sort_keys=True, ensure_ascii=False)}"
    )


def main(argv: list[str]) -> int:
    import triton_cases as cases

    here = Path(__file__).resolve().parent
    ours_dir = Path(argv[0]) if argv else Path(tempfile.gettempdir()) / "tritium-conformance"
    theirs_dir = here / "fixtures"
    modes = {c.name: c.compare for c in cases.http_cases() + cases.explicit_http_cases()}
    modes.update({c.name: c.compare for c in cases.grpc_cases()})
    n = 0
    for group, view in (("http", http_view), ("http_explicit", http_view), ("grpc", grpc_view)):
        theirs = json.loads((theirs_dir / f"{group}.json").read_text())
        ours = json.loads((ours_dir / f"{group}.json").read_text())
        for name, answer in theirs.items():
            if name not in ours:
                print(f"--- {name}: missing in ours")
                continue
            w, g = view(answer, modes[name]), view(ours[name], modes[name])
            if w != g:
                n += 1
                print(_diff(f"{group}/{name}", w, g))
    for group in ("metrics_start", "metrics"):
        theirs = metrics_view(json.loads((theirs_dir / f"{group}.json").read_text()))
        ours = metrics_view(json.loads((ours_dir / f"{group}.json").read_text()))
        for name, fam in theirs.items():
            if ours.get(name) != fam:
                n += 1
                print(_diff(f"{group}/{name}", fam, ours.get(name)))
    print(f"{n} differences")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main(sys.argv[1:]))
