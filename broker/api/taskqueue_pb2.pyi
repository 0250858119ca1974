from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Task(_message.Message):
    __slots__ = ("id", "type", "queue", "payload_json", "priority", "max_retries", "run_at", "timeout_secs", "retry_backoff_secs", "idempotency_key", "status", "attempts", "result_json", "error", "backtrace", "worker", "created_at", "updated_at", "started_at", "finished_at", "lease_expires_at", "duplicate")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECS_FIELD_NUMBER: _ClassVar[int]
    RETRY_BACKOFF_SECS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    BACKTRACE_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    queue: str
    payload_json: str
    priority: int
    max_retries: int
    run_at: float
    timeout_secs: float
    retry_backoff_secs: float
    idempotency_key: str
    status: str
    attempts: int
    result_json: str
    error: str
    backtrace: str
    worker: str
    created_at: float
    updated_at: float
    started_at: float
    finished_at: float
    lease_expires_at: float
    duplicate: bool
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., queue: _Optional[str] = ..., payload_json: _Optional[str] = ..., priority: _Optional[int] = ..., max_retries: _Optional[int] = ..., run_at: _Optional[float] = ..., timeout_secs: _Optional[float] = ..., retry_backoff_secs: _Optional[float] = ..., idempotency_key: _Optional[str] = ..., status: _Optional[str] = ..., attempts: _Optional[int] = ..., result_json: _Optional[str] = ..., error: _Optional[str] = ..., backtrace: _Optional[str] = ..., worker: _Optional[str] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., lease_expires_at: _Optional[float] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("id", "type", "queue", "payload_json", "priority", "max_retries", "run_at", "delay_secs", "timeout_secs", "retry_backoff_secs", "idempotency_key")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_FIELD_NUMBER: _ClassVar[int]
    DELAY_SECS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECS_FIELD_NUMBER: _ClassVar[int]
    RETRY_BACKOFF_SECS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    queue: str
    payload_json: str
    priority: int
    max_retries: int
    run_at: float
    delay_secs: float
    timeout_secs: float
    retry_backoff_secs: float
    idempotency_key: str
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., queue: _Optional[str] = ..., payload_json: _Optional[str] = ..., priority: _Optional[int] = ..., max_retries: _Optional[int] = ..., run_at: _Optional[float] = ..., delay_secs: _Optional[float] = ..., timeout_secs: _Optional[float] = ..., retry_backoff_secs: _Optional[float] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class SubmitBulkRequest(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[SubmitRequest]
    def __init__(self, tasks: _Optional[_Iterable[_Union[SubmitRequest, _Mapping]]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Submitted(_message.Message):
    __slots__ = ("id", "status", "duplicate")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: str
    duplicate: bool
    def __init__(self, id: _Optional[str] = ..., status: _Optional[str] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class SubmitResult(_message.Message):
    __slots__ = ("submitted", "error")
    SUBMITTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    submitted: Submitted
    error: Error
    def __init__(self, submitted: _Optional[_Union[Submitted, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class SubmitBulkResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SubmitResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SubmitResult, _Mapping]]] = ...) -> None: ...

class TaskRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class WaitRequest(_message.Message):
    __slots__ = ("id", "timeout_secs")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECS_FIELD_NUMBER: _ClassVar[int]
    id: str
    timeout_secs: float
    def __init__(self, id: _Optional[str] = ..., timeout_secs: _Optional[float] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("status", "queue", "type", "limit", "cursor")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    status: str
    queue: str
    type: str
    limit: int
    cursor: str
    def __init__(self, status: _Optional[str] = ..., queue: _Optional[str] = ..., type: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("tasks", "next_cursor")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    next_cursor: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class QueueDepthRequest(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: str
    def __init__(self, queue: _Optional[str] = ...) -> None: ...

class QueueCounts(_message.Message):
    __slots__ = ("scheduled", "pending", "running", "completed", "failed", "dead", "cancelled", "paused", "limit")
    SCHEDULED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    DEAD_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    scheduled: int
    pending: int
    running: int
    completed: int
    failed: int
    dead: int
    cancelled: int
    paused: bool
    limit: QueueLimit
    def __init__(self, scheduled: _Optional[int] = ..., pending: _Optional[int] = ..., running: _Optional[int] = ..., completed: _Optional[int] = ..., failed: _Optional[int] = ..., dead: _Optional[int] = ..., cancelled: _Optional[int] = ..., paused: _Optional[bool] = ..., limit: _Optional[_Union[QueueLimit, _Mapping]] = ...) -> None: ...

class QueueDepthResponse(_message.Message):
    __slots__ = ("queues",)
    class QueuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: QueueCounts
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[QueueCounts, _Mapping]] = ...) -> None: ...
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    queues: _containers.MessageMap[str, QueueCounts]
    def __init__(self, queues: _Optional[_Mapping[str, QueueCounts]] = ...) -> None: ...

class SetQueuePausedRequest(_message.Message):
    __slots__ = ("queue", "paused")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    queue: str
    paused: bool
    def __init__(self, queue: _Optional[str] = ..., paused: _Optional[bool] = ...) -> None: ...

class SetQueuePausedResponse(_message.Message):
    __slots__ = ("queue", "paused")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    queue: str
    paused: bool
    def __init__(self, queue: _Optional[str] = ..., paused: _Optional[bool] = ...) -> None: ...

class WorkersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Worker(_message.Message):
    __slots__ = ("worker_id", "hostname", "pid", "queues", "concurrency", "labels", "node", "state", "first_seen", "last_seen", "running")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    hostname: str
    pid: int
    queues: _containers.RepeatedScalarFieldContainer[str]
    concurrency: int
    labels: _containers.RepeatedScalarFieldContainer[str]
    node: str
    state: str
    first_seen: float
    last_seen: float
    running: int
    def __init__(self, worker_id: _Optional[str] = ..., hostname: _Optional[str] = ..., pid: _Optional[int] = ..., queues: _Optional[_Iterable[str]] = ..., concurrency: _Optional[int] = ..., labels: _Optional[_Iterable[str]] = ..., node: _Optional[str] = ..., state: _Optional[str] = ..., first_seen: _Optional[float] = ..., last_seen: _Optional[float] = ..., running: _Optional[int] = ...) -> None: ...

class WorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    def __init__(self, workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ...) -> None: ...

class SetWorkerStateRequest(_message.Message):
    __slots__ = ("worker_id", "state")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    state: str
    def __init__(self, worker_id: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class SetWorkerStateResponse(_message.Message):
    __slots__ = ("worker_id", "state")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    state: str
    def __init__(self, worker_id: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("node_id", "uptime_secs", "applied_index", "tasks", "totals", "rates_per_sec", "workers", "rocksdb", "data_dir")
    class TasksEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class TotalsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class RatesPerSecEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class RocksdbEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    RATES_PER_SEC_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    ROCKSDB_FIELD_NUMBER: _ClassVar[int]
    DATA_DIR_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    uptime_secs: float
    applied_index: int
    tasks: _containers.ScalarMap[str, int]
    totals: _containers.ScalarMap[str, int]
    rates_per_sec: _containers.ScalarMap[str, float]
    workers: int
    rocksdb: _containers.ScalarMap[str, int]
    data_dir: str
    def __init__(self, node_id: _Optional[str] = ..., uptime_secs: _Optional[float] = ..., applied_index: _Optional[int] = ..., tasks: _Optional[_Mapping[str, int]] = ..., totals: _Optional[_Mapping[str, int]] = ..., rates_per_sec: _Optional[_Mapping[str, float]] = ..., workers: _Optional[int] = ..., rocksdb: _Optional[_Mapping[str, int]] = ..., data_dir: _Optional[str] = ...) -> None: ...

class ClusterStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RestoreIdentity(_message.Message):
    __slots__ = ("backup_sha256", "backup_applied_index", "backup_time")
    BACKUP_SHA256_FIELD_NUMBER: _ClassVar[int]
    BACKUP_APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    BACKUP_TIME_FIELD_NUMBER: _ClassVar[int]
    backup_sha256: str
    backup_applied_index: int
    backup_time: str
    def __init__(self, backup_sha256: _Optional[str] = ..., backup_applied_index: _Optional[int] = ..., backup_time: _Optional[str] = ...) -> None: ...

class ClusterNode(_message.Message):
    __slots__ = ("node_id", "address", "role", "term", "commit_index", "applied_index", "lag", "reachable", "restored")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    RESTORED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    role: str
    term: int
    commit_index: int
    applied_index: int
    lag: int
    reachable: bool
    restored: RestoreIdentity
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., role: _Optional[str] = ..., term: _Optional[int] = ..., commit_index: _Optional[int] = ..., applied_index: _Optional[int] = ..., lag: _Optional[int] = ..., reachable: _Optional[bool] = ..., restored: _Optional[_Union[RestoreIdentity, _Mapping]] = ...) -> None: ...

class ClusterStatusResponse(_message.Message):
    __slots__ = ("mode", "node_id", "role", "leader", "leader_id", "term", "commit_index", "applied_index", "nodes", "restored", "restore_mismatch")
    MODE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    RESTORED_FIELD_NUMBER: _ClassVar[int]
    RESTORE_MISMATCH_FIELD_NUMBER: _ClassVar[int]
    mode: str
    node_id: str
    role: str
    leader: str
    leader_id: str
    term: int
    commit_index: int
    applied_index: int
    nodes: _containers.RepeatedCompositeFieldContainer[ClusterNode]
    restored: RestoreIdentity
    restore_mismatch: bool
    def __init__(self, mode: _Optional[str] = ..., node_id: _Optional[str] = ..., role: _Optional[str] = ..., leader: _Optional[str] = ..., leader_id: _Optional[str] = ..., term: _Optional[int] = ..., commit_index: _Optional[int] = ..., applied_index: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[ClusterNode, _Mapping]]] = ..., restored: _Optional[_Union[RestoreIdentity, _Mapping]] = ..., restore_mismatch: _Optional[bool] = ...) -> None: ...

class CreateSnapshotRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class CreateSnapshotResponse(_message.Message):
    __slots__ = ("path", "applied_index")
    PATH_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    path: str
    applied_index: int
    def __init__(self, path: _Optional[str] = ..., applied_index: _Optional[int] = ...) -> None: ...

class SetLimitRequest(_message.Message):
    __slots__ = ("queue", "rate", "burst", "concurrency")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    queue: str
    rate: float
    burst: int
    concurrency: int
    def __init__(self, queue: _Optional[str] = ..., rate: _Optional[float] = ..., burst: _Optional[int] = ..., concurrency: _Optional[int] = ...) -> None: ...

class QueueLimit(_message.Message):
    __slots__ = ("queue", "rate", "burst", "concurrency", "running", "tokens", "throttled_rate", "throttled_concurrency")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_RATE_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    queue: str
    rate: float
    burst: int
    concurrency: int
    running: int
    tokens: float
    throttled_rate: int
    throttled_concurrency: int
    def __init__(self, queue: _Optional[str] = ..., rate: _Optional[float] = ..., burst: _Optional[int] = ..., concurrency: _Optional[int] = ..., running: _Optional[int] = ..., tokens: _Optional[float] = ..., throttled_rate: _Optional[int] = ..., throttled_concurrency: _Optional[int] = ...) -> None: ...

class GetLimitsRequest(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: str
    def __init__(self, queue: _Optional[str] = ...) -> None: ...

class GetLimitsResponse(_message.Message):
    __slots__ = ("limits",)
    class LimitsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: QueueLimit
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[QueueLimit, _Mapping]] = ...) -> None: ...
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    limits: _containers.MessageMap[str, QueueLimit]
    def __init__(self, limits: _Optional[_Mapping[str, QueueLimit]] = ...) -> None: ...

class ClearLimitRequest(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: str
    def __init__(self, queue: _Optional[str] = ...) -> None: ...

class ClearLimitResponse(_message.Message):
    __slots__ = ("queue", "cleared")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    CLEARED_FIELD_NUMBER: _ClassVar[int]
    queue: str
    cleared: bool
    def __init__(self, queue: _Optional[str] = ..., cleared: _Optional[bool] = ...) -> None: ...

class SubmitWorkflowRequest(_message.Message):
    __slots__ = ("id", "workflow_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    workflow_json: str
    def __init__(self, id: _Optional[str] = ..., workflow_json: _Optional[str] = ...) -> None: ...

class WorkflowRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetWorkflowRequest(_message.Message):
    __slots__ = ("id", "limit")
    ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    id: str
    limit: int
    def __init__(self, id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class WorkflowSummary(_message.Message):
    __slots__ = ("id", "status", "size", "duplicate", "cancelled_tasks")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_TASKS_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: str
    size: int
    duplicate: bool
    cancelled_tasks: int
    def __init__(self, id: _Optional[str] = ..., status: _Optional[str] = ..., size: _Optional[int] = ..., duplicate: _Optional[bool] = ..., cancelled_tasks: _Optional[int] = ...) -> None: ...

class WorkflowGroup(_message.Message):
    __slots__ = ("node", "kind", "role", "size", "on_error", "started", "completed", "dead", "cancelled")
    NODE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ON_ERROR_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    DEAD_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    node: str
    kind: str
    role: str
    size: int
    on_error: str
    started: bool
    completed: int
    dead: int
    cancelled: int
    def __init__(self, node: _Optional[str] = ..., kind: _Optional[str] = ..., role: _Optional[str] = ..., size: _Optional[int] = ..., on_error: _Optional[str] = ..., started: _Optional[bool] = ..., completed: _Optional[int] = ..., dead: _Optional[int] = ..., cancelled: _Optional[int] = ...) -> None: ...

class WorkflowTask(_message.Message):
    __slots__ = ("id", "role", "status", "result_json", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    role: str
    status: str
    result_json: str
    error: str
    def __init__(self, id: _Optional[str] = ..., role: _Optional[str] = ..., status: _Optional[str] = ..., result_json: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class Workflow(_message.Message):
    __slots__ = ("id", "status", "size", "created_at", "updated_at", "finished_at", "error", "groups", "tasks", "tasks_truncated")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    TASKS_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: str
    size: int
    created_at: float
    updated_at: float
    finished_at: float
    error: str
    groups: _containers.RepeatedCompositeFieldContainer[WorkflowGroup]
    tasks: _containers.RepeatedCompositeFieldContainer[WorkflowTask]
    tasks_truncated: bool
    def __init__(self, id: _Optional[str] = ..., status: _Optional[str] = ..., size: _Optional[int] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., error: _Optional[str] = ..., groups: _Optional[_Iterable[_Union[WorkflowGroup, _Mapping]]] = ..., tasks: _Optional[_Iterable[_Union[WorkflowTask, _Mapping]]] = ..., tasks_truncated: _Optional[bool] = ...) -> None: ...

class ScheduleRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ScheduleTask(_message.Message):
    __slots__ = ("type", "queue", "payload_json", "priority", "max_retries", "timeout_secs", "retry_backoff_secs")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECS_FIELD_NUMBER: _ClassVar[int]
    RETRY_BACKOFF_SECS_FIELD_NUMBER: _ClassVar[int]
    type: str
    queue: str
    payload_json: str
    priority: int
    max_retries: int
    timeout_secs: float
    retry_backoff_secs: float
    def __init__(self, type: _Optional[str] = ..., queue: _Optional[str] = ..., payload_json: _Optional[str] = ..., priority: _Optional[int] = ..., max_retries: _Optional[int] = ..., timeout_secs: _Optional[float] = ..., retry_backoff_secs: _Optional[float] = ...) -> None: ...

class ScheduleSpec(_message.Message):
    __slots__ = ("id", "cron", "tz", "interval_secs", "task", "paused", "misfire", "misfire_limit", "misfire_grace_secs", "jitter_secs", "start_at", "end_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    CRON_FIELD_NUMBER: _ClassVar[int]
    TZ_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECS_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    MISFIRE_FIELD_NUMBER: _ClassVar[int]
    MISFIRE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MISFIRE_GRACE_SECS_FIELD_NUMBER: _ClassVar[int]
    JITTER_SECS_FIELD_NUMBER: _ClassVar[int]
    START_AT_FIELD_NUMBER: _ClassVar[int]
    END_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    cron: str
    tz: str
    interval_secs: int
    task: ScheduleTask
    paused: bool
    misfire: str
    misfire_limit: int
    misfire_grace_secs: int
    jitter_secs: float
    start_at: float
    end_at: float
    def __init__(self, id: _Optional[str] = ..., cron: _Optional[str] = ..., tz: _Optional[str] = ..., interval_secs: _Optional[int] = ..., task: _Optional[_Union[ScheduleTask, _Mapping]] = ..., paused: _Optional[bool] = ..., misfire: _Optional[str] = ..., misfire_limit: _Optional[int] = ..., misfire_grace_secs: _Optional[int] = ..., jitter_secs: _Optional[float] = ..., start_at: _Optional[float] = ..., end_at: _Optional[float] = ...) -> None: ...

class Schedule(_message.Message):
    __slots__ = ("spec", "state", "next_fire_at", "last_slot_at", "last_fired_at", "last_task_id", "fired", "misfires", "errors", "last_error", "created_at", "updated_at")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIRE_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SLOT_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_FIRED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FIRED_FIELD_NUMBER: _ClassVar[int]
    MISFIRES_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    spec: ScheduleSpec
    state: str
    next_fire_at: float
    last_slot_at: float
    last_fired_at: float
    last_task_id: str
    fired: int
    misfires: int
    errors: int
    last_error: str
    created_at: float
    updated_at: float
    def __init__(self, spec: _Optional[_Union[ScheduleSpec, _Mapping]] = ..., state: _Optional[str] = ..., next_fire_at: _Optional[float] = ..., last_slot_at: _Optional[float] = ..., last_fired_at: _Optional[float] = ..., last_task_id: _Optional[str] = ..., fired: _Optional[int] = ..., misfires: _Optional[int] = ..., errors: _Optional[int] = ..., last_error: _Optional[str] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ...) -> None: ...

class ListSchedulesRequest(_message.Message):
    __slots__ = ("after", "limit")
    AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    after: str
    limit: int
    def __init__(self, after: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListSchedulesResponse(_message.Message):
    __slots__ = ("schedules", "next_cursor", "total", "paused")
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    schedules: _containers.RepeatedCompositeFieldContainer[Schedule]
    next_cursor: str
    total: int
    paused: int
    def __init__(self, schedules: _Optional[_Iterable[_Union[Schedule, _Mapping]]] = ..., next_cursor: _Optional[str] = ..., total: _Optional[int] = ..., paused: _Optional[int] = ...) -> None: ...

class DeleteScheduleResponse(_message.Message):
    __slots__ = ("id", "deleted")
    ID_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    id: str
    deleted: bool
    def __init__(self, id: _Optional[str] = ..., deleted: _Optional[bool] = ...) -> None: ...
