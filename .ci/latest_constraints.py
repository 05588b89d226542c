"""The pip constraints of `make test-latest`: the pyproject.toml ranges of the Hugging Face stack (transformers,
timm, datasets), under which pip picks the newest, and torch and torchvision pinned to the versions already
installed (this machine's capped build: never a newer one pulled in by an upgrade)."""

import re
import sys
from importlib.metadata import version
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

project = tomllib.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml").read_text())["project"]
requirements = project["dependencies"] + project["optional-dependencies"]["hf"]
for req in requirements:
    if re.match(r"(transformers|timm|datasets)\b", req):
        print(req.split(";")[0].strip())
for name in ("torch", "torchvision"):
    print(f"{name}=={version(name)}")
