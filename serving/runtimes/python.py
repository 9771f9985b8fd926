"""The ``python`` runtime: the user's own class, from a folder of its code and files.

The folder holds an ``mmserve.toml`` (see :mod:`serving.runtimes._manifest`) naming a class
of one of its modules that has ``load(path)``, called once with the folder (a
:class:`~pathlib.Path`, where its weights and files are), and ``predict(table)``, called
with the checked features as a ``pyarrow.Table`` (a pandas DataFrame if the manifest says
``pandas = true``) and answering with a ``pyarrow.Table`` or a DataFrame holding every
declared output. Inputs are the manifest's ``[inputs]`` (typed as an input example's
columns when one is given at registration; without ``[inputs]`` the example names them);
outputs are its ``[outputs]``, cast to the declared types. The task is the manifest's
(``transformer`` by default) and the method always ``predict``.

Loading runs its code, so only a version registered with ``trust_code`` loads. The folder
is stored as one tar whose sha256 the registry checks; each load also checks this machine's
unpacked copy against the tar file by file (see :mod:`serving.runtimes._folder`). The
requirements it declares must be installed, and are checked before any of its code runs.

Its modules are imported as ``_mmserve_code_<sha256>.<module>``: two models with modules of
the same name never meet. Sibling modules are found by relative imports
(``from . import helpers``) at any time, and by plain ones (``import helpers``) while it is
imported, which then also live under that package. A registered *object* of such a class is
registered as the folder of the file defining its class, which must hold an ``mmserve.toml``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from serving.errors import InvalidName, MissingPackage, ModelError, UntrustedArtifact
from serving.runtimes import Description, Flavor, Trust, _folder, _manifest
from serving.runtimes._manifest import NAME, Manifest

if TYPE_CHECKING:
    from serving.metadata import Method, ModelVersion

PACKAGES: tuple[str, ...] = ()
_IMPORTING = threading.Lock()  # sys.path and sys.modules are changed while importing


@dataclass(frozen=True)
class Loaded:
    """The user's loaded instance and what its folder declares."""

    instance: Any
    manifest: Manifest
    files: dict[str, str]


def pack(folder: Path) -> bytes:
    if not (folder / NAME).is_file():
        raise UntrustedArtifact(
            str(folder), f"it holds no {NAME}, which names its class, inputs and outputs"
        )
    return _folder.pack(folder)


def dump(native: Any, flavor: Flavor) -> bytes:
    """An instance's model: the folder of the file that defines its class."""
    return pack(_folder_of(native))


def untrusted_types(data: bytes, flavor: Flavor) -> list[str]:
    return []  # the whole folder is trusted, or nothing of it (trust_code)


def load(data: bytes, flavor: Flavor, trust: Trust, what: str) -> Loaded:
    """The class of the folder in ``data``, instantiated and loaded from this machine's
    checked copy; refused unless its code was trusted and its requirements are installed."""
    if not trust.code:
        raise UntrustedArtifact(
            what,
            "it is Python code, which runs when loaded; register it with --trust-code "
            "(trust_code=True) only if you trust its author",
        )
    files = _folder.digests(data, what)
    text = _folder.read(data, NAME)
    if text is None:
        raise UntrustedArtifact(what, f"it holds no {NAME}")
    manifest = _manifest.parse(text, what)
    _manifest.check_installed(manifest.requirements, what)
    sha256 = hashlib.sha256(data).hexdigest()
    folder = _folder.unpacked(data, sha256, files, what)
    cls = _import(folder, f"_mmserve_code_{sha256}", manifest, what)
    try:
        instance = cls()
        instance.load(folder)
    except ModuleNotFoundError as err:
        raise _missing(err, what) from None
    except Exception as err:
        raise ModelError(what, err) from err
    return Loaded(instance, manifest, files)


def describe(native: Any, method: Method | None) -> Description:
    if method not in (None, "predict"):
        raise InvalidName("method", str(method), "a python model answers through its predict")
    loaded = _loaded(native)
    manifest = loaded.manifest
    return Description(
        task=manifest.task,
        method="predict",
        outputs=list(manifest.outputs),
        classes=manifest.classes,
        features=list(manifest.inputs),
        feature_types=dict(manifest.inputs),
        content_types=manifest.content_types,
        paths=manifest.paths,
        output_content_types=manifest.output_content_types,
        shapes=manifest.shapes,
        output_shapes=manifest.output_shapes,
        output_types=dict(manifest.outputs),
        files=loaded.files,
        requirements=manifest.requirements,
        row_block=manifest.row_block,
    )


