"""Every failure mmserve reports, each carrying the HTTP status it maps to.

All modes share this tree: HTTP turns it into a status code, an async job records it,
the batch runner writes it into rejects, the stream consumer dead-letters it.

    MMServeError (500)
    ├── InvalidName (400)               a model name, alias or store key that is refused
    ├── InvalidReference (400)          a model reference that does not parse
    ├── InvalidEndpoints (400)          an endpoints file refused: its line and the reason
    ├── InvalidSchedules (400)          a schedules file refused: the schedule and the reason
    ├── InvalidFeatures (400)           a features file refused: the feature, field and reason
    ├── UnsupportedOperation (400)      something an endpoint of that kind cannot do
    ├── CompileRefused (422)            a model ``--compile`` does not register as a graph
    │   ├── NotCompilable               no input example, or no converter for the model
    │   └── CompiledDisagrees           the graph's answer differs from the model's
    ├── ImportRefused (422)             an MLflow model mmserve cannot take: its flavor, a type
    ├── NotFound (404)
    │   ├── ObjectNotFound              no object at a store key
    │   ├── ModelNotFound
    │   ├── VersionNotFound
    │   ├── AliasNotFound
    │   ├── ModelNotLoaded              a multi-model endpoint name that is not loaded
    │   ├── JobNotFound                 no async job has that token
    │   ├── NotPrecomputed              no published batch answer for that model or id
    │   ├── EndpointNotFound            no endpoint of that name is applied
    │   ├── NoCapture                   an endpoint with no captured traffic to advise from
    │   ├── VariantNotFound             an endpoint has no variant of that name
    │   ├── SourceNotFound              no such MLflow model, version, alias, run or artifact
    │   └── EntryTrimmed                a pending stream entry trimmed before it was scored
    ├── Conflict (409)
    │   ├── AlreadyExists               an exclusive store write found the key taken
    │   ├── ConcurrentUpdate            a compare-and-swap kept losing
    │   ├── NotApproved                 a protected alias aimed at an unapproved version
    │   ├── AliasInUse                  rejecting a version a protected alias points at
    │   │   └── VersionInUse            deleting a version aliases or endpoints point at
    │   ├── ModelAlreadyLoaded          loading a multi-model endpoint name twice
    │   ├── JobNotReady                 a job's result before it succeeded, or a late cancel
    │   ├── IdempotencyConflict         an idempotency key sent again with another request
    │   ├── RolloutInProgress           a shift or promotion while another one runs
    │   └── NotServed                   promoting an alias no endpoint serves
    ├── Unauthorized (401)              a missing or wrong admin token or API key
    ├── Forbidden (403)
    │   ├── UntrustedArtifact           pickle without trust, skops types not trusted, or an
    │   │                               artifact the trust root (pinned sha256) does not list
    │   └── ManagementDisabled          management routes while no admin token is set
    ├── PayloadTooLarge (413)           a request body over the configured limit
    │   └── DecodedTooLarge             a body whose rows, decoded, pass a decode bound
    ├── InputError (422)                a request's rows do not fit the model
    │   ├── MissingColumn
    │   ├── UnexpectedColumns
    │   ├── WrongType
    │   ├── NullValue
    │   ├── OutOfRange                  a finite value the model's float32 arithmetic cannot hold
    │   │   └── OutOfTypeRange          a value its column's type cannot hold (1e400, 2**70)
    │   ├── MissingField                a stream event without a feature (or the id field)
    │   ├── InvalidField                a stream event's field that is not a number, not JSON...
    │   ├── LateEvent                   a stream event too late for its windows (if so chosen)
    │   ├── UnreadableInput             a batch input file its format cannot read (never its bytes)
    │   └── UnsupportedFormat (415)
    ├── IntegrityError (500)
    │   └── TamperedArtifact            the artifact's sha256 differs from the registered one
    ├── ModelError (500)                the model itself raised
    ├── MissingRuntime (501)            a model whose runtime's library is not installed
    │   └── MissingPackage              a package a ``python`` model's code needs, not installed
    ├── TooManyDeliveries (500)         a stream entry delivered past the limit, never committed
    ├── Overloaded (429, retryable)     a model's or the server's in-flight limit reached
    ├── ModelLoading (503, retryable)   the model did not finish loading in time
    ├── RequestTimeout (504)            a request ran past the configured timeout
    ├── ModelTooLarge (507)             a model bigger than the whole model cache
    ├── StoreUnavailable (503, retryable)
    ├── SourceUnavailable (502)         an MLflow tracking server failed or did not answer
    ├── MetricsUnavailable (503, retryable) a rollout cannot read a server's /metrics
    ├── QueueUnavailable (503, retryable) the broker did not take a job (the sweep will)
    └── RedisUnavailable (503, retryable) Redis (precomputed answers, streams) away
"""

