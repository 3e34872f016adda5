"""Test configuration: one thread for BLAS/OpenMP, one native-kernel cache per run, a hypothesis
profile sized for CI."""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
if "EMBER_CACHE_DIR" not in os.environ:  # subprocesses inherit it: one cache for the whole run
    os.environ["EMBER_CACHE_DIR"] = tempfile.mkdtemp(prefix="ember-test-kernels-")
    atexit.register(shutil.rmtree, os.environ["EMBER_CACHE_DIR"], True)

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
