"""Server options, named as Triton names its command-line flags."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ServerOptions:
    """Everything `tritium serve` was asked for. Names follow tritonserver's flags."""

    model_repository: list[str] = field(default_factory=list)
    model_control_mode: str = "none"  # none | poll | explicit
    repository_poll_secs: float = 15.0
    load_model: list[str] = field(default_factory=list)  # explicit mode: names or "*"
    strict_readiness: bool = True
    exit_on_error: bool = True
    strict_model_config: bool = False

    http_address: str = "0.0.0.0"
    http_port: int = 8000
    allow_http: bool = True
    grpc_address: str = "0.0.0.0"
    grpc_port: int = 8001
    allow_grpc: bool = True
    metrics_address: str = "0.0.0.0"
    metrics_port: int = 8002
    allow_metrics: bool = True
    allow_gpu_metrics: bool = True
    allow_cpu_metrics: bool = True
    metrics_interval_ms: int = 2000

    log_verbose: int = 0
    log_info: bool = True
    log_warning: bool = True
    log_error: bool = True
    log_format: str = "default"
    log_file: str = ""

    exit_timeout_secs: float = 30.0
    http_max_input_size: int = 64 * 1024 * 1024
    id: str = "triton"
    backend_config: list[str] = field(default_factory=list)  # backend,key=value
