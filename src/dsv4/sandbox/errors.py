"""The sandbox exception tree: everything raised on purpose derives from `SandboxError`."""


class SandboxError(Exception):
    """Root of every error `dsv4.sandbox` raises on purpose."""


class BackendUnavailable(SandboxError, RuntimeError):
    """The backend cannot run on this machine; the message says exactly why."""


class UnknownBackend(SandboxError, ValueError):
    """No backend is registered under the requested name."""


class CommandTimeout(SandboxError, TimeoutError):
    """The guest did not answer in time (a command's own timeout returns a result with `timed_out`)."""


class SandboxClosed(SandboxError):
    """The sandbox was closed, expired, or its runtime died."""


class AgentProtocolError(SandboxError):
    """The guest agent answered something that is not a valid reply."""


class SandboxFileError(SandboxError, OSError):
    """A file operation inside the sandbox failed; carries the guest's errno and message."""


class JournalMismatch(SandboxError):
    """While resuming, a call differs from the one recorded at the same position of the journal."""


class FunctionNotRegistered(SandboxError, KeyError):
    """The `function` backend was asked for a name nobody registered."""


class UnsupportedOperation(SandboxError, NotImplementedError):
    """The backend does not offer this operation (e.g. a shell on the `function` backend)."""
