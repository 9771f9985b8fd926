"""The ``python`` runtime: a folder of the user's own code, registered, checked and served."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from importlib.metadata import version
from pathlib import Path

import pyarrow as pa
import pytest

from serving import codecs
from serving.errors import (
    InvalidName,
    MissingPackage,
    ModelError,
    NullValue,
    TamperedArtifact,
    UntrustedArtifact,
)
from serving.registry import Registry
from serving.runtimes import python
from serving.store import Store

MMSERVE = str(Path(sys.executable).with_name("mmserve"))
ROWS = pa.table({"amount": [1.0, 2.5, 20.0], "country": ["fr", "de", "fr"]})
SCORER = """\
    import json

    import pyarrow as pa
    import pyarrow.compute as pc

    import helpers


    class Scorer:
        def load(self, path):
            self.weights = json.loads((path / "weights.json").read_text())

        def predict(self, table):
            score = pc.add(
                pc.multiply(table["amount"], self.weights["slope"]), self.weights["bias"]
            )
            return pa.table({"score": score, "label": helpers.label(score)})
"""
HELPERS = """\
    import pyarrow.compute as pc

    THRESHOLD = 10


    def label(score):
        return pc.if_else(pc.greater(score, THRESHOLD), "high", "low")
"""
MANIFEST = """\
    model = "scorer:Scorer"
    requirements = ["numpy>=1"]

    [inputs]
    amount = "double"
    country = "string"

    [outputs]
    score = "double"
    label = "string"
