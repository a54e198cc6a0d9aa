"""job_machine: hand work from one process to another through PostgreSQL, and get the answer back.

Task functions: :class:`App` and ``@app.task`` (docs/tasks.md). Sync:
:class:`Client`, :class:`Worker`. Asyncio: :class:`AsyncClient`,
:class:`AsyncWorker`. Both faces share one implementation
(job_machine/_async/, with job_machine/_sync/ generated from it).
"""

from __future__ import annotations

from ._async.admin import AsyncAdmin
from ._async.client import AsyncClient
from ._async.schema import ainstall_roles, ainstall_schema
from ._async.taskworker import AsyncTaskWorker
from ._async.worker import AsyncWorker
from ._schema_sql import Roles, create_tables_sql, roles_sql
from ._sync.admin import Admin
from ._sync.client import Client
from ._sync.schema import install_roles, install_schema
from ._sync.taskworker import TaskWorker
from ._sync.worker import Worker
from .app import App
from .channels import Exact, queue_channel, reply_channel, validate_queue, validate_subscription
from .errors import (
    Cancelled,
    ConnectionFailed,
    ConnectionLost,
    DatabaseError,
    DatabaseUnavailable,
    InvalidData,
    InvalidQueueName,
    JobMachineError,
    NoCurrentTask,
    PoolExhausted,
    Retry,
    SchemaMissing,
    ServerReadOnly,
    StatementFailed,
    StatementTimeout,
    TaskCancelled,
    TaskExpired,
    TaskFailed,
    TaskNotHeld,
    TaskRejected,
    TimeLimitExceeded,
    TransactionConflict,
    UnknownTask,
    WaitTimeout,
    WorkerStopped,
)
from .task import (
    HourStats,
    LockInfo,
    Part,
    QueueLimit,
    QueueStats,
    ScheduleInfo,
    Stats,
    Status,
    Task,
    TaskInfo,
    TaskPage,
    TaskSummary,
    WorkerInfo,
)
from .taskfunction import (
    AsyncGeneratorTaskFunction,
    AsyncTaskFunction,
    GeneratorTaskFunction,
    TaskArgs,
    TaskFunction,
)

__version__ = "0.1.0"

__all__ = [
    "Admin",
    "App",
    "AsyncAdmin",
    "AsyncClient",
    "AsyncGeneratorTaskFunction",
    "AsyncTaskFunction",
    "AsyncTaskWorker",
    "AsyncWorker",
    "Cancelled",
    "Client",
    "ConnectionFailed",
    "ConnectionLost",
    "DatabaseError",
    "DatabaseUnavailable",
    "Exact",
    "GeneratorTaskFunction",
    "HourStats",
    "InvalidData",
    "InvalidQueueName",
    "JobMachineError",
    "LockInfo",
    "NoCurrentTask",
    "Part",
    "PoolExhausted",
    "QueueLimit",
    "QueueStats",
    "Retry",
    "Roles",
    "ScheduleInfo",
    "SchemaMissing",
    "ServerReadOnly",
    "StatementFailed",
    "StatementTimeout",
    "Stats",
    "Status",
    "Task",
    "TaskArgs",
    "TaskCancelled",
    "TaskExpired",
    "TaskFailed",
    "TaskFunction",
    "TaskInfo",
    "TaskNotHeld",
    "TaskPage",
    "TaskRejected",
    "TaskSummary",
    "TaskWorker",
    "TimeLimitExceeded",
    "TransactionConflict",
    "UnknownTask",
    "WaitTimeout",
    "Worker",
    "WorkerInfo",
    "WorkerStopped",
    "__version__",
    "ainstall_roles",
    "ainstall_schema",
    "create_tables_sql",
    "install_roles",
    "install_schema",
    "queue_channel",
    "reply_channel",
    "roles_sql",
    "validate_queue",
    "validate_subscription",
]