from __future__ import annotations

from http import HTTPStatus


class MMServeError(Exception):
    """Base of every mmserve error; ``status`` is the HTTP status it maps to."""

    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    retryable: bool = False
    retry_after: int | None = None
    """Seconds a client should wait before trying again (the ``Retry-After`` header)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuilt from its message and attributes, whatever the subclass's __init__ takes:
        # errors cross process boundaries (batch workers) intact.
        return (_rebuilt, (type(self), self.message, self.__dict__))


def _rebuilt(cls: type[MMServeError], message: str, state: dict[str, object]) -> MMServeError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class InvalidName(MMServeError):
    status = HTTPStatus.BAD_REQUEST

    def __init__(self, kind: str, value: str, rule: str) -> None:
        super().__init__(f"invalid {kind} {value!r}: {rule}")
        self.kind, self.value = kind, value


class InvalidReference(MMServeError):
    status = HTTPStatus.BAD_REQUEST

    def __init__(self, ref: str) -> None:
        super().__init__(
            f"invalid model reference {ref!r}: expected 'name', 'name:<version>' or 'name@<alias>'"
        )
        self.ref = ref


class NotFound(MMServeError):
    status = HTTPStatus.NOT_FOUND


class ObjectNotFound(NotFound):
    def __init__(self, key: str) -> None:
        super().__init__(f"no object at key {key!r}")
        self.key = key


class ModelNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"model {name!r} is not registered")
        self.name = name


class VersionNotFound(NotFound):
    def __init__(self, name: str, version: int) -> None:
        super().__init__(f"model {name!r} has no version {version}")
        self.name, self.version = name, version


class AliasNotFound(NotFound):
    def __init__(self, name: str, alias: str) -> None:
        super().__init__(f"model {name!r} has no alias {alias!r}")
        self.name, self.alias = name, alias


class ModelNotLoaded(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"model {name!r} is not loaded")
        self.name = name


class JobNotFound(NotFound):
    def __init__(self, token: str) -> None:
        super().__init__(f"no job {token!r}")
        self.token = token


class NotPrecomputed(NotFound):
    def __init__(self, ref: str, why: str) -> None:
        super().__init__(f"no precomputed answer of {ref}: {why}")
        self.ref = ref


class EntryTrimmed(NotFound):
    def __init__(self, stream: str) -> None:
        super().__init__(
            f"trimmed from stream {stream!r} while pending: its fields are gone, it was not scored"
        )
        self.stream = stream


class EndpointNotFound(NotFound):
    def __init__(self, name: str, known: list[str]) -> None:
        listed = f"endpoints: {', '.join(known)}" if known else "no endpoint is applied"
        super().__init__(f"endpoint {name!r} does not exist ({listed})")
        self.name, self.known = name, known


class NoCapture(NotFound):
    def __init__(self, endpoint: str, root: str = "capture") -> None:
        super().__init__(
            f"no captured traffic for endpoint {endpoint!r} (nothing under {root}/{endpoint}/): "
            "give it a capture: {sample: ...} and some traffic"
        )
        self.endpoint = endpoint


class VariantNotFound(NotFound):
    def __init__(self, endpoint: str, variant: str, variants: list[str]) -> None:
        super().__init__(
            f"endpoint {endpoint!r} has no variant {variant!r}; its variants: {', '.join(variants)}"
        )
        self.endpoint, self.variant, self.variants = endpoint, variant, variants


class SourceNotFound(NotFound):
    def __init__(self, source: str, missing: str, tracking_uri: str) -> None:
        tracking_uri = without_credentials(tracking_uri)
        super().__init__(f"cannot import {source}: {missing} (MLflow at {tracking_uri})")
        self.source, self.tracking_uri = source, tracking_uri


class InvalidEndpoints(MMServeError):
    status = HTTPStatus.BAD_REQUEST

    def __init__(self, source: str, line: int | None, reason: str) -> None:
        where = f"{source} line {line}" if line is not None else source
        super().__init__(f"{where}: {reason}")
        self.source, self.line, self.reason = source, line, reason


class InvalidSchedules(MMServeError):
    status = HTTPStatus.BAD_REQUEST

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source, self.reason = source, reason


class InvalidFeatures(MMServeError):
    status = HTTPStatus.BAD_REQUEST

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source, self.reason = source, reason


class UnsupportedOperation(MMServeError):
    status = HTTPStatus.BAD_REQUEST

    def __init__(self, what: str, why: str) -> None:
        super().__init__(f"{what}: {why}")
        self.what = what


class CompileRefused(MMServeError):
    status = HTTPStatus.UNPROCESSABLE_ENTITY


class NotCompilable(CompileRefused):
    def __init__(self, model: str, target: str, reason: str) -> None:
        super().__init__(f"cannot compile {model} to {target}: {reason}")
        self.model, self.target = model, target


class CompiledDisagrees(CompileRefused):
    def __init__(
        self, row: int, column: str, model: object, graph: object, tolerance: float | None
    ) -> None:
        rule = "labels must be equal" if tolerance is None else f"tolerance {tolerance:g}"
        super().__init__(
            f"the compiled graph disagrees with the model on row {row} of the input example: "
            f"{column} is {model!r} by the model, {graph!r} by the graph ({rule})"
        )
        self.row, self.column = row, column


class ImportRefused(MMServeError):
    status = HTTPStatus.UNPROCESSABLE_ENTITY

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"cannot import {source}: {reason}")
        self.source = source


class Conflict(MMServeError):
    status = HTTPStatus.CONFLICT


class AlreadyExists(Conflict):
    def __init__(self, key: str) -> None:
        super().__init__(f"an object already exists at key {key!r}")
        self.key = key


class ConcurrentUpdate(Conflict):
    retryable = True

    def __init__(self, key: str, attempts: int) -> None:
        super().__init__(f"{key!r} kept changing under {attempts} concurrent updates; try again")
        self.key = key


class NotApproved(Conflict):
    def __init__(self, ref: str, approval: str, alias: str) -> None:
        super().__init__(
            f"{ref} is {approval}, not approved: alias {alias!r} only points at approved "
            f"versions (approve it first, or force)"
        )
        self.ref, self.approval, self.alias = ref, approval, alias


class AliasInUse(Conflict):
    def __init__(self, ref: str, alias: str) -> None:
        super().__init__(f"{ref} is the target of alias {alias!r}: move the alias first, or force")
        self.ref, self.alias = ref, alias


class VersionInUse(AliasInUse):
    def __init__(self, ref: str, users: list[str]) -> None:
        named = " and ".join([", ".join(users[:-1]), users[-1]] if len(users) > 1 else users)
        them = "them" if len(users) > 1 else "it"
        message = f"{ref} is in use, by {named}: point {them} at another version first"
        Conflict.__init__(self, message)
        self.ref, self.users = ref, users


class ModelAlreadyLoaded(Conflict):
    def __init__(self, name: str, ref: str) -> None:
        super().__init__(f"model {name!r} is already loaded (as {ref}); unload it first")
        self.name, self.ref = name, ref


class JobNotReady(Conflict):
    def __init__(self, token: str, status: str, wanted: str) -> None:
        super().__init__(f"job {token} is {status}: {wanted}")
        self.token, self.job_status = token, status


class IdempotencyConflict(Conflict):
    def __init__(self, key: str, differing: list[str]) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was first sent with another request (its "
            f"{', '.join(differing)} differ): send a new key for a new request"
        )
        self.key, self.differing = key, differing


class RolloutInProgress(Conflict):
    def __init__(self, endpoint: str, rollout: str) -> None:
        super().__init__(
            f"endpoint {endpoint!r} is in a rollout ({rollout}): wait for it, or end it with "
            f"`mmserve endpoints rollback {endpoint}`"
        )
        self.endpoint = endpoint


class NotServed(Conflict):
    def __init__(self, ref: str) -> None:
        super().__init__(
            f"no endpoint has a variant serving {ref}: a rollout needs its traffic to watch "
            "(move the alias without --rollout)"
        )
        self.ref = ref


class Unauthorized(MMServeError):
    status = HTTPStatus.UNAUTHORIZED

    def __init__(self, credential: str, how: str) -> None:
        super().__init__(f"missing or wrong {credential}: send {how}")
        self.credential = credential


class Forbidden(MMServeError):
    status = HTTPStatus.FORBIDDEN


class UntrustedArtifact(Forbidden):
    def __init__(self, what: str, remedy: str) -> None:
        super().__init__(f"refusing to load {what}: {remedy}")


class ManagementDisabled(Forbidden):
    def __init__(self, variable: str) -> None:
        super().__init__(f"management routes are off: set {variable} to turn them on")
        self.variable = variable


class PayloadTooLarge(MMServeError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body exceeds the limit of {limit} bytes")
        self.limit = limit


class DecodedTooLarge(PayloadTooLarge):
    """A body small enough to read whose rows, decoded, pass a bound (a few KB of parquet
    or compressed Arrow can decode to GBs): refused as they are read, before they are all."""

    def __init__(self, limit: int, unit: str, setting: str) -> None:
        MMServeError.__init__(
            self, f"the body's rows, decoded, exceed the limit of {limit} {unit} ({setting})"
        )
        self.limit, self.unit, self.setting = limit, unit, setting


class InputError(MMServeError):
    status = HTTPStatus.UNPROCESSABLE_ENTITY


class InvalidInput(InputError):
    """Raised by a model's own code for an input it cannot take (a corrupt image, a file
    of another kind): a 422 naming the reason (400 on SageMaker's routes), never a 500.
    ``from serving.errors import InvalidInput; raise InvalidInput("not a PNG file")``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)