"""


def write(folder: Path, **files: str) -> Path:
    """A model folder: the scorer, its helpers, weights and manifest, with ``files``
    (``mmserve_toml`` for the manifest) written over them."""
    contents = {
        "scorer.py": SCORER,
        "helpers.py": HELPERS,
        "weights.json": '{"slope": 2, "bias": 0.5}',
        "mmserve.toml": MANIFEST,
    }
    contents.update({k.replace("mmserve_toml", "mmserve.toml"): v for k, v in files.items()})
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in contents.items():
        (folder / name).write_text(textwrap.dedent(text))
    return folder


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary directory this process unpacks code into (as TMPDIR would set it)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.from_url(str(tmp_path / "store"))


@pytest.fixture
def registry(store: Store) -> Registry:
    return Registry(store)


def unpacked(private_tmp: Path, sha256: str) -> Path:
    return private_tmp / f"mmserve-code-{os.getuid()}" / sha256


def test_folder_is_registered_with_its_files_and_scores_with_its_weights(
    registry: Registry, store: Store, tmp_path: Path
) -> None:
    folder = write(tmp_path / "kyc")
    mv = registry.register(folder, "kyc", trust_code=True)
    artifact = store.read("registry/kyc/1/model.tar")
    assert (mv.flavor, mv.artifact, mv.task, mv.method) == (
        "python",
        "model.tar",
        "transformer",
        "predict",
    )
    assert (mv.sha256, mv.trust_code) == (hashlib.sha256(artifact).hexdigest(), True)
    assert [(f.name, f.dtype) for f in mv.inputs] == [("amount", "double"), ("country", "string")]
    assert (mv.outputs, mv.output_types) == (
        ["score", "label"],
        {"score": "double", "label": "string"},
    )
    assert (mv.requirements, mv.row_block) == (["numpy>=1"], 8)
    names = ["helpers.py", "mmserve.toml", "scorer.py", "weights.json"]
    assert mv.files == {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}
    assert python.pack(folder) == artifact  # the same folder packs to the same bytes

    answer = Registry(store).load("kyc").predict(ROWS, passthrough=["country"])
    assert answer.to_pylist() == [
        {"country": "fr", "score": 2.5, "label": "low"},
        {"country": "de", "score": 5.5, "label": "low"},
        {"country": "fr", "score": 40.5, "label": "high"},
    ]
    assert answer.schema.field("label").type == pa.string()


def test_code_is_refused_without_trust(registry: Registry, tmp_path: Path) -> None:
    folder = write(tmp_path / "kyc")
    with pytest.raises(UntrustedArtifact) as refused:
        registry.register(folder, "kyc")
    assert refused.value.message == (
        f"refusing to load {folder}: it is Python code, which runs when loaded; register it "
        "with --trust-code (trust_code=True) only if you trust its author"
    )
    assert registry.models() == []


def test_tampered_artifact_in_the_store_is_refused(
    registry: Registry, store: Store, tmp_path: Path
) -> None:
    mv = registry.register(write(tmp_path / "kyc"), "kyc", trust_code=True)
    forged = python.pack(write(tmp_path / "forged", **{"weights.json": '{"slope": 9, "bias": 0}'}))
    store.write("registry/kyc/1/model.tar", forged)
    with pytest.raises(TamperedArtifact) as refused:
        Registry(store).load("kyc")
    assert refused.value.message == (
        f"artifact 'registry/kyc/1/model.tar' fails its integrity check: sha256 is "
        f"{hashlib.sha256(forged).hexdigest()}, registered as {mv.sha256}"
    )


def test_files_differing_from_the_recorded_ones_are_refused(
    registry: Registry, store: Store, tmp_path: Path
) -> None:
    registry.register(write(tmp_path / "kyc"), "kyc", trust_code=True)
    recorded = json.loads(store.read("registry/kyc/1/model.json"))
    recorded["files"]["weights.json"] = "0" * 64
    store.write("registry/kyc/1/model.json", json.dumps(recorded).encode())
    with pytest.raises(UntrustedArtifact) as refused:
        Registry(store).load("kyc")
    assert refused.value.message == (
        "refusing to load kyc:1: its file weights.json is not the one its version records"
    )


def test_a_changed_file_of_the_unpacked_copy_is_refused_naming_it(
    registry: Registry, store: Store, tmp_path: Path, private_tmp: Path
) -> None:
    mv = registry.register(write(tmp_path / "kyc"), "kyc", trust_code=True)
    weights = unpacked(private_tmp, mv.sha256) / "weights.json"
    weights.write_text('{"slope": 9, "bias": 0}')
    with pytest.raises(TamperedArtifact) as refused:
        Registry(store).load("kyc")
    assert refused.value.message == (
        f"artifact '{weights}' fails its integrity check: sha256 is "
        f"{hashlib.sha256(weights.read_bytes()).hexdigest()}, "
        f"registered as {mv.files['weights.json']}"
    )


def test_a_file_added_to_the_unpacked_copy_is_refused(
    registry: Registry, store: Store, tmp_path: Path, private_tmp: Path
) -> None:
    mv = registry.register(write(tmp_path / "kyc"), "kyc", trust_code=True)
    copy = unpacked(private_tmp, mv.sha256)
    (copy / "json.py").write_text("raise SystemExit")
    with pytest.raises(UntrustedArtifact) as refused:
        Registry(store).load("kyc")
    assert refused.value.message == (
        f"refusing to load kyc:1: its code folder {copy} holds json.py, which its artifact does not"
    )
    (copy / "json.py").unlink()
    (copy / "__pycache__").mkdir()  # bytecode Python wrote: removed, never trusted
    (copy / "__pycache__" / "scorer.cpython-311.pyc").write_bytes(b"forged")
    assert Registry(store).load("kyc").predict(ROWS.slice(0, 1)).to_pylist() == [
        {"score": 2.5, "label": "low"}
    ]
    assert not (copy / "__pycache__").exists()


def test_a_requirement_not_installed_is_refused_at_registration(
    registry: Registry, tmp_path: Path
) -> None:
    manifest = MANIFEST.replace('"numpy>=1"', '"numpy>=1", "nonexistent-package-xyz>=1.2"')
    folder = write(tmp_path / "kyc", mmserve_toml=manifest)
    with pytest.raises(MissingPackage) as refused:
        registry.register(folder, "kyc", trust_code=True)
    assert refused.value.message == (
        f"{folder} needs the package 'nonexistent-package-xyz', which is not installed: "
        "pip install 'nonexistent-package-xyz>=1.2'"
    )
    assert refused.value.status == 501
    assert registry.models() == []


@pytest.mark.parametrize(
    ("requirement", "message"),
    [
        ("numpy>=99", "needs the package 'numpy>=99', not the {numpy} installed: pip install "),
        ("numpy<1", "needs the package 'numpy<1', not the {numpy} installed: pip install "),
        ("numpy>=99; python_version < '3'", ""),  # a marker that does not apply here
        ("numpy[extra]>=1", ""),
    ],
)
def test_a_requirement_of_another_version_is_refused(
    registry: Registry, tmp_path: Path, requirement: str, message: str
) -> None:
    folder = write(tmp_path / "kyc", mmserve_toml=MANIFEST.replace('"numpy>=1"', repr(requirement)))
    if not message:
        assert registry.register(folder, "kyc", trust_code=True).requirements == [requirement]
        return
    with pytest.raises(MissingPackage) as refused:
        registry.register(folder, "kyc", trust_code=True)
    expected = message.format(numpy=version("numpy")) + repr(requirement)
    assert refused.value.message == f"{folder} {expected}"


def test_a_requirement_uninstalled_after_registration_is_refused_at_load(
    registry: Registry, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    installed = site / "fake_scoring_lib-1.0.dist-info"
    installed.mkdir(parents=True)
    (installed / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-scoring-lib\nVersion: 1.0\n"
    )
    monkeypatch.syspath_prepend(str(site))
    manifest = MANIFEST.replace('"numpy>=1"', '"fake-scoring-lib>=1"')
    registry.register(write(tmp_path / "kyc", mmserve_toml=manifest), "kyc", trust_code=True)

    (installed / "METADATA").unlink()
    installed.rmdir()
    with pytest.raises(MissingPackage) as refused:
        Registry(store).load("kyc")
    assert refused.value.message == (
        "kyc:1 needs the package 'fake-scoring-lib', which is not installed: "
        "pip install 'fake-scoring-lib>=1'"
    )


def test_an_undeclared_missing_import_names_the_module(registry: Registry, tmp_path: Path) -> None:
    folder = write(tmp_path / "kyc", **{"helpers.py": "import nonexistent_module_xyz\n"})
    with pytest.raises(MissingPackage) as refused:
        registry.register(folder, "kyc", trust_code=True)
    assert refused.value.message == (
        f"{folder} needs the module 'nonexistent_module_xyz', which is not installed: install "
        "the package that provides it and name it in the requirements of mmserve.toml"
    )


def test_models_with_modules_of_the_same_names_do_not_clash(
    registry: Registry, store: Store, tmp_path: Path
) -> None:
    registry.register(write(tmp_path / "a"), "a", trust_code=True)
    other = HELPERS.replace("THRESHOLD = 10", "THRESHOLD = 3").replace('"high"', '"HIGH"')
    registry.register(write(tmp_path / "b", **{"helpers.py": other}), "b", trust_code=True)
    served = Registry(store)
    first, second = served.load("a"), served.load("b")
    assert first.predict(ROWS)["label"].to_pylist() == ["low", "low", "high"]
    assert second.predict(ROWS)["label"].to_pylist() == ["low", "HIGH", "HIGH"]
    assert "helpers" not in sys.modules and "scorer" not in sys.modules


def test_predict_may_take_and_answer_pandas(registry: Registry, tmp_path: Path) -> None:
    scorer = """\
        import pandas as pd


        class Scorer:
            def load(self, path):
                self.offset = float((path / "offset.txt").read_text())

            def predict(self, frame):
                assert isinstance(frame, pd.DataFrame), type(frame)
                return pd.DataFrame({"score": frame["amount"] + self.offset, "n": len(frame)})
    """
    manifest = """\
        model = "scorer:Scorer"
        pandas = true
        task = "regressor"
        [inputs]
        amount = "double"
        [outputs]
        score = "double"
    """
    folder = write(tmp_path / "kyc", **{"scorer.py": scorer, "mmserve_toml": manifest})
    (folder / "offset.txt").write_text("0.25")
    mv = registry.register(folder, "kyc", trust_code=True)
    assert (mv.task, mv.outputs, sorted(mv.files)) == (
        "regressor",
        ["score"],
        ["helpers.py", "mmserve.toml", "offset.txt", "scorer.py", "weights.json"],
    )
    assert registry.load("kyc").predict(ROWS).to_pylist() == [
        {"score": 1.25},
        {"score": 2.75},
        {"score": 20.25},
    ]


def test_an_answer_without_a_declared_output_is_the_models_failure(
    registry: Registry, tmp_path: Path
) -> None:
    scorer = SCORER.replace(', "label": helpers.label(score)', "")
    registry.register(write(tmp_path / "kyc", **{"scorer.py": scorer}), "kyc", trust_code=True)
    with pytest.raises(ModelError) as failed:
        registry.load("kyc").predict(ROWS)
    assert failed.value.message == (
        "model kyc:1 failed: KeyError: 'Field \"label\" does not exist in schema'"
    )


COUNTER = """\
    import pyarrow as pa


    class Counter:
        def load(self, path):
            pass

        def predict(self, table):
            return pa.table({"rows": [float(table.num_rows)] * table.num_rows})
