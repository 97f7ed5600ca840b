"""async_model: `async def execute`, custom metrics and logging.

OUTPUT0 = 2 * INPUT0. Each request increments the counter `async_model_requests` and
observes its element count in the histogram `async_model_request_elements`; both appear
on the server's /metrics.
"""

import asyncio

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.logger = pb_utils.Logger
        labels = {"model": args["model_name"], "version": args["model_version"]}
        # Keep the families on self: a Metric does not keep its MetricFamily alive, and
        # once the family is garbage-collected every operation on its metrics raises.
        self.request_family = pb_utils.MetricFamily(
            name="async_model_requests",
            description="Requests processed by async_model",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.request_counter = self.request_family.Metric(labels=labels)
        self.element_family = pb_utils.MetricFamily(
            name="async_model_request_elements",
            description="Elements per request",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self.element_histogram = self.element_family.Metric(
            labels=labels, buckets=[1, 10, 100, 1000]
        )
        self.logger.log_info(f"initialized {args['model_instance_name']}")

    async def execute(self, requests):
        # Requests of a batch may wait on I/O concurrently.
        return list(await asyncio.gather(*(self.process(r) for r in requests)))

    async def process(self, request):
        in_0 = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
        await asyncio.sleep(0)
        self.request_counter.increment(1)
        self.element_histogram.observe(in_0.size)
        self.logger.log_verbose(f"processed {in_0.size} elements")
        return pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", in_0 * 2)])

    def finalize(self):
        pb_utils.Logger.log_info("async_model finalized")
