"""Backends, looked up by name; each module is imported only when its backend is asked for."""

from dsv4.sandbox.backend import Backend
from dsv4.sandbox.config import SandboxSpec
from dsv4.sandbox.errors import UnknownBackend

NAMES = ("function", "process", "container", "vm")


def start_backend(spec: SandboxSpec, functions: dict | None = None) -> Backend:
    """Start the backend `spec.backend.type` names; `BackendUnavailable` when it cannot run here."""
    match spec.backend.type:
        case "process":
            from dsv4.sandbox.backends.bwrap import BwrapBackend

            return BwrapBackend(spec)
        case "container":
            from dsv4.sandbox.backends.container import start_container

            return start_container(spec)
        case "vm":
            from dsv4.sandbox.backends.vm import VMBackend

            return VMBackend(spec)
        case "function":
            from dsv4.sandbox.backends.function import FunctionBackend

            return FunctionBackend(spec, functions or {})
    raise UnknownBackend(f"backend={spec.backend.type!r} is not one of {NAMES}")
