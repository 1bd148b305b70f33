"""Scripts of the repository (benchmarks) loaded as modules, so that tests call their ``main`` at tiny sizes."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).parents[1]


def load_script(path: str):
    """The script ``path`` (relative to the repository root) as a module."""
    spec = importlib.util.spec_from_file_location(Path(path).stem + "_script", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
