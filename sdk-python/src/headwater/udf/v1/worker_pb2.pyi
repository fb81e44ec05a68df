from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProtocolVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_VERSION_UNSPECIFIED: _ClassVar[ProtocolVersion]
    PROTOCOL_VERSION_1: _ClassVar[ProtocolVersion]

class FunctionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FUNCTION_KIND_UNSPECIFIED: _ClassVar[FunctionKind]
    FUNCTION_KIND_MAP: _ClassVar[FunctionKind]
    FUNCTION_KIND_FILTER: _ClassVar[FunctionKind]
    FUNCTION_KIND_FLAT_MAP: _ClassVar[FunctionKind]
    FUNCTION_KIND_KEYED_PROCESS: _ClassVar[FunctionKind]
    FUNCTION_KIND_WINDOW_AGGREGATE: _ClassVar[FunctionKind]

class Format(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FORMAT_UNSPECIFIED: _ClassVar[Format]
    FORMAT_JSON: _ClassVar[Format]
    FORMAT_BYTES: _ClassVar[Format]

class AggregateOp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATE_OP_UNSPECIFIED: _ClassVar[AggregateOp]
    AGGREGATE_OP_CREATE: _ClassVar[AggregateOp]
    AGGREGATE_OP_ADD: _ClassVar[AggregateOp]
    AGGREGATE_OP_MERGE: _ClassVar[AggregateOp]
    AGGREGATE_OP_RESULT: _ClassVar[AggregateOp]

class ErrorClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CLASS_UNSPECIFIED: _ClassVar[ErrorClass]
    ERROR_CLASS_TRANSIENT: _ClassVar[ErrorClass]
    ERROR_CLASS_PERMANENT: _ClassVar[ErrorClass]
PROTOCOL_VERSION_UNSPECIFIED: ProtocolVersion
PROTOCOL_VERSION_1: ProtocolVersion
FUNCTION_KIND_UNSPECIFIED: FunctionKind
FUNCTION_KIND_MAP: FunctionKind
FUNCTION_KIND_FILTER: FunctionKind
FUNCTION_KIND_FLAT_MAP: FunctionKind
FUNCTION_KIND_KEYED_PROCESS: FunctionKind
FUNCTION_KIND_WINDOW_AGGREGATE: FunctionKind
FORMAT_UNSPECIFIED: Format
FORMAT_JSON: Format
FORMAT_BYTES: Format
AGGREGATE_OP_UNSPECIFIED: AggregateOp
AGGREGATE_OP_CREATE: AggregateOp
AGGREGATE_OP_ADD: AggregateOp
AGGREGATE_OP_MERGE: AggregateOp
AGGREGATE_OP_RESULT: AggregateOp
ERROR_CLASS_UNSPECIFIED: ErrorClass
ERROR_CLASS_TRANSIENT: ErrorClass
ERROR_CLASS_PERMANENT: ErrorClass

class HandshakeRequest(_message.Message):
    __slots__ = ("protocol_version", "host_version")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    HOST_VERSION_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    host_version: str
    def __init__(self, protocol_version: _Optional[int] = ..., host_version: _Optional[str] = ...) -> None: ...

class HandshakeResponse(_message.Message):
    __slots__ = ("protocol_version", "worker", "functions", "code_version")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    CODE_VERSION_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    worker: str
    functions: _containers.RepeatedCompositeFieldContainer[FunctionSpec]
    code_version: str
    def __init__(self, protocol_version: _Optional[int] = ..., worker: _Optional[str] = ..., functions: _Optional[_Iterable[_Union[FunctionSpec, _Mapping]]] = ..., code_version: _Optional[str] = ...) -> None: ...

class FunctionSpec(_message.Message):
    __slots__ = ("name", "kind", "input", "output")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: FunctionKind
    input: Format
    output: Format
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[FunctionKind, str]] = ..., input: _Optional[_Union[Format, str]] = ..., output: _Optional[_Union[Format, str]] = ...) -> None: ...

class BatchRequest(_message.Message):
    __slots__ = ("batch_id", "function", "records", "aggregate_op")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_OP_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    function: str
    records: _containers.RepeatedCompositeFieldContainer[Record]
    aggregate_op: AggregateOp
    def __init__(self, batch_id: _Optional[int] = ..., function: _Optional[str] = ..., records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., aggregate_op: _Optional[_Union[AggregateOp, str]] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("value", "key", "event_time", "state", "timer", "accumulators", "values")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TIMER_FIELD_NUMBER: _ClassVar[int]
    ACCUMULATORS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    value: bytes
    key: bytes
    event_time: int
    state: bytes
    timer: int
    accumulators: _containers.RepeatedScalarFieldContainer[bytes]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, value: _Optional[bytes] = ..., key: _Optional[bytes] = ..., event_time: _Optional[int] = ..., state: _Optional[bytes] = ..., timer: _Optional[int] = ..., accumulators: _Optional[_Iterable[bytes]] = ..., values: _Optional[_Iterable[bytes]] = ...) -> None: ...

class BatchResponse(_message.Message):
    __slots__ = ("batch_id", "results")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    results: _containers.RepeatedCompositeFieldContainer[RecordResult]
    def __init__(self, batch_id: _Optional[int] = ..., results: _Optional[_Iterable[_Union[RecordResult, _Mapping]]] = ...) -> None: ...

class RecordResult(_message.Message):
    __slots__ = ("outputs", "error", "new_state", "clear_state", "timers", "accumulator")
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    NEW_STATE_FIELD_NUMBER: _ClassVar[int]
    CLEAR_STATE_FIELD_NUMBER: _ClassVar[int]
    TIMERS_FIELD_NUMBER: _ClassVar[int]
    ACCUMULATOR_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.RepeatedScalarFieldContainer[bytes]
    error: Error
    new_state: bytes
    clear_state: bool
    timers: _containers.RepeatedScalarFieldContainer[int]
    accumulator: bytes
    def __init__(self, outputs: _Optional[_Iterable[bytes]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., new_state: _Optional[bytes] = ..., clear_state: _Optional[bool] = ..., timers: _Optional[_Iterable[int]] = ..., accumulator: _Optional[bytes] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("message", "traceback")
    CLASS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    message: str
    traceback: str
    def __init__(self, message: _Optional[str] = ..., traceback: _Optional[str] = ..., **kwargs) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("serving",)
    SERVING_FIELD_NUMBER: _ClassVar[int]
    serving: bool
    def __init__(self, serving: _Optional[bool] = ...) -> None: ...
