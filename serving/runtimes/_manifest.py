"""``mmserve.toml``: what a ``python`` model's folder declares about itself.

::

    model = "scorer:Scorer"            # module (a .py file or package of the folder):class
    task = "regressor"                 # classifier, regressor or transformer (the default)
    requirements = ["pillow>=10"]      # distributions it needs installed
    classes = ["no", "yes"]            # a classifier's classes (optional)
    pandas = false                     # true: predict takes a pandas DataFrame
    row_block = 8                      # 1: each row's answer is of that row alone
    [inputs]                           # optional when registered with an input example
    amount = "double"
    scan = { type = "binary", content_type = "image/*" }   # a file: the body it takes raw
    pixels = { type = "float", shape = [3, 224, 224] }      # a tensor: a row's values, C order
    [outputs]                          # required: every column predict answers with
    score = "double"
    upscaled = { type = "binary", content_type = "image/png" }   # answered raw when accepted
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, cast, get_args

from packaging.requirements import InvalidRequirement, Requirement

from serving.codecs.raw import MEDIA_TYPE
from serving.errors import InvalidName, MissingPackage
from serving.metadata import Task, arrow_type, check_fits, check_shape, tensor_dtype

NAME = "mmserve.toml"
_KEYS = ("model", "task", "requirements", "classes", "pandas", "row_block", "inputs", "outputs")
_TARGET = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)")
_TYPES = (
    'use an Arrow type such as double, float, int64, string, binary, bool, or { type = "binary", '
    'content_type = "image/png" }'
)


@dataclass(frozen=True)
class Manifest:
    module: str
    cls: str
    task: Task
    inputs: dict[str, str]
    outputs: dict[str, str]
    requirements: list[str]
    content_types: dict[str, str] = field(default_factory=dict)
    """The media types of binary or string inputs that declare one."""
    paths: list[str] = field(default_factory=list)
    """Binary inputs the model reads as files (``path = true``): it gets their paths."""
    output_content_types: dict[str, str] = field(default_factory=dict)
    """The same of outputs."""
    shapes: dict[str, list[int]] = field(default_factory=dict)
    """Tensor inputs' shapes per row (``shape = [3, 224, 224]``): fixed-size list columns."""
    output_shapes: dict[str, list[int]] = field(default_factory=dict)
    """The same of outputs."""
    classes: list[Any] | None = None
    pandas: bool = False
    row_block: int = 8


