"""The package's layering holds: import-linter's contracts of pyproject.toml ([tool.importlinter]).

Entry point > commands > mapping > ml > data > helpers, no import cycle inside any package, and the
readers, converters and cmap convert / extract free of torch and Lightning; a change that ties two
modules the wrong way fails here.
"""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def lint_imports() -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_every_import_contract_is_kept():
    result = lint_imports()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in result.stdout
