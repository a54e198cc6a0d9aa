"""job_machine: hand work from one process to another through PostgreSQL, and get the answer back.

Sync: :class:`Client`, :class:`Worker`. Asyncio: :class:`AsyncClient`,
:class:`AsyncWorker`. Both faces share one implementation
(job_machine/_async/, with job_machine/_sync/ generated from it).
"""

from __future__ import annotations

from ._async.admin import AsyncAdmin
from ._async.client import AsyncClient
from ._async.schema import ainstall_roles, ainstall_schema
from ._async.worker import AsyncWorker
from ._schema_sql import Roles, create_tables_sql, roles_sql
from ._sync.admin import Admin
from ._sync.client import Client
from ._sync.schema import install_roles, install_schema
from ._sync.worker import Worker
from .channels import queue_channel, reply_channel, validate_queue, validate_subscription
from .errors import (
    ConnectionFailed,
    ConnectionLost,
    InvalidData,
    InvalidQueueName,
    JobMachineError,
    NoCurrentTask,
    PoolExhausted,
    Retry,
    SchemaMissing,
    StatementFailed,
    StatementTimeout,
    TaskFailed,
    TaskNotHeld,
    TransactionConflict,
    UnknownTask,
    WaitTimeout,
)
from .task import (
    HourStats,
    LockInfo,
    QueueStats,
    Stats,
    Status,
    Task,
    TaskInfo,
    TaskPage,
    TaskSummary,
    WorkerInfo,
)

__version__ = "0.1.0"

__all__ = [
    "Admin",
    "AsyncAdmin",
    "AsyncClient",
    "AsyncWorker",
    "Client",
    "ConnectionFailed",
    "ConnectionLost",
    "HourStats",
    "InvalidData",
    "InvalidQueueName",
    "JobMachineError",
    "LockInfo",
    "NoCurrentTask",
    "PoolExhausted",
    "QueueStats",
    "Retry",
    "Roles",
    "SchemaMissing",
    "StatementFailed",
    "StatementTimeout",
    "Stats",
    "Status",
    "Task",
    "TaskFailed",
    "TaskInfo",
    "TaskNotHeld",
    "TaskPage",
    "TaskSummary",
    "TransactionConflict",
    "UnknownTask",
    "WaitTimeout",
    "Worker",
    "WorkerInfo",
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
