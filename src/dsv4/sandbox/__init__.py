"""DSec-style sandboxes: function calls, bubblewrap processes, containers and VMs behind one API.

Imports only the standard library and pydantic (plus system tools at run time), never model code.
"""

from dsv4.sandbox.aio import AsyncSandbox
from dsv4.sandbox.api import DirEntry, FunctionResult, ShellResult
from dsv4.sandbox.config import ContainerConfig, FunctionConfig, ProcessConfig, SandboxSpec, VMConfig
from dsv4.sandbox.errors import (
    BackendUnavailable,
    CommandTimeout,
    JournalMismatch,
    SandboxClosed,
    SandboxError,
    SandboxFileError,
    UnknownBackend,
    UnsupportedOperation,
)
from dsv4.sandbox.limits import Limits
from dsv4.sandbox.network import NetworkRules
from dsv4.sandbox.sandbox import Sandbox
from dsv4.sandbox.snapshot import Snapshot

__all__ = [
    "AsyncSandbox", "BackendUnavailable", "CommandTimeout", "ContainerConfig", "DirEntry", "FunctionConfig",
    "FunctionResult", "JournalMismatch", "Limits", "NetworkRules", "ProcessConfig", "Sandbox",
    "SandboxClosed",
    "SandboxError", "SandboxFileError", "SandboxSpec", "ShellResult", "Snapshot", "UnknownBackend",
    "UnsupportedOperation", "VMConfig",
]
