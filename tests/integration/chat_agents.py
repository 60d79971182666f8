"""Chat agents for the integration tests (loaded with ``--agents``)."""

from examples.support import Support
from myriad import callable


class SlowSupport(Support):
    """Support on the ``slow`` simulated model (see SLOW_MODELS), counting its wakes."""

    model = "slow"

    async def on_start(self) -> None:
        self.sql("CREATE TABLE IF NOT EXISTS wakes (at REAL)")
        self.sql("INSERT INTO wakes VALUES (julianday('now'))")

    @callable()
    async def wakes(self) -> int:
        return int(self.sql("SELECT COUNT(*) AS n FROM wakes")[0]["n"])


SLOW_MODELS = """
[router]
default_model = "sim-small"

[[deployment]]
model = "sim-small"
provider = "simulated"

[[deployment]]
model = "slow"
provider = "simulated"
options = { ttft = 0.05, tps = 16, tokens = 28, chunk_interval = 0.0 }
"""