"""


@pytest.mark.parametrize(("declared", "seen"), [("", 8), ("row_block = 1\n", 1)])
def test_row_block_in_the_manifest_says_how_calls_are_padded(
    registry: Registry, tmp_path: Path, declared: str, seen: int
) -> None:
    manifest = declared + 'model = "counter:Counter"\n[outputs]\nrows = "double"\n'
    folder = write(tmp_path / "counter", mmserve_toml=manifest, **{"counter.py": COUNTER})
    mv = registry.register(folder, "counter", trust_code=True, input_example=ROWS)
    assert mv.row_block == seen
    answer = registry.load("counter").predict(ROWS.slice(0, 1))
    assert answer.column("rows").to_pylist() == [float(seen)]  # the rows the model was called with


def test_a_table_of_exactly_the_inputs_is_checked_as_any_other(
    registry: Registry, tmp_path: Path
) -> None:
    """A table with exactly the registered columns and types goes to the model as it is
    (no select, no cast): its checks must still refuse what the checked path refuses and
    pass what it passes."""
    manifest = 'model = "counter:Counter"\n[outputs]\nrows = "double"\n'
    folder = write(tmp_path / "counter", mmserve_toml=manifest, **{"counter.py": COUNTER})
    example = pa.table({"amount": [1.0, None], "rate": [0.5, 0.25], "country": ["fr", "de"]})
    registry.register(folder, "counter", trust_code=True, input_example=example)
    predictor = registry.load("counter")
    refused = [
        (1, [0.5, float("nan")], "column 'rate' has a NaN value at row 1"),
        (1, [float("inf"), 0.5], "column 'rate' has an infinite value at row 0"),
        (2, ["fr", None], "column 'country' has a null value at row 1"),
    ]
    for at, values, message in refused:
        bad = example.set_column(at, example.column_names[at], pa.array(values))
        with pytest.raises(NullValue) as error:
            predictor.predict(bad)
        assert error.value.message == message
    # A nullable column takes NaN and null alike; the model sees both rows.
    nan = example.set_column(0, "amount", pa.array([float("nan"), None]))
    assert predictor.predict(nan).column("rows").to_pylist() == [8.0, 8.0]


def test_inputs_may_come_from_an_example(registry: Registry, tmp_path: Path) -> None:
    manifest = MANIFEST.replace('[inputs]\n    amount = "double"\n    country = "string"\n', "")
    folder = write(tmp_path / "kyc", mmserve_toml=manifest)
    mv = registry.register(folder, "kyc", trust_code=True, input_example=ROWS)
    assert [(f.name, f.dtype) for f in mv.inputs] == [("amount", "double"), ("country", "string")]


DOUBLE_OF_A_TYPE = 'type = "double", content_type = "a/b"'
STRING_OF_TXT = 'type = "string", content_type = "txt"'


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (
            MANIFEST.replace('score = "double"', 'score = "decimal"'),
            "invalid mmserve.toml [outputs] score 'decimal': use an Arrow type such as double, "
            'float, int64, string, binary, bool, or { type = "binary", content_type = '
            '"image/png" }',
        ),
        (
            MANIFEST.replace("scorer:Scorer", "scorer.Scorer"),
            "invalid mmserve.toml model 'scorer.Scorer': expected 'module:Class', the module a "
            ".py file or package of the folder",
        ),
        (
            MANIFEST.replace("scorer:Scorer", "scoring:Scorer"),
            "invalid mmserve.toml model 'scoring:Scorer': its folder has no module 'scoring'",
        ),
        (
            MANIFEST.replace("scorer:Scorer", "scorer:Missing"),
            "invalid mmserve.toml model 'scorer:Missing': no class of its module with load(path) "
            "and predict(table) methods",
        ),
        (
            MANIFEST.split("[outputs]")[0],
            "invalid mmserve.toml [outputs] '': declare every output as name = \"arrow type\"",
        ),
        (
            'modle = "scorer:Scorer"\n' + MANIFEST,
            "invalid mmserve.toml key 'modle': expected one of model, task, requirements, "
            "classes, pandas, row_block, inputs, outputs",
        ),
        (
            MANIFEST.replace('"numpy>=1"', '"numpy>>1"'),
            'invalid mmserve.toml requirements "[\'numpy>>1\']": a list of requirements such as '
            "'pillow>=10'",
        ),
        (
            MANIFEST.replace('amount = "double"', f"amount = {{ {DOUBLE_OF_A_TYPE} }}"),
            "invalid mmserve.toml [inputs] amount \"{'type': 'double', 'content_type': 'a/b'}\": a "
            "content_type is for binary or string",
        ),
        (
            MANIFEST.replace('country = "string"', f"country = {{ {STRING_OF_TXT} }}"),
            "invalid mmserve.toml [inputs] country content_type 'txt': a media type such as "
            "image/png, image/* or text/plain",
        ),
        (
            "row_block = 0\n" + MANIFEST,
            "invalid mmserve.toml row_block '0': a whole number of rows from 1 to 1024 (1: each "
            "row's answer is its own alone)",
        ),
    ],
)
def test_a_manifest_is_refused_naming_what_it_cannot_mean(
    registry: Registry, tmp_path: Path, manifest: str, message: str
) -> None:
    with pytest.raises(InvalidName) as refused:
        registry.register(write(tmp_path / "kyc", mmserve_toml=manifest), "kyc", trust_code=True)
    assert refused.value.message == message


def test_a_folder_without_manifest_or_with_a_link_out_is_refused(
    registry: Registry, tmp_path: Path
) -> None:
    folder = write(tmp_path / "kyc")
    (folder / "mmserve.toml").rename(tmp_path / "outside.toml")
    with pytest.raises(UntrustedArtifact) as refused:
        registry.register(folder, "kyc", trust_code=True)
    assert refused.value.message == (
        f"refusing to load {folder}: it holds no mmserve.toml, which names its class, inputs "
        "and outputs"
    )
    write(folder)
    (folder / "secrets.txt").symlink_to(tmp_path / "outside.toml")
    with pytest.raises(UntrustedArtifact) as refused:
        registry.register(folder, "kyc", trust_code=True)
    assert refused.value.message == (
        f"refusing to load {folder}: secrets.txt is a link out of the folder"
    )


def test_pack_is_deterministic_and_skips_bytecode(tmp_path: Path) -> None:
    folder = write(tmp_path / "kyc")
    first = python.pack(folder)
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "scorer.cpython-311.pyc").write_bytes(b"bytecode")
    (folder / "stray.pyc").write_bytes(b"bytecode")
    os.utime(folder / "scorer.py", (1_000_000, 1_000_000))
    (folder / "empty").mkdir()
    assert python.pack(folder) == first


def test_a_registered_instance_is_its_folder(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write(tmp_path / "kyc")
    sys.path.insert(0, str(folder))  # the user imports their own module as they please
    try:
        spec = importlib.util.spec_from_file_location("user_scorer", folder / "scorer.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, "user_scorer", module)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("helpers", None)
    with pytest.raises(UntrustedArtifact) as refused:
        registry.register(module.Scorer(), "kyc")
    assert refused.value.message.startswith("refusing to load Scorer: it is Python code")
    mv = registry.register(module.Scorer(), "kyc", trust_code=True)
    assert (mv.flavor, mv.sha256) == ("python", hashlib.sha256(python.pack(folder)).hexdigest())
    assert registry.load("kyc").predict(ROWS)["score"].to_pylist() == [2.5, 5.5, 40.5]


class NotInAFolderWithAManifest:
    def load(self, path: Path) -> None: ...

    def predict(self, table: pa.Table) -> pa.Table:
        return table


def test_an_instance_whose_folder_has_no_manifest_is_refused(registry: Registry) -> None:
    with pytest.raises(UntrustedArtifact) as refused:
        registry.register(NotInAFolderWithAManifest(), "kyc", trust_code=True)
    assert refused.value.message == (
        f"refusing to load NotInAFolderWithAManifest: its class is defined in {__file__}, whose "
        "folder holds no mmserve.toml: register a folder holding its code, its files and an "
        "mmserve.toml"
    )


def test_cli_registers_shows_and_serves_a_folder(tmp_path: Path) -> None:
    folder = write(tmp_path / "kyc")
    codecs.write_file(ROWS, tmp_path / "rows.csv")
    (tmp_path / "cli-tmp").mkdir()
    env = {
        **os.environ,
        "MMSERVE_STORE_URL": str(tmp_path / "store"),
        "TMPDIR": str(tmp_path / "cli-tmp"),
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [MMSERVE, *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert (result.returncode == 0) == ok, result.stdout + result.stderr
        return result

    refused = run("models", "register", str(folder), "--name", "kyc", ok=False)
    assert refused.stderr.strip() == (
        f"error: refusing to load {folder}: it is Python code, which runs when loaded; "
        "register it with --trust-code (trust_code=True) only if you trust its author"
    )
    registered = run("models", "register", str(folder), "--name", "kyc", "--trust-code")
    sha256 = hashlib.sha256(python.pack(folder)).hexdigest()
    assert registered.stdout.strip() == f"registered kyc:1 (python, transformer, sha256 {sha256})"
    shown = json.loads(run("models", "show", "kyc").stdout)
    assert (shown["flavor"], shown["sha256"], shown["requirements"]) == (
        "python",
        sha256,
        ["numpy>=1"],
    )
    assert [(f["name"], f["dtype"]) for f in shown["inputs"]] == [
        ("amount", "double"),
        ("country", "string"),
    ]
    assert (shown["outputs"], sorted(shown["files"])) == (
        ["score", "label"],
        ["helpers.py", "mmserve.toml", "scorer.py", "weights.json"],
    )
    # Another process loads the copy the registering one unpacked, checked file by file.
    scored = json.loads(run("predict", "kyc", "-i", str(tmp_path / "rows.csv")).stdout)
    assert scored["rows"] == [
        {"score": 2.5, "label": "low"},
        {"score": 5.5, "label": "low"},
        {"score": 40.5, "label": "high"},
    ]


HASHER = """\
    import hashlib
    import os

    import pyarrow as pa


    class Hasher:
        def load(self, path):
            pass

        def predict(self, table):
            digests = []
            for path in table["scan"].to_pylist():
                digest = hashlib.sha256()
                with open(path, "rb") as file:
                    for block in iter(lambda: file.read(1 << 20), b""):
                        digest.update(block)
                folder = os.path.basename(os.path.dirname(path))
                digests.append(f"{digest.hexdigest()} {folder[:14]}")
            return pa.table({"sha256": digests})