class MissingColumn(InputError):
    def __init__(self, column: str) -> None:
        super().__init__(f"missing column {column!r}")
        self.column = column


class UnexpectedColumns(InputError):
    def __init__(self, columns: list[str]) -> None:
        super().__init__(f"unexpected columns {columns!r}: the model does not take them")
        self.columns = columns


class WrongType(InputError):
    """``actual``: the column's type, or the offending value as the request spelled it (text
    that is no number): quoted only that far, never more of the body."""

    def __init__(self, column: str, expected: str, actual: str, row: int | None = None) -> None:
        at = "" if row is None else f" at row {row}"
        super().__init__(f"column {column!r} must be {expected}, got {actual}{at}")
        self.column, self.expected, self.actual, self.row = column, expected, actual, row


class NullValue(InputError):
    def __init__(self, column: str, row: int, what: str = "a null") -> None:
        super().__init__(f"column {column!r} has {what} value at row {row}")
        self.column, self.row = column, row


class OutOfRange(InputError):
    def __init__(self, column: str, row: int, value: float, limit: float) -> None:
        super().__init__(
            f"column {column!r} has {value!r}, beyond the float32 range the model computes in "
            f"(±{limit:.1e}), at row {row}"
        )
        self.column, self.row = column, row


class OutOfTypeRange(OutOfRange):
    """A number its column's type cannot hold: ``1e400`` as float64, a 30-digit integer as
    int64. ``value`` is the request's own spelling of it (cut at 40 characters)."""

    def __init__(self, column: str, row: int, value: str, type_name: str) -> None:
        shown = value if len(value) <= 40 else value[:37] + "..."
        InputError.__init__(
            self, f"column {column!r} has {shown}, out of range for {type_name}, at row {row}"
        )
        self.column, self.row, self.type_name = column, row, type_name


