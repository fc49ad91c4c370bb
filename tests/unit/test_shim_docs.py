"""docs/openapi.json and the field tables of docs/shim.md are what the pydantic types generate."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_api_docs_are_current():
    proc = subprocess.run([sys.executable, str(ROOT / "hack" / "gen_openapi.py"), "--check"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