def parse(text: bytes, where: str) -> Manifest:
    """The manifest in ``text``; anything it cannot mean is :class:`InvalidName`, naming
    the key and the value."""
    try:
        raw = tomllib.loads(text.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise InvalidName(NAME, where, f"not valid TOML: {err}") from None
    for key in raw:
        if key not in _KEYS:
            raise InvalidName(f"{NAME} key", key, f"expected one of {', '.join(_KEYS)}")
    target = _TARGET.fullmatch(str(raw.get("model", "")))
    if target is None:
        rule = "expected 'module:Class', the module a .py file or package of the folder"
        raise InvalidName(f"{NAME} model", str(raw.get("model", "")), rule)
    task = raw.get("task", "transformer")
    if task not in get_args(Task):
        raise InvalidName(f"{NAME} task", str(task), "one of classifier, regressor, transformer")
    content_types: dict[str, str] = {}
    output_content_types: dict[str, str] = {}
    paths: list[str] = []
    shapes: dict[str, list[int]] = {}
    output_shapes: dict[str, list[int]] = {}
    inputs = _schema(raw, "inputs", content_types, paths, shapes)
    outputs = _schema(raw, "outputs", output_content_types, [], output_shapes)
    if not outputs:
        raise InvalidName(f"{NAME} [outputs]", "", 'declare every output as name = "arrow type"')
    requirements = raw.get("requirements", [])
    if not isinstance(requirements, list) or not all(_parsed(r) for r in requirements):
        rule = "a list of requirements such as 'pillow>=10'"
        raise InvalidName(f"{NAME} requirements", str(requirements), rule)
    classes = raw.get("classes")
    if classes is not None and not isinstance(classes, list):
        raise InvalidName(f"{NAME} classes", str(classes), "a list of the classes")
    row_block = raw.get("row_block", 8)
    if type(row_block) is not int or not 1 <= row_block <= 1024:
        rule = "a whole number of rows from 1 to 1024 (1: each row's answer is its own alone)"
        raise InvalidName(f"{NAME} row_block", str(row_block), rule)
    return Manifest(
        module=target[1],
        cls=target[2],
        task=cast(Task, task),
        inputs=inputs,
        outputs=outputs,
        content_types=content_types,
        output_content_types=output_content_types,
        paths=paths,
        shapes=shapes,
        output_shapes=output_shapes,
        requirements=list(requirements),
        classes=classes,
        pandas=raw.get("pandas", False) is True,
        row_block=row_block,
    )


def check_installed(requirements: list[str], what: str) -> None:
    """Refuse (:class:`MissingPackage`) when a requirement's distribution is not installed,
    or is of a version the requirement excludes (pre-releases are taken as they are); one
    whose environment marker does not apply here is skipped."""
    for text in requirements:
        requirement = _parsed(text)
        assert requirement is not None  # parse() refused any other
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        remedy = f"pip install {text!r}"
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            raise MissingPackage(what, "package", requirement.name, remedy) from None
        if not requirement.specifier.contains(installed, prereleases=True):
            raise MissingPackage(what, "package", text, remedy, installed)


def _schema(
    raw: dict[str, Any],
    section: str,
    content_types: dict[str, str],
    paths: list[str],
    shapes: dict[str, list[int]],
) -> dict[str, str]:
    """``[inputs]`` or ``[outputs]``: names and Arrow types, in their declared order; a
    column declared ``{ type = "binary", content_type = "image/png" }`` adds its media type
    to ``content_types``, an input ``{ type = "binary", path = true }`` its name to
    ``paths``, a ``{ type = "float", shape = [3, 224, 224] }`` its shape to ``shapes`` (its
    type a fixed-size list of their product)."""
    table = raw.get(section, {})
    if not isinstance(table, dict):
        raise InvalidName(f"{NAME} [{section}]", str(table), 'a table of name = "arrow type"')
    types = {}
    for name, declared in table.items():
        where = f"{NAME} [{section}] {name}"
        dtype, media = declared, None
        keys = {"type", "content_type", "shape"} | ({"path"} if section == "inputs" else set())
        if isinstance(declared, dict) and set(declared) <= keys:
            dtype, media = declared.get("type"), declared.get("content_type")
            if "shape" in declared:
                shapes[name] = check_shape(declared["shape"], f"{where} shape")
                dtype = _tensor_type(dtype, shapes[name], where)
            if declared.get("path", False) is not False:
                if declared["path"] is not True or dtype != "binary":
                    rule = "path = true is for a binary input the model reads as a file"
                    raise InvalidName(f"{where} path", str(declared["path"]), rule)
                paths.append(name)
        try:
            types[name] = str(arrow_type(dtype)) if isinstance(dtype, str) else ""
        except InvalidName:
            types[name] = ""
        if not types[name]:
            raise InvalidName(where, str(declared), _TYPES)
        if media is not None:
            if types[name] not in ("binary", "string"):
                raise InvalidName(where, str(declared), "a content_type is for binary or string")
            if not isinstance(media, str) or not MEDIA_TYPE.fullmatch(media):
                rule = "a media type such as image/png, image/* or text/plain"
                raise InvalidName(f"{where} content_type", str(media), rule)
            content_types[name] = media
    return types


def _tensor_type(dtype: Any, shape: list[int], where: str) -> str:
    """The fixed-size list type of a tensor of ``dtype`` values (a number or bool type)."""
    try:
        if not isinstance(dtype, str):
            raise InvalidName(where, str(dtype), "")
        listed = tensor_dtype(dtype, shape)
        check_fits(arrow_type(listed), shape, where)
    except InvalidName:
        rule = "a tensor's type is a number type such as float, double or int64"
        raise InvalidName(f"{where} type", str(dtype), rule) from None
    return listed


def _parsed(requirement: Any) -> Requirement | None:
    """The requirement (PEP 508) ``requirement`` states; ``None`` when it is none."""
    try:
        return Requirement(requirement) if isinstance(requirement, str) else None
    except InvalidRequirement:
        return None