class MissingField(InputError):
    def __init__(self, field: str) -> None:
        super().__init__(f"missing field {field!r}")
        self.field = field


class InvalidField(InputError):
    def __init__(self, field: str, value: object, wanted: str, why: str = "") -> None:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        detail = f" ({why})" if why else ""
        super().__init__(f"field {field!r} is not {wanted}{detail}: {shown}")
        self.field, self.wanted = field, wanted


class LateEvent(InputError):
    def __init__(self, allowed_ms: int) -> None:
        super().__init__(
            f"event time more than the allowed lateness ({allowed_ms} ms) behind its key's latest"
        )
        self.allowed_ms = allowed_ms


class UnsupportedFormat(InputError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE

    def __init__(self, fmt: str, supported: list[str]) -> None:
        super().__init__(f"unsupported format {fmt!r}; use one of {', '.join(supported)}")
        self.fmt = fmt


class UnreadableInput(InputError):
    """A batch input file its reader cannot read from ``row`` on; the reader's own message
    is not kept, as it may quote the file's bytes."""

    def __init__(self, path: str, fmt: str, row: int, column: int | None = None) -> None:
        which = f" (column {column}, counting from 1)" if column else ""
        super().__init__(f"input file {path} is not valid {fmt}{which} at row {row} or after")
        self.path, self.fmt, self.row, self.column = path, fmt, row, column


class IntegrityError(MMServeError):
    pass


class TamperedArtifact(IntegrityError):
    def __init__(self, key: str, expected: str, actual: str) -> None:
        super().__init__(
            f"artifact {key!r} fails its integrity check: sha256 is {actual}, "
            f"registered as {expected}"
        )
        self.key = key


class ModelError(MMServeError):
    def __init__(self, ref: str, err: BaseException) -> None:
        super().__init__(f"model {ref} failed: {type(err).__name__}: {err}")
        self.ref = ref


class MissingRuntime(MMServeError):
    status = HTTPStatus.NOT_IMPLEMENTED

    def __init__(self, flavor: str, package: str, extra: str) -> None:
        super().__init__(
            f"{flavor} models need the {package!r} package, which is not installed: "
            f"pip install 'mmserve[{extra}]'"
        )
        self.flavor, self.package, self.extra = flavor, package, extra


class MissingPackage(MissingRuntime):
    def __init__(
        self, what: str, kind: str, package: str, remedy: str, installed: str | None = None
    ) -> None:
        have = "which is not installed" if installed is None else f"not the {installed} installed"
        MMServeError.__init__(self, f"{what} needs the {kind} {package!r}, {have}: {remedy}")
        self.flavor, self.package, self.extra = "python", package, ""


class TooManyDeliveries(MMServeError):
    def __init__(self, deliveries: int, limit: int) -> None:
        super().__init__(
            f"delivered {deliveries} times, more than the limit of {limit} "
            "(MMSERVE_STREAM__MAX_DELIVERIES), and never committed: every consumer that took it "
            "stopped before finishing it"
        )
        self.deliveries, self.limit = deliveries, limit


class Overloaded(MMServeError):
    status = HTTPStatus.TOO_MANY_REQUESTS
    retryable = True
    retry_after = 1

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"{what} already has {limit} requests in flight, its limit; retry later")
        self.what, self.limit = what, limit


