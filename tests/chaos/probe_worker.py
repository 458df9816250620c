"""`tasksvc worker` with the test-only `probe` job type: python -m tests.chaos.probe_worker N."""

from __future__ import annotations

import os
import sys
import tempfile

if __name__ == "__main__":
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tasksvc-chaos-metrics-")
    from tasksvc.config import load_settings
    from tasksvc.logs import configure_logging
    from tasksvc.worker import Supervisor, serve_metrics

    settings = load_settings()
    configure_logging(settings)
    serve_metrics(settings)
    supervisor = Supervisor(settings, processes=int(sys.argv[1]), job_types="tests.testtypes:probe_registry")
    sys.exit(supervisor.run())
