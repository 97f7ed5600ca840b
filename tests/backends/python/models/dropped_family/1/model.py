"""Keeps a Metric but drops its MetricFamily (the mistake Triton punishes)."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.kept = pb_utils.MetricFamily("kept_family", "kept", pb_utils.MetricFamily.GAUGE)
        self.fine = self.kept.Metric(labels={"m": "1"})
        self.counter = pb_utils.MetricFamily(
            "dropped_family_requests", "dropped", pb_utils.MetricFamily.COUNTER
        ).Metric(labels={"m": "1"})

    def execute(self, requests):
        self.fine.set(len(requests))
        self.counter.increment(1)
        return [
            pb_utils.InferenceResponse([pb_utils.get_input_tensor_by_name(r, "INPUT0")])
            for r in requests
        ]