class ModelLoading(MMServeError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    retryable = True
    retry_after = 1

    def __init__(self, ref: str, waited: float) -> None:
        super().__init__(f"model {ref} is still loading after {waited:g} s; retry shortly")
        self.ref = ref


class RequestTimeout(MMServeError):
    status = HTTPStatus.GATEWAY_TIMEOUT
    retryable = True

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the request took longer than the {seconds:g} s limit")
        self.seconds = seconds


class ModelTooLarge(MMServeError):
    status = HTTPStatus.INSUFFICIENT_STORAGE

    def __init__(self, ref: str, size_bytes: int, max_bytes: int) -> None:
        super().__init__(
            f"model {ref} needs ~{_size(size_bytes)} but the model cache holds at most "
            f"{_size(max_bytes)} (MMSERVE_CACHE__MAX_MEMORY_MB)"
        )
        self.ref, self.size_bytes, self.max_bytes = ref, size_bytes, max_bytes


class StoreUnavailable(MMServeError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    retryable = True

    def __init__(self, url: str, err: BaseException) -> None:
        url = without_credentials(url)
        super().__init__(f"object store {url} is unavailable: {err}")
        self.url = url


class SourceUnavailable(MMServeError):
    status = HTTPStatus.BAD_GATEWAY

    def __init__(self, tracking_uri: str, err: BaseException | str) -> None:
        tracking_uri = without_credentials(tracking_uri)
        super().__init__(f"MLflow at {tracking_uri} failed: {err}")
        self.tracking_uri = tracking_uri


class MetricsUnavailable(MMServeError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    retryable = True

    def __init__(self, url: str, err: BaseException | str) -> None:
        super().__init__(f"cannot read the metrics of {url}: {err}")
        self.url = url


class QueueUnavailable(MMServeError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    retryable = True
    retry_after = 5

    def __init__(self, token: str, err: BaseException) -> None:
        super().__init__(
            f"job {token} is stored but the queue did not take it ({err}); "
            "it will be enqueued when the queue is back"
        )
        self.token = token


class RedisUnavailable(MMServeError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    retryable = True
    retry_after = 5

    def __init__(self, url: str, err: BaseException) -> None:
        host = url.rsplit("@", 1)[-1].removeprefix("redis://")  # never the password
        super().__init__(f"Redis at {host} is unavailable: {err}")
        self.host = host


def _size(n: int) -> str:
    """``n`` bytes for people: ``512 bytes``, ``5.3 KB``, ``12.0 MB``."""
    if n < 1024:
        return f"{n} bytes"
    if n < 2**20:
        return f"{n / 1024:.1f} KB"
    return f"{n / 2**20:.1f} MB"


def without_credentials(url: str) -> str:
    """``url`` without the ``user:secret@`` a URL may carry: errors name a store, never a key."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.rpartition('@')[2]}{slash}{path}"