"""
HASHER_MANIFEST = """\
    model = "hasher:Hasher"
    [inputs]
    scan = { type = "binary", path = true }
    [outputs]
    sha256 = "string"
"""


def test_a_path_input_hands_the_model_local_copies_removed_after_the_call(
    registry: Registry, tmp_path: Path
) -> None:
    folder = write(tmp_path / "hasher", mmserve_toml=HASHER_MANIFEST, **{"hasher.py": HASHER})
    mv = registry.register(folder, "hasher", trust_code=True)
    assert [(f.name, f.dtype, f.path) for f in mv.inputs] == [("scan", "binary", True)]
    files = [b"first scan", bytes(range(256)), b"third"]
    before = set(Path(tempfile.gettempdir()).glob("mmserve-files-*"))
    answer = registry.load("hasher").predict(pa.table({"scan": pa.array(files, pa.binary())}))
    assert answer["sha256"].to_pylist() == [
        f"{hashlib.sha256(f).hexdigest()} mmserve-files-" for f in files
    ]
    assert set(Path(tempfile.gettempdir()).glob("mmserve-files-*")) == before  # removed
    # A caller sends bytes, never a path: a text naming a file is those bytes, not the file
    named = registry.load("hasher").predict(pa.table({"scan": ["/etc/hostname"]}))
    assert named["sha256"][0].as_py().split()[0] == hashlib.sha256(b"/etc/hostname").hexdigest()
    # and path = true is for binary inputs alone
    bad = write(tmp_path / "bad", mmserve_toml=HASHER_MANIFEST.replace('"binary"', '"string"'))
    with pytest.raises(InvalidName) as refused:
        registry.register(bad, "bad", trust_code=True)
    assert refused.value.message == (
        "invalid mmserve.toml [inputs] scan path 'True': path = true is for a binary input the "
        "model reads as a file"
    )
