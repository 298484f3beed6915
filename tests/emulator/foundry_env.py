"""What a Foundry SDK test needs: the emulator's HTTPS listener trusted the way users trust it
(``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE``), and ``DefaultAzureCredential`` getting real tokens
from the emulator's managed-identity endpoint (``IDENTITY_ENDPOINT``/``IDENTITY_HEADER``)."""

from __future__ import annotations

import pytest

from cigate.testing.plugin import RunningEmulator

#: The seed's chart code: a figure saved to /mnt/data, and one only displayed.
CSV = b"sector,operating_profit\nTRANSPORTATION,12\nTRANSPORTATION,30\nBANKING,7\n"
CHART_CODE = """\
import glob
import matplotlib.pyplot as plt
import pandas as pd
df = pd.read_csv(glob.glob("/mnt/data/*nifty.csv")[0])
total = df[df.sector == "TRANSPORTATION"].operating_profit.sum()
fig, ax = plt.subplots()
ax.bar(["TRANSPORTATION"], [total])
fig.savefig("/mnt/data/transport.png")
plt.show()
print(total)
"""
PROMPT = (
    "Could you please create bar chart in TRANSPORTATION sector for the operating profit "
    f"from the uploaded csv file and provide file to me?\n```python\n{CHART_CODE}```\n"
)


def trust_and_identity(emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Set the environment a user sets: the two trust variables and a managed identity."""
    for name, value in emulator.tls.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("IDENTITY_ENDPOINT", emulator.base_url + "/_emulator/identity/token")
    monkeypatch.setenv("IDENTITY_HEADER", "cigate-test")