class PythonModel:
    """The user's instance behind the seam: its answer is taken by column name."""

    float32 = False
    column_major = False

    def __init__(self, loaded: Loaded):
        self.native = loaded.instance
        self.frame = loaded.manifest.pandas
        self.table = not self.frame  # the predictor hands over the checked pyarrow.Table
        classes = loaded.manifest.classes
        self.classes = None if classes is None else np.asarray(classes)

    def scores(self, x: Any) -> pa.Table | Mapping[str, Any]:
        answer = self.native.predict(x)
        if isinstance(answer, pa.Table | Mapping):
            return answer
        pandas = sys.modules.get("pandas")  # a DataFrame's module is imported already
        if pandas is not None and isinstance(answer, pandas.DataFrame):
            return pa.Table.from_pandas(answer, preserve_index=False)
        raise TypeError(f"predict returned {type(answer).__name__}, not a pyarrow.Table")

    def labels(self, x: Any, scores: np.ndarray) -> np.ndarray:
        """Never asked: the method is ``predict``, whose answer holds any label."""
        raise NotImplementedError


def wrap(native: Any, version: ModelVersion, threads: int = 1) -> PythonModel:
    """The model, refused if its files are not those its version records."""
    loaded = _loaded(native)
    changed = sorted(
        n for n in {*loaded.files, *version.files} if loaded.files.get(n) != version.files.get(n)
    )
    if changed:
        reason = f"its file {changed[0]} is not the one its version records"
        raise UntrustedArtifact(version.ref, reason)
    return PythonModel(loaded)


def _import(folder: Path, package: str, manifest: Manifest, what: str) -> type:
    """The manifest's class, its module imported from ``folder`` as part of ``package``."""
    with _IMPORTING:
        if package not in sys.modules:
            spec = importlib.util.spec_from_loader(package, None, is_package=True)
            assert spec is not None and spec.submodule_search_locations is not None
            spec.submodule_search_locations.append(str(folder))
            sys.modules[package] = importlib.util.module_from_spec(spec)
        before = set(sys.modules)
        sys.path.insert(0, str(folder))
        writes, sys.dont_write_bytecode = sys.dont_write_bytecode, True
        try:
            module = importlib.import_module(f"{package}.{manifest.module}")
        except ModuleNotFoundError as err:
            if err.name is not None and err.name.startswith(f"{package}."):
                rule = f"its folder has no module {err.name.removeprefix(package + '.')!r}"
                raise InvalidName(f"{NAME} model", _target(manifest), rule) from None
            raise _missing(err, what) from None
        except Exception as err:
            raise ModelError(what, err) from err
        finally:
            sys.path.remove(str(folder))
            sys.dont_write_bytecode = writes
            _adopt(package, folder, set(sys.modules) - before)
    cls = getattr(module, manifest.cls, None)
    if not isinstance(cls, type) or not all(
        callable(getattr(cls, m, None)) for m in ("load", "predict")
    ):
        rule = "no class of its module with load(path) and predict(table) methods"
        raise InvalidName(f"{NAME} model", _target(manifest), rule)
    return cls


def _adopt(package: str, folder: Path, imported: set[str]) -> None:
    """Move modules of ``folder`` imported by plain name (``import helpers``) under
    ``package``, so that another model's ``helpers`` is its own."""
    for name in imported:
        module = sys.modules.get(name)
        source = getattr(module, "__file__", None)
        if name.startswith(package) or source is None or not _inside(Path(source), folder):
            continue
        del sys.modules[name]
        sys.modules.setdefault(f"{package}.{name}", module)  # type: ignore[arg-type]


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _missing(err: ModuleNotFoundError, what: str) -> MissingPackage:
    module = (err.name or str(err)).split(".")[0]
    remedy = f"install the package that provides it and name it in the requirements of {NAME}"
    return MissingPackage(what, "module", module, remedy)


def _target(manifest: Manifest) -> str:
    return f"{manifest.module}:{manifest.cls}"


def _folder_of(native: Any) -> Path:
    """The folder of the file defining ``native``'s class, which must hold a manifest."""
    cls = type(native)
    try:
        source = Path(inspect.getfile(cls))
    except TypeError:
        source = Path("<no file>")
    if not (source.parent / NAME).is_file():
        raise UntrustedArtifact(
            cls.__qualname__,
            f"its class is defined in {source}, whose folder holds no {NAME}: register a "
            f"folder holding its code, its files and an {NAME}",
        )
    return source.parent


_last: tuple[Any, Loaded] | None = None  # describe and wrap both ask for the same object


def _loaded(native: Any) -> Loaded:
    """``native`` loaded as it will be served: a registered instance is loaded again from
    its packed folder (its code already ran in this process), so that registration checks
    what servers will run."""
    global _last
    if isinstance(native, Loaded):
        return native
    if _last is None or _last[0] is not native:
        folder = _folder_of(native)
        data = pack(folder)
        loaded = load(data, "python", Trust(code=True), str(folder))
        if loaded.manifest.cls != type(native).__name__:
            rule = f"a {type(native).__name__} is registered"
            raise InvalidName(f"{NAME} model", _target(loaded.manifest), rule)
        _last = (native, loaded)
    return _last[1]
